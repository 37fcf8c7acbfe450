"""Loss-weight ablations: which VICReg terms prevent collapse?

Bardes et al. (2022, Table 7) trained VICReg on ImageNet with some loss terms switched
off: without the variance term the embeddings collapse; with the three terms the linear
probe reaches 68.6 % top-1. This module replays that ablation at classroom size:

- :func:`ablation_settings` sizes a sweep from a run profile (``ci`` trains each
  configuration for 36 steps, ``cpu`` for 60);
- :func:`run_ablation` trains :class:`vicreg_lab.VICReg` once per ``(inv, var, cov)``
  configuration, embeds held-out subjects, and measures collapse
  (:func:`vicreg_lab.diagnostics.collapse_report` of the representation and of the
  expander output) and the age probe (:func:`vicreg_lab.probes.probe_table`). Every
  run is cached on disk, keyed by everything that determines it, so that a second call
  loads instantly;
- :func:`evaluate_model` measures the same things for any fitted model (e.g. the
  project's long-run checkpoint), so it can stand beside the short runs;
- :func:`plot_ablation` draws the runs side by side, and :class:`AblationPanel` is a
  widget whose sliders train (or load) one configuration.

The verdict of a run comes from the measurements (see :func:`run_verdict`): the expander
output's standard deviation first (the scale the variance term acts on), then the
representation's effective rank. The expander's own RankMe is not used: in a collapsed
run it measures noise-sized leftovers and can look high.

Examples
--------
>>> from vicreg_lab.lab.ablation import ablation_settings
>>> s = ablation_settings("ci")
>>> s.shape, s.batch_size, s.steps
((32, 32, 32), 16, 36)
"""

from __future__ import annotations

import copy
import hashlib
import html
import io
import json
import math
import numbers
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
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
    "AblationPanel",
    "AblationResult",
    "AblationSettings",
    "RunResult",
    "ablation_settings",
    "compare_with_paper",
    "cached_sweep",
    "paper_findings",
    "config_name",
    "evaluate_model",
    "plot_ablation",
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

#: Bardes et al. (ICLR 2022), Table 7: the 100-epoch ablation of the loss weights
#: (lambda / mu / nu = invariance / variance / covariance), ImageNet linear top-1 (%);
#: NaN where the run collapsed. All eleven rows of the ICLR version, in its order.
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
_VERDICT_COLORS = {
    "healthy": "tab:green",
    "dimensional collapse": "tab:orange",
    "complete collapse": "tab:red",
}

# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class AblationSettings:
    """How big one ablation run is.

    Parameters
    ----------
    profile : str
        Name of the profile these settings came from (recorded, and part of the cache key).
    n_subjects : int
        Training subjects.
    n_eval : int
        Held-out subjects embedded for the diagnostics and the probe.
    shape : tuple of int
        Volume shape (D, H, W).
    batch_size, max_epochs : int
        Training batch size and epochs (``steps = n_subjects // batch_size * max_epochs``).
    encoder, expander : str
        Network names (see :mod:`vicreg_lab.models`).
    lr : float
        AdamW learning rate.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    augment : tuple of (str, value) pairs
        Changes to the default views, as :attr:`vicreg_lab.profiles.Profile.augment`.
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

    def override(self, **changes) -> AblationSettings:
        """A copy with some fields changed (unknown fields raise TypeError)."""
        return replace(self, **changes)


# A short run per profile. ci: 3 steps per epoch x 12 epochs at 32^3 (seconds per run);
# cpu: 4 x 15 = 60 steps, still at 32^3 so that a 1-CPU Binder runs the sweep in minutes,
# and 256 held-out subjects (age needs a few hundred to be readable at 32^3, even from
# raw voxels); gpu: 8 x 40 = 320 steps at 64^3.
_SIZES = {
    "ci": dict(n_subjects=48, n_eval=48, shape=(32, 32, 32), batch_size=16, max_epochs=12),
    "cpu": dict(n_subjects=128, n_eval=256, shape=(32, 32, 32), batch_size=32, max_epochs=15),
    "gpu": dict(n_subjects=512, n_eval=512, shape=(64, 64, 64), batch_size=64, max_epochs=40),
}
_SIZES["long"] = _SIZES["cpu"]
_SIZES["research"] = _SIZES["gpu"]
_EXPANDERS = {
    "ci": "128-128",
    "cpu": "256-256",
    "gpu": "1024-1024",
    "research": "1024-1024",
    "long": "256-256",
}


def ablation_settings(profile=None) -> AblationSettings:
    """The size of one ablation run for a run profile.

    Parameters
    ----------
    profile : str, Profile or None
        A profile name (``"ci"``, ``"cpu"``, ``"gpu"``, ``"research"``, ``"long"``), a
        :class:`vicreg_lab.profiles.Profile`, or None for :func:`vicreg_lab.get_profile`.

    Returns
    -------
    AblationSettings
        Smaller than the profile's training run: an ablation trains several models,
        and collapse shows within a hundred steps. The encoder is ``small_cnn`` and
        the expander is a few times the batch size wide (a batch of N embeddings spans
        at most N - 1 directions).

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
    """Ablation runs as long as the profile's own training run (the demo's recipe).

    The short runs of :func:`ablation_settings` show collapse, which is fast; whether
    the healthy weights also give the best representation needs runs in which training
    improves it. These settings train each configuration exactly as ``make demo`` trains
    (the profile's subjects, shape, batch, epochs, expander and views; AdamW at the
    default lr 1e-3) and probe up to 256 held-out subjects
    (``benchmarks/bench_ablation.py --recipe training``). Minutes per run on a CPU.

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
    name : str
    inv, var, cov : float
        The loss weights.
    kind : str
        ``"short run"`` for an ablation run, or what :func:`evaluate_model` was told.
    representation, expander : numpy.ndarray (N, D)
        Held-out embeddings: the encoder output and the expander output.
    rep_report, exp_report : CollapseReport
        Their collapse diagnostics: the representation's verdict is scale-free, the
        expander's uses ``target_std=1.0`` (see :func:`run_verdict`).
    probes : pandas.DataFrame
        Rows of :func:`vicreg_lab.probes.probe_table` (empty without targets).
    steps : list of dict
        Per-step loss terms of the training run.
    epochs : list of dict
        The estimator's per-epoch records (``VICReg.history_["epoch"]``).
    dynamics : list of dict
        ``{"step", "exp_std", "rep_rankme"}`` at the end of every epoch, measured on up
        to 64 held-out volumes with BatchNorm in batch-statistics mode (see
        :func:`run_ablation`); for a model that was not trained here, the same numbers
        from its own per-epoch records (eval mode, on a batch of its training data).
    train_seconds : float
    n_steps : int
    cached : bool
        True when the run was loaded from disk.
    info : dict
        Settings, seed and any other facts worth keeping.
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

    Parameters
    ----------
    rep_report : CollapseReport
        Report of the representation, scale-free: ``collapse_report(representation)``.
    exp_report : CollapseReport
        Report of the expander output against the std the variance term asks for:
        ``collapse_report(expander, target_std=1.0)``.

    Returns
    -------
    str
        The first that applies:

    1. The expander output's verdict when it is ``"complete collapse"``: e.g. its mean
       standard deviation is below a tenth of the target the variance term asks for.
    2. Otherwise the representation's verdict, whose rules are scale-free (normalised
       std, RankMe, dead dimensions).

    Raises
    ------
    ValueError
        If ``exp_report`` is scale-free: it would miss a collapse to the origin.

    Examples
    --------
    >>> import numpy as np
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


def _batchnorms(*modules) -> list[torch.nn.Module]:
    return [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]


def _recalibrated(model, dataset):
    """A copy of a fitted estimator whose BatchNorm statistics are re-estimated on ``dataset``.

    In a run of a few dozen steps the running statistics (momentum 0.1) still lag far
    behind the weights, and eval-mode outputs are then much smaller than the network's
    real outputs. Here they are reset and re-estimated as a plain average over
    ``dataset`` (no augmentation), then the copy is put in eval mode.
    """
    from torch.utils.data import DataLoader

    clone = copy.copy(model)
    clone.encoder_ = copy.deepcopy(model.encoder_).eval()
    clone.expander_ = copy.deepcopy(model.expander_).eval()
    norms = _batchnorms(clone.encoder_, clone.expander_)
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
    device = next(expander.parameters()).device
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
            out.append(
                {
                    "step": step,
                    "exp_std": record["collapse_expander"]["mean_std"],
                    "rep_rankme": record["collapse"]["rankme"],
                }
            )
    return out


class _DynamicsRecorder:
    """A ``VICReg`` callback: expander std and representation RankMe after every epoch.

    Measured on fixed held-out volumes with BatchNorm using the batch's statistics (a
    throw-away copy of the networks in train mode), so that the lag of the running
    statistics early in a run does not show as a fake collapse.
    """

    def __init__(self, volumes: torch.Tensor):
        self.volumes = volumes
        self.records: list[dict] = []

    def __call__(self, model, event: str, record: dict) -> None:
        if event != "epoch":
            return
        from vicreg_lab.diagnostics import embedding_std, rankme

        encoder = copy.deepcopy(model.encoder_).train()
        expander = copy.deepcopy(model.expander_).train()
        device = next(encoder.parameters()).device
        with torch.no_grad():
            rep = encoder(model.prepare(self.volumes).to(device)).float().cpu()
            z = expander(rep.to(device)).float().cpu()
        self.records.append(
            {
                "step": len(model.history_["step"]),
                "exp_std": float(embedding_std(z).mean()),
                "rep_rankme": rankme(rep),
            }
        )


def evaluate_model(
    model,
    eval_dataset,
    name: str,
    kind: str = "checkpoint",
    targets=None,
    seed: int = 0,
    batchnorm: str = "recalibrate",
) -> RunResult:
    """Measure a fitted model as :func:`run_ablation` measures its runs.

    Parameters
    ----------
    model : vicreg_lab.VICReg
        A fitted estimator (e.g. ``load_pretrained("synthetic-small")``); not modified.
    eval_dataset : Dataset
        Volumes to embed, at the model's input shape (``transform`` resizes otherwise).
    name : str
        Label of the model in tables and figures.
    kind : str
        What the model is, e.g. ``"checkpoint"`` or ``"short run"``.
    targets : DataFrame or dict, optional
        One row per volume with an ``age`` column; default ``eval_dataset.participants``.
        Without an age column the probe is skipped.
    seed : int
        Seed of the probe's fold split.
    batchnorm : {"recalibrate", "eval"}
        ``"recalibrate"``: re-estimate BatchNorm's statistics on ``eval_dataset`` first
        (on a copy), because after a short run the stored running statistics lag behind
        the weights; ``"eval"``: use the stored ones, as ``model.transform`` does.

    Returns
    -------
    RunResult
        The representation's collapse report is scale-free (a backbone's scale is
        arbitrary); the expander output's uses ``target_std=1.0``, the std its variance
        term asks for, so that a collapse to the origin reads as collapse.
    """
    if batchnorm not in _BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {_BATCHNORM_MODES}, got {batchnorm!r}")
    if not hasattr(model, "encoder_"):
        raise ValueError(f"evaluate_model: {name!r} is not fitted (no encoder_); call fit first")
    targets = _targets_of(eval_dataset, targets)
    if targets is not None and len(targets) != len(eval_dataset):
        raise ValueError(
            f"evaluate_model: targets has {len(targets)} rows but eval_dataset has "
            f"{len(eval_dataset)} volumes"
        )
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


def _save_run(path: Path, run: RunResult, key: str) -> None:
    meta = {
        "format": _CACHE_FORMAT,
        "key": key,
        "config": [run.inv, run.var, run.cov],
        "rep_report": run.rep_report.to_dict(),
        "exp_report": run.exp_report.to_dict(),
        "probes": run.probes.to_dict(orient="records"),
        "steps": run.steps,
        "epochs": run.epochs,
        "dynamics": run.dynamics,
        "train_seconds": run.train_seconds,
        "n_steps": run.n_steps,
        "info": run.info,
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
    inv, var, cov = meta["config"]
    return RunResult(
        name=name,
        inv=inv,
        var=var,
        cov=cov,
        kind="short run",
        representation=representation,
        expander=expander,
        rep_report=CollapseReport(**meta["rep_report"]),
        exp_report=CollapseReport(**meta["exp_report"]),
        probes=probes,
        steps=meta["steps"],
        epochs=meta["epochs"],
        dynamics=meta["dynamics"],
        train_seconds=meta["train_seconds"],
        n_steps=meta["n_steps"],
        cached=True,
        info=meta["info"],
    )


# ---------------------------------------------------------------- the sweep


@dataclass
class AblationResult:
    """The runs of a sweep (and any model added beside them).

    Attributes
    ----------
    runs : dict of str to RunResult
        In the order they were given.
    """

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
        if which not in ("representation", "expander"):
            raise ValueError(f"which must be 'representation' or 'expander', got {which!r}")
        attr = "rep_report" if which == "representation" else "exp_report"
        return {name: getattr(run, attr) for name, run in self.runs.items()}

    def embeddings(self, which: str = "representation") -> dict[str, np.ndarray]:
        """``{name: array (N, D)}`` of the ``"representation"`` or the ``"expander"``."""
        if which not in ("representation", "expander"):
            raise ValueError(f"which must be 'representation' or 'expander', got {which!r}")
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


def _check_configs(configs) -> dict[str, tuple[float, float, float]]:
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
        encoder=settings.encoder,
        expander=settings.expander,
        inv_coeff=inv,
        var_coeff=var,
        cov_coeff=cov,
        lr=settings.lr,
        batch_size=settings.batch_size,
        max_epochs=settings.max_epochs,
        augment_params=dict(settings.augment) or None,
        device=settings.device,
        seed=seed,
        progress=options["progress"],
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

    Parameters
    ----------
    configs : dict of str to (inv, var, cov), or sequence of (inv, var, cov), optional
        The configurations; default :data:`DEFAULT_CONFIGS`.
    dataset : Dataset
        Training volumes (1, D, H, W), e.g. a :class:`vicreg_lab.SyntheticCohort` of
        ``settings.n_subjects`` subjects at ``settings.shape``.
    eval_dataset : Dataset, optional
        Held-out volumes to embed and probe; default ``dataset``.
    profile : str or Profile, optional
        Sizes the runs through :func:`ablation_settings` (ignored if ``settings`` is given).
    settings : AblationSettings, optional
        Explicit sizes (only the training fields are used: batch, epochs, networks, lr).
    cache : bool or path, default=True
        True: ``vicreg_lab._io.cache_dir("ablation")``; a path: that folder; False: no
        cache. A run is stored under a hash of its weights, settings, seed, the package
        and torch versions and fingerprints of both datasets, written atomically.
    seed : int
        Seed of training and of the probe's folds.
    targets : DataFrame or dict, optional
        One row per ``eval_dataset`` volume with an ``age`` column; default
        ``eval_dataset.participants``.
    batchnorm : {"recalibrate", "eval"}
        How the final model is measured (see :func:`evaluate_model`): by default its
        BatchNorm statistics are re-estimated on ``eval_dataset``, because after a few
        dozen steps the running statistics still lag far behind the weights.
    progress : bool
        Show a progress bar per training run.

    Returns
    -------
    AblationResult
        ``.table`` (one row per run), ``.probes``, ``.reports(...)``, ``.embeddings(...)``,
        ``.histories()``, and ``result[name]`` for one :class:`RunResult`. Each run also
        records its dynamics: after every epoch, the expander std and representation
        RankMe of up to 64 ``eval_dataset`` volumes (BatchNorm on batch statistics).

    Examples
    --------
    >>> from vicreg_lab import SyntheticCohort                      # doctest: +SKIP
    >>> s = ablation_settings("ci")                                  # doctest: +SKIP
    >>> cohort = SyntheticCohort(s.n_subjects, shape=s.shape)        # doctest: +SKIP
    >>> result = run_ablation(dataset=cohort, settings=s)            # doctest: +SKIP
    >>> result.table[["name", "exp_std", "verdict", "age_r2"]]       # doctest: +SKIP
    """
    configs = _check_configs(configs)
    if dataset is None:
        raise ValueError("run_ablation needs a training dataset (dataset=...)")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if batchnorm not in _BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {_BATCHNORM_MODES}, got {batchnorm!r}")
    options = {"targets": targets, "batchnorm": batchnorm, "progress": progress}
    settings = settings or ablation_settings(profile)
    eval_dataset = dataset if eval_dataset is None else eval_dataset
    folder = _cache_folder(cache)
    if folder is not None:
        train_fp = _dataset_fingerprint(dataset)
        eval_fp = train_fp if eval_dataset is dataset else _dataset_fingerprint(eval_dataset)
    runs = {}
    for name, config in configs.items():
        run, path, key = None, None, None
        if folder is not None:
            key = _cache_key(config, settings, int(seed), train_fp, eval_fp, batchnorm)
            path = folder / f"{key}.npz"
            run = _load_run(path, key, name) if path.exists() else None
        if run is None:
            run = _train_run(name, config, dataset, eval_dataset, settings, int(seed), options)
            if path is not None:
                _save_run(path, run, key)
        if path is not None:
            run.info["cache_path"] = str(path)
        runs[name] = run
    return AblationResult(runs)


