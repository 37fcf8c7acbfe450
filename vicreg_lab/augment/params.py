"""Augmentation strengths shared by both pipelines and the widget.

One dataclass, :class:`AugmentParams`, holds the defaults and the valid ranges,
so :class:`~vicreg_lab.augment.SimCLRTransform` (TorchIO, per sample),
:class:`~vicreg_lab.augment.BatchedAugment` (torch, per batch) and
:class:`~vicreg_lab.lab.widgets.AugmentationPanel` never disagree.

Output sizes are checked here too: each side of ``input_size`` must lie in
[2, ``MAX_SIDE``] = [2, 256], and be at most ``MAX_UPSAMPLING`` = 4 times the
source side (larger outputs are almost surely a mistake, and cost memory).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

MAX_SIDE = 256  # largest output side, in voxels
MAX_UPSAMPLING = 4  # an output side may be at most this many times the source side

# knob -> (lowest, highest) allowed value; ranges apply to both ends of a (low, high) pair
LIMITS = {
    "crop_scale": (0.0, 1.0),  # low end exclusive: a crop needs some volume
    "flip_prob": (0.0, 1.0),
    "rotation_degrees": (0.0, 180.0),
    "blur_sigma": (0.0, 10.0),
    "noise_std": (0.0, 1.0),
    "gamma": (-2.0, 2.0),
    "bias_field": (0.0, 2.0),
    "p_blur": (0.0, 1.0),
    "p_noise": (0.0, 1.0),
    "p_intensity": (0.0, 1.0),
}


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the SimCLR/VICReg-style 3D augmentations.

    Intensities are first rescaled to [0, 1] (min-max, per volume); all sizes
    are in voxels. A range may be given as a pair ``(low, high)`` or as one
    number ``x``, read as ``(0, x)`` (``(-x, x)`` for ``gamma``), as in TorchIO.

    Parameters
    ----------
    crop_scale : (float, float), default=(0.85, 1.0)
        Range of the random crop's volume fraction, in (0, 1]. The crop keeps
        the source's aspect ratio and is resized to the output size. The default
        (with the mild gamma and bias field below) keeps two views of one
        synthetic subject closer than views of two subjects: a distance ratio
        of about 1.6 (``benchmarks/bench_views.py``, docs/augmentations.md).
    flip_prob : float, default=0.5
        Probability of flipping each axis of ``flip_axes`` (independently), in [0, 1].
    flip_axes : tuple of int, default=(0,)
        Spatial axes (0, 1, 2 = D, H, W) that may be flipped. The default flips
        left-right only: axis 0 runs from left to right in RAS+ / MNI-oriented
        volumes (the synthetic cohort, OpenBHB), and a brain is nearly symmetric
        about its midline, but not upside down or front to back. ``()`` never flips.
    rotation_degrees : float, default=0.0
        Each axis is rotated by an angle drawn from U(-x, x) degrees, x in [0, 180].
    blur_sigma : (float, float), default=(0.0, 1.0)
        Range of the Gaussian blur's sigma (voxels of the output view), drawn
        per axis; values in [0, 10].
    noise_std : (float, float), default=(0.0, 0.05)
        Range of the additive Gaussian noise's standard deviation, in [0, 1]
        (intensities are in [0, 1]).
    gamma : (float, float), default=(-0.15, 0.15)
        Range of log(gamma) for ``sign(x) |x| ** gamma`` (TorchIO's
        ``log_gamma``), in [-2, 2]. (-0.15, 0.15) gives gamma in [0.86, 1.16].
    bias_field : float, default=0.15
        Largest magnitude of the coefficients of the order-3 polynomial whose
        exponential multiplies the image (TorchIO's ``RandomBiasField``), in [0, 2].
    p_blur, p_noise : float, default=0.5
        Probability of applying the blur, the noise; in [0, 1].
    p_intensity : float, default=0.8
        Probability of applying the MRI intensity changes (gamma, then bias
        field) together; in [0, 1].

    Raises
    ------
    ValueError
        If a value lies outside its range or a range has low > high.

    Examples
    --------
    >>> from vicreg_lab.augment import AugmentParams
    >>> AugmentParams(blur_sigma=2).blur_sigma
    (0.0, 2.0)
    >>> AugmentParams(gamma=0.5).gamma
    (-0.5, 0.5)
    """

    crop_scale: tuple[float, float] = (0.85, 1.0)
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0,)
    rotation_degrees: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise_std: tuple[float, float] = (0.0, 0.05)
    gamma: tuple[float, float] = (-0.15, 0.15)
    bias_field: float = 0.15
    p_blur: float = 0.5
    p_noise: float = 0.5
    p_intensity: float = 0.8

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "crop_scale" and not isinstance(value, (tuple, list)):
                raise TypeError(f"crop_scale must be a (low, high) pair, got {value!r}")
            if f.name == "flip_axes":
                value = _as_axes(value)
            elif f.name in ("crop_scale", "blur_sigma", "noise_std", "gamma"):
                value = _as_range(value, f.name, symmetric=f.name == "gamma")
            else:
                value = _as_number(value, f.name)
                _check_in(value, f.name)
            object.__setattr__(self, f.name, value)
        if self.crop_scale[0] <= 0:
            raise ValueError(
                f"crop_scale must lie in (0, 1] (a crop needs some volume), got {self.crop_scale}"
            )

    def replace(self, **changes) -> AugmentParams:
        """Return a validated copy with some knobs changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The knobs as a plain dict (name -> value)."""
        return asdict(self)


