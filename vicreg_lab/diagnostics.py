"""Collapse diagnostics for a batch of embeddings ``z`` (tensor or array, shape ``(N, D)``).

An encoder collapses completely (every image maps to one point: VICReg's variance term
fights it) or dimensionally (onto a low-dimensional subspace: the covariance term).
:func:`collapse_report` gathers the measures below and gives a verdict, scale-free
unless a ``target_std`` is given (``1.0`` for VICReg's expander output, whose scale
the variance term fixes). Everything runs on a detached float64 CPU copy.
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

#: Std below which a dimension is dead: absolute in :func:`dead_dimension_fraction`,
#: relative to the scale (target or mean std) in :func:`collapse_report`.
DEAD_STD = 1e-3

#: With a target std, a mean std below this fraction of it is a complete collapse.
COMPLETE_STD_FRACTION = 0.1

#: A normalised std below this fraction of its healthy value 1/sqrt(D) is a complete
#: collapse. Random-init encoders on brain volumes sit at 0.09 to 0.25 of it (all
#: brains look alike), hence a line well below 0.1.
COMPLETE_NORMALIZED_STD = 0.01


def embedding_std(z) -> np.ndarray:
    """Unbiased standard deviation of every dimension, as in VICReg's variance term."""
    return _std(_as_embeddings(z)).numpy()


def normalized_std(z) -> float:
    """Mean standard deviation of the L2-normalised embeddings (rows of norm 0 stay 0).

    Scale-free, so comparable between models: about ``1 / sqrt(D)`` for embeddings
    spread uniformly on the sphere, 0 when they all point the same way.
    """
    z = _as_embeddings(z)
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    unit = z / torch.where(norms > 0, norms, torch.ones_like(norms))
    return float(_std(unit).mean())


def singular_values(z, center: bool = True) -> np.ndarray:
    """Singular values of the embedding matrix, in decreasing order, shape ``(min(N, D),)``.

    ``center=True`` subtracts the mean embedding first, so the spectrum describes the
    spread that the VICReg loss regularises rather than a constant offset.
    """
    z = _as_embeddings(z)
    if center:
        z = z - z.mean(dim=0)
    return torch.linalg.svdvals(z).numpy()


def rankme(z, center: bool = True, eps: float = 1e-7) -> float:
    r"""RankMe, the effective rank of the embeddings (Garrido et al., ICML 2023).

    With ``p_k = sigma_k / sum_j sigma_j + eps``, RankMe is ``exp(-sum_k p_k log p_k)``:
    1 for one direction, close to ``k`` for a ``k``-dimensional subspace filled evenly.

    Parameters
    ----------
    z : tensor or array (N, D)
    center : bool
        Use the centred embeddings (unlike the paper): otherwise a large mean offset,
        which says nothing about collapse, dominates the spectrum and pulls RankMe to 1.
        Centred embeddings have rank at most ``N - 1``: compare to ``min(N - 1, D)``.
    eps : float
        Keeps the logarithm of a zero singular value finite (the paper's value).

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
    """Fraction of dimensions whose std is below the absolute ``threshold``.

    The default suits VICReg embeddings (std pushed towards 1); rescale it otherwise.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    return float((_std(_as_embeddings(z)) < threshold).double().mean())


def mean_abs_correlation(z, block_size: int = 1024) -> float:
    """Mean ``|corr(z_i, z_j)|`` over pairs of distinct, non-constant dimensions.

    Near 0 for decorrelated dimensions (VICReg's covariance term), near 1 for copies;
    0.0 if fewer than two dimensions vary. The ``D x D`` correlation matrix is built
    ``block_size`` rows at a time to bound memory.

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
    z = z[:, std > 0] / std[std > 0]
    d = z.shape[1]
    if d < 2:
        return 0.0
    total = 0.0
    for start in range(0, d, block_size):
        corr = z[:, start : start + block_size].T @ z / (n - 1)
        total += float(corr.abs().sum() - corr.diagonal(offset=start).abs().sum())
    return min(total / (d * (d - 1)), 1.0)


@dataclass(frozen=True)
class CollapseReport(Mapping):
    """Collapse diagnostics of a batch of embeddings; see :func:`collapse_report`.

    Fields read as attributes or keys (``report["verdict"]``); ``dict(report)`` works.
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
        """The fields as a plain dict (e.g. one row of a DataFrame)."""
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
    """The target std a report's ``scale`` names: ``"target_std=1"`` -> 1.0, ``"free"`` -> None."""
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

    The verdict is the first rule that applies (rules of thumb for teaching, not tests):
    ``"complete collapse"`` if ``normalized_std < complete_normalized_std / sqrt(D)`` or,
    with a target, ``mean_std < complete_std_fraction * target_std``; else
    ``"dimensional collapse"`` if ``rankme_fraction < dimensional_rank_fraction`` or
    ``dead_fraction > dimensional_dead_fraction``; else ``"healthy"``.

    Parameters
    ----------
    z : tensor or array (N, D)
        A few hundred embeddings or more: with small ``N`` every estimate is noisy.
    target_std : float, optional
        The std a dimension should have when something fixes it: ``1.0`` for VICReg's
        expander output. None (a backbone, any arbitrary scale): scale-free verdict.
    dead_threshold : float
        A dimension is dead when its std is at most this times the scale
        (``target_std``, else the mean std of ``z``).

    Returns
    -------
    CollapseReport
        ``rankme`` is that of the centred embeddings, ``rankme_fraction`` relative to
        ``min(N - 1, D)``; ``scale`` is ``"free"`` or e.g. ``"target_std=1"``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(512, 32))
    >>> collapse_report(z).verdict, collapse_report(1e-3 * z).verdict
    ('healthy', 'healthy')
    >>> collapse_report(1e-3 * z, target_std=1.0).verdict  # an expander shrunk to 0
    'complete collapse'
    """
    if target_std is not None and not (math.isfinite(target_std) and target_std > 0):
        raise ValueError(f"target_std must be a positive number or None, got {target_std!r}")
    r = _measures(_as_embeddings(z), target_std, dead_threshold)
    shrunk = target_std is not None and r["mean_std"] < complete_std_fraction * target_std
    if shrunk or r["normalized_std"] < complete_normalized_std / math.sqrt(r["n_dims"]):
        verdict = "complete collapse"
    elif (
        r["rankme_fraction"] < dimensional_rank_fraction
        or r["dead_fraction"] > dimensional_dead_fraction
    ):
        verdict = "dimensional collapse"
    else:
        verdict = "healthy"
    return CollapseReport(**r, verdict=verdict)


def _measures(z: torch.Tensor, target_std: float | None, dead_threshold: float) -> dict:
    """Every field of a :class:`CollapseReport` but the verdict."""
    n, d = z.shape
    std = _std(z)
    mean_std = float(std.mean())
    if target_std is None:
        scale, reference = "free", mean_std
    else:  # the shortest exact spelling: "target_std=1", "target_std=0.25"
        scale, reference = f"target_std={float(target_std)!r}".removesuffix(".0"), target_std
    rank = rankme(z)
    return {
        "n_samples": n,
        "n_dims": d,
        "mean_std": mean_std,
        "normalized_std": normalized_std(z),
        "rankme": rank,
        "rankme_fraction": rank / min(n - 1, d),
        # "<=": at reference 0 (constant z) every dimension is dead
        "dead_fraction": float((std <= dead_threshold * reference).double().mean()),
        "mean_abs_correlation": mean_abs_correlation(z),
        "scale": scale,
    }


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
