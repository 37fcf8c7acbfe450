"""Collapse diagnostics for a batch of embeddings.

Self-supervised joint-embedding methods can *collapse*: the encoder maps every
image to the same point (**complete collapse**), or to a low-dimensional
subspace of the embedding space (**dimensional collapse**). VICReg's variance
term fights the first, its covariance term the second. The functions below
measure both on a matrix of embeddings ``z`` of shape ``(N, D)`` (a torch
tensor or a numpy array); :func:`collapse_report` gathers them and gives a
verdict.

The verdict reads scale the right way. By default it is **scale-free**: a
backbone representation, or any embedding without a target scale, is judged by
the direction and rank of its spread only, so multiplying ``z`` by a positive
constant never changes it. VICReg's expander output has a scale, fixed by the
variance term (``gamma = 1``): pass ``target_std=1.0`` and a spread shrunk
towards the origin reads as the complete collapse it is.

All functions work on a detached float64 copy of ``z`` on the CPU, and return
Python floats or numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "CollapseReport",
    "collapse_report",
    "dead_dimension_fraction",
    "embedding_std",
    "mean_abs_correlation",
    "normalized_std",
    "rankme",
    "singular_values",
    "target_std_of",
]

#: A dimension whose standard deviation is below this is "dead" (absolute, for
#: :func:`dead_dimension_fraction`). :func:`collapse_report` uses it relative to a
#: scale: a dimension 1000 times below the typical (or target) std carries no
#: information.
DEAD_STD = 1e-3

#: With a target std, :func:`collapse_report` calls a complete collapse when the
#: mean std is below this fraction of it: a tenth of VICReg's gamma = 1.
COMPLETE_STD_FRACTION = 0.1

#: :func:`collapse_report` calls a complete collapse when the normalised std is
#: below this fraction of its healthy value 1/sqrt(D). Randomly initialised
#: encoders on brain volumes sit at 0.09 to 0.25 of it (all brains look alike, so
#: their features point almost the same way), hence a line well below 0.1.
COMPLETE_NORMALIZED_STD = 0.01


def embedding_std(z) -> np.ndarray:
    """Standard deviation of every embedding dimension over the batch.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.

    Returns
    -------
    numpy.ndarray of shape (D,)
        Unbiased standard deviations (divided by ``N - 1``), as in the variance
        term of the VICReg loss.

    Examples
    --------
    >>> import numpy as np
    >>> embedding_std(np.array([[0.0, 1.0], [2.0, 1.0]]))
    array([1.41421356, 0.        ])
    """
    return _std(_as_embeddings(z)).numpy()


def normalized_std(z) -> float:
    """Mean standard deviation of the L2-normalised embeddings.

    Dividing each embedding by its norm removes the scale, so that this number
    can be compared between models. Embeddings spread uniformly on the sphere
    give about ``1 / sqrt(D)``; a complete collapse (all embeddings pointing the
    same way) gives 0.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.

    Returns
    -------
    float
        ``mean_d std_n(z_nd / ||z_n||)``. Rows of norm 0 are left at 0.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(2000, 16))
    >>> round(normalized_std(z) * 4, 1)  # times sqrt(D)
    1.0
    """
    z = _as_embeddings(z)
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    unit = z / torch.where(norms > 0, norms, torch.ones_like(norms))
    return float(_std(unit).mean())


def singular_values(z, center: bool = True) -> np.ndarray:
    """Singular values of the (centred) embedding matrix, in decreasing order.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.
    center : bool, default=True
        Subtract the mean embedding first. The spectrum then describes the
        spread of the embeddings, which is what the VICReg loss regularises; a
        constant offset would otherwise add one large singular value.

    Returns
    -------
    numpy.ndarray of shape (min(N, D),)
        ``sigma_1 >= sigma_2 >= ... >= 0``. Centred embeddings have rank at most
        ``N - 1``, so the last value is then (numerically) 0 when ``N <= D``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    >>> singular_values(z)
    array([1.41421356, 0.        ])
    """
    z = _as_embeddings(z)
    if center:
        z = z - z.mean(dim=0)
    return torch.linalg.svdvals(z).numpy()


def rankme(z, center: bool = True, eps: float = 1e-7) -> float:
    r"""RankMe, the effective rank of the embeddings (Garrido et al., ICML 2023).

    With ``sigma_k`` the singular values of the embedding matrix,

    .. math::

        p_k = \sigma_k / \sum_j \sigma_j + \epsilon, \qquad
        \mathrm{RankMe} = \exp\big(-\sum_k p_k \log p_k\big)

    It lies between 1 (one direction) and ``min(N, D)`` (all singular values
    equal), and is close to ``k`` when the embeddings fill a ``k``-dimensional
    subspace evenly.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.
    center : bool, default=True
        Use the singular values of the **centred** embeddings (our default).
        The paper uses those of the raw embeddings (``center=False``); but the
        mean embedding then counts as one more direction, and a large offset,
        which says nothing about collapse, dominates the spectrum and pulls
        RankMe towards 1. Centring also matches what VICReg's variance and
        covariance terms look at. Centred embeddings have rank at most
        ``N - 1``, so compare RankMe to ``min(N - 1, D)``.
    eps : float, default=1e-7
        Added to every ``p_k`` so that the logarithm of a zero singular value is
        finite (the value of the paper).

    Returns
    -------
    float
        The effective rank. A batch of identical embeddings gives 1.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(1000, 3)) @ rng.normal(size=(3, 32))  # rank 3 in 32 dims
    >>> 2.5 < rankme(z) <= 3.0
    True
    """
    sigma = torch.from_numpy(singular_values(z, center=center))
    total = sigma.sum()
    p = sigma / total.clamp_min(torch.finfo(sigma.dtype).tiny) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def dead_dimension_fraction(z, threshold: float = DEAD_STD) -> float:
    """Fraction of embedding dimensions whose standard deviation is below ``threshold``.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.
    threshold : float, default=1e-3
        Absolute standard deviation under which a dimension is dead. The default
        suits VICReg embeddings, whose standard deviations the loss pushes
        towards ``gamma = 1``; rescale it for embeddings of another scale.

    Returns
    -------
    float
        In ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(100, 4))
    >>> z[:, 0] = 5.0
    >>> dead_dimension_fraction(z)
    0.25
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    return float((_std(_as_embeddings(z)) < threshold).double().mean())


