"""Linear and kNN probes on frozen embeddings, and the baselines to compare them with.

The question a probe answers: is a target (age, site, sex) *linearly* (or locally)
readable from the representation? Each probe is cross-validated; scalers and models
are fitted on the training folds only.

- :func:`probe`: one embedding, one target -> tidy rows.
- :func:`probe_table`: several embeddings x targets x seeds -> a tidy DataFrame.
- :func:`encode`: embeddings of a frozen encoder (optionally with BatchNorm statistics
  recalibrated on the data, the fair way to report a random-init encoder).
- :func:`raw_voxel_features`: the "no learning" baseline, downsampled voxels.
- :func:`intensity_histogram_features`: the shortcut detector, a global histogram.
- :func:`random_init_like`: the same architecture, freshly initialised.
- :func:`embeddings_with_baselines`: a trained model's embeddings beside all baselines.
- :func:`latent_table`: how well each hidden factor (e.g. of the synthetic cohort) is
  linearly readable from each embedding.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(100, 8))
>>> table = probe_table({"toy": X}, {"age": X @ np.arange(8.0)}, cv=5)
>>> table.loc[0, ["embedding", "target", "probe", "metric"]].tolist()
['toy', 'age', 'linear', 'r2']
>>> bool(table.loc[0, "mean"] > 0.99)
True
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
from sklearn.model_selection import KFold, StratifiedKFold
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


def _n_neighbors(n_train: int, n_neighbors: int | None) -> int:
    """``n_neighbors``, or by default round(sqrt(n_train)) clipped to [5, 50]."""
    k = n_neighbors or int(np.clip(round(np.sqrt(n_train)), 5, 50))
    return min(k, n_train)


def _check_inputs(X, y, task: str, cv: int) -> tuple[np.ndarray, np.ndarray]:
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
            stacklevel=4,  # the caller of probe / probe_table
        )
        return smallest
    return cv


def _fold_scores(
    X: np.ndarray, y: np.ndarray, task: str, cv: int, seed: int, n_neighbors: int | None
) -> tuple[dict[tuple[str, str], list[float]], dict[str, float]]:
    """Per-fold scores ``{(probe, metric): [score, ...]}`` and chance levels ``{metric: c}``."""
    scores: dict[tuple[str, str], list[float]] = {}
    if task == "classification":
        splitter = StratifiedKFold(_classification_folds(y, cv), shuffle=True, random_state=seed)
    else:
        splitter = KFold(cv, shuffle=True, random_state=seed)
    maes_of_mean = []  # MAE of predicting the training mean: the regression chance level
    for train, test in splitter.split(X, y):
        k = _n_neighbors(len(train), n_neighbors)
        if task == "classification":
            models = {
                "linear": LogisticRegression(max_iter=2000),  # lbfgs: multinomial
                "knn": KNeighborsClassifier(k),
            }
        else:
            models = {"linear": RidgeCV(alphas=RIDGE_ALPHAS), "knn": KNeighborsRegressor(k)}
        for name, model in models.items():
            pred = make_pipeline(StandardScaler(), model).fit(X[train], y[train]).predict(X[test])
            if task == "classification":
                metrics = {"balanced_accuracy": balanced_accuracy_score(y[test], pred)}
            else:
                metrics = {
                    "r2": r2_score(y[test], pred),
                    "mae": mean_absolute_error(y[test], pred),
                }
            for metric, value in metrics.items():
                scores.setdefault((name, metric), []).append(float(value))
        if task == "regression":
            maes_of_mean.append(float(np.abs(y[test] - y[train].mean()).mean()))
    if task == "classification":
        return scores, {"balanced_accuracy": 1.0 / len(np.unique(y))}
    return scores, {"r2": 0.0, "mae": float(np.mean(maes_of_mean))}


def _summarise(scores, chance) -> list[dict]:
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


def probe(
    X,
    y,
    task: str = "regression",
    cv: int = 5,
    seed: int = 0,
    n_neighbors: int | None = None,
) -> list[dict]:
    """Cross-validated linear and kNN probes of one target.

    Features are standardised on each training fold. Regression: ``RidgeCV`` (alpha in
    ``logspace(-3, 5, 17)``, chosen by efficient leave-one-out on the training fold) and
    ``KNeighborsRegressor``; folds are ``KFold(shuffle=True, random_state=seed)``; metrics
    R^2 and MAE. Classification: L2 logistic regression (``C=1``, lbfgs, multinomial) and
    ``KNeighborsClassifier``; folds are stratified and shuffled with ``seed``; metric
    balanced accuracy.

    Parameters
    ----------
    X : array-like (N, F)
        Embeddings; must be finite.
    y : array-like (N,)
        Target: numbers for regression, any labels for classification. No missing values.
    task : {"regression", "classification"}
    cv : int
        Folds (>= 2, and N >= 2 * cv). For classification, if the smallest class has fewer
        than ``cv`` members (but at least 2), that many folds are used, with a warning.
    seed : int
        Seed of the fold split. Same seed, same result.
    n_neighbors : int, optional
        k of the kNN probe. Default: ``round(sqrt(n_train))`` clipped to [5, 50].

    Returns
    -------
    list of dict
        One row per (probe, metric), with keys ``probe`` (``"linear"``/``"knn"``),
        ``metric`` (``"r2"``, ``"mae"`` or ``"balanced_accuracy"``), ``mean`` and ``sd``
        (sample sd, ddof=1) over folds, ``n_splits`` and ``chance``: 1/n_classes for
        balanced accuracy, 0 for R^2, and for MAE the MAE of predicting the training mean.

    Raises
    ------
    ValueError
        Bad ``task`` or ``cv``, non-finite X, mismatched lengths, missing y, N < 2 * cv,
        fewer than 2 classes or a class with a single member.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 4))
    >>> rows = probe(X, X[:, 0] > 0, task="classification")
    >>> [(r["probe"], r["metric"], r["chance"]) for r in rows]
    [('linear', 'balanced_accuracy', 0.5), ('knn', 'balanced_accuracy', 0.5)]
    """
    X, y = _check_inputs(X, y, task, cv)
    return _summarise(*_fold_scores(X, y, task, cv, seed, n_neighbors))


def probe_table(
    embeddings: Mapping[str, np.ndarray],
    targets: pd.DataFrame | Mapping[str, Sequence],
    columns: Mapping[str, str] | None = None,
    cv: int = 5,
    seeds: Sequence[int] = (0,),
    n_neighbors: int | None = None,
) -> pd.DataFrame:
    """Probe every embedding on every target: a tidy table.

    Parameters
    ----------
    embeddings : dict of str -> array (N, F)
        Named embeddings of the same N subjects (e.g. ``"vicreg"``, ``"random init"``,
        ``"raw voxels"``), in the row order of ``targets``.
    targets : DataFrame or dict of str -> array (N,)
        One column per target.
    columns : dict of str -> {"regression", "classification"}, optional
        Targets to probe and their task. Default: those of ``age`` (regression), ``site``
        and ``sex`` (classification) that ``targets`` has.
    cv : int
        Folds per seed (see :func:`probe`).
    seeds : sequence of int
        Seeds of the fold split. Each seed gives a different split; ``mean`` and ``sd``
        are over all seeds x folds scores pooled, and ``n_splits`` counts them.
    n_neighbors : int, optional
        k of the kNN probe (see :func:`probe`).

    Returns
    -------
    pandas.DataFrame
        Columns ``embedding, target, probe, metric, mean, sd, n_splits, chance``; one row
        per embedding x target x probe x metric, in the order given.

    Raises
    ------
    ValueError
        No embeddings or seeds, a missing target column, an unknown task, an embedding
        with the wrong number of rows, and everything :func:`probe` rejects.
    """
    if not embeddings:
        raise ValueError("embeddings is empty; pass a dict name -> array (N, F)")
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one seed, e.g. (0,)")
    targets = pd.DataFrame(targets)
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
    rows = []
    for name, X in embeddings.items():
        if len(X) != len(targets):
            raise ValueError(f"embedding {name!r} has {len(X)} rows but targets has {len(targets)}")
        for target, task in columns.items():
            X_checked, y = _check_inputs(X, targets[target].to_numpy(), task, cv)
            pooled: dict[tuple[str, str], list[float]] = {}
            chances = []
            for seed in seeds:
                scores, chance = _fold_scores(X_checked, y, task, cv, int(seed), n_neighbors)
                for key, values in scores.items():
                    pooled.setdefault(key, []).extend(values)
                chances.append(chance)
            chance = {m: float(np.mean([c[m] for c in chances])) for m in chances[0]}
            for row in _summarise(pooled, chance):
                rows.append({"embedding": name, "target": target, **row})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# ---------------------------------------------------------------- baselines & encoding


def _as_volumes(volumes) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    if x.ndim != 5:
        raise ValueError(f"volumes must have shape (N, C, D, H, W), got {tuple(x.shape)}")
    return x.float()


def raw_voxel_features(volumes, size: int = 16) -> np.ndarray:
    """The "no learning" baseline: volumes average-pooled to ``size^3`` and flattened.

    Adaptive average pooling keeps the mean intensity (exactly when ``size`` divides
    the volume shape).

    Parameters
    ----------
    volumes : tensor or array (N, C, D, H, W)
    size : int
        Side of the pooled cube.

    Returns
    -------
    numpy.ndarray (N, C * size^3), float32

    Examples
    --------
    >>> raw_voxel_features(np.ones((3, 1, 32, 32, 32)), size=8).shape
    (3, 512)
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    x = _as_volumes(volumes)
    if size > min(x.shape[2:]):
        raise ValueError(f"size={size} is larger than the volume shape {tuple(x.shape[2:])}")
    pooled = nn.functional.adaptive_avg_pool3d(x, size)
    return pooled.flatten(1).numpy().astype(np.float32, copy=False)


