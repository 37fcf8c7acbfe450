"""How :class:`vicreg_lab.VICReg` reads its data: seeded, resumable DataLoaders, and the
function that turns one batch into two views.

Two paths give the training step its two views of each volume:

- a Dataset of volumes, augmented on the training device (``BatchedAugment``, or a user
  callable): the DataLoader yields volumes and :func:`augmented_views` draws the views;
- a DataLoader whose collate function yields ``(view1, view2, targets)``: the nidl-style
  ``SimCLRTransform`` + ``TwoViewsCollate`` path, in the workers (:func:`pair_of_views`).

The shuffling of epoch ``e`` comes from a generator seeded with ``(seed, e)``, and the
TorchIO views of an item from ``(seed, e, index)``, so that a resumed run draws what the
uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vicreg_lab.data._base import image_of, stack_images
from vicreg_lab.data.collate import TwoViewsCollate, seeded_views


def seeded_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of epoch ``epoch`` of a run seeded with ``seed``."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)


def augment_generator(seed: int, epoch: int, rank: int, device) -> torch.Generator:
    """The generator that draws the augmentations of one epoch on one rank."""
    return seeded_generator(seed + 1 + 1000 * rank, epoch, device)


def training_loader(
    data, batch_size: int, seed: int, epoch: int, num_workers: int = 0, transform=None
) -> DataLoader:
    """A shuffled DataLoader of full batches for epoch ``epoch`` (a DataLoader is kept as
    given); under torch.distributed each rank reads its share. ``transform`` (a
    ``SimCLRTransform``) makes it yield ``(view1, view2, targets)`` drawn in the workers."""
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(f"fit expects a torch Dataset or DataLoader, got {type(data).__name__}")
    sampler = None
    if dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(data, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    collate = stack_images
    if transform is not None:
        data, collate = seeded_views(data, transform, seed, epoch)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,  # the variance term needs full batches
        collate_fn=collate,
        num_workers=num_workers,
        generator=seeded_generator(seed, epoch),
    )


def yields_views(loader) -> bool:
    """Whether a loader's batches are ``(view1, view2, targets)`` already."""
    return isinstance(loader, DataLoader) and isinstance(loader.collate_fn, TwoViewsCollate)


def augmented_views(augment: Callable) -> Callable:
    """``f(batch, device, generator) -> ((view1, view2), (geometry1, geometry2))``, the views
    drawn on ``device`` by ``augment(x, generator) -> views or (views, geometry)``."""

    def views_of(batch, device: torch.device, generator: torch.Generator):
        x = image_of(batch).to(device, non_blocking=True)
        view1, geometry1 = _views_and_geometry(augment(x, generator))
        view2, geometry2 = _views_and_geometry(augment(x, generator))
        return (view1, view2), (geometry1, geometry2)

    return views_of


def pair_of_views(batch, device: torch.device, generator=None):
    """A ``(view1, view2, targets)`` batch's views, on ``device``; no geometry is known."""
    return (batch[0].to(device), batch[1].to(device)), (None, None)


def _views_and_geometry(output):
    """An augmentation's output: views, or ``(views, geometry)``."""
    if isinstance(output, (tuple, list)) and len(output) == 2 and torch.is_tensor(output[1]):
        return output[0], output[1]
    return output, None


def n_items(data) -> int:
    """The number of volumes of a Dataset or of a DataLoader's dataset."""
    return len(data.dataset) if isinstance(data, DataLoader) else len(data)


def rescale_and_resize(x: torch.Tensor, size) -> torch.Tensor:
    """Volumes (B, 1, D, H, W) min-max rescaled to [0, 1] each (as both augmentations start)
    and resized trilinearly to ``size`` (D, H, W): what an encoder sees un-augmented."""
    x = x.float()
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    x = (x - lo.view(shape)) / (hi - lo).clamp_min(1e-12).view(shape)
    if tuple(x.shape[-3:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, tuple(size), mode="trilinear", align_corners=False)
