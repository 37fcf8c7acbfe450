"""Linear and kNN probes on frozen embeddings, and the baselines to compare them with.

A probe asks whether a target (age, site, sex) is *linearly* (or locally) readable
from a representation. Every probe is cross-validated, with scalers and models fitted
on the training folds only. The baselines: raw voxels ("no learning"), an intensity
histogram (the shortcut detector) and the same architecture freshly initialised.
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

from vicreg_lab.data import image_of, stack_images

__all__ = [
    "embeddings_with_baselines",
    "encode",
    "intensity_histogram_features",
    "latent_table",
    "probe",
    "probe_table",
    "random_init_like",
    "raw_voxel_features",
    "recalibrate_batchnorm",
]

#: Names of the embeddings :func:`embeddings_with_baselines` returns, in order.
TRAINED = "VICReg"
RANDOM_EVAL = "random init (eval BN)"
RANDOM_RECAL = "random init (recalibrated BN)"
RAW = "raw voxels 16^3"
HISTOGRAM = "intensity histogram (16 bins)"

TASKS = ("regression", "classification")
DEFAULT_COLUMNS = {"age": "regression", "site": "classification", "sex": "classification"}
RIDGE_ALPHAS = np.logspace(-3, 5, 17)
TABLE_COLUMNS = ["embedding", "target", "probe", "metric", "mean", "sd", "n_splits", "chance"]


# ---------------------------------------------------------------- probes


def probe(
    X,
    y,
    task: str = "regression",
    cv: int = 5,
    seed: int = 0,
    n_neighbors: int | None = None,
    groups=None,
) -> list[dict]:
    """Cross-validated linear and kNN probes of one target.

    Features are standardised on each training fold. Regression: ``RidgeCV`` (alpha in
    ``RIDGE_ALPHAS``, chosen by leave-one-out on the training fold) and kNN, shuffled
    ``KFold``, metrics R^2 and MAE. Classification: logistic regression (``C=1``) and
    kNN, shuffled stratified folds, metric balanced accuracy.

    Parameters
    ----------
    X : array-like (N, F)
    y : array-like (N,)
        Numbers for regression, any labels for classification.
    task : {"regression", "classification"}
    cv : int
        Folds; fewer, with a warning, when the smallest class has fewer members.
    seed : int
        Seed of the fold split.
    n_neighbors : int, optional
        k of kNN; default ``round(sqrt(n_train))`` clipped to [5, 50].
    groups : array-like (N,), optional
        A group per sample (e.g. the site): the folds then leave one group out each
        (``LeaveOneGroupOut``; ``cv`` and ``seed`` are not used), so every score is on
        a group the probe never saw: an unseen scanner.

    Returns
    -------
    list of dict
        One row per (probe, metric): ``probe``, ``metric``, ``mean`` and ``sd``
        (ddof=1) over folds, ``n_splits``, and ``chance`` (1/n_classes, 0 for R^2, the
        MAE of predicting the training mean for MAE).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 4))
    >>> rows = probe(X, X[:, 0] > 0, task="classification")
    >>> [(r["probe"], r["metric"], r["chance"]) for r in rows]
    [('linear', 'balanced_accuracy', 0.5), ('knn', 'balanced_accuracy', 0.5)]
    """
    X, y = _check_inputs(X, y, task, cv)
    groups = _check_groups(groups, len(X))
    return _summarise(*_pooled_scores(X, y, task, cv, (seed,), n_neighbors, groups))


def probe_table(
    embeddings: Mapping[str, np.ndarray],
    targets: pd.DataFrame | Mapping[str, Sequence],
    columns: Mapping[str, str] | None = None,
    cv: int = 5,
    seeds: Sequence[int] = (0,),
    n_neighbors: int | None = None,
    groups: str | None = None,
) -> pd.DataFrame:
    """Probe every embedding on every target (see :func:`probe`): a tidy table.

    Parameters
    ----------
    embeddings : dict of str -> array (N, F)
        Named embeddings of the same N subjects, in the row order of ``targets``.
    targets : DataFrame or dict of str -> array (N,)
    columns : dict of str -> {"regression", "classification"}, optional
        Targets and their task. Default: those of ``DEFAULT_COLUMNS`` that ``targets`` has.
    seeds : sequence of int
        One fold split per seed; ``mean``, ``sd`` and ``n_splits`` pool seeds x folds.
    groups : str, optional
        A column of ``targets`` (e.g. ``"site"``): leave-one-group-out folds (see
        :func:`probe`; ``seeds`` then give the same split, so only the first is used).
        That column itself cannot be a probed target.

    Returns
    -------
    pandas.DataFrame
        Columns ``TABLE_COLUMNS``, one row per embedding x target x probe x metric.
    """
    if not embeddings:
        raise ValueError("embeddings is empty; pass a dict name -> array (N, F)")
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one seed, e.g. (0,)")
    targets = pd.DataFrame(targets)
    columns = _probe_columns(targets, columns)
    group_values = _group_column(targets, groups, columns)
    if group_values is not None:
        seeds = list(seeds)[:1]  # leave-one-group-out has one split
    rows = []
    for name, X in embeddings.items():
        if len(X) != len(targets):
            raise ValueError(f"embedding {name!r} has {len(X)} rows but targets has {len(targets)}")
        for target, task in columns.items():
            X_checked, y = _check_inputs(X, targets[target].to_numpy(), task, cv)
            seed_ints = [int(seed) for seed in seeds]
            pooled = _pooled_scores(X_checked, y, task, cv, seed_ints, n_neighbors, group_values)
            rows += [{"embedding": name, "target": target, **row} for row in _summarise(*pooled)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _probe_columns(targets: pd.DataFrame, columns: Mapping[str, str] | None) -> Mapping:
    """The ``{target: task}`` to probe, checked against ``targets``."""
    if columns is None:
        columns = {c: t for c, t in DEFAULT_COLUMNS.items() if c in targets.columns}
        if not columns:
            raise ValueError(
                f"targets has none of the default columns {list(DEFAULT_COLUMNS)}; "
                f"it has {list(targets.columns)}: pass columns={{name: task}}"
            )
    missing = [c for c in columns if c not in targets.columns]
    if missing:
        raise ValueError(f"targets has no column {missing}; it has {list(targets.columns)}")
    bad_tasks = {c: t for c, t in columns.items() if t not in TASKS}
    if bad_tasks:
        raise ValueError(f"unknown tasks {bad_tasks}; each task must be one of {TASKS}")
    return columns


def _check_inputs(X, y, task: str, cv: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` as float64 arrays (``y`` only for regression), or a clear error."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not isinstance(cv, int | np.integer) or cv < 2:
        raise ValueError(f"cv must be an int >= 2, got {cv!r}")
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be a numeric array (N, F), got shape {X.shape} ({X.dtype})")
    X = X.astype(np.float64)
    n_bad = int(np.size(X) - np.isfinite(X).sum())
    if n_bad:
        raise ValueError(f"X has {n_bad} NaN or infinite values; embeddings must be finite")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"y must be 1D with one value per row of X: X has {len(X)} rows, y has shape {y.shape}"
        )
    if pd.isna(y).any():
        raise ValueError(f"y has {int(pd.isna(y).sum())} missing values; drop those rows first")
    if len(X) < 2 * cv:
        raise ValueError(
            f"too few samples for cv={cv}: N={len(X)}, need N >= 2 * cv = {2 * cv} "
            "(at least 2 per test fold); lower cv or add samples"
        )
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"regression needs a numeric y, got dtype {y.dtype}")
        y = y.astype(np.float64)
    return X, y


def _group_column(targets: pd.DataFrame, groups: str | None, columns: Mapping):
    """The values of the ``groups`` column of ``targets`` (None for none), checked."""
    if groups is None:
        return None
    if groups not in targets.columns:
        raise ValueError(f"groups {groups!r} is not a column of targets: {list(targets.columns)}")
    if groups in columns:
        raise ValueError(
            f"{groups!r} cannot be probed leaving its own groups out (each test fold holds "
            f"a class the probe never saw); pass columns without {groups!r}"
        )
    return _check_groups(targets[groups].to_numpy(), len(targets))


def _check_groups(groups, n: int):
    """``groups`` as an array of one group per sample (None stays None), or a clear error."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n:
        raise ValueError(f"groups must give one group per sample ({n}), got shape {groups.shape}")
    if pd.isna(groups).any() or len(np.unique(groups)) < 2:
        raise ValueError("groups needs at least 2 distinct groups and no missing value")
    return groups


