"""The augmentation strengths (:class:`AugmentParams`) that both pipelines,
``SimCLRTransform`` and ``BatchedAugment``, and the lab's ``AugmentationPanel`` share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

# knob -> (lowest, highest) allowed value, for a number and both ends of a range
LIMITS = {"crop_scale": (0.0, 1.0), "flip_prob": (0.0, 1.0), "rotation_degrees": (0.0, 180.0),
          "blur_sigma": (0.0, 10.0), "noise_std": (0.0, 1.0), "gamma": (-2.0, 2.0),
          "bias_field": (0.0, 2.0), "p_blur": (0.0, 1.0), "p_noise": (0.0, 1.0),
          "p_intensity": (0.0, 1.0)}  # fmt: skip


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the SimCLR/VICReg-style 3D augmentations, validated on creation.

    Intensities are first rescaled to [0, 1]; sizes are in voxels of the view. As in TorchIO, one
    number ``x`` for a range means ``(0, x)``, or ``(-x, x)`` for ``gamma``."""

    crop_scale: tuple[float, float] = (0.85, 1.0)  # volume fraction of the crop, in (0, 1]
    flip_prob: float = 0.5  # chance of flipping each of flip_axes
    flip_axes: tuple[int, ...] = (0,)  # 0, 1, 2 = D, H, W; a brain is ~symmetric left-right only
    rotation_degrees: float = 0.0  # each axis turns by an angle from U(-x, x) degrees
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # range of the blur's sigma, drawn per axis
    noise_std: tuple[float, float] = (0.0, 0.05)  # range of the additive noise's std
    gamma: tuple[float, float] = (-0.15, 0.15)  # range of log(gamma)
    bias_field: float = 0.15  # largest coefficient of the order-3 polynomial exp'd into a field
    p_blur: float = 0.5  # probability of the blur
    p_noise: float = 0.5  # probability of the noise
    p_intensity: float = 0.8  # probability of gamma and bias field, together

    def __post_init__(self):
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if name == "flip_axes":
                value = _as_axes(value)
            elif name in ("crop_scale", "blur_sigma", "noise_std", "gamma"):
                value = _as_range(value, name)
            else:
                value = _as_number(value, name)
            object.__setattr__(self, name, value)
        if self.crop_scale[0] <= 0:
            raise ValueError(
                f"crop_scale must lie in (0, 1] (a crop needs some volume), got {self.crop_scale}"
            )

    def replace(self, **changes) -> AugmentParams:
        """A validated copy with some knobs changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The knobs as a plain dict."""
        return asdict(self)


def _as_number(value, name: str, check: bool = True) -> float:
    """``value`` as a finite float, inside ``LIMITS[name]`` if ``check``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    lo, hi = LIMITS[name]
    if check and not lo <= number <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {number}")
    return number


def _as_axes(value) -> tuple[int, ...]:
    try:
        axes = tuple((value,) if isinstance(value, int) else value)
    except TypeError:
        axes = (None,)
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) < len(axes):
        raise ValueError(
            f"flip_axes must be distinct spatial axes among 0, 1, 2 (D, H, W), got {value!r}"
        )
    return tuple(sorted(int(a) for a in axes))


def _as_range(value, name: str) -> tuple[float, float]:
    """A (low, high) pair in ``LIMITS[name]``; a number x means (0, x), or (-x, x) for gamma."""
    if name == "crop_scale" and not isinstance(value, (tuple, list)):
        raise TypeError(f"crop_scale must be a (low, high) pair, got {value!r}")
    if isinstance(value, (int, float)):
        x = _as_number(abs(_as_number(value, name, False)) if name == "gamma" else value, name)
        value = (-x, x) if name == "gamma" else (0.0, x)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = (_as_number(v, name, check=False) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    return (_as_number(lo, name), _as_number(hi, name))
