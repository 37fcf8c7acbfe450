"""Loss-weight ablations: which VICReg terms prevent collapse?

Bardes et al. (2022, Table 7) trained VICReg on ImageNet with loss terms switched off:
without the variance term the embeddings collapse; with all three the linear probe
reaches 68.6 % top-1. This module replays that ablation at classroom size:
:func:`run_ablation` trains one model per ``(inv, var, cov)`` (sized by
:func:`ablation_settings`), measures collapse and the age probe on held-out subjects, and
caches every run on disk; :func:`evaluate_model` measures any fitted model the same way;
:func:`vicreg_lab.lab.plots.plot_ablation` and :class:`vicreg_lab.lab.widgets.AblationPanel`
show the runs.

A run's verdict (:func:`run_verdict`) reads the expander output's std first (the scale
the variance term acts on), then the representation's effective rank. The expander's
own RankMe is not used: in a collapsed run it measures noise-sized leftovers.

Examples
--------
>>> s = ablation_settings("ci")
>>> s.shape, s.batch_size, s.steps
((32, 32, 32), 16, 36)
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vicreg_lab._io import atomic_path, cache_dir
from vicreg_lab.data import image_of, stack_images
from vicreg_lab.diagnostics import CollapseReport, collapse_report
from vicreg_lab.pretrained import cached_results

__all__ = [
    "DEFAULT_CONFIGS",
    "PAPER_TABLE7",
    "AblationResult",
    "AblationSettings",
    "RunResult",
    "ablation_settings",
    "compare_with_paper",
    "cached_sweep",
    "paper_findings",
    "config_name",
    "evaluate_model",
    "run_ablation",
    "run_verdict",
    "training_settings",
]

#: The sweep of notebook 04: each configuration switches terms off, as in the paper.
DEFAULT_CONFIGS = {
    "invariance only": (1.0, 0.0, 0.0),
    "no variance": (25.0, 0.0, 1.0),
    "no covariance": (1.0, 1.0, 0.0),
    "standard": (25.0, 25.0, 1.0),
}

#: Bardes et al. (ICLR 2022), Table 7, all eleven rows: 100-epoch ablation of the weights
#: (inv / var / cov), ImageNet linear top-1 (%), NaN where the run collapsed.
PAPER_TABLE7 = pd.DataFrame(
    [
        ("invariance only", 1.0, 0.0, 0.0, "collapse", math.nan),
        ("no variance", 25.0, 0.0, 1.0, "collapse", math.nan),
        ("no invariance", 0.0, 25.0, 1.0, "collapse", math.nan),
        ("no covariance", 1.0, 1.0, 0.0, "57.5", 57.5),
        ("equal weights", 1.0, 1.0, 1.0, "collapse", math.nan),
        ("strong variance", 1.0, 10.0, 1.0, "collapse", math.nan),
        ("strong invariance", 10.0, 1.0, 1.0, "collapse", math.nan),
        ("lighter inv/var", 5.0, 5.0, 1.0, "68.1", 68.1),
        ("10 / 10 / 1", 10.0, 10.0, 1.0, "68.2", 68.2),
        ("standard", 25.0, 25.0, 1.0, "68.6", 68.6),
        ("heavier inv/var", 50.0, 50.0, 1.0, "68.3", 68.3),
    ],
    columns=["name", "inv", "var", "cov", "paper_outcome", "paper_top1"],
)

_CACHE_FORMAT = "vicreg-lab-ablation-v2"  # v2: reports carry their scale

# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class AblationSettings:
    """How big one ablation run is (every field is part of the cache key).

    ``steps = n_subjects // batch_size * max_epochs``; ``n_eval`` held-out subjects are
    embedded and probed; ``augment`` holds changes to the default views, as
    :attr:`vicreg_lab.profiles.Profile.augment`.
    """

    profile: str
    n_subjects: int
    n_eval: int
    shape: tuple[int, int, int]
    batch_size: int
    max_epochs: int
    encoder: str
    expander: str
    lr: float
    device: str
    augment: tuple = ()

    @property
    def steps(self) -> int:
        """Optimisation steps of one run (the last incomplete batch is dropped)."""
        return self.n_subjects // self.batch_size * self.max_epochs

    def estimator_params(self, seed: int = 0, progress: bool = False) -> dict:
        """The :class:`vicreg_lab.VICReg` parameters of one run of this size."""
        return dict(
            encoder=self.encoder,
            expander=self.expander,
            lr=self.lr,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            augment_params=dict(self.augment) or None,
            device=self.device,
            seed=seed,
            progress=progress,
        )

    def override(self, **changes) -> AblationSettings:
        """A copy with some fields changed (unknown fields raise TypeError)."""
        return replace(self, **changes)


# ci: 3 steps x 12 epochs (seconds per run); cpu: 4 x 15 at 32^3 so a 1-CPU Binder runs
# the sweep in minutes, with 256 held-out subjects (age needs a few hundred at 32^3);
# gpu: 8 x 40 at 64^3.
_SIZES = {
    "ci": dict(n_subjects=48, n_eval=48, shape=(32, 32, 32), batch_size=16, max_epochs=12),
    "cpu": dict(n_subjects=128, n_eval=256, shape=(32, 32, 32), batch_size=32, max_epochs=15),
    "gpu": dict(n_subjects=512, n_eval=512, shape=(64, 64, 64), batch_size=64, max_epochs=40),
}
_SIZES.update(long=_SIZES["cpu"], research=_SIZES["gpu"])
_EXPANDERS = {"ci": "128-128", "cpu": "256-256", "gpu": "1024-1024"}
_EXPANDERS.update(long=_EXPANDERS["cpu"], research=_EXPANDERS["gpu"])


def ablation_settings(profile=None) -> AblationSettings:
    """The size of one short ablation run for a run profile (name, Profile or None).

    Smaller than the profile's training run: a sweep trains several models and collapse
    shows within a hundred steps. The encoder is ``small_cnn``; the expander is a few
    times the batch wide (a batch of N embeddings spans at most N - 1 directions).

    Examples
    --------
    >>> ablation_settings("cpu").steps
    60
    """
    from vicreg_lab.profiles import Profile, get_profile

    if not isinstance(profile, Profile):
        if profile is not None and not isinstance(profile, str):
            raise TypeError(
                f"profile must be a profile name, a Profile or None, got {type(profile).__name__}"
            )
        profile = get_profile(profile)
    sizes = _SIZES.get(profile.name)
    if sizes is None:
        raise ValueError(f"no ablation size for profile {profile.name!r}; known: {sorted(_SIZES)}")
    return AblationSettings(
        profile=profile.name,
        encoder="small_cnn",
        expander=_EXPANDERS[profile.name],
        lr=2e-3,
        device=profile.device,
        **sizes,
    )


def training_settings(profile=None) -> AblationSettings:
    """Ablation runs exactly as long as ``make demo`` trains (the profile's own recipe).

    Short runs show collapse; whether the healthy weights also give the best
    representation needs runs in which training improves it. AdamW at lr 1e-3, up to 256
    held-out subjects (``benchmarks/bench_ablation.py --recipe training``).

    Examples
    --------
    >>> training_settings("cpu").steps
    384
    """
    from vicreg_lab.lab.demo import PROBE_SUBJECTS
    from vicreg_lab.profiles import Profile, get_profile

    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    return ablation_settings(profile).override(
        n_subjects=profile.n_subjects,
        n_eval=min(profile.n_subjects, PROBE_SUBJECTS),
        shape=tuple(profile.shape),
        batch_size=profile.batch_size,
        max_epochs=profile.max_epochs,
        encoder=profile.encoder,
        expander=profile.expander,
        lr=1e-3,
        augment=tuple(profile.augment),
    )


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    """Everything measured on one model: embeddings, collapse reports, age probe, history.

    Attributes
    ----------
    kind : str
        ``"short run"`` for an ablation run, or what :func:`evaluate_model` was told.
    representation, expander : numpy.ndarray (N, D)
        Held-out embeddings: the encoder output and the expander output.
    rep_report, exp_report : CollapseReport
        Scale-free for the representation, ``target_std=1.0`` for the expander.
    probes : pandas.DataFrame
        Rows of :func:`vicreg_lab.probes.probe_table` (empty without targets).
    steps, epochs : list of dict
        Per-step loss terms and per-epoch records of training.
    dynamics : list of dict
        ``{"step", "exp_std", "rep_rankme"}`` after every epoch (see :func:`run_ablation`;
        for a model not trained here, from its own per-epoch records).
    cached : bool
        True when the run was loaded from disk.
    info : dict
        Settings, seed and other facts worth keeping.
    """

    name: str
    inv: float
    var: float
    cov: float
    kind: str
    representation: np.ndarray
    expander: np.ndarray
    rep_report: CollapseReport
    exp_report: CollapseReport
    probes: pd.DataFrame
    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    dynamics: list = field(default_factory=list)
    train_seconds: float = math.nan
    n_steps: int = 0
    cached: bool = False
    info: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """:func:`run_verdict` of the two reports."""
        return run_verdict(self.rep_report, self.exp_report)

    def age_probe(self, metric: str = "r2") -> tuple[float, float]:
        """Mean and sd over folds of the linear age probe (NaN, NaN without it)."""
        rows = self.probes
        if rows.empty:
            return math.nan, math.nan
        keep = (rows["target"] == "age") & (rows["probe"] == "linear") & (rows["metric"] == metric)
        if not keep.any():
            return math.nan, math.nan
        row = rows[keep].iloc[0]
        return float(row["mean"]), float(row["sd"])

    def row(self) -> dict:
        """One row of :attr:`AblationResult.table`."""
        r2, r2_sd = self.age_probe("r2")
        mae, _ = self.age_probe("mae")
        rep, exp = self.rep_report, self.exp_report
        return {
            "name": self.name,
            "kind": self.kind,
            "inv": self.inv,
            "var": self.var,
            "cov": self.cov,
            "steps": self.n_steps,
            "exp_std": exp.mean_std,
            "exp_rankme": exp.rankme,
            "exp_verdict": exp.verdict,
            "rep_norm_std": rep.normalized_std * math.sqrt(rep.n_dims),
            "rep_rankme": rep.rankme,
            "rep_rankme_max": min(rep.n_samples - 1, rep.n_dims),
            "rep_verdict": rep.verdict,
            "verdict": self.verdict,
            "age_r2": r2,
            "age_r2_sd": r2_sd,
            "age_mae": mae,
            "train_seconds": self.train_seconds,
            "cached": self.cached,
        }


def run_verdict(rep_report, exp_report) -> str:
    """The verdict of a run, from its two collapse reports.

    The expander output's verdict (``collapse_report(expander, target_std=1.0)``) when it
    is ``"complete collapse"``, e.g. a mean std below a tenth of the target; otherwise the
    representation's scale-free verdict (``collapse_report(representation)``). A
    scale-free ``exp_report`` raises ValueError: it would miss a collapse to the origin.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rep = collapse_report(rng.normal(size=(64, 16)))
    >>> healthy = collapse_report(rng.normal(size=(64, 16)), target_std=1.0)
    >>> flat = collapse_report(0.01 * rng.normal(size=(64, 16)), target_std=1.0)
    >>> run_verdict(rep, flat), run_verdict(rep, healthy)
    ('complete collapse', 'healthy')
    """
    if exp_report.target_std is None:
        raise ValueError(
            "run_verdict: exp_report is scale-free and would miss a collapse to the "
            "origin; pass collapse_report(expander, target_std=1.0)"
        )
    if exp_report.verdict == "complete collapse":
        return exp_report.verdict
    return rep_report.verdict


def _targets_of(dataset, targets) -> pd.DataFrame | None:
    if targets is not None:
        return pd.DataFrame(targets).reset_index(drop=True)
    participants = getattr(dataset, "participants", None)
    return None if participants is None else participants.reset_index(drop=True)


_BATCHNORM_MODES = ("recalibrate", "eval")


def _check_batchnorm(batchnorm) -> None:
    if batchnorm not in _BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {_BATCHNORM_MODES}, got {batchnorm!r}")


def _recalibrated(model, dataset):
    """A copy of a fitted estimator whose BatchNorm statistics are re-estimated on ``dataset``.

    After a few dozen steps the running statistics (momentum 0.1) lag far behind the
    weights and eval-mode outputs shrink. Unlike :func:`vicreg_lab.probes.recalibrate_batchnorm`
    (one network), encoder and expander are recalibrated in one pass, the expander on the
    encoder's batch-statistics output, and one-volume batches are skipped; the shipped
    sweeps were computed this way.
    """
    from torch.utils.data import DataLoader

    clone = copy.copy(model)
    clone.encoder_ = copy.deepcopy(model.encoder_).eval()
    clone.expander_ = copy.deepcopy(model.expander_).eval()
    norms = [
        m
        for module in (clone.encoder_, clone.expander_)
        for m in module.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    device = next(clone.encoder_.parameters()).device
    loader = DataLoader(dataset, batch_size=model.batch_size, collate_fn=stack_images)
    with torch.no_grad():
        for x in loader:
            if len(x) > 1:  # BatchNorm needs two samples per batch
                clone.expander_(clone.encoder_(clone.prepare(x).to(device)))
    for m in norms:
        m.eval()
    return clone


def _expander_output(model, representation: np.ndarray) -> np.ndarray:
    expander = model.expander_
    device = next(model.encoder_.parameters()).device  # an absent expander has none
    was_training = expander.training
    expander.eval()
    try:
        with torch.no_grad():
            out = expander(torch.from_numpy(representation).float().to(device))
    finally:
        expander.train(was_training)
    return out.float().cpu().numpy()


def _age_probes(name: str, representation: np.ndarray, targets, seed: int) -> pd.DataFrame:
    from vicreg_lab.probes import TABLE_COLUMNS, probe_table

    if targets is None or "age" not in targets.columns:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return probe_table(
        {name: representation}, targets, columns={"age": "regression"}, seeds=(seed,)
    )


def _dynamics_from_history(epochs: list) -> list[dict]:
    """``{"step", "exp_std", "rep_rankme"}`` per epoch from ``VICReg.history_["epoch"]``."""
    out, step = [], 0
    for record in epochs:
        step += int(record.get("steps", 0))
        if "collapse" in record and "collapse_expander" in record:
            exp_std = record["collapse_expander"]["mean_std"]
            rankme = record["collapse"]["rankme"]
            out.append({"step": step, "exp_std": exp_std, "rep_rankme": rankme})
    return out


class _DynamicsRecorder:
    """A ``VICReg`` callback: expander std and representation RankMe after every epoch.

    Measured on fixed held-out volumes by a throw-away copy in train mode (BatchNorm on
    batch statistics), so the lag of the running statistics early in a run does not show
    as a fake collapse.
    """

    def __init__(self, volumes: torch.Tensor):
        self.volumes = volumes
        self.records: list[dict] = []

    def __call__(self, model, event: str, record: dict) -> None:
        if event != "epoch":
            return
        from vicreg_lab.diagnostics import batch_statistics_pass, embedding_std, rankme

        device = next(model.encoder_.parameters()).device
        x = model.prepare(self.volumes).to(device)
        rep, z = (t.cpu() for t in batch_statistics_pass(model.encoder_, model.expander_, x))
        step, exp_std = len(model.history_["step"]), float(embedding_std(z).mean())
        self.records.append({"step": step, "exp_std": exp_std, "rep_rankme": rankme(rep)})


def evaluate_model(
    model,
    eval_dataset,
    name: str,
    kind: str = "checkpoint",
    targets=None,
    seed: int = 0,
    batchnorm: str = "recalibrate",
) -> RunResult:
    """Measure a fitted model (not modified) as :func:`run_ablation` measures its runs.

    The representation's report is scale-free (a backbone's scale is arbitrary); the
    expander's uses ``target_std=1.0``, so that a collapse to the origin reads as collapse.

    Parameters
    ----------
    model : vicreg_lab.VICReg
        A fitted estimator, e.g. ``load_pretrained("synthetic-small")``.
    name, kind : str
        Label of the model in tables and figures; what it is.
    targets : DataFrame or dict, optional
        One row per volume with ``age`` (default ``eval_dataset.participants``); without
        it the probe is skipped. ``seed`` seeds the probe's folds.
    batchnorm : {"recalibrate", "eval"}
        ``"recalibrate"`` re-estimates BatchNorm's statistics on ``eval_dataset`` first (on
        a copy): after a short run the stored ones lag behind the weights. ``"eval"`` uses
        the stored ones, as ``model.transform`` does.
    """
    targets = _checked_targets(model, eval_dataset, name, targets, batchnorm)
    measured = _recalibrated(model, eval_dataset) if batchnorm == "recalibrate" else model
    representation = measured.transform(eval_dataset)
    expander = _expander_output(measured, representation)
    history = getattr(model, "history_", {"step": [], "epoch": []})
    return RunResult(
        name=name,
        inv=float(model.inv_coeff),
        var=float(model.var_coeff),
        cov=float(model.cov_coeff),
        kind=kind,
        representation=representation,
        expander=expander,
        rep_report=collapse_report(representation),
        exp_report=collapse_report(expander, target_std=1.0),
        probes=_age_probes(name, representation, targets, seed),
        steps=list(history["step"]),
        epochs=list(history["epoch"]),
        dynamics=_dynamics_from_history(history["epoch"]),
        n_steps=len(history["step"]),
        info={"seed": seed, "batchnorm": batchnorm},
    )


def _checked_targets(model, eval_dataset, name, targets, batchnorm) -> pd.DataFrame | None:
    """Check :func:`evaluate_model`'s arguments; return its targets."""
    _check_batchnorm(batchnorm)
    if not hasattr(model, "encoder_"):
        raise ValueError(f"evaluate_model: {name!r} is not fitted (no encoder_); call fit first")
    targets = _targets_of(eval_dataset, targets)
    if targets is not None and len(targets) != len(eval_dataset):
        raise ValueError(
            f"evaluate_model: targets has {len(targets)} rows but eval_dataset has "
            f"{len(eval_dataset)} volumes"
        )
    return targets