def _pooled_scores(X, y, task: str, cv: int, seeds: Sequence, n_neighbors, groups=None):
    """Fold scores ``{(probe, metric): [...]}`` pooled over seeds, and mean chance levels."""
    pooled: dict[tuple[str, str], list[float]] = {}
    chances = []
    for seed in seeds:
        scores, chance = _fold_scores(X, y, task, cv, seed, n_neighbors, groups)
        for key, values in scores.items():
            pooled.setdefault(key, []).extend(values)
        chances.append(chance)
    return pooled, {m: float(np.mean([c[m] for c in chances])) for m in chances[0]}


def _fold_scores(
    X: np.ndarray, y: np.ndarray, task: str, cv: int, seed: int, n_neighbors, groups=None
) -> tuple[dict[tuple[str, str], list[float]], dict[str, float]]:
    """Per-fold scores ``{(probe, metric): [score, ...]}`` and chance levels ``{metric: c}``."""
    scores: dict[tuple[str, str], list[float]] = {}
    if groups is not None:
        splitter = LeaveOneGroupOut()
    elif task == "classification":
        splitter = StratifiedKFold(_classification_folds(y, cv), shuffle=True, random_state=seed)
    else:
        splitter = KFold(cv, shuffle=True, random_state=seed)
    maes_of_mean = []  # MAE of predicting the training mean: the regression chance level
    for train, test in splitter.split(X, y, groups):
        for name, model in _models(task, _n_neighbors(len(train), n_neighbors)).items():
            pred = make_pipeline(StandardScaler(), model).fit(X[train], y[train]).predict(X[test])
            for metric, value in _metrics(task, y[test], pred).items():
                scores.setdefault((name, metric), []).append(float(value))
        if task == "regression":
            maes_of_mean.append(float(np.abs(y[test] - y[train].mean()).mean()))
    if task == "classification":
        return scores, {"balanced_accuracy": 1.0 / len(np.unique(y))}
    return scores, {"r2": 0.0, "mae": float(np.mean(maes_of_mean))}


