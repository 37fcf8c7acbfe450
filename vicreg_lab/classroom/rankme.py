"""Assignment 2: RankMe, and three training runs to diagnose with it.

- :func:`three_runs`: the embeddings of three short runs of the toy VICReg problem
  (:mod:`vicreg_lab.lab.toy`), trained with different loss weights: one healthy, one
  with dimensional collapse, one with complete collapse (in a shuffled order).
- :func:`check_rankme`: checks the student's ``rankme(z)`` against
  :func:`vicreg_lab.diagnostics.rankme` (centred embeddings, ``eps = 1e-7``).
- :func:`check_diagnose`: checks the student's ``diagnose(z)`` on the three runs and
  on three more batches built by hand.

Examples
--------
>>> from vicreg_lab.classroom import three_runs
>>> runs = three_runs()                                   # doctest: +SKIP
>>> sorted(runs), runs["run A"].shape                     # doctest: +SKIP
(['run A', 'run B', 'run C'], (512, 32))
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from vicreg_lab.diagnostics import collapse_report
from vicreg_lab.diagnostics import rankme as _ref_rankme

from ._core import Case, CheckResult, Task, hidden_cases, number_case, run_graded

__all__ = ["LABELS", "check_diagnose", "check_rankme", "three_runs"]

LABELS = ("healthy", "dimensional collapse", "complete collapse")

# run name -> (loss weights (inv, var, cov), what the run is); the order hides the answer
_RUNS = {
    "run A": ((25.0, 25.0, 0.0), "dimensional collapse"),
    "run B": ((25.0, 25.0, 1.0), "healthy"),
    "run C": ((25.0, 0.0, 1.0), "complete collapse"),
}
_TOY = {"steps": 200, "embed_dim": 32}


@lru_cache(maxsize=4)
def _toy_embeddings(weights: tuple[float, float, float], seed: int) -> np.ndarray:
    from vicreg_lab.lab.toy import train_toy

    inv, var, cov = weights
    run = train_toy(inv_coeff=inv, var_coeff=var, cov_coeff=cov, seed=seed, **_TOY)
    return run["embeddings"]


def three_runs(seed: int = 0) -> dict[str, np.ndarray]:
    """Embeddings (512, 32) of three short toy VICReg runs, named "run A", "run B", "run C".

    Each run trains the toy MLP of :func:`vicreg_lab.lab.toy.train_toy` for 200 steps
    (``embed_dim=32``) with its own loss weights; one run is healthy, one shows
    dimensional collapse, one complete collapse. Which is which is the exercise. The
    runs take a few seconds each and are cached for the session.

    Parameters
    ----------
    seed : int, default=0
        Seed of the toy data, initialisation and views.

    Returns
    -------
    dict of str to numpy.ndarray
        Run name -> embeddings of the 512 clean toy points after training.
    """
    return {name: _toy_embeddings(weights, seed).copy() for name, (weights, _) in _RUNS.items()}


def run_truth(name: str) -> str:
    """What run ``name`` of :func:`three_runs` is (for instructors and tests)."""
    return _RUNS[name][1]


# ----------------------------------------------------------------------------- rankme

_RANKME_HINT = (
    "Centre z over the batch, take its singular values s_k (torch.linalg.svdvals), "
    "p_k = s_k / sum_j s_j + 1e-7, and return exp(-sum_k p_k log p_k) as a float."
)


def _singular_values(z, center=True):
    z = torch.as_tensor(z, dtype=torch.float64)
    if center:
        z = z - z.mean(0)
    return torch.linalg.svdvals(z)


def _effective_rank(s, eps=1e-7):
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


_RANKME_MISTAKES = (
    (
        lambda z: _ref_rankme(z, center=False),
        "You did not centre the embeddings: subtract the mean embedding first, otherwise "
        "a constant offset counts as one big direction and pulls RankMe towards 1.",
    ),
    (
        lambda z: _effective_rank(_singular_values(z) ** 2),
        "You used squared singular values (eigenvalues of the covariance): RankMe uses "
        "the singular values themselves.",
    ),
    (
        lambda z: float(np.log(_ref_rankme(z))),
        "You returned the entropy: RankMe is exp(entropy).",
    ),
    (
        lambda z: float(torch.linalg.matrix_rank(torch.as_tensor(z) - torch.as_tensor(z).mean(0))),
        "You returned the matrix rank: RankMe is a smooth, effective rank computed from "
        "the whole spectrum, not a count of non-zero singular values.",
    ),
)


def _rankme_case(name: str, z: torch.Tensor, **kw) -> Case:
    return number_case(name, (z,), _ref_rankme(z), _RANKME_HINT, _RANKME_MISTAKES, tol=1e-3, **kw)


def _rankme_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    case = _rankme_case
    constant = torch.full((10, 4), 2.5, dtype=torch.float64)
    return [
        case("isotropic Gaussian, 500 x 8 (close to 8)", randn(500, 8)),
        case("rank 2 in 16 dimensions (close to 2)", randn(200, 2) @ randn(2, 16)),
        case("embeddings far from the origin (mean 100)", randn(100, 5) + 100.0),
        case("two embeddings (N = 2): one direction", randn(2, 6)),
        number_case(
            "complete collapse: every embedding equal (RankMe 1)",
            (constant,),
            _ref_rankme(constant),
            tol=1e-3,
            hint="All singular values are 0 here, so s / s.sum() divides 0 by 0. Guard "
            "the division (e.g. divide by s.sum().clamp_min(1e-12)); a completely "
            "collapsed batch has RankMe 1.",
        ),
        case("float32 input", randn(64, 12).float()),
    ]


def check_rankme(
    rankme, hidden: bool = False, points: float = 3, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``rankme(z)``: the effective rank of a batch of embeddings, (N, D) -> a float.

    ``hidden``, ``points``, ``raise_on_fail``: see
    :func:`~vicreg_lab.classroom.check_invariance`.
    """
    return run_graded(rankme, GRADED, "rankme-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- diagnose

_DIAGNOSE_HINT = {
    "healthy": "Its dimensions vary (std well above 0) and the variation is spread over "
    "many directions (RankMe a sizeable fraction of min(N - 1, D)).",
    "dimensional collapse": "Its dimensions still vary (std near 1), but along very few "
    "directions: compare its RankMe with min(N - 1, D).",
    "complete collapse": "Look at the standard deviation of each dimension before RankMe: "
    "when every embedding is (almost) the same point, RankMe only measures the tiny "
    "leftovers and can look high.",
}


_DIAGNOSE_CONCEPT = (
    "return 'healthy', 'dimensional collapse' or 'complete collapse' for a batch of "
    "embeddings, from their per-dimension std and their RankMe."
)


def _diagnose_case(name: str, z: torch.Tensor, truth: str) -> Case:
    return Case(
        name,
        (z,),
        truth,
        kind="label",
        shows=f"{name}: embeddings of shape {tuple(z.shape)}",
        hint=_DIAGNOSE_HINT[truth] + f" Answer with one of {list(LABELS)}.",
    )


def _diagnose_cases() -> list[Case]:
    runs = three_runs()
    return [_diagnose_case(name, torch.from_numpy(z), run_truth(name)) for name, z in runs.items()]


def check_diagnose(
    diagnose, hidden: bool = False, points: float = 3, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``diagnose(z)`` -> "healthy", "dimensional collapse" or "complete collapse".

    The visible cases are the three runs of :func:`three_runs`; the hidden ones are
    batches built by hand, kept in the instructor's source. Every truth label agrees with
    :func:`vicreg_lab.diagnostics.collapse_report` with ``target_std=1.0``: these are
    VICReg embeddings, whose std the variance term pushes to 1.

    ``diagnose`` maps a tensor (N, D) to one of :data:`LABELS`. ``hidden``, ``points``,
    ``raise_on_fail``: see :func:`~vicreg_lab.classroom.check_invariance`.
    """
    return run_graded(diagnose, GRADED, "diagnose-check", hidden, points, raise_on_fail)


def _truth_agrees_with_report() -> bool:
    """True when every truth label (visible and hidden) is collapse_report's verdict (tests)."""
    cases = _diagnose_cases() + hidden_cases("diagnose-check")
    return all(collapse_report(c.args[0], target_std=1.0).verdict == c.expected for c in cases)


#: The grader's view of assignment 2: grade_id -> what scores it.
GRADED = {
    "rankme-check": Task("rankme", cases=_rankme_cases, make=_rankme_case, concept=_RANKME_HINT),
    "diagnose-check": Task(
        "diagnose", cases=_diagnose_cases, make=_diagnose_case, concept=_DIAGNOSE_CONCEPT
    ),
}