# ---------------------------------------------------------------- cache


def _dataset_fingerprint(dataset) -> str:
    """A hash of what identifies a dataset: type, size, description, first volume."""
    digest = hashlib.sha256()
    digest.update(f"{type(dataset).__qualname__}:{len(dataset)}".encode())
    text = repr(dataset)
    if " at 0x" not in text:  # a default repr names a memory address, not the data
        digest.update(text.encode())
    participants = getattr(dataset, "participants", None)
    if participants is not None:
        digest.update(participants.to_csv(index=False).encode())
    first = image_of(dataset[0]).float().contiguous()
    digest.update(str(tuple(first.shape)).encode())
    digest.update(first.numpy().tobytes())
    return digest.hexdigest()


def _cache_key(config, settings, seed: int, train_fp: str, eval_fp: str, batchnorm: str) -> str:
    from vicreg_lab import __version__

    payload = {
        "format": _CACHE_FORMAT,
        "version": __version__,
        "torch": torch.__version__.split("+")[0],
        "config": [float(c) for c in config],
        "settings": asdict(settings),
        "seed": int(seed),
        "train": train_fp,
        "eval": eval_fp,
        "batchnorm": batchnorm,
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


_STORED_FIELDS = ("steps", "epochs", "dynamics", "train_seconds", "n_steps", "info")


def _save_run(path: Path, run: RunResult, key: str) -> None:
    meta = {
        "format": _CACHE_FORMAT,
        "key": key,
        "config": [run.inv, run.var, run.cov],
        "rep_report": run.rep_report.to_dict(),
        "exp_report": run.exp_report.to_dict(),
        "probes": run.probes.to_dict(orient="records"),
        **{name: getattr(run, name) for name in _STORED_FIELDS},
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(
            file,
            representation=run.representation,
            expander=run.expander,
            meta=np.array(json.dumps(meta)),
        )


def _load_run(path: Path, key: str, name: str) -> RunResult | None:
    """The cached run at ``path``, or None if it is missing, unreadable or not ours."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            representation, expander = data["representation"], data["expander"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
        return None
    from vicreg_lab.probes import TABLE_COLUMNS

    probes = pd.DataFrame(meta["probes"], columns=TABLE_COLUMNS)
    probes["embedding"] = name
    fields = {f: CollapseReport(**meta[f]) for f in ("rep_report", "exp_report")}
    fields.update({f: meta[f] for f in _STORED_FIELDS}, probes=probes, cached=True)
    inv, var, cov = meta["config"]
    return RunResult(name, inv, var, cov, "short run", representation, expander, **fields)


# ---------------------------------------------------------------- the sweep


def _check_which(which: str) -> None:
    if which not in ("representation", "expander"):
        raise ValueError(f"which must be 'representation' or 'expander', got {which!r}")


@dataclass
class AblationResult:
    """The runs of a sweep (and any model added beside them): ``runs`` in the given order."""

    runs: dict[str, RunResult]

    @property
    def table(self) -> pd.DataFrame:
        """One row per run: weights, collapse numbers, verdicts, age probe, timing."""
        return pd.DataFrame([run.row() for run in self.runs.values()])

    @property
    def probes(self) -> pd.DataFrame:
        """All probe rows, in the format of :func:`vicreg_lab.probes.probe_table`."""
        frames = [run.probes for run in self.runs.values() if not run.probes.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def reports(self, which: str = "representation") -> dict[str, CollapseReport]:
        """``{name: CollapseReport}`` of the ``"representation"`` or the ``"expander"``."""
        _check_which(which)
        attr = "rep_report" if which == "representation" else "exp_report"
        return {name: getattr(run, attr) for name, run in self.runs.items()}

    def embeddings(self, which: str = "representation") -> dict[str, np.ndarray]:
        """``{name: array (N, D)}`` of the ``"representation"`` or the ``"expander"``."""
        _check_which(which)
        return {name: getattr(run, which) for name, run in self.runs.items()}

    def histories(self) -> dict[str, pd.DataFrame]:
        """``{name: per-step loss terms}``, for :func:`vicreg_lab.lab.plots.plot_loss_terms`."""
        return {name: pd.DataFrame(run.steps) for name, run in self.runs.items() if run.steps}

    def with_run(self, run: RunResult) -> AblationResult:
        """A new result with ``run`` added (or replacing the run of the same name)."""
        return AblationResult({**self.runs, run.name: run})

    def __getitem__(self, name: str) -> RunResult:
        if name not in self.runs:
            raise KeyError(f"no run named {name!r}; runs: {list(self.runs)}")
        return self.runs[name]

    def __len__(self) -> int:
        return len(self.runs)


def check_configs(configs) -> dict[str, tuple[float, float, float]]:
    if configs is None:
        return dict(DEFAULT_CONFIGS)
    if not isinstance(configs, Mapping):
        configs = {config_name(*c): c for c in configs}
    checked = {}
    for name, config in configs.items():
        try:
            values = tuple(config)
        except TypeError:
            values = ()
        ok = len(values) == 3 and all(
            isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0 for v in values
        )
        if not ok:
            raise ValueError(
                f"config {name!r} must be 3 finite weights >= 0 (inv, var, cov), got {config!r}"
            )
        checked[str(name)] = tuple(float(v) for v in values)
    if not checked:
        raise ValueError("configs is empty; pass {name: (inv, var, cov)}")
    return checked


def config_name(inv: float, var: float, cov: float) -> str:
    """The default name of a configuration, e.g. ``"inv 25 / var 0 / cov 1"``."""
    return f"inv {inv:g} / var {var:g} / cov {cov:g}"


def _cache_folder(cache) -> Path | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return cache_dir("ablation")
    if isinstance(cache, (str, Path)):
        path = Path(cache)
        path.mkdir(parents=True, exist_ok=True)
        return path
    raise TypeError(f"cache must be True, False, None or a folder path, got {cache!r}")


def _train_run(name, config, dataset, eval_dataset, settings, seed, options):
    from vicreg_lab.train import VICReg

    inv, var, cov = config
    watched = stack_images([eval_dataset[i] for i in range(min(64, len(eval_dataset)))])
    recorder = _DynamicsRecorder(watched)
    model = VICReg(
        **settings.estimator_params(seed, options["progress"]),
        inv_coeff=inv,
        var_coeff=var,
        cov_coeff=cov,
        callbacks=[recorder],
    )
    tick = time.perf_counter()
    model.fit(dataset)
    seconds = time.perf_counter() - tick
    run = evaluate_model(
        model,
        eval_dataset,
        name,
        kind="short run",
        targets=options["targets"],
        seed=seed,
        batchnorm=options["batchnorm"],
    )
    run.dynamics = recorder.records
    run.train_seconds = seconds
    run.info.update(settings=asdict(settings))
    return run


def run_ablation(
    configs=None,
    dataset=None,
    eval_dataset=None,
    profile=None,
    settings: AblationSettings | None = None,
    cache=True,
    seed: int = 0,
    targets=None,
    batchnorm: str = "recalibrate",
    progress: bool = False,
) -> AblationResult:
    """Train VICReg once per loss-weight configuration and measure collapse and age.

    Each run records its dynamics: after every epoch, the expander std and representation
    RankMe of up to 64 ``eval_dataset`` volumes (BatchNorm on batch statistics).

    Parameters
    ----------
    configs : dict of str to (inv, var, cov), or sequence of (inv, var, cov), optional
        Default :data:`DEFAULT_CONFIGS`.
    dataset, eval_dataset : Dataset
        Training volumes (1, D, H, W); held-out volumes to probe (default ``dataset``).
    profile : str or Profile, optional
        Sizes the runs through :func:`ablation_settings`, unless ``settings`` is given.
    cache : bool or path, default=True
        True: ``vicreg_lab._io.cache_dir("ablation")``; a path: that folder; False: none.
        A run is stored under a hash of its weights, settings, seed, package and torch
        versions and fingerprints of both datasets.
    seed : int
        Seed of training and of the probe's folds.
    targets, batchnorm
        How the runs are measured (see :func:`evaluate_model`).
    progress : bool
        A progress bar per training run.
    """
    configs = check_configs(configs)
    if dataset is None:
        raise ValueError("run_ablation needs a training dataset (dataset=...)")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    _check_batchnorm(batchnorm)
    seed = int(seed)
    options = {"targets": targets, "batchnorm": batchnorm, "progress": progress}
    settings = settings or ablation_settings(profile)
    eval_dataset = dataset if eval_dataset is None else eval_dataset
    folder = _cache_folder(cache)
    if folder is not None:
        train_fp = _dataset_fingerprint(dataset)
        eval_fp = train_fp if eval_dataset is dataset else _dataset_fingerprint(eval_dataset)
    runs = {}
    for name, config in configs.items():
        train = partial(_train_run, name, config, dataset, eval_dataset, settings, seed, options)
        if folder is None:
            runs[name] = train()
        else:
            key = _cache_key(config, settings, seed, train_fp, eval_fp, batchnorm)
            runs[name] = _cached_run(folder / f"{key}.npz", key, name, train)
    return AblationResult(runs)


def _cached_run(path: Path, key: str, name: str, train) -> RunResult:
    """The run cached at ``path``, or ``train()``'s run, then cached there."""
    run = _load_run(path, key, name) if path.exists() else None
    if run is None:
        run = train()
        _save_run(path, run, key)
    run.info["cache_path"] = str(path)
    return run


def compare_with_paper(result: AblationResult) -> pd.DataFrame:
    """Each run's measured verdict beside the paper's outcome for the same weights.

    Columns ``name, inv, var, cov, exp_std, rep_rankme, verdict, age_r2, paper_outcome``;
    ``paper_outcome`` is from :data:`PAPER_TABLE7` (top-1 % or "collapse"), NaN for
    weights the paper did not try.
    """
    columns = ["name", "inv", "var", "cov", "exp_std", "rep_rankme", "verdict", "age_r2"]
    paper = PAPER_TABLE7[["inv", "var", "cov", "paper_outcome"]]
    return result.table[columns].merge(paper, on=["inv", "var", "cov"], how="left")


_CACHED_COLUMNS = ("name", "inv", "var", "cov", "seed", "exp_std", "verdict", "age_r2")


@dataclass
class CachedSweep:
    """A shipped multi-seed sweep: ``runs`` (one row per configuration and seed, as
    ``benchmarks/bench_ablation.py`` wrote it) and the ``command`` that produced it."""

    runs: pd.DataFrame
    command: str

    @property
    def table(self) -> pd.DataFrame:
        """One row per configuration: mean and sd over seeds, and the majority verdict."""
        rows = []
        for name, group in self.runs.groupby("name", sort=False):
            verdicts = group["verdict"].value_counts()
            rows.append(
                {
                    "name": name,
                    "kind": "short run",
                    **group[["inv", "var", "cov"]].iloc[0].to_dict(),
                    "seeds": len(group),
                    "exp_std": group["exp_std"].mean(),
                    "collapsed": int((group["verdict"] == "complete collapse").sum()),
                    "verdict": verdicts.index[0],
                    "age_r2": group["age_r2"].mean(),
                    "age_r2_sd": group["age_r2"].std(ddof=1) if len(group) > 1 else math.nan,
                }
            )
        return pd.DataFrame(rows)


def cached_sweep(profile: str = "cpu", path: str | Path | None = None) -> CachedSweep:
    """Load the shipped sweep ``vicreg_lab/cached/ablation-<profile>.csv`` (or ``path``).

    Raises FileNotFoundError (naming the command that computes it) when there is none,
    ValueError when the file lacks a column or has no rows.
    """
    try:
        runs, command = cached_results(f"ablation-{profile}", _CACHED_COLUMNS, path)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}; compute it with benchmarks/bench_ablation.py --profile {profile}"
        ) from None
    return CachedSweep(runs, command)