def _as_number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _as_axes(value) -> tuple[int, ...]:
    """``flip_axes`` as a sorted tuple of distinct axes in {0, 1, 2}."""
    items = (value,) if isinstance(value, int) else value
    try:
        axes = tuple(items)
    except TypeError:
        axes = None
    if (
        axes is None
        or any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise ValueError(
            f"flip_axes must be distinct spatial axes among 0, 1, 2 (D, H, W), got {value!r}"
        )
    return tuple(sorted(int(a) for a in axes))


def _check_in(value: float, name: str) -> None:
    lo, hi = LIMITS[name]
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value}")


def _as_range(value, name: str, symmetric: bool = False) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        x = abs(_as_number(value, name)) if symmetric else _as_number(value, name)
        _check_in(x, name)
        value = (-x, x) if symmetric else (0.0, x)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = (_as_number(v, name) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    _check_in(lo, name)
    _check_in(hi, name)
    return (lo, hi)


def parse_input_size(input_size) -> tuple[int, int, int, int]:
    """Check an output size: an int (cube), (D, H, W) or (1, D, H, W); returns (1, D, H, W)."""
    size = (input_size,) * 3 if isinstance(input_size, int) else tuple(input_size)
    if len(size) == 3:
        size = (1, *size)
    if len(size) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ValueError(
            f"input_size must be an int, (D, H, W) or (1, D, H, W), got {input_size!r}"
        )
    if size[0] != 1:
        raise ValueError(f"input_size must have 1 channel (1, D, H, W), got {input_size!r}")
    if not all(2 <= s <= MAX_SIDE for s in size[1:]):
        raise ValueError(f"each side of input_size must lie in [2, {MAX_SIDE}], got {input_size!r}")
    return size


def check_upsampling(source_shape, size, where: str) -> None:
    """Refuse output sides more than ``MAX_UPSAMPLING`` times the source sides."""
    for s, n in zip(size, source_shape, strict=True):
        if s > MAX_UPSAMPLING * n:
            raise ValueError(
                f"{where}: output size {tuple(size)} is more than {MAX_UPSAMPLING}x the source "
                f"size {tuple(source_shape)}; use a smaller input_size or a larger volume"
            )


def check_volume(x, ndim: int, where: str) -> None:
    """Check that ``x`` is a floating-point tensor with ``ndim`` dims and 1 channel."""
    import torch

    layout = "(1, D, H, W)" if ndim == 4 else "(B, 1, D, H, W)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(
            f"{where}: expected a {ndim}-D tensor {layout}, got shape {tuple(x.shape)}"
            + ("; add a channel with x[None]" if x.ndim == ndim - 1 else "")
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{where}: expected a floating-point tensor, got {x.dtype}; convert it with x.float()"
        )
    if x.shape[-4] != 1:
        raise ValueError(f"{where}: expected 1 channel {layout}, got shape {tuple(x.shape)}")
    if min(x.shape[-3:]) < 2:
        raise ValueError(f"{where}: each spatial side must be >= 2, got shape {tuple(x.shape)}")


def worker_seed(seed: int) -> int:
    """``seed`` in the main process; a distinct, repeatable seed in each DataLoader worker."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return seed if info is None else (seed * 1_000_003 + info.id + 1) % 2**63
