"""Two augmented views of each volume, drawn for a whole batch on its device.

- :class:`AugmentParams`: the strengths (crop, flip, affine, intensity), shared with the
  per-sample TorchIO pipeline (:class:`vicreg_lab.SimCLRTransform`) and the widget.
- :class:`BatchedAugment`: the augmentations of a batch (B, 1, D, H, W), on its device.
"""

from .batched import BatchedAugment, gaussian_blur, gaussian_matrices
from .params import AugmentParams

__all__ = ["AugmentParams", "BatchedAugment", "gaussian_blur", "gaussian_matrices"]