def compare_with_paper(result: AblationResult) -> pd.DataFrame:
    """Each run's measured verdict beside the paper's outcome for the same weights.

    Parameters
    ----------
    result : AblationResult

    Returns
    -------
    pandas.DataFrame
        Columns ``name, inv, var, cov, exp_std, rep_rankme, verdict, age_r2,
        paper_outcome``; ``paper_outcome`` is from :data:`PAPER_TABLE7` (ImageNet top-1
        in %, or "collapse"), NaN for weights the paper did not try.
    """
    columns = ["name", "inv", "var", "cov", "exp_std", "rep_rankme", "verdict", "age_r2"]
    paper = PAPER_TABLE7[["inv", "var", "cov", "paper_outcome"]]
    return result.table[columns].merge(paper, on=["inv", "var", "cov"], how="left")


_CACHED_COLUMNS = ("name", "inv", "var", "cov", "seed", "exp_std", "verdict", "age_r2")


@dataclass
class CachedSweep:
    """A shipped multi-seed ablation sweep (see :func:`cached_sweep`).

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per configuration and seed, as ``benchmarks/bench_ablation.py`` wrote it.
    command : str
        The command (and sizes, wall time) that produced it: the file's first line.
    """

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
    """Load the shipped multi-seed ablation sweep of a profile.

    Parameters
    ----------
    profile : str
        Profile whose sweep to load (``vicreg_lab/cached/ablation-<profile>.csv``).
    path : str or Path, optional
        Another file in the same format.

    Raises
    ------
    FileNotFoundError
        No sweep was computed for that profile (the message gives the command).
    ValueError
        The file lacks a column or has no rows.
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

    A finding is listed only when the runs it needs are in ``result`` (matched by their
    weights). The findings, as the paper reports them:

    - every run without the variance term collapses, the standard weights do not (here
      "collapses" is the run's verdict, :func:`run_verdict`: ``"complete collapse"``);
    - the standard weights (25 / 25 / 1) give the best probe of the runs compared (here
      the age R^2 on held-out subjects);
    - without the invariance term (0 / 25 / 1) the run collapses (the paper's word for
      a failed run; here, the verdict);
    - without the covariance term (1 / 1 / 0) the probe is worse than with the standard
      weights.

    Parameters
    ----------
    result : AblationResult

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
    rows = []
    no_var = [r for (_, var, _), r in by_weights.items() if var == 0]
    if standard is not None and no_var:
        collapsed = [r.name for r in no_var if r.verdict == "complete collapse"]
        ok = len(collapsed) == len(no_var) and standard.verdict != "complete collapse"
        rows.append(
            (
                "runs without the variance term collapse, the standard run does not",
                "collapse (" + ", ".join(r.name for r in no_var) + "); standard 68.6 %",
                f"complete collapse: {collapsed or 'none'}; standard: {standard.verdict}",
                ok,
            )
        )
    if standard is not None and len(by_weights) > 1:
        best = max(table.itertuples(index=False), key=lambda r: r.age_r2)
        rows.append(
            (
                "the standard weights give the best probe",
                "25 / 25 / 1: 68.6 %, the best row",
                f"best age R^2: {best.name} ({best.age_r2:.2f}); standard {standard.age_r2:.2f}",
                best.name == standard.name,
            )
        )
    no_inv = by_weights.get((0.0, 25.0, 1.0))
    if no_inv is not None:
        probe = f"; age R^2 {no_inv.age_r2:.2f}"
        if standard is not None:
            probe += f" against {standard.age_r2:.2f} for the standard run"
        rows.append(
            (
                "without the invariance term (0 / 25 / 1) the run collapses",
                "collapse",
                f"verdict: {no_inv.verdict}{probe}",
                no_inv.verdict == "complete collapse",
            )
        )
    no_cov = by_weights.get((1.0, 1.0, 0.0))
    if standard is not None and no_cov is not None:
        rows.append(
            (
                "no covariance term is worse than the standard weights",
                "1 / 1 / 0: 57.5 % against 68.6 %",
                f"age R^2 {no_cov.age_r2:.2f} against {standard.age_r2:.2f}",
                bool(no_cov.age_r2 < standard.age_r2),
            )
        )
    return pd.DataFrame(rows, columns=["finding", "paper", "measured", "reproduced"])


# ---------------------------------------------------------------- figure


def _bars(ax, names, values, colors, title, errors=None):
    x = np.arange(len(names))
    bars = ax.bar(x, values, yerr=errors, color=colors, capsize=3)
    ax.bar_label(bars, fmt="%.3g", fontsize="small")
    ax.set_title(title)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    return x


def plot_ablation(result: AblationResult, title: str | None = None):
    """The runs of an ablation side by side: collapse diagnostics and the age probe.

    Parameters
    ----------
    result : AblationResult
        From :func:`run_ablation` (possibly with other models added by
        :meth:`AblationResult.with_run`).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Top row, one bar per run coloured by its verdict: the expander output's mean
        std (red line: the complete-collapse threshold 0.1), the representation's
        RankMe (x: its maximum ``min(N - 1, D)``), the linear age probe R^2 (mean +- sd
        over folds). Bottom row: the expander's std and the representation's RankMe
        at the end of every epoch (:attr:`RunResult.dynamics`; log-scale steps; dashed:
        models not trained by :func:`run_ablation`), and the singular value spectra of
        the held-out representations (:func:`vicreg_lab.lab.plots.plot_spectrum`).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from vicreg_lab.lab.plots import plot_spectrum

    if not isinstance(result, AblationResult) or len(result) == 0:
        raise ValueError("plot_ablation needs an AblationResult with at least one run")
    table = result.table
    names = [f"{n}\n({v})" for n, v in zip(table["name"], table["verdict"], strict=True)]
    colors = [_VERDICT_COLORS.get(v, "tab:gray") for v in table["verdict"]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    plt.close(fig)
    _bars(axes[0, 0], names, table["exp_std"], colors, "expander output: mean std")
    axes[0, 0].axhline(0.1, color="tab:red", ls=":", lw=1)
    x = _bars(axes[0, 1], names, table["rep_rankme"], colors, "representation: RankMe")
    axes[0, 1].plot(x, table["rep_rankme_max"], "kx", ls="none")
    _bars(axes[0, 2], names, table["age_r2"], colors, "age probe: linear R²", table["age_r2_sd"])
    axes[0, 2].axhline(0.0, color="k", lw=0.8)
    for ax, key, title_ in (
        (axes[1, 0], "exp_std", "expander std during training"),
        (axes[1, 1], "rep_rankme", "representation RankMe during training"),
    ):
        for i, (name, run) in enumerate(result.runs.items()):
            steps = [r["step"] for r in run.dynamics]
            values = [r[key] for r in run.dynamics]
            style = "-" if run.kind == "short run" else "--"
            ax.plot(steps, values, style, marker=".", lw=1.2, label=name, color=f"C{i % 10}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training step (log)")
        ax.set_title(title_, fontsize="medium")
    axes[1, 0].axhline(0.1, color="tab:red", ls=":", lw=1)
    axes[1, 0].legend(fontsize="x-small")
    plot_spectrum(result.embeddings("representation"), ax=axes[1, 2])
    axes[1, 2].set_title("held-out representation spectra", fontsize="medium")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- widget

_WEIGHT_EXPONENTS = (-2.0, 2.0)  # the sliders span 10^-2 .. 10^2; a checkbox switches off
_TERMS = {"inv": "invariance", "var": "variance", "cov": "covariance"}


class AblationPanel:
    """Sliders for the three loss weights; "Train" runs (or loads) one short ablation run.

    The run is sized like the sweep (:func:`ablation_settings`) and cached like it, so a
    configuration already trained (by the sweep or an earlier click) shows instantly.
    The figure (:func:`plot_ablation`) puts the run beside the sweep's runs.

    Parameters
    ----------
    dataset, eval_dataset : Dataset
        Training and held-out volumes, as for :func:`run_ablation`.
    sweep : AblationResult, optional
        Precomputed runs: listed in a drop-down (choosing one shows it at once) and
        drawn beside the new run.
    settings : AblationSettings, optional
        Sizes of a run; default ``ablation_settings(profile)``.
    profile : str or Profile, optional
    cache : bool or path, default=True
        As for :func:`run_ablation`.
    seed : int, default=0
    weights : tuple of 3 float, default=(25, 25, 1)
        Starting (inv, var, cov); 0 switches a term off.

    Attributes
    ----------
    sliders : dict of str to ipywidgets.FloatLogSlider
        Keys ``"inv"``, ``"var"``, ``"cov"``, from 0.01 to 100.
    enabled : dict of str to ipywidgets.Checkbox
        Unticked: the term's weight is 0.
    presets : ipywidgets.Dropdown
        The sweep's configurations.
    button : ipywidgets.Button
        "Train".
    readout : ipywidgets.HTML
        The last run's numbers and verdict.
    image : ipywidgets.Image
        PNG of the last figure.
    widget : ipywidgets.VBox
        The whole panel.
    run : RunResult
        The last run.
    figure : matplotlib.figure.Figure
    n_runs : int
        How many runs were shown (trained or loaded).
    seconds : float
        Wall time of the last click (training or loading, and drawing).

    Examples
    --------
    >>> panel = AblationPanel(train, held_out, sweep=sweep)  # doctest: +SKIP
    >>> panel                                                # doctest: +SKIP
    >>> panel.set_weights(var=0)      # untick the variance term  # doctest: +SKIP
    >>> panel.button.click()          # what "Train" does          # doctest: +SKIP
    >>> panel.run.verdict                                    # doctest: +SKIP
    'complete collapse'
    """

    def __init__(
        self,
        dataset,
        eval_dataset=None,
        sweep: AblationResult | None = None,
        settings: AblationSettings | None = None,
        profile=None,
        cache=True,
        seed: int = 0,
        weights: tuple[float, float, float] = (25.0, 25.0, 1.0),
    ):
        import ipywidgets as widgets

        _check_configs({"weights": weights})
        _check_panel_weights(dict(zip(_TERMS, weights, strict=True)))
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.sweep = sweep if sweep is not None else AblationResult({})
        self.settings = settings or ablation_settings(profile)
        self.cache, self.seed = cache, int(seed)
        self.n_runs = 0
        self.run = None
        lo, hi = _WEIGHT_EXPONENTS
        start = dict(zip(_TERMS, weights, strict=True))
        self.sliders, self.enabled = {}, {}
        for key, label in _TERMS.items():
            self.sliders[key] = widgets.FloatLogSlider(
                value=start[key] if start[key] > 0 else 1.0,
                base=10,
                min=lo,
                max=hi,
                step=0.05,
                description=label,
                continuous_update=False,
                readout_format=".3g",
                style={"description_width": "80px"},
            )
            self.enabled[key] = widgets.Checkbox(
                value=start[key] > 0, description="on", indent=False
            )
        options = [("(choose a precomputed run)", None)] + [
            (f"{name}: {config_name(r.inv, r.var, r.cov)}", name)
            for name, r in self.sweep.runs.items()
        ]
        self.presets = widgets.Dropdown(options=options, value=None, description="sweep")
        self.presets.observe(self._on_preset, names="value")
        self.button = widgets.Button(description="Train", icon="play", button_style="primary")
        self.button.on_click(self._on_click)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        rows = [widgets.HBox([self.sliders[k], self.enabled[k]]) for k in _TERMS]
        self.widget = widgets.VBox([*rows, widgets.HBox([self.presets, self.button])])
        self.widget.children += (self.readout, self.image)
        self.readout.value = (
            f"<i>{self.settings.steps} steps per run at {self.settings.shape}; "
            "press Train (a cached configuration shows at once)</i>"
        )

    @property
    def weights(self) -> tuple[float, float, float]:
        """(inv, var, cov) from the sliders, to 3 significant digits; 0 when unticked."""
        return tuple(
            float(f"{self.sliders[k].value:.3g}") if self.enabled[k].value else 0.0 for k in _TERMS
        )

    def set_weights(self, inv=None, var=None, cov=None) -> None:
        """Move sliders without training (``0`` unticks a term, ``None`` leaves it)."""
        values = {"inv": inv, "var": var, "cov": cov}
        _check_panel_weights(values)
        for key, value in values.items():
            if value is None:
                continue
            self.enabled[key].value = value > 0
            if value > 0:
                self.sliders[key].value = value

    def train(self) -> RunResult:
        """Run (or load from the cache) the current configuration and show it."""
        tick = time.perf_counter()
        weights = self.weights
        name = self._name_of(weights)
        self.readout.value = f"<i>training {html.escape(name)} ...</i>"
        result = run_ablation(
            {name: weights},
            self.dataset,
            self.eval_dataset,
            settings=self.settings,
            cache=self.cache,
            seed=self.seed,
        )
        self.run = result[name]
        shown = self.sweep.with_run(self.run)
        self.figure = plot_ablation(shown, title=f"{name}: {config_name(*weights)}")
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=72)
        self.image.value = buffer.getvalue()
        self.n_runs += 1
        self.seconds = time.perf_counter() - tick
        self.readout.value = _readout_html(self.run, self.seconds)
        return self.run

    def display(self) -> None:
        """Show the panel in a notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.display()

    def _name_of(self, weights) -> str:
        for name, run in self.sweep.runs.items():
            if (run.inv, run.var, run.cov) == weights and run.kind == "short run":
                return name
        return config_name(*weights)

    def _on_click(self, _button) -> None:
        try:
            self.train()
        except (ValueError, FloatingPointError, RuntimeError) as error:
            self.readout.value = f"<b>training failed:</b> {html.escape(str(error))}"

    def _on_preset(self, change) -> None:
        if change["new"] is None:
            return
        run = self.sweep[change["new"]]
        self.set_weights(inv=run.inv, var=run.var, cov=run.cov)
        self._on_click(None)


def _check_panel_weights(values: dict) -> None:
    """Each weight is None (unchanged), 0 (off) or within the sliders' range."""
    lo, hi = (10**e for e in _WEIGHT_EXPONENTS)
    for key, value in values.items():
        ok = value is None or (
            isinstance(value, numbers.Real) and (value == 0 or lo <= value <= hi)
        )
        if not ok:
            raise ValueError(
                f"{_TERMS[key]} weight must be 0 (off) or in [{lo:g}, {hi:g}], got {value!r}"
            )


def _readout_html(run: RunResult, seconds: float) -> str:
    row = run.row()
    colour = {"healthy": "#2e7d32", "dimensional collapse": "#ef6c00"}.get(
        row["verdict"], "#c62828"
    )
    source = "loaded from the cache" if run.cached else f"trained in {row['train_seconds']:.0f} s"
    return (
        f"<b>{html.escape(run.name)}</b> ({config_name(run.inv, run.var, run.cov)}), "
        f"{row['steps']} steps, {source}; shown in {seconds:.1f} s<br>"
        f"expander std {row['exp_std']:.3g} · representation RankMe {row['rep_rankme']:.3g} "
        f"of {row['rep_rankme_max']} · age R² {row['age_r2']:.2f}<br>"
        f'<b>verdict</b>: <span style="color:{colour}"><b>{row["verdict"]}</b></span>'
    )
