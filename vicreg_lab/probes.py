"""Linear and kNN probes on frozen embeddings, and the encoding that feeds them.

A probe asks whether a target (age, site, sex) is linearly (or locally) readable from a
representation; scalers and models see the training folds only. The baselines to compare
with live in :mod:`vicreg_lab.baselines`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score
from sklearn.model_selection import KFold, LeaveOneGroupOut, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from vicreg_lab.data import as_volumes, image_of

__all__ = ["encode", "probe", "probe_table", "recalibrate_batchnorm"]

TASKS = ("regression", "classification")
DEFAULT_COLUMNS = {"age": "regression", "site": "classification", "sex": "classification"}
RIDGE_ALPHAS = np.logspace(-3, 5, 17)
TABLE_COLUMNS = ["embedding", "target", "probe", "metric", "mean", "sd", "n_splits", "chance"]
_METRICS = {
    "regression": {"r2": r2_score, "mae": mean_absolute_error},
    "classification": {"balanced_accuracy": balanced_accuracy_score},
}


def probe(
    X,
    y,
    task: str = "regression",
    cv: int = 5,
    seed: int = 0,
    n_neighbors: int | None = None,
    groups=None,
) -> list[dict]:
    """Cross-validated linear and kNN probes of one target, on standardised features.

    Regression: ``RidgeCV`` (alpha in ``RIDGE_ALPHAS``, by leave-one-out) and kNN on ``cv``
    shuffled folds, scored by R^2 and MAE. Classification: logistic regression (``C=1``) and
    kNN on ``cv`` shuffled stratified folds (fewer, with a warning, if a class is smaller),
    scored by balanced accuracy. ``seed`` seeds the split; ``n_neighbors`` defaults to
    ``round(sqrt(n_train))`` clipped to [5, 50]. ``groups`` (one per sample, e.g. the site)
    makes leave-one-group-out folds instead: each scored on a group the probe never saw.

    Returns one dict per (probe, metric): ``mean`` and ``sd`` (ddof=1) over the folds,
    ``n_splits`` and ``chance`` (1/n_classes; 0 for R^2; for MAE, predicting the training mean).
    """
    return _probe_rows(X, y, task, cv, (seed,), n_neighbors, groups)


def probe_table(
    embeddings: Mapping[str, np.ndarray],
    targets: pd.DataFrame | Mapping[str, Sequence],
    columns: Mapping[str, str] | None = None,
    cv: int = 5,
    seeds: Sequence[int] = (0,),
    n_neighbors: int | None = None,
    groups: str | None = None,
) -> pd.DataFrame:
    """:func:`probe` every embedding on every target: a tidy table, one row per
    (embedding, target, probe, metric), with columns ``TABLE_COLUMNS``.

    ``embeddings`` maps names to arrays (N, F) in the row order of ``targets``. ``columns``
    maps targets to tasks (default: the ``DEFAULT_COLUMNS`` present). Each of ``seeds``
    gives one split; ``mean``, ``sd`` and ``n_splits`` pool their folds. ``groups`` names a
    column (not probed) for leave-one-group-out folds (one split: the first seed's).
    """
    if not embeddings:
        raise ValueError("embeddings is empty; pass a dict name -> array (N, F)")
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one seed, e.g. (0,)")
    targets = pd.DataFrame(targets)
    columns = _probe_columns(targets, columns, groups)
    seeds = [int(seed) for seed in seeds]
    group_values = None
    if groups is not None:
        seeds, group_values = seeds[:1], targets[groups].to_numpy()  # leave-one-group-out: 1 split
    rows = []
    for name, X in embeddings.items():
        if len(X) != len(targets):
            raise ValueError(f"embedding {name!r} has {len(X)} rows but targets has {len(targets)}")
        for target, task in columns.items():
            y = targets[target].to_numpy()
            probed = _probe_rows(X, y, task, cv, seeds, n_neighbors, group_values)
            rows += [{"embedding": name, "target": target, **row} for row in probed]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _probe_columns(targets: pd.DataFrame, columns: Mapping | None, groups: str | None) -> dict:
    """The ``{target: task}`` to probe, checked against ``targets`` and ``groups``."""
    have = list(targets.columns)
    if columns is None:
        columns = {c: t for c, t in DEFAULT_COLUMNS.items() if c in have}
        if not columns:
            raise ValueError(
                f"targets has none of the default columns {list(DEFAULT_COLUMNS)}; "
                f"it has {have}: pass columns={{name: task}}"
            )
    if missing := [c for c in [*columns, groups] if c is not None and c not in have]:
        raise ValueError(f"targets has no column {missing} (columns or groups); it has {have}")
    if bad_tasks := {c: t for c, t in columns.items() if t not in TASKS}:
        raise ValueError(f"unknown tasks {bad_tasks}; each task must be one of {TASKS}")
    if groups is not None and groups in columns:
        raise ValueError(f"groups {groups!r} cannot be probed (each test fold: a class never seen)")
    return columns


def _check_inputs(X, y, task: str, cv: int, groups) -> tuple:
    """``X`` (float64), ``y`` (float64 for regression) and ``groups`` as arrays, checked."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(cv, int | np.integer) or cv < 2:
        raise ValueError(f"cv must be an int >= 2, got {cv!r}")
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be a numeric array (N, F), got shape {X.shape} ({X.dtype})")
    X = X.astype(np.float64)
    if n_bad := int((~np.isfinite(X)).sum()):
        raise ValueError(f"X has {n_bad} NaN or infinite values; embeddings must be finite")
    if len(X) < 2 * cv:  # at least 2 samples per test fold
        raise ValueError(f"too few samples for cv={cv}: N={len(X)}, need N >= 2 * cv = {2 * cv}")
    y = _one_per_sample(y, len(X), "y")
    if task == "regression" and not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"regression needs a numeric y, got dtype {y.dtype}")
    if groups is not None:
        groups = _one_per_sample(groups, len(X), "groups")
        if len(np.unique(groups)) < 2:
            raise ValueError("groups needs at least 2 distinct groups")
    return X, (y.astype(np.float64) if task == "regression" else y), groups