def _models(task: str, k: int) -> dict:
    """The unfitted ``linear`` and ``knn`` probes of a task."""
    if task == "classification":
        return {"linear": LogisticRegression(max_iter=2000), "knn": KNeighborsClassifier(k)}
    return {"linear": RidgeCV(alphas=RIDGE_ALPHAS), "knn": KNeighborsRegressor(k)}


def _metrics(task: str, y_true: np.ndarray, pred: np.ndarray) -> dict:
    if task == "classification":
        return {"balanced_accuracy": balanced_accuracy_score(y_true, pred)}
    return {"r2": r2_score(y_true, pred), "mae": mean_absolute_error(y_true, pred)}


def _n_neighbors(n_train: int, n_neighbors: int | None) -> int:
    """``n_neighbors``, or by default round(sqrt(n_train)) clipped to [5, 50]."""
    k = n_neighbors or int(np.clip(round(np.sqrt(n_train)), 5, 50))
    return min(k, n_train)


def _classification_folds(y: np.ndarray, cv: int) -> int:
    """Number of folds so that every class can appear in every test fold."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least 2 classes, y has only {classes.tolist()}")
    smallest = int(counts.min())
    if smallest < 2:
        rare = classes[counts < 2].tolist()
        raise ValueError(
            f"classes {rare} have a single member; stratified cross-validation needs >= 2 "
            "(drop or merge them)"
        )
    if smallest < cv:
        rarest = classes.tolist()[counts.argmin()]
        warnings.warn(
            f"smallest class ({rarest!r}) has {smallest} members, fewer than cv={cv}; "
            f"using {smallest} folds",
            stacklevel=5,  # the caller of probe / probe_table
        )
        return smallest
    return cv


def _summarise(scores, chance) -> list[dict]:
    """One row per (probe, metric): mean, sample sd, number of splits and chance."""
    return [
        {
            "probe": name,
            "metric": metric,
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)),
            "n_splits": len(values),
            "chance": chance[metric],
        }
        for (name, metric), values in scores.items()
    ]


# ---------------------------------------------------------------- encoding


def encode(
    encoder: nn.Module,
    volumes_or_loader,
    batch_size: int = 32,
    device=None,
    bn_mode: str = "eval",
) -> np.ndarray:
    """Embeddings ``(N, F)``, float32, of a frozen encoder: eval mode, no grad.

    ``encoder`` is never modified: its train/eval flags are restored, and a deep copy
    is used to recalibrate or to change device.

    Parameters
    ----------
    encoder : nn.Module
        Maps ``(B, C, D, H, W)`` to ``(B, F)``.
    volumes_or_loader : tensor, array (N, C, D, H, W) or loader of batches
        A loader yields tensors, tuples (volumes first) or dicts with ``"image"``; rows
        follow its order, and it must be re-iterable for ``bn_mode="recalibrate"``.
    batch_size : int
        Batch size for a tensor or an array.
    device : str or torch.device, optional
        Default: the device of the encoder's parameters.
    bn_mode : {"eval", "recalibrate"}
        ``"recalibrate"`` re-estimates the BatchNorm statistics on these data first
        (:func:`recalibrate_batchnorm`): the fair way to report a random-init encoder,
        whose stored statistics (mean 0, var 1) describe no real activations.
    """
    if bn_mode not in ("eval", "recalibrate"):
        raise ValueError(f"bn_mode must be 'eval' or 'recalibrate', got {bn_mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    target = _device_of(encoder, device)
    if bn_mode == "recalibrate":
        if isinstance(volumes_or_loader, Iterator):
            raise ValueError(
                "bn_mode='recalibrate' reads the data twice; pass a re-iterable loader"
            )
        model = recalibrate_batchnorm(encoder, volumes_or_loader, batch_size, target)
    elif _device_of(encoder, None) != target:
        model = copy.deepcopy(encoder).to(target)
    else:
        model = encoder
    out = _eval_outputs(model, _batches(volumes_or_loader, batch_size, target))
    if not out:
        raise ValueError("no data to encode (empty or exhausted loader)")
    if out[0].ndim != 2:
        raise ValueError(f"the encoder must return (B, F), got {tuple(out[0].shape)}")
    return torch.cat(out).numpy()


def _eval_outputs(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """``model``'s float32 CPU outputs in eval mode; every train/eval flag is restored."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return [model(x).float().cpu() for x in batches]
    finally:
        for m, flag in flags.items():
            m.training = flag


