"""Augmented views for SimCLR/VICReg on 3D volumes.

- :class:`SimCLRTransform`: per-sample views from TorchIO transforms (DataLoader workers).
- :class:`BatchedAugment`: the same augmentations on a whole batch, on its device.
- :class:`TwoViewsCollate`: a collate function giving ``(view1, view2, targets)``.
- :class:`AugmentParams`: the strengths shared by all three (and the widget).
- :func:`view_distance_ratio`: are two views of one subject closer than two subjects?
"""

from .batched import BatchedAugment, gaussian_blur, gaussian_matrices
from .collate import TwoViewsCollate
from .distance import ViewDistances, view_distance_ratio
from .params import AugmentParams
from .torchio_views import RandomResizedCrop, SimCLRTransform

__all__ = [
    "AugmentParams",
    "BatchedAugment",
    "RandomResizedCrop",
    "SimCLRTransform",
    "TwoViewsCollate",
    "ViewDistances",
    "gaussian_blur",
    "gaussian_matrices",
    "view_distance_ratio",
]
