"""The MNI152 templates the synthetic cohort is made of (shipped with nilearn, loaded offline).

Everything here is computed once per process and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# Channels of the template stack, in order.
CHANNELS = ("gm", "wm", "csf", "gm_near_csf", "mask")

#: Grey-matter parcels of one hemisphere: centres (|x|, y, z) in MNI mm, found once by
#: :func:`derive_parcel_centres` (k-means of the grey-matter voxel coordinates with x
#: folded onto one side) and kept here so that the cohort never depends on a library's
#: k-means. Each centre is mirrored to the left (x < 0) and the right hemisphere: 16
#: parcels, every template voxel belonging to the nearest centre.
PARCEL_CENTRES_MM = (
    (19.6, -78.2, 10.2),
    (22.9, -58.7, -35.1),
    (25.3, -46.8, 52.6),
    (53.4, -43.3, 4.2),
    (29.1, -4.0, -19.0),
    (50.6, 1.3, 20.1),
    (18.0, 10.2, 50.3),
    (22.0, 46.2, 3.7),
)
#: Where each hemisphere parcel lies, roughly (names for tables, not an atlas).
PARCEL_NAMES = (
    "occipital",
    "cerebellum",
    "parietal",
    "temporal_lateral",
    "temporal_medial",
    "insula_frontal",
    "frontal_superior",
    "prefrontal",
)
#: How strongly ageing thins each parcel's grey matter, relative to 1 (a teaching
#: approximation of the known pattern: prefrontal and medial temporal cortex most,
#: occipital cortex least). Left and right parcels share a weight.
PARCEL_AGE_WEIGHTS = (0.5, 0.7, 0.9, 1.0, 1.5, 1.1, 1.0, 1.4)


def parcel_labels() -> list[str]:
    """Names of the 16 parcels, left hemisphere first (``"prefrontal_l"``, ...)."""
    return [f"{name}_{side}" for side in "lr" for name in PARCEL_NAMES]


def derive_parcel_centres(n_parcels: int = len(PARCEL_CENTRES_MM), seed: int = 0) -> np.ndarray:
    """Re-derive :data:`PARCEL_CENTRES_MM`: k-means of grey-matter voxels, x folded.

    Run once to make the constants (sorted by z, then y); kept to show where they
    come from, and tested against them.
    """
    from nilearn import datasets
    from sklearn.cluster import KMeans

    image = datasets.load_mni152_gm_template(resolution=2)
    gm = image.get_fdata(dtype=np.float32)
    xyz = np.argwhere(gm > 0.3) @ image.affine[:3, :3].T + image.affine[:3, 3]
    xyz[:, 0] = np.abs(xyz[:, 0])
    centres = KMeans(n_parcels, n_init=4, random_state=seed).fit(xyz).cluster_centers_
    return centres[np.lexsort((centres[:, 2], centres[:, 1]))]


@lru_cache(maxsize=1)
def mni_templates() -> dict:
    """Load nilearn's 2 mm MNI152 tissue templates and derive what the generator needs.

    The grey matter, white matter and brain mask templates are used (the T1 image
    is composed from them, so atrophy can change it).

    Returns
    -------
    dict
        ``"stack"``: float32 tensor (5, 99, 117, 95) holding :data:`CHANNELS`:
        grey matter, white matter and CSF probabilities (CSF = brain mask minus GM
        and WM), grey matter weighted by its proximity to CSF (the part that atrophy
        removes), and the brain mask. ``"affine"``: the 4x4 voxel-to-MNI affine.
        ``"brain_center"``, ``"brain_extent"``: centre and size (mm) of the mask's
        bounding box.
        ``"ventricles"``: CSF probability of the ventricles (99, 117, 95).
        ``"ventricle_push"``: float32 (3, 99, 117, 95), a smooth field (max norm 1,
        world axes) pointing into the ventricles; sampling the template at
        ``x + s * push(x)`` moves the ventricle walls outwards by up to ``s`` mm.
        ``"parcels"``: float32 (99, 117, 95), the parcel index (0-15, see
        :func:`parcel_labels`) of every voxel: its nearest parcel centre.
        ``"deep_wm_mm"``: float32 (M, 3), MNI mm of the voxels with white matter
        probability above 0.9 (where lesions are placed).
    """
    from nilearn import datasets
    from scipy import ndimage

    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32)
    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    mask = (mask_img.get_fdata(dtype=np.float32) > 0).astype(np.float32)
    affine = mask_img.affine.copy()

    gm[gm < 1e-4], wm[wm < 1e-4] = 0.0, 0.0  # the templates hold denormal specks
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    # Proximity to CSF (sulci, ventricles, and the brain's outer surface): where
    # grey matter borders CSF, ageing thins it first.
    near_csf = np.clip(1.5 * ndimage.gaussian_filter(csf + (1.0 - mask), sigma=1.0), 0.0, 1.0)
    stack = np.stack([gm, wm, csf, gm * near_csf, mask])

    world = _voxel_world(affine, mask.shape)
    inside = world[mask > 0]
    lo, hi = inside.min(0), inside.max(0)

    ventricles, push = _ventricles(csf, world, affine)
    parcels = _nearest_parcel(world)

    return {
        "stack": torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)),
        "affine": affine,
        "brain_center": (lo + hi) / 2,
        "brain_extent": hi - lo,
        "ventricles": ventricles,
        "ventricle_push": torch.from_numpy(np.ascontiguousarray(push, dtype=np.float32)),
        "parcels": torch.from_numpy(parcels),
        "deep_wm_mm": world[wm > 0.9],
    }


def _ventricles(csf: np.ndarray, world: np.ndarray, affine: np.ndarray):
    """The ventricles' CSF probability and a smooth field (max norm 1) pointing into them.

    The ventricles are the large CSF components in a central box around the midline.
    Their blurred map's gradient points into them: sampling along it dilates them.
    """
    from scipy import ndimage

    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    box = (np.abs(x) < 30) & (y > -45) & (y < 30) & (z > -5) & (z < 35)
    labels, n = ndimage.label((csf > 0.5) & box)
    sizes = ndimage.sum(np.ones_like(csf), labels, index=np.arange(1, n + 1))
    ventricles = np.isin(labels, 1 + np.flatnonzero(sizes >= 100)) * csf
    smooth = ndimage.gaussian_filter(ventricles, sigma=3.0)
    push = np.stack(np.gradient(smooth, *np.diag(affine)[:3]))  # world axes = voxel axes
    push /= np.sqrt((push**2).sum(0)).max()
    return ventricles, push


def _nearest_parcel(world: np.ndarray) -> np.ndarray:
    """The index (0-15, left hemisphere first) of every voxel's nearest parcel centre."""
    centres = np.asarray(PARCEL_CENTRES_MM, dtype=np.float32)
    centres = np.concatenate([centres * [-1, 1, 1], centres])  # left hemisphere first
    parcels = np.zeros(world.shape[:-1], dtype=np.float32)
    nearest = np.full(world.shape[:-1], np.inf, dtype=np.float32)
    for k, centre in enumerate(centres):  # one centre at a time: little memory
        distance = ((world - centre) ** 2).sum(-1)
        closer = distance < nearest
        parcels[closer], nearest[closer] = k, distance[closer]
    return parcels


def _voxel_world(affine: np.ndarray, shape) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shape ``(*shape, 3)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return (ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)


def grid_affine(shape, margin: float = 1.15) -> np.ndarray:
    """Voxel-to-MNI affine of an output grid of ``shape`` around the template brain.

    Voxels are isotropic; the field of view covers the brain's bounding box times
    ``margin`` along every axis (room for larger heads and deformations) and is
    centred on the brain.

    Parameters
    ----------
    shape : tuple of 3 int
        Output grid shape (D, H, W).
    margin : float
        Field of view relative to the template brain's extent.

    Returns
    -------
    numpy.ndarray
        4x4 affine.
    """
    info = mni_templates()
    shape = np.asarray(shape, dtype=float)
    voxel = float(np.max(info["brain_extent"] * margin / shape))
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = info["brain_center"] - voxel * (shape - 1) / 2
    return affine
