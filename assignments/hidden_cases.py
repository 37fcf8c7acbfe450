"""The hidden cases of the assignments: the instructor's, never handed out.

This file belongs to the instructor's source (``assignments/``), beside the solution
notebooks; it is not part of the ``vicreg_lab`` package that students install, and
``vicreg-lab assignments release`` does not copy it. The grader
(``vicreg-lab assignments grade``) and the hidden-test blocks of the source notebooks
(``check_variance(variance_term, hidden=True)``) load it from here.

Each case is built by the grade cell's :class:`vicreg_lab.classroom.Task` (``make``), which
adds the reference value, the hint and the typical mistakes: this file only chooses
inputs the students never see (other shapes, seeds and settings than the visible cases).
A case's name is shown to students: name the situation, never the numbers.
Change them between classes if you like; keep them small (they run in every submission's
child process).
"""

import torch

from vicreg_lab.classroom.grade import GRADED


def _randn(*shape, seed: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def _assignment_1() -> dict:
    make = {grade_id: GRADED[grade_id].make for grade_id in GRADED}
    shapes = {"few samples and dimensions": (7, 3), "more dimensions than samples": (64, 128)}
    shapes["three samples, many dimensions"] = (3, 257)
    invariance = [
        make["invariance-check"](name, _randn(n, d, seed=s), _randn(n, d, seed=s + 50))
        for s, (name, (n, d)) in enumerate(shapes.items(), start=11)
    ]
    spreads = {"a narrow spread": ((9, 5), 0.3), "a wide spread": ((100, 64), 2.0)}
    spreads["three samples"] = ((3, 7), 1.0)
    variance = [
        make["variance-check"](name, _randn(*shape, seed=s, scale=scale))
        for s, (name, (shape, scale)) in enumerate(spreads.items(), 21)
    ]
    sizes = {"a small matrix": 2, "an odd size": 7, "a large matrix": 40}
    off_diagonal = [
        make["off-diagonal-check"](name, _randn(d, d, seed=30 + d)) for name, d in sizes.items()
    ]
    batches = {"more dimensions than samples": (5, 9), "a large batch": (200, 12)}
    batches["two samples"] = (2, 3)
    covariance = [
        make["covariance-check"](name, _randn(*shape, seed=40 + i) + 3.0)
        for i, (name, shape) in enumerate(batches.items())
    ]
    total = [
        make["total-check"](
            "other weights, another batch",
            _randn(50, 20, seed=60),
            _randn(50, 20, seed=61),
            inv_coeff=5.0,
            var_coeff=3.0,
            cov_coeff=0.5,
        )
    ]
    return {
        "invariance-check": invariance,
        "variance-check": variance,
        "off-diagonal-check": off_diagonal,
        "covariance-check": covariance,
        "total-check": total,
    }


def _assignment_2() -> dict:
    g = torch.Generator().manual_seed(3)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    rankme = GRADED["rankme-check"].make
    cases = [rankme("a low-rank batch", randn(300, 5) @ randn(5, 40))]
    cases.append(rankme("dimensions of unequal scale", randn(100, 10) * torch.arange(1.0, 11.0)))

    # batches built by hand; every truth label is what collapse_report(target_std=1) says
    g = torch.Generator().manual_seed(7)
    n, d = 400, 24
    healthy = torch.randn(n, d, generator=g)
    low_rank = torch.randn(n, 2, generator=g) @ torch.randn(2, d, generator=g)
    low_rank = low_rank / low_rank.std(0) + 0.01 * torch.randn(n, d, generator=g)
    point = torch.randn(1, d, generator=g) + 1e-3 * torch.randn(n, d, generator=g)
    diagnose = GRADED["diagnose-check"].make
    return {
        "rankme-check": cases,
        "diagnose-check": [
            diagnose("a batch made by hand (1)", healthy, "healthy"),
            diagnose("a batch made by hand (2)", low_rank, "dimensional collapse"),
            diagnose("a batch made by hand (3)", point, "complete collapse"),
        ],
    }


def _assignment_4() -> dict:
    collapsed = GRADED["collapsed-loss-check"].make
    return {
        "collapsed-loss-check": [
            collapsed("other weights", 3.0, 7.0, 2.0),
            collapsed("other gamma and eps", 1.0, 4.0, 1.0, gamma=0.5, eps=0.04),
            collapsed("a tiny gamma", 5.0, 5.0, 5.0, gamma=0.005, eps=1e-4),
        ]
    }


def hidden_cases() -> dict:
    """grade_id -> the hidden cases of that grade cell."""
    return {**_assignment_1(), **_assignment_2(), **_assignment_4()}
