"""Augmentation strengths shared by both pipelines and the widget.

One dataclass, :class:`AugmentParams`, holds the defaults and valid ranges, so
:class:`~vicreg_lab.augment.SimCLRTransform`, :class:`~vicreg_lab.augment.BatchedAugment`
and the lab's ``AugmentationPanel`` never disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

MAX_SIDE = 256  # largest output side, in voxels
MAX_UPSAMPLING = 4  # larger outputs are almost surely a mistake, and cost memory

# knob -> (lowest, highest) allowed value; a range's two ends must both lie in it
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

    Intensities are first min-max rescaled to [0, 1]; sizes are in voxels of the
    view. As in TorchIO, a range given as one number ``x`` means ``(0, x)``
    (``(-x, x)`` for ``gamma``). Valid values are in :data:`LIMITS`.

    Parameters
    ----------
    crop_scale : (float, float)
        Volume fraction of the crop, in (0, 1]. The default keeps two views of a
        subject closer than two subjects (docs/augmentations.md).
    flip_prob, flip_axes : float, tuple of int
        Probability of flipping each of ``flip_axes`` (0, 1, 2 = D, H, W). Default:
        left-right only; a brain is nearly symmetric about its midline only.
    rotation_degrees : float
        Each axis rotates by an angle from U(-x, x) degrees.
    blur_sigma, noise_std, gamma : (float, float)
        Ranges of the blur's sigma (per axis), the noise's std and log(gamma).
    bias_field : float
        Largest coefficient of the order-3 polynomial whose exp multiplies the image.
    p_blur, p_noise, p_intensity : float
        Probabilities of the blur, the noise, and gamma + bias field together.

    Examples
    --------
    >>> AugmentParams(blur_sigma=2).blur_sigma, AugmentParams(gamma=0.5).gamma
    ((0.0, 2.0), (-0.5, 0.5))
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
        """A validated copy with some knobs changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The knobs as a plain dict."""
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
    try:
        axes = tuple((value,) if isinstance(value, int) else value)
    except TypeError:
        axes = (None,)
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) < len(axes):
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
    """An int (cube), (D, H, W) or (1, D, H, W) as (1, D, H, W), sides in [2, MAX_SIDE]."""
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
