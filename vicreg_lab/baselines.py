"""The baselines a probed embedding is compared with, and the per-latent table.

Raw voxels ("no learning"), an intensity histogram (the shortcut detector) and the same
architecture freshly initialised. :mod:`vicreg_lab.probes` re-exports every name here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from vicreg_lab.data import as_volumes, stack_images
from vicreg_lab.probes import encode, probe_table

__all__ = [
    "embeddings_with_baselines",
    "intensity_histogram_features",
    "latent_table",
    "random_init_like",
    "raw_voxel_features",
]

#: Names of the embeddings :func:`embeddings_with_baselines` returns, in order.
TRAINED = "VICReg"
RANDOM_EVAL = "random init (eval BN)"
RANDOM_RECAL = "random init (recalibrated BN)"
RAW = "raw voxels 16^3"
HISTOGRAM = "intensity histogram (16 bins)"


def raw_voxel_features(volumes, size: int = 16) -> np.ndarray:
    """The "no learning" baseline: volumes ``(N, C, D, H, W)`` average-pooled to ``size^3``.

    Returns float32 features ``(N, C * size^3)``. Adaptive average pooling keeps the
    mean intensity (exactly when ``size`` divides the volume shape).
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    x = as_volumes(volumes)
    if size > min(x.shape[2:]):
        raise ValueError(f"size={size} is larger than the volume shape {tuple(x.shape[2:])}")
    pooled = nn.functional.adaptive_avg_pool3d(x, size)
    return pooled.flatten(1).numpy().astype(np.float32, copy=False)


def intensity_histogram_features(volumes, bins: int = 16) -> np.ndarray:
    """The shortcut detector: each volume's global intensity histogram, ``(N, bins)`` float32.

    Values are the fraction of a volume's voxels in each bin; the edges span the minimum
    to the maximum over all volumes, so a scanner's brightness and contrast show. These
    features hold no anatomy: an embedding that does no better on a target may be
    reading the scanner, not the brain.
    """
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    x = as_volumes(volumes).flatten(1)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        hi = lo + 1.0
    counts = torch.zeros(len(x), bins)
    for rows in torch.arange(len(x)).split(16):  # a few volumes at a time: bounded memory
        index = ((x[rows] - lo) / (hi - lo) * bins).long().clamp_(0, bins - 1)
        counts[rows] = torch.zeros(len(rows), bins).scatter_add_(1, index, torch.ones(index.shape))
    return (counts / x.shape[1]).numpy().astype(np.float32)


def random_init_like(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``encoder`` (unwrapped from DDP), freshly initialised, in eval mode.

    The copy's own ``reset_parameters()`` is used when it has one (the project's
    encoders then draw exactly as their constructor does), else every submodule's
    (PyTorch's defaults); BatchNorm statistics are reset too. The new weights depend on
    ``seed`` only: the global RNG is left alone and ``encoder`` is not modified.
    """
    model = copy.deepcopy(getattr(encoder, "module", encoder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if callable(getattr(model, "reset_parameters", None)):
            model.reset_parameters()
        else:
            for m in model.modules():
                if callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
    return model.eval()


def embeddings_with_baselines(model, data, seed: int = 0) -> dict[str, np.ndarray]:
    """Embeddings of ``data`` by a fitted :class:`vicreg_lab.VICReg` and by every baseline.

    ``data`` is a dataset (items with an ``"image"``, or ``(image, target)``) or a tensor
    ``(N, 1, D, H, W)``, resized to the model's input size. Returns a dict with keys
    ``TRAINED``; ``RANDOM_EVAL`` and ``RANDOM_RECAL``, the trained architecture freshly
    initialised from ``seed`` (:func:`random_init_like`) with stored or recalibrated
    BatchNorm statistics; ``RAW`` (16^3 voxels, or the whole volume if it is
    smaller) and ``HISTOGRAM`` (16 bins).
    """

    volumes = _prepared_volumes(model, data)
    random_encoder = random_init_like(model.encoder_, seed=seed + 12345)
    return {
        TRAINED: model.transform(volumes),
        RANDOM_EVAL: encode(random_encoder, volumes, bn_mode="eval"),
        RANDOM_RECAL: encode(random_encoder, volumes, bn_mode="recalibrate"),
        RAW: raw_voxel_features(volumes, size=min(16, *volumes.shape[2:])),
        HISTOGRAM: intensity_histogram_features(volumes, bins=16),
    }


def _prepared_volumes(model, data, chunk: int = 16) -> torch.Tensor:
    """``model.prepare`` of every volume, chunk by chunk: the only full-size copy made."""
    is_array = torch.is_tensor(data) or isinstance(data, np.ndarray)
    source = as_volumes(data) if is_array else data
    out = None
    for start in range(0, len(source), chunk):
        stop = min(start + chunk, len(source))
        if is_array:
            x = source[start:stop]
        else:
            x = stack_images(source[i] for i in range(start, stop))
        x = model.prepare(x)
        if out is None:
            out = torch.empty(len(source), *x.shape[1:])
        out[start:stop] = x
    if out is None:
        raise ValueError("no volumes to embed: the data is empty")
    return out


def latent_table(
    embeddings: Mapping[str, np.ndarray],
    latents: pd.DataFrame,
    columns: Sequence[str] | None = None,
    cv: int = 5,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Cross-validated linear R^2 of each hidden factor from each embedding.

    ``latents`` has one numeric column per factor (e.g. ``SyntheticCohort.latents``),
    in the row order of ``embeddings``; ``columns`` picks factors (default: all); ``cv``
    and ``seeds`` are as in :func:`vicreg_lab.probes.probe_table`. Returns the mean R^2
    over seeds x folds, one row per factor plus a last row ``"mean"``, one column per
    embedding.
    """

    columns = list(latents.columns if columns is None else columns)
    missing = [c for c in columns if c not in latents.columns]
    if missing:
        raise ValueError(f"latents has no column {missing}; it has {list(latents.columns)}")
    tasks = {c: "regression" for c in columns}
    table = probe_table(embeddings, latents[columns], columns=tasks, cv=cv, seeds=seeds)
    r2 = table[(table["probe"] == "linear") & (table["metric"] == "r2")]
    pivot = r2.pivot(index="target", columns="embedding", values="mean")
    pivot = pivot.reindex(index=columns, columns=list(embeddings))
    pivot.loc["mean"] = pivot.mean()
    pivot.index.name, pivot.columns.name = "latent", None
    return pivot
