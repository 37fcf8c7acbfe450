"""The augmentation strengths (:class:`AugmentParams`) and input checks that both pipelines,
``SimCLRTransform`` and ``BatchedAugment``, and the lab's ``AugmentationPanel`` share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch.utils.data import get_worker_info

MAX_SIDE = 256  # largest output side, in voxels
MAX_UPSAMPLING = 4  # larger outputs are almost surely a mistake, and cost memory

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


def parse_input_size(input_size) -> tuple[int, int, int, int]:
    """An int (cube), (D, H, W) or (1, D, H, W) as (1, D, H, W), sides in [2, MAX_SIDE]."""
    size = (input_size,) * 3 if isinstance(input_size, int) else tuple(input_size)
    size = (1, *size) if len(size) == 3 else size
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
    if any(s > MAX_UPSAMPLING * n for s, n in zip(size, source_shape, strict=True)):
        raise ValueError(
            f"{where}: output size {tuple(size)} is more than {MAX_UPSAMPLING}x the source "
            f"size {tuple(source_shape)}; use a smaller input_size or a larger volume"
        )


def check_volume(x, ndim: int, where: str) -> None:
    """Check that ``x`` is a floating-point tensor with ``ndim`` dims and 1 channel."""
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
    info = get_worker_info()
    return seed if info is None else (seed * 1_000_003 + info.id + 1) % 2**63
