"""Are your augmentations stronger than your subjects are different?

VICReg makes two views of one volume agree while keeping different volumes apart:
that only works if two views of ONE subject are closer than views of two subjects.
:func:`view_distance_ratio` checks it on the voxels, before any training. Near 1,
nothing can be both invariant to the views and informative about the subject.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from vicreg_lab.augment import BatchedAugment
from vicreg_lab.data.checks import check_tensor_volume


@dataclass(frozen=True)
class ViewDistances:
    """Result of :func:`view_distance_ratio` (mean squared differences of [0, 1] views)."""

    within: float
    between: float
    ratio: float
    raw_between: float
    n_subjects: int

    def to_dict(self) -> dict:
        """The fields as a plain dict."""
        return asdict(self)


def view_distance_ratio(volumes, augment=None, seed: int = 0) -> ViewDistances:
    """Between-subject over within-subject distance of augmented views.

    Parameters
    ----------
    volumes : torch.Tensor (N, 1, D, H, W)
        Volumes of ``N >= 2`` different subjects.
    augment : callable, optional
        ``augment(x, generator) -> views`` or ``(views, geometry)``; default:
        ``BatchedAugment`` at the volumes' shape.
    seed : int
        Seed of the views and of the pairing of subjects.

    Returns
    -------
    ViewDistances
        Mean squared differences: ``within`` (two views of one subject), ``between``
        (views of each subject and a random other one), ``ratio = between / within``,
        and ``raw_between`` (the rescaled volumes themselves, without augmentation).

    Examples
    --------
    >>> x = torch.rand(8, 1, 16, 16, 16)
    >>> result = view_distance_ratio(x, BatchedAugment(16, crop_scale=(1, 1), p_noise=0))
    >>> result.ratio > 1
    True
    """
    check_tensor_volume(volumes, 5, "view_distance_ratio")
    n = volumes.shape[0]
    if n < 2:
        raise ValueError(f"view_distance_ratio needs at least 2 subjects, got {n}")
    if augment is None:
        augment = BatchedAugment(tuple(volumes.shape[2:]))
    generator = torch.Generator(device=volumes.device).manual_seed(seed)
    view1, view2 = _views(augment, volumes, generator), _views(augment, volumes, generator)
    # pair every subject with another one: a random permutation shifted by one
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(volumes.device)
    other = torch.empty_like(order)
    other[order] = order.roll(1)
    within = _msd(view1, view2)
    between = _msd(view1, view2[other])
    raw = _rescaled(F.interpolate(volumes.float(), size=view1.shape[2:], mode="trilinear"))
    return ViewDistances(
        within=within,
        between=between,
        ratio=between / within if within > 0 else float("inf"),
        raw_between=_msd(raw, raw[other]),
        n_subjects=n,
    )


def _views(augment, volumes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    out = augment(volumes, generator)
    return out[0] if isinstance(out, tuple) else out


def _rescaled(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (x - lo.view(shape)) / (hi - lo).clamp_min(1e-12).view(shape)


def _msd(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).square().mean())
