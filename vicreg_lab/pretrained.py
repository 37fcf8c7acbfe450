"""Encoders trained by this project, shipped inside the package and loaded by name.

A few CPU minutes do not converge VICReg, so the project trains a small encoder
far longer once and ships the result: ``load_pretrained("synthetic-small")``
gives a fitted :class:`vicreg_lab.VICReg` whose embeddings a notebook can probe
at once. Each file sits in ``vicreg_lab/weights/`` beside a JSON card saying how
it was made (exact command, seed, steps, wall time, hardware, package versions)
and its SHA-256, checked before loading; the weights are read with
``torch.load(weights_only=True)``, so a file cannot run code.

Examples
--------
>>> from vicreg_lab.pretrained import available_pretrained
>>> "synthetic-small" in available_pretrained()
True
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from vicreg_lab._io import atomic_path, write_text

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Multi-seed result tables computed by the scripts in ``benchmarks/`` and shipped with the package.
CACHED_DIR = Path(__file__).parent / "cached"
_VERSIONED = ("torch", "torchio", "nilearn", "numpy", "scikit-learn", "vicreg-lab")


def available_pretrained(weights_dir: str | Path = WEIGHTS_DIR) -> list[str]:
    """Names of the shipped encoders (one ``NAME.json`` card + ``NAME.pt`` each)."""
    return sorted(p.stem for p in Path(weights_dir).glob("*.json"))


def pretrained_info(name: str = "synthetic-small", weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """The card of a shipped encoder: how it was trained, and its checksum.

    Parameters
    ----------
    name : str
        One of :func:`available_pretrained`.
    weights_dir : str or Path
        Where the cards and weights live (the package's ``weights/`` folder).

    Returns
    -------
    dict
        Keys include ``file``, ``sha256``, ``command``, ``seed``, ``steps``,
        ``epochs``, ``wall_time_s``, ``hardware``, ``versions``, ``shape``,
        ``cohort`` (keyword arguments of the training cohort) and ``params``.

    Raises
    ------
    KeyError
        If no card named ``name`` exists (the message lists the available names).
    """
    card = Path(weights_dir) / f"{name}.json"
    if not card.exists():
        raise KeyError(
            f"no pretrained encoder named {name!r} in {weights_dir}; "
            f"available: {available_pretrained(weights_dir)}"
        )
    return json.loads(card.read_text(encoding="utf-8"))


def cached_results(name: str, columns=(), path: str | Path | None = None):
    """A shipped multi-seed result table and the command that computed it.

    Each table is a CSV in ``vicreg_lab/cached/`` whose first line is ``# COMMAND | TIME``.

    Parameters
    ----------
    name : str
        Table name: ``vicreg_lab/cached/NAME.csv`` (e.g. ``"augment-cpu"``).
    columns : sequence of str
        Columns the caller needs; a file without them is refused.
    path : str or Path, optional
        Another file in the same format.

    Returns
    -------
    (pandas.DataFrame, str)
        One row per run, and the command line (with its wall time).

    Raises
    ------
    FileNotFoundError
        No such table (the message says which scripts write them).
    ValueError
        The file lacks a needed column or has no rows.
    """
    import pandas as pd

    path = Path(path) if path is not None else CACHED_DIR / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no cached results at {path}; the scripts in benchmarks/ write them (--write)"
        )
    with open(path, encoding="utf-8") as f:
        command = f.readline().lstrip("# ").strip()
        runs = pd.read_csv(f)
    missing = [c for c in columns if c not in runs.columns]
    if missing or runs.empty:
        raise ValueError(
            f"{path}: missing columns {missing} or no rows; expected a table written by a "
            "benchmarks/ script with --write"
        )
    return runs, command


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(
    name: str = "synthetic-small", device: str = "cpu", weights_dir: str | Path = WEIGHTS_DIR
):
    """Load a shipped encoder as a fitted :class:`vicreg_lab.VICReg`.

    The file's SHA-256 is compared with its card first, then the weights are
    read with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    name : str, default="synthetic-small"
        One of :func:`available_pretrained`.
    device : str, default="cpu"
    weights_dir : str or Path
        Where the cards and weights live.

    Returns
    -------
    VICReg
        Fitted: ``transform`` embeds volumes; ``history_`` is the long run's
        history; ``pretrained_info_`` is the card.

    Raises
    ------
    KeyError
        Unknown name.
    FileNotFoundError
        The card exists but its weights file does not.
    ValueError
        The file's checksum does not match the card (corrupt or replaced file).

    Examples
    --------
    >>> from vicreg_lab.pretrained import load_pretrained
    >>> model = load_pretrained("synthetic-small")
    >>> model.pretrained_info_["shape"]
    [32, 32, 32]
    """
    from vicreg_lab.train import VICReg

    info = pretrained_info(name, weights_dir)
    path = Path(weights_dir) / info["file"]
    if not path.exists():
        raise FileNotFoundError(f"pretrained {name!r}: weights file {path} is missing")
    got = sha256_of(path)
    if got != info["sha256"]:
        raise ValueError(
            f"pretrained {name!r}: checksum mismatch for {path} (expected sha256 "
            f"{info['sha256']}, got {got}); the file is corrupt or was replaced — "
            "reinstall vicreg-lab or re-export it with export_pretrained"
        )
    model = VICReg.load(path, device=device)
    model.pretrained_info_ = info
    return model


def evaluate_pretrained(
    name: str = "synthetic-small",
    n_subjects: int = 512,
    cohort_seed: int | None = None,
    seeds=(0, 1, 2),
    cv: int = 5,
    weights_dir: str | Path = WEIGHTS_DIR,
):
    """Probe a shipped encoder on held-out synthetic subjects, beside both baselines.

    By default the held-out subjects are new people on the SAME scanners: the subjects
    that follow the training cohort's in its seed (:meth:`SyntheticCohort.held_out`).
    With ``cohort_seed`` another seed draws other scanners too: a new-scanner test.
    The baselines are those of :func:`vicreg_lab.probes.embeddings_with_baselines`
    (random init of the same architecture with eval-mode and recalibrated BatchNorm,
    raw voxels, the intensity histogram).

    Parameters
    ----------
    name : str
    n_subjects : int
        Held-out subjects.
    cohort_seed : int, optional
        Seed of a cohort with other scanners; must differ from the training cohort's.
    seeds : sequence of int
        Seeds of the cross-validation splits (mean and sd pool seeds x folds).
    cv : int
        Folds per seed.
    weights_dir : str or Path

    Returns
    -------
    pandas.DataFrame
        The tidy table of :func:`vicreg_lab.probes.probe_table`.
    """
    from vicreg_lab.data import SyntheticCohort
    from vicreg_lab.probes import embeddings_with_baselines, probe_table

    model = load_pretrained(name, weights_dir=weights_dir)
    info = model.pretrained_info_
    trained = info.get("cohort", {})
    shape = tuple(info["shape"])
    if cohort_seed is None:
        training = SyntheticCohort(int(trained["n_subjects"]), shape=shape, seed=trained["seed"])
        cohort = training.held_out(n_subjects)
    elif cohort_seed == trained.get("seed"):
        raise ValueError(
            f"cohort_seed={cohort_seed} is the seed of {name!r}'s training cohort: "
            "leave cohort_seed=None for held-out subjects of the same scanners"
        )
    else:
        cohort = SyntheticCohort(n_subjects=n_subjects, shape=shape, seed=cohort_seed)
    embeddings = embeddings_with_baselines(model, cohort, seed=int(info.get("seed", 0)))
    factors = cohort.participants.reset_index(drop=True)
    return probe_table(embeddings, factors, cv=cv, seeds=seeds)


def export_pretrained(
    checkpoint: str | Path,
    name: str,
    card: dict,
    weights_dir: str | Path = WEIGHTS_DIR,
) -> Path:
    """Turn a training checkpoint into a shipped encoder: weights without optimizer + card.

    Parameters
    ----------
    checkpoint : str or Path
        A file written by :meth:`VICReg.save` or a training checkpoint.
    name : str
        The name :func:`load_pretrained` will know it by.
    card : dict
        What the card should say (command, cohort, wall time, ...); the file
        name, checksum, steps, epochs, shape, parameters, versions and hardware
        are added here.
    weights_dir : str or Path

    Returns
    -------
    Path
        The card.
    """
    import torch

    from vicreg_lab.train import load_checkpoint

    state = load_checkpoint(checkpoint)
    state.pop("optimizer", None)
    weights_dir = Path(weights_dir)
    path = weights_dir / f"{name}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    steps = state["history"]["step"]
    full = dict(card)
    full.update(
        file=path.name,
        sha256=sha256_of(path),
        steps=len(steps),
        epochs=int(state["epochs_done"]),
        shape=list(state["input_size"]),
        params=state["params"],
        final_terms={k: steps[-1][k] for k in ("loss", "invariance", "variance", "covariance")}
        if steps
        else {},
        versions=package_versions(),
        hardware=card.get("hardware") or hardware(),
    )
    return write_text(weights_dir / f"{name}.json", json.dumps(full, indent=2) + "\n")


def package_versions() -> dict:
    """Versions of Python and the packages that shape a trained encoder."""
    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def hardware() -> str:
    """A one-line description of this machine (CPU or GPU, cores, torch threads)."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.get_num_threads()} threads"
    )
