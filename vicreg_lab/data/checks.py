"""Checks of the tensors the augmentation pipelines and the lab receive, and the seed of a
DataLoader worker: shared by :class:`vicreg_lab.BatchedAugment`,
:class:`vicreg_lab.SimCLRTransform` and the lab's panels."""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

MAX_SIDE = 256  # largest output side, in voxels
MAX_UPSAMPLING = 4  # larger outputs are almost surely a mistake, and cost memory


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


def check_tensor_volume(x, ndim: int, where: str) -> None:
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