def paper_findings(result: AblationResult) -> pd.DataFrame:
    """Which findings of the paper's Table 7 the measured runs show, decided from the numbers.

    A finding is listed only when ``result`` has the runs it needs (matched by weights):
    runs without the variance term collapse (verdict ``"complete collapse"``) and the
    standard one does not; the standard weights give the best probe (here age R^2);
    0 / 25 / 1 collapses; 1 / 1 / 0 probes worse than the standard weights.

    Returns
    -------
    pandas.DataFrame
        Columns ``finding, paper, measured, reproduced`` (a bool), one row per finding.
    """
    table = result.table
    if "kind" in table:
        table = table[table["kind"] == "short run"]
    by_weights = {(r.inv, r.var, r.cov): r for r in table.itertuples(index=False)}
    standard = by_weights.get((25.0, 25.0, 1.0))
    no_var = [r for (_, var, _), r in by_weights.items() if var == 0]
    rows = [
        _variance_finding(standard, no_var),
        _best_probe_finding(table, standard) if len(by_weights) > 1 else None,
        _invariance_finding(by_weights.get((0.0, 25.0, 1.0)), standard),
        _covariance_finding(by_weights.get((1.0, 1.0, 0.0)), standard),
    ]
    rows = [row for row in rows if row is not None]
    return pd.DataFrame(rows, columns=["finding", "paper", "measured", "reproduced"])