def _one_per_sample(values, n: int, name: str) -> np.ndarray:
    """``values`` as an array with one value per sample and none missing, or a clear error."""
    values = np.asarray(values)
    missing = int(pd.isna(values).sum())
    if values.shape != (n,) or missing:
        raise ValueError(
            f"{name} needs one value per sample ({n}), got shape {values.shape}, {missing} missing"
        )
    return values


def _probe_rows(X, y, task: str, cv: int, seeds: Sequence, n_neighbors, groups) -> list[dict]:
    """Check the inputs, then fit and score both probes on every fold of every seed's split;
    one row per (probe, metric)."""
    X, y, groups = _check_inputs(X, y, task, cv, groups)
    scores: dict[tuple[str, str], list[float]] = {}
    chances = []
    for seed in seeds:
        if groups is not None:
            folds = LeaveOneGroupOut()
        elif task == "classification":
            folds = StratifiedKFold(_classification_folds(y, cv), shuffle=True, random_state=seed)
        else:
            folds = KFold(cv, shuffle=True, random_state=seed)
        maes_of_mean = []  # MAE of predicting the training mean: the regression chance level
        for train, test in folds.split(X, y, groups):
            k = min(n_neighbors or int(np.clip(round(np.sqrt(len(train))), 5, 50)), len(train))
            for name, model in _models(task, k).items():
                fitted = make_pipeline(StandardScaler(), model).fit(X[train], y[train])
                pred = fitted.predict(X[test])
                for metric, score in _METRICS[task].items():
                    scores.setdefault((name, metric), []).append(float(score(y[test], pred)))
            if task == "regression":
                maes_of_mean.append(float(np.abs(y[test] - y[train].mean()).mean()))
        if task == "classification":
            chances.append({"balanced_accuracy": 1.0 / len(np.unique(y))})
        else:
            chances.append({"r2": 0.0, "mae": float(np.mean(maes_of_mean))})
    chance = {m: float(np.mean([c[m] for c in chances])) for m in chances[0]}
    rows = [
        (name, metric, float(np.mean(v)), float(np.std(v, ddof=1)), len(v), chance[metric])
        for (name, metric), v in scores.items()
    ]
    return [dict(zip(TABLE_COLUMNS[2:], row, strict=True)) for row in rows]


def _models(task: str, k: int) -> dict:
    """The unfitted ``linear`` and ``knn`` probes of a task."""
    if task == "classification":
        return {"linear": LogisticRegression(max_iter=2000), "knn": KNeighborsClassifier(k)}
    return {"linear": RidgeCV(alphas=RIDGE_ALPHAS), "knn": KNeighborsRegressor(k)}


