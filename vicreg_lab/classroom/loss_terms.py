"""Checkers of assignment 1: the three terms of the VICReg loss, written by the student.

The student writes, for embeddings of shape ``(N, D)``:

- ``invariance_term(z1, z2)``: mean squared distance between the two views;
- ``variance_term(z, gamma=1.0, eps=1e-4)``: hinge on the std of each dimension (one view);
- ``off_diagonal(m)``: the off-diagonal entries of a square matrix, as a flat tensor;
- ``covariance_term(z)``: squared off-diagonal covariances divided by ``D`` (one view);
- ``vicreg_total(z1, z2, inv_coeff, var_coeff, cov_coeff)``: the weighted loss.

The reference values come from :func:`vicreg_lab.vicreg_loss`, so a function that
passes agrees with the library (and with the official implementation).

Examples
--------
>>> import torch
>>> from vicreg_lab.classroom import check_invariance
>>> def invariance_term(z1, z2):
...     return ((z1 - z2) ** 2).sum()          # a typical first attempt
>>> result = check_invariance(invariance_term, raise_on_fail=False)
>>> result.passed
False
>>> "mean" in result.failures[0]
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vicreg_lab.losses import vicreg_loss

from ._core import Case, CheckResult, Task, finish, run_graded

__all__ = [
    "check_covariance",
    "check_invariance",
    "check_no_library_shortcut",
    "check_off_diagonal",
    "check_variance",
    "check_vicreg_total",
]

_LIBRARY_NAMES = (
    "vicreg_loss",
    "VICRegLoss",
    "_loss_terms",
    "offdiag_sq_sum",
    "offdiag_sq_sum_gram",
    "offdiag_sq_sum_dxd",
    "vicregl_loss",
    "VICRegLLoss",
    "invariance",
    "variance",
    "covariance",
)


def _randn(*shape, seed: int = 0, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


# ----------------------------------------------------------------------------- invariance

_INV_HINT = (
    "The invariance term is the mean squared error between the two views: square every "
    "difference z1[n, d] - z2[n, d] and average over all N * D of them."
)
_INV_MISTAKES = (
    (lambda a, b: ((a - b) ** 2).sum(), "You summed the squares: take their mean instead."),
    (
        lambda a, b: ((a - b) ** 2).sum(dim=1).mean(),
        "You averaged over the batch only (divided by N): average over the embedding "
        "dimensions too (divide by N * D).",
    ),
    (
        lambda a, b: ((a - b) ** 2).sum(dim=0).mean(),
        "You averaged over the dimensions only (divided by D): average over the batch "
        "too (divide by N * D).",
    ),
    (
        lambda a, b: ((a - b) ** 2).mean().sqrt(),
        "You took a square root (RMSE): VICReg uses the mean of the squares itself.",
    ),
    (
        lambda a, b: (a - b).norm(dim=1).mean(),
        "You averaged Euclidean distances: VICReg averages squared differences.",
    ),
    (
        lambda a, b: (a - b).abs().mean(),
        "You averaged absolute differences (L1): VICReg squares the differences.",
    ),
)


def _invariance_case(name: str, z1: torch.Tensor, z2: torch.Tensor) -> Case:
    return Case(name, (z1, z2), F.mse_loss(z1, z2), hint=_INV_HINT, mistakes=_INV_MISTAKES)


def _invariance_cases() -> list[Case]:
    hand = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    z = _randn(32, 64, seed=1)
    z64 = _randn(16, 8, seed=2, dtype=torch.float64)
    one_a, one_b = torch.tensor([[1.0, -1.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    cases = [
        Case(
            "2 x 3 batch against zeros (hand-computable: 91 / 6)",
            (hand, torch.zeros(2, 3)),
            torch.tensor(91.0 / 6.0),
            hint=_INV_HINT,
            mistakes=_INV_MISTAKES,
        ),
        Case("two identical views give 0", (z, z.clone()), torch.tensor(0.0), hint=_INV_HINT),
        Case(
            "random 32 x 64 batch",
            (z, _randn(32, 64, seed=3)),
            F.mse_loss(z, _randn(32, 64, seed=3)),
            hint=_INV_HINT,
            mistakes=_INV_MISTAKES,
        ),
        Case(
            "float64 input gives a float64 result",
            (z64, z64 + 1),
            torch.tensor(1.0, dtype=torch.float64),
            hint=_INV_HINT,
        ),
        Case(
            "batch of one embedding (N = 1)",
            (one_a, one_b),
            F.mse_loss(one_a, one_b),
            hint=_INV_HINT,
            mistakes=_INV_MISTAKES,
        ),
        Case(
            "the gradient flows back to z1 and z2",
            (z[:4], z[4:8]),
            F.mse_loss(z[:4], z[4:8]),
            grad=True,
            hint=_INV_HINT,
        ),
    ]
    return cases


def check_invariance(
    invariance_term, hidden: bool = False, points: float = 2, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``invariance_term(z1, z2)``: the mean squared error between the two views.

    Parameters
    ----------
    invariance_term : callable
        The student's function: two tensors (N, D) -> a 0-d tensor.
    hidden : bool, default=False
        Run the hidden cases (other shapes and seeds) instead of the visible ones.
    points : float, default=2
        Points of the check (those of the grade cell).
    raise_on_fail : bool, default=True
        Raise :class:`~vicreg_lab.classroom.CheckFailed` (an AssertionError) on failure.

    Returns
    -------
    CheckResult
    """
    return run_graded(invariance_term, GRADED, "invariance-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- variance

_VAR_HINT = (
    "For each dimension d: std_d = sqrt(Var(z[:, d]) + eps) with the unbiased variance "
    "(divide by N - 1), then relu(gamma - std_d); return the mean over the D dimensions."
)
_VAR_MISTAKES = (
    (
        lambda z, gamma=1.0, eps=1e-4: F.relu(
            gamma - torch.sqrt(z.var(0, correction=0) + eps)
        ).mean(),
        "You used the biased variance (divided by N): VICReg uses the unbiased one (N - 1), "
        "as torch.var does by default.",
    ),
    (
        lambda z, gamma=1.0, eps=1e-4: F.relu(gamma - z.std(0)).mean(),
        "You forgot eps: take sqrt(variance + eps), not the plain standard deviation.",
    ),
    (
        lambda z, gamma=1.0, eps=1e-4: F.relu(gamma - (z.var(0) + eps)).mean(),
        "You put the variance in the hinge: VICReg compares the standard deviation "
        "sqrt(variance + eps) with gamma.",
    ),
    (
        lambda z, gamma=1.0, eps=1e-4: F.relu(gamma - torch.sqrt(z.var(0) + eps)).sum(),
        "You summed over the dimensions: take the mean over the D dimensions.",
    ),
    (
        lambda z, gamma=1.0, eps=1e-4: (gamma - torch.sqrt(z.var(0) + eps)).mean(),
        "Dimensions whose std is already above gamma must contribute 0, not a negative "
        "number: that is what the hinge relu(gamma - std) is for.",
    ),
)


def _ref_variance(z, gamma=1.0, eps=1e-4):
    return vicreg_loss(z, z, gamma=gamma, eps=eps, check_finite=False)["variance"]


def _variance_case(name: str, z: torch.Tensor, **kw) -> Case:
    return Case(
        name, (z,), _ref_variance(z, **kw), kwargs=kw, hint=_VAR_HINT, mistakes=_VAR_MISTAKES
    )


def _variance_cases() -> list[Case]:
    case = _variance_case
    dead = _randn(16, 4, seed=4)
    dead[:, 2] = 3.0  # a collapsed dimension: the same value for every sample
    cases = [
        case("two samples, one dimension: [[0], [1]]", torch.tensor([[0.0], [1.0]])),
        case("a wide spread (std 5) is not penalised", _randn(64, 8, seed=5, scale=5.0)),
        case("one dead (constant) dimension out of 4", dead),
        case("gamma=2 is used", _randn(32, 6, seed=6), gamma=2.0),
        case("random 64 x 32 batch, std 0.5", _randn(64, 32, seed=7, scale=0.5)),
        case("float64 stays float64", _randn(8, 3, seed=8, dtype=torch.float64)),
    ]
    grad_case = Case(
        "finite gradient when a dimension has collapsed",
        (dead,),
        _ref_variance(dead),
        hint=_VAR_HINT,
        mistakes=_VAR_MISTAKES,
        grad=True,
    )
    one = Case(
        "a batch of one embedding (N = 1) raises ValueError",
        (torch.tensor([[0.5, 1.0]]),),
        ValueError,
        hint="A variance needs at least two samples: raise ValueError with a clear message "
        "when z.shape[0] < 2 (the unbiased variance would divide by N - 1 = 0).",
    )
    return cases + [grad_case, one]


def check_variance(
    variance_term, hidden: bool = False, points: float = 3, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``variance_term(z, gamma=1.0, eps=1e-4)`` of one view: (N, D) -> a 0-d tensor.

    ``hidden``, ``points``, ``raise_on_fail``: see :func:`check_invariance`.
    """
    return run_graded(variance_term, GRADED, "variance-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- off-diagonal

_OFF_HINT = (
    "Return a 1-D tensor with the D * (D - 1) entries m[i, j], i != j (any order; "
    "row by row is the usual one). Hint: a boolean mask, or the flatten/view trick of "
    "the official code."
)
_OFF_MISTAKES = (
    (lambda m: m.flatten(), "You kept the diagonal: D * D entries instead of D * (D - 1)."),
    (
        lambda m: m * (1 - torch.eye(m.shape[0], dtype=m.dtype)),
        "You returned the matrix with its diagonal set to 0: return only the off-diagonal "
        "entries, as a flat 1-D tensor of D * (D - 1) values.",
    ),
    (
        lambda m: m[torch.triu(torch.ones_like(m, dtype=torch.bool), diagonal=1)],
        "You kept only the upper triangle: the covariance term sums both triangles "
        "(C[i, j] and C[j, i]), so return all D * (D - 1) entries.",
    ),
)


def _ref_off_diagonal(m: torch.Tensor) -> torch.Tensor:
    return m[~torch.eye(m.shape[0], dtype=torch.bool)]


def _off_diagonal_case(name: str, m: torch.Tensor) -> Case:
    return Case(
        name, (m,), _ref_off_diagonal(m), hint=_OFF_HINT, mistakes=_OFF_MISTAKES, unordered=True
    )


def _off_diagonal_cases() -> list[Case]:
    case = _off_diagonal_case
    return [
        case("3 x 3 matrix 0..8", torch.arange(9.0).reshape(3, 3)),
        case("2 x 2 matrix", torch.tensor([[1.0, -2.0], [3.0, 4.0]])),
        case("1 x 1 matrix: no off-diagonal entry", torch.tensor([[5.0]])),
        case("random 16 x 16, float64", _randn(16, 16, seed=9, dtype=torch.float64)),
        Case(
            "a non-square matrix raises ValueError",
            (torch.zeros(2, 3),),
            ValueError,
            hint="Check the input: raise ValueError when m is not a square 2-D matrix.",
        ),
    ]


def check_off_diagonal(
    off_diagonal, hidden: bool = False, points: float = 2, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``off_diagonal(m)``: the off-diagonal entries of a square matrix, flattened.

    ``off_diagonal`` maps a tensor (D, D) to a tensor (D * (D - 1),); the order of the
    entries is free (the covariance term only sums their squares). ``hidden``, ``points``,
    ``raise_on_fail``: see :func:`check_invariance`.
    """
    return run_graded(off_diagonal, GRADED, "off-diagonal-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- covariance

_COV_HINT = (
    "Centre z over the batch, C = z^T z / (N - 1) (a D x D matrix), then sum the squares "
    "of its off-diagonal entries and divide by D."
)


def _cov(z, center=True, denom=None):
    n = z.shape[0]
    if center:
        z = z - z.mean(0)
    return z.T @ z / (n - 1 if denom is None else denom)


def _off_sq(c):
    return c.pow(2).sum() - c.diagonal().pow(2).sum()


_COV_MISTAKES = (
    (
        lambda z: _off_sq(_cov(z, center=False)) / z.shape[1],
        "You did not centre z: subtract the batch mean of every dimension first "
        "(C must be a covariance, not a matrix of raw second moments).",
    ),
    (
        lambda z: _off_sq(_cov(z, denom=z.shape[0])) / z.shape[1],
        "You divided by N: the covariance matrix uses N - 1, like the unbiased variance.",
    ),
    (
        lambda z: _cov(z).pow(2).sum() / z.shape[1],
        "You kept the diagonal of C: the diagonal holds variances, which the variance "
        "term handles; sum the squares of the off-diagonal entries only.",
    ),
    (
        lambda z: _off_sq(_cov(z)) / (z.shape[1] * (z.shape[1] - 1)),
        "You averaged over the D * (D - 1) off-diagonal entries: VICReg divides their sum by D.",
    ),
    (
        lambda z: _off_sq(_cov(z)) / z.shape[1] ** 2,
        "You divided by D^2: VICReg divides by D.",
    ),
    (lambda z: _off_sq(_cov(z)), "You forgot to divide the sum by D."),
    (
        lambda z: (_cov(z).abs().sum() - _cov(z).diagonal().abs().sum()) / z.shape[1],
        "You summed absolute values: VICReg sums squares of the off-diagonal entries.",
    ),
)


def _ref_covariance(z):
    return vicreg_loss(z, z, check_finite=False)["covariance"] / 2


def _covariance_case(name: str, z: torch.Tensor, grad: bool = False) -> Case:
    return Case(
        name,
        (z,),
        _ref_covariance(z),
        hint=_COV_HINT,
        mistakes=_COV_MISTAKES,
        grad=grad,
        rtol=1e-4,
        atol=1e-5,
    )


def _covariance_cases() -> list[Case]:
    case = _covariance_case
    base = _randn(32, 1, seed=10)
    correlated = torch.cat([base, 2 * base, -base + 0.1 * _randn(32, 1, seed=11)], dim=1)
    offset = _randn(16, 5, seed=12) + torch.tensor([5.0, -3.0, 1.0, 0.0, 8.0])
    independent = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    return [
        case("4 samples, 2 uncorrelated dimensions: 0", independent),
        case("3 strongly correlated dimensions", correlated),
        case("dimensions with non-zero means (5, -3, 1, 0, 8)", offset),
        case("one dimension (D = 1): nothing off the diagonal", _randn(10, 1, seed=13)),
        case("random 64 x 16 batch, float64", _randn(64, 16, seed=14, dtype=torch.float64)),
        case("the gradient flows back to z", _randn(8, 4, seed=15), grad=True),
        Case(
            "a batch of one embedding (N = 1) raises ValueError",
            (torch.tensor([[0.5, 1.0]]),),
            ValueError,
            hint="A covariance needs at least two samples: raise ValueError when "
            "z.shape[0] < 2 (N - 1 would be 0).",
        ),
    ]


def check_covariance(
    covariance_term, hidden: bool = False, points: float = 3, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``covariance_term(z)`` of one view: a tensor (N, D) -> a 0-d tensor.

    ``hidden``, ``points``, ``raise_on_fail``: see :func:`check_invariance`.
    """
    return run_graded(covariance_term, GRADED, "covariance-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- total

_TOTAL_HINT = (
    "loss = inv_coeff * s(z1, z2) + var_coeff * (v(z1) + v(z2)) / 2 + "
    "cov_coeff * (c(z1) + c(z2)): the variance terms of the two views are averaged, "
    "the covariance terms summed, as in the official implementation."
)


def _terms(z1, z2):
    out = vicreg_loss(z1, z2, check_finite=False)
    return out["invariance"], out["variance"], out["covariance"]


_TOTAL_MISTAKES = (
    (
        lambda z1, z2, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0: (
            inv_coeff * _terms(z1, z2)[0]
            + var_coeff * 2 * _terms(z1, z2)[1]
            + cov_coeff * _terms(z1, z2)[2]
        ),
        "You summed the variance terms of the two views: average them.",
    ),
    (
        lambda z1, z2, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0: (
            inv_coeff * _terms(z1, z2)[0]
            + var_coeff * _terms(z1, z2)[1]
            + cov_coeff * _terms(z1, z2)[2] / 2
        ),
        "You averaged the covariance terms of the two views: sum them.",
    ),
)


def _total_case(name: str, z1: torch.Tensor, z2: torch.Tensor, **weights) -> Case:
    expected = vicreg_loss(z1, z2, check_finite=False, **weights)["loss"]
    return Case(
        name,
        (z1, z2),
        expected,
        kwargs=weights,
        hint=_TOTAL_HINT,
        mistakes=_TOTAL_MISTAKES,
        rtol=1e-4,
        atol=1e-4,
    )


def _total_cases() -> list[Case]:
    case = _total_case
    z1, z2 = _randn(32, 16, seed=16), _randn(32, 16, seed=17, scale=0.5)
    return [
        case("default weights 25 / 25 / 1", z1, z2),
        case(
            "only the variance term (0 / 1 / 0)",
            z1,
            z2,
            inv_coeff=0.0,
            var_coeff=1.0,
            cov_coeff=0.0,
        ),
        case(
            "only the covariance term (0 / 0 / 1)",
            z1,
            z2,
            inv_coeff=0.0,
            var_coeff=0.0,
            cov_coeff=1.0,
        ),
        case("weights 1 / 2 / 3", z1, z1 + 0.1, inv_coeff=1.0, var_coeff=2.0, cov_coeff=3.0),
    ]


def check_vicreg_total(
    vicreg_total, hidden: bool = False, points: float = 2, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``vicreg_total(z1, z2, inv_coeff=25, var_coeff=25, cov_coeff=1)``.

    Two tensors (N, D) and three weights -> a 0-d tensor. ``hidden``, ``points``,
    ``raise_on_fail``: see :func:`check_invariance`.
    """
    return run_graded(vicreg_total, GRADED, "total-check", hidden, points, raise_on_fail)


# ----------------------------------------------------------------------------- shortcut


def check_no_library_shortcut(*functions, raise_on_fail: bool = True) -> CheckResult:
    """Check that the student's functions do not call vicreg_lab's own loss.

    Looks at the names each function's code refers to: globals, attributes, names of
    enclosing scopes, and those of nested functions and lambdas.

    Parameters
    ----------
    *functions : callable
        The student's functions.
    raise_on_fail : bool, default=True

    Returns
    -------
    CheckResult
    """
    result = CheckResult("own implementation", max_points=0, n_cases=len(functions))
    for fn in functions:
        used = sorted(_names_used(getattr(fn, "__code__", None)) & set(_LIBRARY_NAMES))
        if used:
            result.failures.append(
                f"`{fn.__name__}` calls {', '.join(used)} from vicreg_lab: the exercise is to "
                "write the term yourself with torch operations."
            )
    return finish(result, raise_on_fail=raise_on_fail)


def _names_used(code) -> set[str]:
    if code is None:
        return set()
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


#: The grader's view of assignment 1: grade_id -> what scores it.
GRADED = {
    "invariance-check": Task(
        "invariance_term", cases=_invariance_cases, make=_invariance_case, concept=_INV_HINT
    ),
    "variance-check": Task(
        "variance_term", cases=_variance_cases, make=_variance_case, concept=_VAR_HINT
    ),
    "off-diagonal-check": Task(
        "off_diagonal", cases=_off_diagonal_cases, make=_off_diagonal_case, concept=_OFF_HINT
    ),
    "covariance-check": Task(
        "covariance_term", cases=_covariance_cases, make=_covariance_case, concept=_COV_HINT
    ),
    "total-check": Task("vicreg_total", cases=_total_cases, make=_total_case, concept=_TOTAL_HINT),
}
