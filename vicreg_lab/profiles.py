"""Run profiles: one place that sizes every notebook and the command line.

``VICREG_LAB_PROFILE`` selects one of ``ci`` (seconds, for the test suite),
``cpu`` (a laptop or Binder: 1-2 cores, 2 GB RAM), ``gpu`` (one GPU: every notebook in
minutes, sized for a T4), ``research`` (the full-size 3D ResNet run: hours on a GPU,
only when asked for) and ``long`` (the project's hour-long CPU run that made the
shipped checkpoint). When it is unset, ``gpu`` is used if CUDA is available, else
``cpu``: ``research`` is never chosen for you.
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
        ``"ci"``, ``"cpu"``, ``"gpu"``, ``"research"`` or ``"long"``.
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
    augment : tuple of (str, value) pairs
        Changes to the default views (:class:`vicreg_lab.augment.AugmentParams`) for
        training runs of this profile, e.g. ``(("p_intensity", 0.0),)``; empty: the
        defaults. ``dict(profile.augment)`` is what ``VICReg(augment_params=...)`` takes.
    """

    name: str
    n_subjects: int
    shape: tuple[int, int, int]
    batch_size: int
    max_epochs: int
    encoder: str
    expander: str
    device: str
    augment: tuple[tuple[str, float], ...] = ()

    def override(self, **changes) -> Profile:
        """Return a copy with some fields changed (unknown fields raise TypeError)."""
        return replace(self, **changes)


PROFILES = {
    "ci": Profile("ci", 48, (32, 32, 32), 16, 1, "small_cnn", "128-128", "cpu"),
    # The best recipe of the sweep that fits make demo's budget (docs/learning.md, stage 3):
    # 48^3 (resolution was the strongest knob), 1024 training subjects (256 subjects seen
    # 50-100 times each can be told apart by their own lesions and folds, which say nothing
    # about a new person), 12 epochs of 32 batches of 32 = 384 steps, and no gamma /
    # bias-field augmentation (it hides the tissue-fraction cues of age).
    "cpu": Profile(
        "cpu", 1024, (48, 48, 48), 32, 12, "small_cnn", "512-512", "cpu", (("p_intensity", 0.0),)
    ),
    # Minutes on one T4-class GPU, sized by FLOPs (benchmarks/size_profiles.py): notebook
    # 03's fit is 240 steps of resnet18_3d at 64^3, about 5 minutes at a third of a
    # T4's fp32 peak.
    "gpu": Profile("gpu", 512, (64, 64, 64), 64, 30, "resnet18_3d", "1024-1024", "cuda"),
    # The full-size run (the reference notebook's sizes): hours on a GPU, explicit only.
    "research": Profile(
        "research", 1024, (128, 128, 128), 64, 100, "resnet18_3d", "2048-2048-2048", "cuda"
    ),
    # The project's long CPU run behind ``load_pretrained("synthetic-small")``: the cpu
    # profile's recipe (cohort, shape, encoder, expander, batch, views) 21 times longer:
    # 256 epochs = 8192 steps (under an hour on 2 cores).
    "long": Profile(
        "long", 1024, (48, 48, 48), 32, 256, "small_cnn", "512-512", "cpu", (("p_intensity", 0.0),)
    ),
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


def training_flops(encoder: str, shape: tuple[int, int, int], volumes: int) -> float:
    """Estimated FLOPs of training ``encoder`` on ``volumes`` volumes of ``shape``.

    The encoder's forward FLOPs on one volume (``torch.utils.flop_counter``, eval
    mode), times 2 views x 3 (forward and backward) per volume. Expander, loss and
    augmentation are left out: small beside a 3D encoder. Used to size the ``gpu``
    profile until it is measured (``benchmarks/size_profiles.py``).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vicreg_lab.models import build_encoder

    net = build_encoder(encoder).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(2, 1, *shape))
    return counter.get_total_flops() / 2 * 2 * 3 * volumes