def _classification_folds(y: np.ndarray, cv: int) -> int:
    """``cv``, or fewer folds (with a warning) so that every class is in every test fold."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least 2 classes, y has only {classes.tolist()}")
    if (smallest := int(counts.min())) < 2:
        raise ValueError(
            f"classes {classes[counts < 2].tolist()} have a single member; stratified folds "
            "need 2 or more: drop or merge them"
        )
    if smallest < cv:
        rare = classes.tolist()[counts.argmin()]
        message = f"smallest class ({rare!r}) has {smallest} members, fewer than cv={cv}"
        warnings.warn(f"{message}; using {smallest} folds", stacklevel=4)  # the caller's line
    return min(smallest, cv)


def encode(
    encoder: nn.Module,
    volumes_or_loader,
    batch_size: int = 32,
    device=None,
    bn_mode: str = "eval",
    features: bool = False,
) -> np.ndarray:
    """Embeddings ``(N, F)``, float32, of a frozen encoder (eval mode, no grad, unmodified);
    with ``features=True`` its feature maps ``(N, F, d, h, w)`` (``encoder.forward_features``).

    ``volumes_or_loader``: volumes (N, C, D, H, W), cut in ``batch_size`` batches, or a
    loader of tensors, tuples (volumes first) or dicts with ``"image"``. ``device``
    defaults to the encoder's. ``bn_mode="recalibrate"`` re-estimates BatchNorm statistics
    on these data first: the fair way to report a random-init encoder, whose stored
    statistics (mean 0, var 1) fit no real activations.
    """
    if bn_mode not in ("eval", "recalibrate"):
        raise ValueError(f"bn_mode must be 'eval' or 'recalibrate', got {bn_mode!r}")
    if features and not callable(getattr(encoder, "forward_features", None)):
        raise ValueError(f"{type(encoder).__name__} has no forward_features(x)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if bn_mode == "recalibrate" and isinstance(volumes_or_loader, Iterator):
        raise ValueError("bn_mode='recalibrate' reads the data twice; pass a re-iterable loader")
    target = device_of(encoder, device)
    if bn_mode == "recalibrate":
        model = recalibrate_batchnorm(encoder, volumes_or_loader, batch_size, target)
    else:  # the encoder itself, or a copy on another device
        model = encoder if device_of(encoder) == target else copy.deepcopy(encoder).to(target)
    network = model.forward_features if features else model
    flags = {m: m.training for m in model.modules()}  # restored after
    try:
        model.eval()
        with torch.no_grad():
            batches = _batches(volumes_or_loader, batch_size, target)
            out = [network(x).float().cpu() for x in batches]
    finally:
        for m, flag in flags.items():
            m.training = flag
    if not out:
        raise ValueError("no data to encode (empty or exhausted loader)")
    if out[0].ndim != 2 and not features:
        raise ValueError(f"the encoder must return (B, F), got {tuple(out[0].shape)}")
    return torch.cat(out).numpy()


def recalibrate_batchnorm(
    encoder: nn.Module, volumes_or_loader, batch_size: int = 32, device=None
) -> nn.Module:
    """A copy of ``encoder`` (eval mode) with BatchNorm statistics re-estimated on the data.

    Only BatchNorm runs in train mode, once over the data, with ``momentum=None``: a
    cumulative average over all batches. Arguments as in :func:`encode`.
    """
    device = device_of(encoder, device)
    model = copy.deepcopy(encoder).to(device).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n_batches = 0
    with torch.no_grad():
        for x in _batches(volumes_or_loader, batch_size, device):
            model(x)
            n_batches += 1
    if n_batches == 0:
        raise ValueError("no data to recalibrate BatchNorm on (empty or exhausted loader)")
    return model.eval()


def _batches(volumes_or_loader, batch_size: int, device) -> Iterable[torch.Tensor]:
    """Float tensors on ``device`` from a tensor, an array or a loader of batches."""
    if torch.is_tensor(volumes_or_loader) or isinstance(volumes_or_loader, np.ndarray):
        x = as_volumes(volumes_or_loader)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size].to(device)
        return
    for batch in volumes_or_loader:
        yield as_volumes(image_of(batch)).to(device)


def device_of(module: nn.Module, device=None) -> torch.device:
    """``device``, or by default that of ``module``'s parameters (CPU if it has none)."""
    if device is not None:
        return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