def mean_abs_correlation(z, block_size: int = 1024) -> float:
    """Mean absolute Pearson correlation between pairs of distinct dimensions.

    Near 0 for decorrelated dimensions (what VICReg's covariance term asks
    for), near 1 when the dimensions are copies of each other.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``.
    block_size : int, default=1024
        The ``D x D`` correlation matrix is computed ``block_size`` rows at a
        time, to bound memory for large ``D``.

    Returns
    -------
    float
        Mean of ``|corr(z_i, z_j)|`` over the pairs ``i != j`` of dimensions
        that are not constant. Constant dimensions have no defined correlation:
        they are left out (no NaN). 0.0 if fewer than two dimensions vary.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 1))
    >>> round(mean_abs_correlation(np.hstack([x, -2 * x, np.ones((50, 1))])), 6)
    1.0
    """
    z = _as_embeddings(z)
    n = z.shape[0]
    z = z - z.mean(dim=0)
    std = _std(z)
    z = z[:, std > 0] / std[std > 0]  # standardised varying dimensions
    d = z.shape[1]
    if d < 2:
        return 0.0
    total = 0.0
    for start in range(0, d, block_size):
        corr = z[:, start : start + block_size].T @ z / (n - 1)  # rows start.. of the D x D matrix
        total += float(corr.abs().sum() - corr.diagonal(offset=start).abs().sum())
    return min(total / (d * (d - 1)), 1.0)


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class CollapseReport(Mapping):
    """Collapse diagnostics of a batch of embeddings; see :func:`collapse_report`.

    Read a field as an attribute (``report.verdict``) or as a key
    (``report["verdict"]``); ``report.to_dict()`` or ``dict(report)`` gives a dict.
    """

    n_samples: int
    n_dims: int
    mean_std: float
    normalized_std: float
    rankme: float
    rankme_fraction: float
    dead_fraction: float
    mean_abs_correlation: float
    scale: str
    verdict: str

    @property
    def target_std(self) -> float | None:
        """The target std the verdict used, or None for the scale-free verdict."""
        return target_std_of(self.scale)

    def to_dict(self) -> dict:
        """The fields as a plain dict (e.g. one row of a pandas DataFrame)."""
        return asdict(self)

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(f"{key!r}; a CollapseReport has {list(self.__dataclass_fields__)}")
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def target_std_of(scale: str) -> float | None:
    """The target std named by a report's ``scale`` field (None for ``"free"``).

    Examples
    --------
    >>> target_std_of("free"), target_std_of("target_std=1")
    (None, 1.0)
    """
    if scale == "free":
        return None
    name, _, value = scale.partition("=")
    if name != "target_std":
        raise ValueError(f"scale must be 'free' or 'target_std=<number>', got {scale!r}")
    return float(value)


