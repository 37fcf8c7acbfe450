"""Encoders trained by this project, shipped inside the package and loaded by name.

A few CPU minutes do not converge VICReg, so a small encoder was trained far longer once
and ships in ``vicreg_lab/weights/`` beside a JSON card (exact command, seed, steps, wall
time, hardware, versions, SHA-256). The checksum is verified before loading and weights
are read with ``torch.load(weights_only=True)``, so a file cannot run code.
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
    """The card of a shipped encoder (a dict): how it was trained, and its checksum.

    Keys include ``file``, ``sha256``, ``command``, ``seed``, ``steps``, ``epochs``,
    ``wall_time_s``, ``hardware``, ``versions``, ``shape``, ``cohort`` (keyword arguments
    of the training cohort) and ``params``. Raises KeyError for an unknown ``name``.
    """
    card = Path(weights_dir) / f"{name}.json"
    if not card.exists():
        raise KeyError(
            f"no pretrained encoder named {name!r} in {weights_dir}; "
            f"available: {available_pretrained(weights_dir)}"
        )
    return json.loads(card.read_text(encoding="utf-8"))


def cached_results(name: str, columns=(), path: str | Path | None = None):
    """A shipped multi-seed result table and the command that computed it (with its time).

    Reads ``vicreg_lab/cached/NAME.csv`` (or ``path``), a CSV whose first line is
    ``# COMMAND | TIME``, and returns ``(DataFrame, command)``; a file without rows or
    without the needed ``columns`` is refused.
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
    """Load a shipped encoder as a fitted :class:`vicreg_lab.VICReg`, checksum first.

    ``name`` is one of :func:`available_pretrained`. The model's ``history_`` is the long
    run's and ``pretrained_info_`` its card. Raises KeyError (unknown name),
    FileNotFoundError (weights missing) or ValueError (checksum mismatch).

    Examples
    --------
    >>> from vicreg_lab.pretrained import load_pretrained
    >>> model = load_pretrained("synthetic-small")
    >>> model.pretrained_info_["shape"]
    [48, 48, 48]
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


def export_pretrained(
    checkpoint: str | Path, name: str, card: dict, weights_dir: str | Path = WEIGHTS_DIR
) -> Path:
    """Turn a training checkpoint into a shipped encoder: weights without optimizer + card.

    ``checkpoint`` is a file written by :meth:`VICReg.save` or a training checkpoint;
    ``card`` says what it can (command, cohort, wall time, ...): the file name, checksum,
    steps, epochs, shape, parameters, versions and hardware are added. Returns the card's
    path.
    """
    import torch

    from vicreg_lab.checkpoints import load_checkpoint

    state = load_checkpoint(checkpoint)
    state.pop("optimizer", None)
    weights_dir = Path(weights_dir)
    path = weights_dir / f"{name}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    steps = state["history"]["step"]
    terms = ("loss", "invariance", "variance", "covariance")
    final_terms = {k: steps[-1][k] for k in terms} if steps else {}
    full = dict(card)
    full.update(
        file=path.name,
        sha256=sha256_of(path),
        steps=len(steps),
        epochs=int(state["epochs_done"]),
        shape=list(state["input_size"]),
        params=state["params"],
        final_terms=final_terms,
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
