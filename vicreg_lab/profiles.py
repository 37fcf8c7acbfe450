"""Run profiles: one place that sizes every notebook and the command line.

``VICREG_LAB_PROFILE`` selects one of ``ci`` (seconds, for the test suite),
``cpu`` (a laptop or Binder: 1-2 cores, 2 GB RAM), ``gpu`` (full size) and
``long`` (the project's hour-long CPU run that made the shipped checkpoint).
When it is unset, ``gpu`` is used if CUDA is available, else ``cpu``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

ENV_VAR = "VICREG_LAB_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Sizes for one kind of machine.

    Parameters
    ----------
    name : str
        ``"ci"``, ``"cpu"``, ``"gpu"`` or ``"long"``.
    n_subjects : int
        Subjects in the synthetic cohort.
    shape : tuple of int
        Volume shape (D, H, W) fed to the encoder.
    batch_size : int
        Training batch size (volumes; each gives two views).
    max_epochs : int
        Training epochs.
    encoder : str
        Encoder name (see ``vicreg_lab.models``).
    expander : str
        Expander spec, e.g. ``"512-512"``.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    name: str
    n_subjects: int
    shape: tuple[int, int, int]
    batch_size: int
    max_epochs: int
    encoder: str
    expander: str
    device: str

    def override(self, **changes) -> Profile:
        """Return a copy with some fields changed (unknown fields raise TypeError)."""
        return replace(self, **changes)


PROFILES = {
    "ci": Profile("ci", 48, (32, 32, 32), 16, 1, "small_cnn", "128-128", "cpu"),
    "cpu": Profile("cpu", 256, (48, 48, 48), 32, 10, "small_cnn", "512-512", "cpu"),
    "gpu": Profile("gpu", 1024, (128, 128, 128), 64, 100, "resnet18_3d", "2048-2048-2048", "cuda"),
    # The project's long CPU run behind ``load_pretrained("synthetic-small")``:
    # the small encoder at the ci shape, a bigger cohort and batch, 4096 steps.
    "long": Profile("long", 1024, (32, 32, 32), 64, 256, "small_cnn", "256-256", "cpu"),
}


def default_profile_name() -> str:
    """Name of the profile used when ``VICREG_LAB_PROFILE`` is unset."""
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Return the profile named ``name``, or the one chosen by ``VICREG_LAB_PROFILE``.

    Raises
    ------
    ValueError
        If the name is not one of the known profiles.
    """
    source = "argument"
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip()
        source = f"environment variable {ENV_VAR}"
    if not name:
        name = default_profile_name()
    key = name.lower()
    if key not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (from the {source}); expected one of {sorted(PROFILES)}"
        )
    return PROFILES[key]
