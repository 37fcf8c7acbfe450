"""Datasets of 3D brain MRI: a synthetic cohort, a BIDS-like NIfTI folder, and OpenBHB.

All three share one item convention (see :mod:`vicreg_lab.data._base`): ``dataset[i]``
is a dict ``{"image", "participant_id", "age", "sex", "site", "index"}`` when
``target`` is None, else ``(image, target_value)``; ``image`` is a float32 tensor
of shape (1, D, H, W).
"""

from ._base import as_volumes, image_of, stack_images
from .effects import Effects
from .nifti import NiftiFolder
from .openbhb import OpenBHB
from .synthetic import SyntheticCohort

__all__ = [
    "Effects",
    "NiftiFolder",
    "OpenBHB",
    "SyntheticCohort",
    "as_volumes",
    "image_of",
    "stack_images",
]