def recalibrate_batchnorm(
    encoder: nn.Module, volumes_or_loader, batch_size: int = 32, device=None
) -> nn.Module:
    """A copy of ``encoder``, in eval mode, with BatchNorm statistics re-estimated on data.

    The copy's BatchNorm layers are reset and run once over the data in train mode with
    ``momentum=None`` (a cumulative average over all batches); the other layers stay in
    eval mode. Arguments as in :func:`encode`.
    """
    device = _device_of(encoder, device)
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
        x = _as_volumes(volumes_or_loader)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size].to(device)
        return
    for batch in volumes_or_loader:
        yield _as_volumes(image_of(batch)).to(device)


def _device_of(module: nn.Module, device) -> torch.device:
    """``device``, or by default that of ``module``'s parameters (CPU if it has none)."""
    if device is not None:
        return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _as_volumes(volumes) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    if x.ndim != 5:
        raise ValueError(f"volumes must have shape (N, C, D, H, W), got {tuple(x.shape)}")
    return x.float()


# ---------------------------------------------------------------- baselines


def raw_voxel_features(volumes, size: int = 16) -> np.ndarray:
    """The "no learning" baseline: volumes ``(N, C, D, H, W)`` average-pooled to ``size^3``.

    Returns float32 features ``(N, C * size^3)``. Adaptive average pooling keeps the
    mean intensity (exactly when ``size`` divides the volume shape).
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    x = _as_volumes(volumes)
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
    x = _as_volumes(volumes).flatten(1)
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
    source = _as_volumes(data) if is_array else data
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
    and ``seeds`` are as in :func:`probe_table`. Returns the mean R^2 over seeds x
    folds, one row per factor plus a last row ``"mean"``, one column per embedding.
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