def _batches(volumes_or_loader, batch_size: int, device) -> Iterable[torch.Tensor]:
    """Yield float tensors on ``device`` from a tensor/array or a loader of batches.

    A loader may yield tensors, tuples/lists (the first item is the volume batch) or
    dicts with an ``"image"`` key.
    """
    if torch.is_tensor(volumes_or_loader) or isinstance(volumes_or_loader, np.ndarray):
        x = _as_volumes(volumes_or_loader)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size].to(device)
        return
    for batch in volumes_or_loader:
        yield _as_volumes(image_of(batch)).to(device)


def _device_of(module: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def recalibrate_batchnorm(
    encoder: nn.Module, volumes_or_loader, batch_size: int = 32, device=None
) -> nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are re-estimated on data.

    The running statistics of every BatchNorm layer of a deep copy are reset, then the
    data are passed through once without grad with those layers in train mode and
    ``momentum=None`` (a cumulative average over all batches); all other layers stay in
    eval mode. ``encoder`` itself is not modified.

    Parameters
    ----------
    encoder : nn.Module
    volumes_or_loader : tensor, array (N, C, D, H, W) or re-iterable loader of batches
    batch_size : int
        Batch size when given a tensor or an array.
    device : str or torch.device, optional
        Default: the device of the encoder's parameters.

    Returns
    -------
    nn.Module
        The recalibrated copy, in eval mode.
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


def encode(
    encoder: nn.Module,
    volumes_or_loader,
    batch_size: int = 32,
    device=None,
    bn_mode: str = "eval",
) -> np.ndarray:
    """Embeddings of a frozen encoder: eval mode, no grad.

    Parameters
    ----------
    encoder : nn.Module
        Maps ``(B, C, D, H, W)`` to ``(B, F)``. Never modified: its train/eval flags are
        restored, and a deep copy is used to recalibrate or to change device.
    volumes_or_loader : tensor, array (N, C, D, H, W) or loader of batches
        A loader may yield tensors, tuples/lists (volumes first) or dicts with an
        ``"image"`` key; it must not shuffle (rows follow its order), and must be
        re-iterable for ``bn_mode="recalibrate"``.
    batch_size : int
        Batch size when given a tensor or an array.
    device : str or torch.device, optional
        Where to run. Default: the device of the encoder's parameters.
    bn_mode : {"eval", "recalibrate"}
        ``"eval"`` uses the stored BatchNorm running statistics. ``"recalibrate"``
        re-estimates them on these data first (:func:`recalibrate_batchnorm`): the fair
        way to report a random-init encoder, whose running statistics (mean 0, var 1)
        describe no real activations.

    Returns
    -------
    numpy.ndarray (N, F), float32

    Examples
    --------
    >>> from vicreg_lab.models import build_encoder
    >>> _ = torch.manual_seed(0)
    >>> encoder = build_encoder("small_cnn")
    >>> encode(encoder, torch.randn(5, 1, 32, 32, 32), bn_mode="recalibrate").shape
    (5, 128)
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
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            out = [model(x).float().cpu() for x in _batches(volumes_or_loader, batch_size, target)]
    finally:
        for m, flag in flags.items():
            m.training = flag
    if not out:
        raise ValueError("no data to encode (empty or exhausted loader)")
    if out[0].ndim != 2:
        raise ValueError(f"the encoder must return (B, F), got {tuple(out[0].shape)}")
    return torch.cat(out).numpy()


def intensity_histogram_features(volumes, bins: int = 16) -> np.ndarray:
    """The shortcut detector: each volume's global intensity histogram.

    Bin edges span the minimum to the maximum over all the volumes given, so that a
    scanner's overall brightness and contrast show. Anything a probe reads from these
    features needs no anatomy at all: a learned embedding that does no better than
    this on a target may be reading the scanner, not the brain.

    Parameters
    ----------
    volumes : tensor or array (N, C, D, H, W)
    bins : int
        Number of bins.

    Returns
    -------
    numpy.ndarray (N, bins), float32
        The fraction of each volume's voxels in each bin.

    Examples
    --------
    >>> x = np.stack([np.zeros((1, 4, 4, 4)), np.ones((1, 4, 4, 4))])
    >>> intensity_histogram_features(x, bins=2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
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
    """A freshly initialised copy of ``encoder``: the same architecture, new random weights.

    A deep copy (a ``DistributedDataParallel`` wrapper is removed) is re-initialised
    with its own ``reset_parameters()`` when it has one (the project's encoders draw
    exactly as their constructor does), else every submodule's ``reset_parameters()``
    (PyTorch's defaults). BatchNorm running statistics are reset too. The global RNG
    is left alone.

    Parameters
    ----------
    encoder : nn.Module
        A trained (or any) encoder; never modified.
    seed : int
        Seed of the new weights.

    Returns
    -------
    nn.Module
        The copy, in eval mode.

    Examples
    --------
    >>> from vicreg_lab.models import build_encoder
    >>> trained = build_encoder("small_cnn", widths=(4, 8, 8, 16))
    >>> fresh = random_init_like(trained, seed=1)
    >>> fresh.representation_size, fresh is trained
    (16, False)
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
    """Embeddings of ``data`` by a trained :class:`vicreg_lab.VICReg` and by every baseline.

    Parameters
    ----------
    model : VICReg
        A fitted estimator.
    data : Dataset or tensor (N, 1, D, H, W)
        Volumes (dataset items as dicts with ``"image"`` or ``(image, target)``
        pairs); resized to the model's input size.
    seed : int
        Seed of the random-init encoder.

    Returns
    -------
    dict of str -> numpy.ndarray
        ``TRAINED`` (the model), ``RANDOM_EVAL`` and ``RANDOM_RECAL`` (the trained
        encoder's architecture, ``encoder_kwargs`` included, freshly initialised: see
        :func:`random_init_like`; with eval-mode BatchNorm and with its statistics
        recalibrated on ``data``), ``RAW`` (voxels average-pooled to 16^3) and
        ``HISTOGRAM`` (:func:`intensity_histogram_features`, 16 bins).
    """
    volumes = _prepared_volumes(model, data)
    random_encoder = random_init_like(model.encoder_, seed=seed + 12345)
    return {
        TRAINED: model.transform(volumes),
        RANDOM_EVAL: encode(random_encoder, volumes, bn_mode="eval"),
        RANDOM_RECAL: encode(random_encoder, volumes, bn_mode="recalibrate"),
        RAW: raw_voxel_features(volumes, size=16),
        HISTOGRAM: intensity_histogram_features(volumes, bins=16),
    }


def _prepared_volumes(model, data, chunk: int = 16) -> torch.Tensor:
    """``model.prepare`` of every volume of ``data``, filled in place chunk by chunk.

    The prepared copy is the only full-size tensor made: at 48^3, 256 volumes take
    113 MB each time they are copied, which matters on a 2 GB Binder.
    """
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

    Parameters
    ----------
    embeddings : dict of str -> array (N, F)
        Named embeddings of the same N subjects, in the row order of ``latents``.
    latents : DataFrame
        One numeric column per factor (e.g. ``SyntheticCohort.latents``).
    columns : sequence of str, optional
        The factors to probe; default every column of ``latents``.
    cv, seeds
        Folds and split seeds, as in :func:`probe_table` (ridge, standardised features).

    Returns
    -------
    pandas.DataFrame
        One row per factor and a last row ``"mean"``; one column per embedding; values
        are the mean R^2 over seeds x folds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3))
    >>> latents = pd.DataFrame({"a": X[:, 0], "noise": rng.normal(size=60)})
    >>> table = latent_table({"X": X}, latents)
    >>> bool(table.loc["a", "X"] > 0.9), bool(table.loc["noise", "X"] < 0.2)
    (True, True)
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
