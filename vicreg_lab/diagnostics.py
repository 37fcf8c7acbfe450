"""Collapse diagnostics for embeddings ``z`` (tensor or array ``(N, D)``; run in float64 on CPU).

An encoder collapses completely (every image maps to one point: VICReg's variance term
fights it) or dimensionally (onto a subspace: the covariance term fights it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "CollapseReport",
    "batch_statistics_pass",
    "collapse_report",
    "dead_dimension_fraction",
    "embedding_std",
    "mean_abs_correlation",
    "normalized_std",
    "rankme",
    "singular_values",
    "target_std_of",
    "training_collapse",
]

#: Std below which a dimension is dead (absolute, or relative to the scale in a report).
DEAD_STD = 1e-3
#: With a target std, a mean std below this fraction of it is a complete collapse.
COMPLETE_STD_FRACTION = 0.1
#: Normalised std below this fraction of a healthy 1/sqrt(D): complete collapse (random-init
#: encoders on brains, which all look alike, sit at 0.09 to 0.25 of it).
COMPLETE_NORMALIZED_STD = 0.01


def embedding_std(z) -> np.ndarray:
    """Unbiased standard deviation of every dimension, as in VICReg's variance term."""
    return _as_embeddings(z).std(dim=0).numpy()


def normalized_std(z) -> float:
    """Mean std of the L2-normalised rows: scale-free, ~1/sqrt(D) if spread, 0 if collapsed."""
    z = _as_embeddings(z)
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    unit = z / torch.where(norms > 0, norms, torch.ones_like(norms))
    return float(unit.std(dim=0).mean())


def singular_values(z, center: bool = True) -> np.ndarray:
    """Singular values of ``z`` (centred by default), in decreasing order."""
    z = _as_embeddings(z)
    return torch.linalg.svdvals(z - z.mean(dim=0) if center else z).numpy()


def rankme(z, center: bool = True, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): ``exp(-sum p log p)``, ``p_k = sigma_k / sum(sigma) + eps``.

    1 for one direction, ~k for k equal ones. ``center`` (unlike the paper) keeps a mean
    offset from pulling it to 1; the rank is then at most ``min(N - 1, D)``.
    """
    sigma = torch.from_numpy(singular_values(z, center=center))
    p = sigma / sigma.sum().clamp_min(torch.finfo(sigma.dtype).tiny) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def dead_dimension_fraction(z, threshold: float = DEAD_STD) -> float:
    """Fraction of dimensions whose std is below the absolute ``threshold``."""
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    return float((_as_embeddings(z).std(dim=0) < threshold).double().mean())


def mean_abs_correlation(z, block_size: int = 1024) -> float:
    """Mean ``|corr|`` over pairs of distinct varying dimensions (0.0 if < 2), by row blocks."""
    z = _as_embeddings(z)
    z = z - z.mean(dim=0)
    std = z.std(dim=0)
    z = z[:, std > 0] / std[std > 0]
    (n, d), total = z.shape, 0.0
    if d < 2:
        return 0.0
    for start in range(0, d, block_size):
        corr = z[:, start : start + block_size].T @ z / (n - 1)
        total += float(corr.abs().sum() - corr.diagonal(offset=start).abs().sum())
    return min(total / (d * (d - 1)), 1.0)


@dataclass(frozen=True)
class CollapseReport(Mapping):
    """Result of :func:`collapse_report`; fields read as attributes or keys."""

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
        """The fields as a plain dict."""
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
    """The target std a ``scale`` names: ``"target_std=1"`` -> 1.0, ``"free"`` -> None."""
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
    """All collapse diagnostics of ``z`` (a few hundred rows or more) and a verdict.

    ``target_std``: the std something fixes (1.0 for VICReg's expander), None for a scale-free
    verdict. A dimension is dead if its std <= ``dead_threshold`` x ``target_std`` (else x the
    mean std). Verdict, first match wins: ``"complete collapse"`` if ``normalized_std <
    complete_normalized_std / sqrt(D)`` or ``mean_std < complete_std_fraction * target_std``;
    ``"dimensional collapse"`` if ``rankme_fraction`` (RankMe / ``min(N - 1, D)``) ``<
    dimensional_rank_fraction`` or ``dead_fraction > dimensional_dead_fraction``; else healthy.
    """
    if target_std is not None and not (math.isfinite(target_std) and target_std > 0):
        raise ValueError(f"target_std must be a positive number or None, got {target_std!r}")
    z = _as_embeddings(z)
    (n, d), std = z.shape, z.std(dim=0)
    mean_std, norm_std, rank = float(std.mean()), normalized_std(z), rankme(z)
    if target_std is None:
        scale, reference = "free", mean_std
    else:  # the shortest exact spelling: "target_std=1", "target_std=0.25"
        scale, reference = f"target_std={float(target_std)!r}".removesuffix(".0"), target_std
    dead = float((std <= dead_threshold * reference).double().mean())  # constant z: all dead
    rank_fraction = rank / min(n - 1, d)
    shrunk = target_std is not None and mean_std < complete_std_fraction * target_std
    if shrunk or norm_std < complete_normalized_std / math.sqrt(d):
        verdict = "complete collapse"
    elif rank_fraction < dimensional_rank_fraction or dead > dimensional_dead_fraction:
        verdict = "dimensional collapse"
    else:
        verdict = "healthy"
    fields = (n, d, mean_std, norm_std, rank, rank_fraction, dead, mean_abs_correlation(z), scale)
    return CollapseReport(*fields, verdict=verdict)


@torch.no_grad()
def batch_statistics_pass(encoder: nn.Module, expander: nn.Module, x: torch.Tensor):
    """The representation and the embeddings of a batch ``x`` in the middle of training:
    BatchNorm on the batch's statistics, on throw-away copies. Early in a run BatchNorm's
    running statistics lag far behind the weights, and eval mode would show a fake collapse.
    (SyncBatchNorm would synchronise across processes: eval mode there.)"""
    synced = any(isinstance(m, nn.SyncBatchNorm) for m in encoder.modules())
    if not synced:
        encoder, expander = copy.deepcopy(encoder), copy.deepcopy(expander)
    encoder.train(not synced)
    expander.train(not synced)
    representation = encoder(x).float()
    return representation, expander(representation).float()


def training_collapse(encoder: nn.Module, expander: nn.Module, x: torch.Tensor) -> dict:
    """The collapse reports of a batch ``x`` during training (:func:`batch_statistics_pass`),
    as plain numbers a checkpoint can hold: ``"collapse"`` of the representation (scale-free)
    and ``"collapse_expander"`` of the embeddings (target std 1, as in the variance term)."""
    representation, embedding = batch_statistics_pass(encoder, expander, x)
    reports = {
        "collapse": collapse_report(representation),
        "collapse_expander": collapse_report(embedding, target_std=1.0),
    }
    return {
        key: {k: v if isinstance(v, str) else float(v) for k, v in report.items()}
        for key, report in reports.items()
    }


def _as_embeddings(z) -> torch.Tensor:
    """``z`` as a detached float64 CPU tensor (N >= 2, D >= 1, all finite), or a clear error."""
    try:
        z = z if torch.is_tensor(z) else torch.from_numpy(np.asarray(z, dtype=np.float64))
    except (TypeError, ValueError) as error:
        message = f"z must be a tensor or array (N, D); a {type(z).__name__} cannot be converted"
        raise ValueError(message) from error
    z = z.detach().to("cpu", torch.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
        shape = tuple(z.shape)
        raise ValueError(f"z must be 2-D with shape (N, D), N >= 2 and D >= 1, got shape {shape}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or infinite values")
    return z
