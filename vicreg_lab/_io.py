"""Atomic writes: a file appears complete or not at all (temporary file, then os.replace).

The temporary file is flushed to disk (fsync) before the rename and the folder after it,
so that a crash or power loss leaves the old file or the new one, never an empty one.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files: give the usual permissions
            tmp.chmod(0o666 & ~_umask())
            _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically, close it, and return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


CACHE_ENV_VAR = "VICREG_LAB_CACHE"


def cache_dir(*parts: str) -> Path:
    """A folder for results worth keeping between runs (sweeps, cohorts), created if missing.

    ``$VICREG_LAB_CACHE`` if set, else ``~/.cache/vicreg-lab``; ``parts`` name a sub-folder.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["VICREG_LAB_CACHE"] = tempfile.mkdtemp()
    >>> cache_dir("sweeps").name
    'sweeps'
    """
    root = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "vicreg-lab"
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
