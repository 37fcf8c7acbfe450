"""Local features: per-cell targets, a dense linear probe, and figures (notebook 06).

A 3D encoder's feature map ``(N, C, d, h, w)`` has one feature vector per cell; cell
``j`` along an axis is centred on voxel ``offset + stride * j`` (the encoder's
``feature_grid``) and owns the voxels nearest to its centre (ties to the lower index).
:func:`cell_average` gives a per-cell target, :func:`dense_probe` asks how well the
cells' features predict it; :func:`plot_cell_map` and :func:`plot_location_matches` draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vicreg_lab.probes import encode
from vicreg_lab.vicregl import cell_centres, n_matches, nearest_neighbour_matches

__all__ = [
    "cell_average",
    "cells_to_volume",
    "dense_probe",
    "feature_maps",
    "plot_cell_map",
    "plot_location_matches",
]

RIDGE_ALPHAS = np.logspace(-3, 5, 17)


def _assignment(n_voxels: int, centres: torch.Tensor) -> torch.Tensor:
    """(m, n) one-hot: voxel i belongs to the cell with the nearest centre."""
    voxels = torch.arange(n_voxels, dtype=torch.float32)
    nearest = (voxels[:, None] - centres[None, :]).abs().argmin(dim=1)
    return torch.nn.functional.one_hot(nearest, len(centres)).T.float()


def _axis_assignments(map_shape, view_shape, grid) -> list[torch.Tensor]:
    centres = cell_centres(map_shape, view_shape, grid)
    first = [centres[:, 0, 0, 0], centres[0, :, 0, 1], centres[0, 0, :, 2]]
    return [_assignment(n, c) for n, c in zip(view_shape, first, strict=True)]


def cell_average(
    volumes, map_shape: Sequence[int], grid: tuple[float, float] | None = None
) -> np.ndarray:
    """Average of each volume over the voxels of every feature-map cell.

    ``volumes`` ``(N, D, H, W)`` or ``(N, 1, D, H, W)`` are voxel maps at the size the
    encoder saw (e.g. grey-matter probability), ``map_shape`` the map's ``(d, h, w)`` and
    ``grid`` the encoder's ``feature_grid`` (None splits the volume evenly). Returns
    float32 ``(N, d, h, w)``; NaN for a cell that owns no voxel (a grid wider than the volume).

    Examples
    --------
    >>> import torch
    >>> v = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    >>> cell_average(v, (2, 1, 1), grid=(2, 0.5))[0, :, 0, 0]
    array([0.5, 2.5], dtype=float32)
    """
    x = torch.as_tensor(np.asarray(volumes), dtype=torch.float32)
    if x.ndim == 5 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 4:
        raise ValueError(f"volumes must be (N, D, H, W) or (N, 1, D, H, W), got {tuple(x.shape)}")
    pd, ph, pw = _axis_assignments(map_shape, x.shape[1:], grid)
    sums = torch.einsum("nDHW,dD,hH,wW->ndhw", x, pd, ph, pw)
    counts = torch.einsum("d,h,w->dhw", pd.sum(1), ph.sum(1), pw.sum(1))
    return (sums / counts).numpy()


def cells_to_volume(
    cells, volume_shape: Sequence[int], grid: tuple[float, float] | None = None
) -> np.ndarray:
    """Paint per-cell values back on the voxels (each voxel takes its cell's value).

    ``cells`` is ``(d, h, w)`` or ``(N, d, h, w)``; returns float32 ``(D, H, W)`` or
    ``(N, D, H, W)`` for ``volume_shape`` ``(D, H, W)``. ``grid`` as in :func:`cell_average`.

    Examples
    --------
    >>> cells_to_volume(np.array([[[1.0]], [[2.0]]]), (4, 1, 1), grid=(2, 0.5))[:, 0, 0]
    array([1., 1., 2., 2.], dtype=float32)
    """
    c = torch.as_tensor(np.asarray(cells), dtype=torch.float32)
    single = c.ndim == 3
    c = c[None] if single else c
    if c.ndim != 4:
        raise ValueError(f"cells must be (d, h, w) or (N, d, h, w), got {tuple(c.shape)}")
    pd, ph, pw = _axis_assignments(c.shape[1:], tuple(volume_shape), grid)
    out = torch.einsum("ndhw,dD,hH,wW->nDHW", c, pd, ph, pw).numpy()
    return out[0] if single else out


def feature_maps(encoder, volumes, batch_size: int = 32) -> np.ndarray:
    """Feature maps ``(N, F, d, h, w)`` of a frozen encoder (eval mode, no grad), in batches:
    :func:`vicreg_lab.probes.encode` with ``features=True``.

    ``encoder`` needs ``forward_features`` (all built-in encoders); its train/eval flags are
    restored afterwards. ``volumes`` is ``(N, C, D, H, W)``; returns float32 numpy.
    """
    return encode(encoder, volumes, batch_size=batch_size, features=True)


def dense_probe(maps, targets, train_size: float = 0.75, seed: int = 0, mask=None) -> dict:
    """Ridge probe from each cell's features to a per-cell target, on held-out subjects.

    Subjects (not cells) are split into training and test sets. Two standardised
    ``RidgeCV`` probes are fitted: **overall** (features -> target; much of it is *where*
    the cell is: a cortical cell holds more grey matter than a white-matter one) and
    **within cell** (features and target minus their training average at the same cell:
    what varies between subjects at a fixed place, such as local atrophy; position alone
    scores 0 here).

    Parameters
    ----------
    maps : array (N, C, d, h, w)
        Feature maps (:meth:`vicreg_lab.VICReg.feature_maps`).
    targets : array (N, d, h, w)
        Per-cell targets (:func:`cell_average`).
    train_size : float, default=0.75
        Fraction of the subjects used for fitting.
    seed : int, default=0
        Seed of the subject split.
    mask : array of bool (d, h, w), optional
        Cells to use (e.g. those inside the brain); default all.

    Returns
    -------
    dict
        ``"r2"``, ``"r2_within_cell"`` (R^2 on the test cells); ``"prediction"``,
        ``"prediction_within_cell"`` (arrays (n_test, d, h, w), NaN outside ``mask``; the
        second a deviation from the cell's training average); ``"test_index"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> maps = rng.normal(size=(40, 8, 2, 2, 2))
    >>> out = dense_probe(maps, maps[:, 0] + 0.1 * rng.normal(size=(40, 2, 2, 2)))
    >>> round(out["r2"], 2), out["prediction"].shape
    (0.99, (10, 2, 2, 2))
    """
    maps, targets = np.asarray(maps, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if maps.ndim != 5 or targets.shape != (maps.shape[0], *maps.shape[2:]):
        raise ValueError(
            f"maps must be (N, C, d, h, w) and targets (N, d, h, w) with the same N and "
            f"cells, got {maps.shape} and {targets.shape}"
        )
    train, test = _split_subjects(maps.shape[0], train_size, seed)
    mask = np.ones(maps.shape[2:], bool) if mask is None else np.asarray(mask, bool)
    x = maps.transpose(0, 2, 3, 4, 1)[:, mask]  # (N, cells, C)
    y = targets[:, mask]  # (N, cells)
    r2, pred = _fit_score(x, y, train, test)
    r2_within, pred_within = _fit_score(x - x[train].mean(0), y - y[train].mean(0), train, test)
    return {
        "r2": r2,
        "r2_within_cell": r2_within,
        "prediction": _painted(pred, mask),
        "prediction_within_cell": _painted(pred_within, mask),
        "test_index": test,
    }


def _split_subjects(n: int, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and test subject indices, at least 2 of each."""
    if not 0 < train_size < 1:
        raise ValueError(f"train_size must lie in (0, 1), got {train_size}")
    n_train = int(round(train_size * n))
    if not 2 <= n_train <= n - 2:
        raise ValueError(f"need at least 2 training and 2 test subjects, got N = {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def _fit_score(x, y, train, test) -> tuple[float, np.ndarray]:
    """Fit a standardised ridge on the training subjects' cells; R^2 and predictions on test."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    model.fit(x[train].reshape(-1, x.shape[-1]), y[train].ravel())
    pred = model.predict(x[test].reshape(-1, x.shape[-1])).reshape(y[test].shape)
    return float(r2_score(y[test].ravel(), pred.ravel())), pred


def _painted(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_test, masked cells) -> (n_test, d, h, w), NaN outside ``mask``."""
    out = np.full((len(pred), *mask.shape), np.nan)
    out[:, mask] = pred
    return out


# ----------------------------------------------------------------------------- figures


def plot_cell_map(cells, background, affine, grid=None, title=None, **kwargs):
    """Per-cell values painted on a brain with nilearn's ``plot_stat_map``.

    Parameters
    ----------
    cells : array (d, h, w)
        One value per feature-map cell (NaN cells are left transparent).
    background : tensor or array (D, H, W) or (1, D, H, W)
        The volume the encoder saw (e.g. the T1 image).
    affine : array (4, 4)
        Voxel-to-mm affine of ``background`` (``cohort.affine``).
    grid : (stride, offset), optional
        The encoder's ``feature_grid``.
    **kwargs
        Passed to :func:`nilearn.plotting.plot_stat_map`; ``cut_coords`` defaults to the
        volume's centre, so that figures align.
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    bg = _as_volume(background)
    volume = cells_to_volume(np.nan_to_num(np.asarray(cells, dtype=np.float32)), bg.shape, grid)
    affine = np.asarray(affine, dtype=float)
    fig = plt.figure(figsize=(7.5, 2.8))
    plt.close(fig)
    if "cut_coords" not in kwargs:  # the volume's centre: figures of one subject align
        centre = (np.asarray(bg.shape, dtype=float) - 1) / 2
        kwargs["cut_coords"] = tuple(affine[:3, :3] @ centre + affine[:3, 3])
    style = dict(draw_cross=False, cmap="viridis", threshold=1e-6, transparency=0.65)
    kwargs = {**style, **kwargs}  # transparency 0.65: the brain shows through the cells
    plotting.plot_stat_map(
        nib.Nifti1Image(volume, affine),
        bg_img=nib.Nifti1Image(bg.astype(np.float32), affine),
        figure=fig,
        title=title,
        **kwargs,
    )
    return fig


def plot_location_matches(source, locations1, locations2, num_matches=None, axis=2):
    """VICRegL's location matching on one slice of the source volume.

    Shows the middle layer (along ``axis``) of view 1's cells (circles) and view 2's
    (crosses) at their source positions, and a line from each kept view-1 cell to its
    nearest view-2 cell (in 3D).

    Parameters
    ----------
    source : tensor or array (D, H, W) or (1, D, H, W)
    locations1, locations2 : tensor (d, h, w, 3)
        Source coordinates of one sample's cells (:func:`vicreg_lab.vicregl.feature_locations`).
    num_matches : int, optional
        Pairs kept, as in the loss (default: 20/49 of the cells).
    axis : int, default=2
        Axis cut by the slice (for RAS arrays 0: sagittal, 1: coronal, 2: axial).
    """
    import matplotlib.pyplot as plt

    src = _as_volume(source)
    p1 = torch.as_tensor(locations1, dtype=torch.float32)
    p2 = torch.as_tensor(locations2, dtype=torch.float32)
    flat1, flat2 = p1.reshape(1, -1, 3), p2.reshape(1, -1, 3)
    k = n_matches(num_matches, flat1.shape[1])
    query, match = nearest_neighbour_matches(torch.cdist(flat1, flat2), k)
    layer1 = _middle_layer(p1.shape[:3], axis)
    layer2 = _middle_layer(p2.shape[:3], axis)
    cut = float(flat1[0, layer1, axis].mean())
    plane = [a for a in range(3) if a != axis]
    # transposed, origin at the bottom, as vicreg_lab.lab.plots.plot_views
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    index = int(np.clip(round(cut), 0, src.shape[axis] - 1))
    ax.imshow(np.take(src, index, axis=axis).T, cmap="gray", origin="lower")
    for i, j in zip(query[0].tolist(), match[0].tolist(), strict=True):
        if layer1[i]:
            a, b = flat1[0, i, plane].tolist(), flat2[0, j, plane].tolist()
            ax.plot([a[0], b[0]], [a[1], b[1]], color="gold", lw=1.2)
    ax.scatter(flat1[0, layer1, plane[0]], flat1[0, layer1, plane[1]], s=28,
               facecolors="none", edgecolors="tab:cyan", label="view 1 cells")  # fmt: skip
    ax.scatter(flat2[0, layer2, plane[0]], flat2[0, layer2, plane[1]], s=28, marker="x",
               color="tab:red", label="view 2 cells")  # fmt: skip
    ax.set(xlim=(-0.5, src.shape[plane[0]] - 0.5), ylim=(-0.5, src.shape[plane[1]] - 0.5))
    ax.set(xticks=[], yticks=[])
    ax.set_title(f"location matches (slice {index} of axis {axis})", fontsize="medium")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _middle_layer(map_shape, axis: int) -> torch.Tensor:
    """Flat boolean mask of the cells in the middle layer of a map along ``axis``."""
    mask = torch.zeros(tuple(map_shape), dtype=torch.bool)
    index = [slice(None)] * 3
    index[axis] = map_shape[axis] // 2
    mask[tuple(index)] = True
    return mask.flatten()


def _as_volume(x) -> np.ndarray:
    """(D, H, W) numpy array from a tensor or array (D, H, W) or (1, D, H, W)."""
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return x[0] if x.ndim == 4 else x