def collapse_report(
    z,
    target_std: float | None = None,
    *,
    complete_std_fraction: float = COMPLETE_STD_FRACTION,
    complete_normalized_std: float = COMPLETE_NORMALIZED_STD,
    dead_threshold: float = DEAD_STD,
    dimensional_rank_fraction: float = 0.25,
    dimensional_dead_fraction: float = 0.5,
) -> CollapseReport:
    """All collapse diagnostics of a batch of embeddings, and a verdict.

    Parameters
    ----------
    z : torch.Tensor or numpy.ndarray of shape (N, D)
        Embeddings, ``N >= 2``. Use a few hundred embeddings or more: with small
        ``N`` every estimate is noisy.
    target_std : float, optional
        The std every dimension should have, when something fixes it: ``1.0`` (VICReg's
        ``gamma``) for the expander output. Then a mean std below
        ``complete_std_fraction * target_std`` is a complete collapse (the variance
        hinge ``relu(1 - std)`` is above 90 % of its maximum), and dead dimensions are
        judged against ``target_std``. Leave it None (the default) for a backbone
        representation or any embedding of arbitrary scale: the verdict is then
        scale-free, and dead dimensions are judged against the mean std of ``z``.
    complete_std_fraction : float, default=0.1
        See ``target_std``; unused without it.
    complete_normalized_std : float, default=0.01
        Complete collapse when the normalised std is below
        ``complete_normalized_std / sqrt(D)``, a hundredth of its healthy value: the
        embeddings all point the same way, whatever their scale. (A randomly
        initialised encoder on brain volumes sits at 0.09 to 0.25 of the healthy value.)
    dead_threshold : float, default=1e-3
        A dimension is dead when its std is below ``dead_threshold`` times the scale
        (``target_std``, else the mean std of ``z``).
    dimensional_rank_fraction : float, default=0.25
        Dimensional collapse when RankMe is below this fraction of its maximum
        ``min(N - 1, D)``.
    dimensional_dead_fraction : float, default=0.5
        Dimensional collapse when more than this fraction of the dimensions are dead.

    Returns
    -------
    CollapseReport
        A frozen dataclass (``.to_dict()`` gives a dict; ``report["verdict"]`` works
        too) with

        - ``n_samples``, ``n_dims``: ``N`` and ``D``;
        - ``mean_std``: mean over dimensions of :func:`embedding_std`;
        - ``normalized_std``: :func:`normalized_std`, healthy near ``1/sqrt(D)``;
        - ``rankme``: :func:`rankme` of the centred embeddings;
        - ``rankme_fraction``: ``rankme / min(N - 1, D)``, in ``(0, 1]``;
        - ``dead_fraction``: fraction of dead dimensions (see ``dead_threshold``);
        - ``mean_abs_correlation``: :func:`mean_abs_correlation`;
        - ``scale``: ``"free"``, or ``"target_std=1"`` for ``target_std=1.0``
          (``report.target_std`` gives the number, or None);
        - ``verdict``: the first of these rules that applies:

          1. ``"complete collapse"`` if
             ``normalized_std < complete_normalized_std / sqrt(D)``, or, with a
             target, ``mean_std < complete_std_fraction * target_std``;
          2. ``"dimensional collapse"`` if
             ``rankme_fraction < dimensional_rank_fraction`` or
             ``dead_fraction > dimensional_dead_fraction``;
          3. ``"healthy"`` otherwise.

    Notes
    -----
    The thresholds are rules of thumb for teaching, not statistical tests. Without a
    target, the verdict does not change when ``z`` is multiplied by a positive
    constant. With ``target_std=1.0``, an expander trained without the variance term
    reads "complete collapse" once its std falls below 0.1, even while its normalised
    std still looks healthy (its embeddings shrink towards the origin in every
    direction; :mod:`vicreg_lab.lab.toy` shows it within a few dozen steps).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(512, 32))
    >>> collapse_report(z).verdict, collapse_report(1e-3 * z).verdict
    ('healthy', 'healthy')
    >>> collapse_report(1e-3 * z, target_std=1.0).verdict  # an expander shrunk to 0
    'complete collapse'
    >>> collapse_report(np.ones((512, 32)) + 1e-6 * z).verdict
    'complete collapse'
    >>> collapse_report(rng.normal(size=(512, 2)) @ rng.normal(size=(2, 32))).verdict
    'dimensional collapse'
    """
    if target_std is not None and not (math.isfinite(target_std) and target_std > 0):
        raise ValueError(f"target_std must be a positive number or None, got {target_std!r}")
    z = _as_embeddings(z)
    n, d = z.shape
    std = _std(z)
    mean_std = float(std.mean())
    if target_std is None:
        scale, reference = "free", mean_std
    else:  # the shortest exact spelling: "target_std=1", "target_std=0.25"
        scale, reference = f"target_std={float(target_std)!r}".removesuffix(".0"), target_std
    report = {
        "n_samples": n,
        "n_dims": d,
        "mean_std": mean_std,
        "normalized_std": normalized_std(z),
        "rankme": rankme(z),
        # "<=": at reference 0 (constant z) every dimension is dead
        "dead_fraction": float((std <= dead_threshold * reference).double().mean()),
        "mean_abs_correlation": mean_abs_correlation(z),
        "scale": scale,
    }
    report["rankme_fraction"] = report["rankme"] / min(n - 1, d)
    shrunk = target_std is not None and mean_std < complete_std_fraction * target_std
    if shrunk or report["normalized_std"] < complete_normalized_std / math.sqrt(d):
        verdict = "complete collapse"
    elif (
        report["rankme_fraction"] < dimensional_rank_fraction
        or report["dead_fraction"] > dimensional_dead_fraction
    ):
        verdict = "dimensional collapse"
    else:
        verdict = "healthy"
    return CollapseReport(**report, verdict=verdict)


# ----------------------------------------------------------------------------- helpers


def _as_embeddings(z, name: str = "z") -> torch.Tensor:
    """Check ``z`` and return it as a detached float64 CPU tensor of shape (N, D)."""
    if isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float64)
    else:
        try:
            z = torch.from_numpy(np.asarray(z, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name} must be a torch tensor or numpy array of shape (N, D), "
                f"got {type(z).__name__} that cannot be converted to numbers"
            ) from error
    if z.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (N, D) = (samples, embedding dim), "
            f"got shape {tuple(z.shape)}"
        )
    if z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(
            f"{name} needs at least 2 samples and 1 dimension, got shape {tuple(z.shape)}"
        )
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return z


def _std(z: torch.Tensor) -> torch.Tensor:
    """Unbiased per-dimension standard deviation."""
    return z.std(dim=0, correction=1)