def _variance_finding(standard, no_var):
    if standard is None or not no_var:
        return None
    collapsed = [r.name for r in no_var if r.verdict == "complete collapse"]
    return (
        "runs without the variance term collapse, the standard run does not",
        "collapse (" + ", ".join(r.name for r in no_var) + "); standard 68.6 %",
        f"complete collapse: {collapsed or 'none'}; standard: {standard.verdict}",
        len(collapsed) == len(no_var) and standard.verdict != "complete collapse",
    )


def _best_probe_finding(table, standard):
    if standard is None:
        return None
    best = max(table.itertuples(index=False), key=lambda r: r.age_r2)
    return (
        "the standard weights give the best probe",
        "25 / 25 / 1: 68.6 %, the best row",
        f"best age R^2: {best.name} ({best.age_r2:.2f}); standard {standard.age_r2:.2f}",
        best.name == standard.name,
    )


def _invariance_finding(no_inv, standard):
    if no_inv is None:
        return None
    probe = f"; age R^2 {no_inv.age_r2:.2f}"
    if standard is not None:
        probe += f" against {standard.age_r2:.2f} for the standard run"
    return (
        "without the invariance term (0 / 25 / 1) the run collapses",
        "collapse",
        f"verdict: {no_inv.verdict}{probe}",
        no_inv.verdict == "complete collapse",
    )


def _covariance_finding(no_cov, standard):
    if standard is None or no_cov is None:
        return None
    return (
        "no covariance term is worse than the standard weights",
        "1 / 1 / 0: 57.5 % against 68.6 %",
        f"age R^2 {no_cov.age_r2:.2f} against {standard.age_r2:.2f}",
        bool(no_cov.age_r2 < standard.age_r2),
    )
