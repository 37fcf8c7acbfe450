"""Shared pytest set-up: a headless matplotlib backend and few threads per test process."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")


import pytest  # noqa: E402


def mni_brain(size=(32, 32, 32)):
    """The MNI152 template bundled with nilearn as a (1, *size) float32 tensor (offline)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from nilearn.datasets import load_mni152_template

    data = load_mni152_template(resolution=2).get_fdata()
    volume = torch.from_numpy(np.asarray(data, dtype=np.float32))[None, None]
    return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)[0]


@pytest.fixture(scope="session")
def brain():
    """A real brain volume for augmentation tests: MNI152 at (1, 32, 32, 32)."""
    return mni_brain()
