"""Which regions matter: occlusion sensitivity of an encoder, shown over the MNI template.

Occlusion (Zeiler & Fergus 2014) hides a cube of the input (replaced by a baseline, e.g.
the cohort's mean image) and measures how much the encoder's output changes; sliding the
cube over the volume gives a 3D map (:func:`occlusion_sensitivity`). The output measured
is the embedding (L2 distance), a linear read-out such as the age direction of
:func:`ridge_direction` (the map is then in years), or any function of the embedding.
:func:`to_nifti` and :func:`plot_occlusion` show it on the MNI152 template. A map
describes where one encoder is sensitive, including places a probe would not use.

Examples
--------
An encoder that only looks at one corner is only sensitive there:

>>> import torch
>>> from torch import nn
>>> class LooksAtOneCorner(nn.Module):
...     def forward(self, x):
...         return x[:, :, :4, :4, :4].flatten(1)
>>> volumes = torch.rand(2, 1, 8, 8, 8) + 1
>>> saliency = occlusion_sensitivity(LooksAtOneCorner(), volumes, patch=4, baseline="zero")
>>> bool(saliency[:4, :4, :4].min() > 0), float(saliency[4:].max())
(True, 0.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vicreg_lab.probes import device_of

__all__ = ["occlusion_sensitivity", "plot_occlusion", "ridge_direction", "to_nifti"]

REDUCTIONS = ("mean", "mean_abs", None)
Target = None | np.ndarray | torch.Tensor | Sequence[float] | Callable


# ---------------------------------------------------------------- the map


def occlusion_sensitivity(
    model,
    volumes,
    target: Target = None,
    patch: int | Sequence[int] = 8,
    stride: int | Sequence[int] | None = None,
    baseline="mean",
    batch_size: int = 32,
    reduce: str | None = "mean",
    progress: bool = False,
) -> np.ndarray:
    """Occlusion-sensitivity map: how much the encoder's output changes when a cube is hidden.

    A ``patch``-sized cube, moved by ``stride`` (the last one ends at the border), is
    replaced by ``baseline``; a voxel gets the mean change over the cubes that contain it.
    The encoder runs in eval mode, so that BatchNorm does not mix the occluded copies.

    Parameters
    ----------
    model : nn.Module or fitted VICReg
        An encoder ``(B, C, D, H, W) -> (B, F)``, or a fitted VICReg (its ``encoder_``).
    volumes : tensor or array (D, H, W), (C, D, H, W) or (N, C, D, H, W)
    target : None, array-like (F,) or callable
        The change measured, for an occluded copy's embedding ``e`` and the intact ``e0``:
        ``None``: ``||e - e0||``; a direction ``w``: ``(e - e0) @ w`` (e.g. a linear age
        prediction, :func:`ridge_direction`); a callable ``f((B, F)) -> (B,)``:
        ``f(e) - f(e0)``.
    patch : int or 3 ints
        Side(s) of the occluding cube, in voxels.
    stride : int or 3 ints, optional
        Step between cube positions (default ``patch``); ``(patch / stride)^3`` forwards.
    baseline : "mean", "zero", float or array-like
        What replaces the cube: the voxel-wise mean of ``volumes`` (needs N >= 2: the
        map shows where a subject's departure from the average brain matters), a
        constant, or a reference volume ``(D, H, W)`` / ``(C, D, H, W)``.
    reduce : {"mean", "mean_abs", None}
        Combine the volumes' maps by their mean, mean absolute value, or not at all. With
        a signed ``target`` and ``baseline="mean"`` the mean cancels (occluding moves
        subjects towards the average, some up, some down): ``"mean_abs"`` does not.
    batch_size, progress : int, bool
        Occluded copies per forward; a ``tqdm.auto`` bar over the volumes.

    Returns
    -------
    numpy.ndarray
        float32 ``(D, H, W)``, or ``(N, D, H, W)`` when ``reduce=None``.
    """
    encoder, expected = _encoder_of(model)
    x = _as_batch(volumes, "volumes")
    _check_settings(tuple(x.shape[2:]), expected, batch_size, reduce)
    shape = tuple(x.shape[2:])
    patch = _triple(patch, "patch", shape)
    stride = patch if stride is None else _triple(stride, "stride", shape)
    base = _baseline(baseline, x)
    starts = [_starts(n, p, s) for n, p, s in zip(shape, patch, stride, strict=True)]
    score = _scorer(target)
    stacked = _occlusion_maps(encoder, x, base, starts, patch, score, batch_size, progress)
    if reduce is None:
        return stacked
    return (np.abs(stacked) if reduce == "mean_abs" else stacked).mean(0)


def _occlusion_maps(encoder, x, base, starts, patch, score, batch_size, progress):
    """One float32 voxel map per volume (N, D, H, W); the encoder's flags are restored."""
    device = device_of(encoder)
    flags = {m: m.training for m in encoder.modules()}
    maps = []
    try:
        encoder.eval()
        with torch.no_grad():
            for volume in _progress(x, progress):
                values = _occlusion_values(
                    encoder, volume.to(device), base.to(device), starts, patch, score, batch_size
                )
                maps.append(_spread(values, starts, patch, tuple(x.shape[2:])))
    finally:
        for module, flag in flags.items():
            module.training = flag
    return torch.stack(maps).numpy().astype(np.float32, copy=False)


def _occlusion_values(encoder, volume, base, starts, patch, score, batch_size) -> torch.Tensor:
    """Change of the score for every cube position: a tensor (Kd, Kh, Kw)."""
    positions = list(itertools.product(*starts))
    reference = _forward(encoder, volume[None])
    ref_score = score(reference, reference)
    values = []
    for first in range(0, len(positions), batch_size):
        chunk = positions[first : first + batch_size]
        occluded = volume.expand(len(chunk), *volume.shape).clone()
        for copy, corner in zip(occluded, chunk, strict=True):
            cube = (slice(None), *(slice(c, c + p) for c, p in zip(corner, patch, strict=True)))
            copy[cube] = base[cube]  # one slice copy per position, not per voxel
        values.append(score(_forward(encoder, occluded), reference) - ref_score)
    return torch.cat(values).float().cpu().view(*(len(s) for s in starts))


def _forward(encoder, x) -> torch.Tensor:
    out = encoder(x)
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"the encoder must return a tensor (B, F) for B inputs, got {got}")
    return out.float()


def _spread(values: torch.Tensor, starts, patch, shape) -> torch.Tensor:
    """Voxel map: each voxel gets the mean value of the cubes that contain it."""
    a_d, a_h, a_w = (_membership(*args) for args in zip(starts, patch, shape, strict=True))
    total = torch.einsum("abc,ad,bh,cw->dhw", values, a_d, a_h, a_w)
    count = torch.einsum("d,h,w->dhw", a_d.sum(0), a_h.sum(0), a_w.sum(0))
    return total / count


def _starts(n: int, patch: int, stride: int) -> list[int]:
    """Cube starts along one axis, every ``stride``; the last cube ends at ``n``."""
    starts = list(range(0, n - patch + 1, stride))
    if starts[-1] + patch < n:
        starts.append(n - patch)
    return starts


def _membership(starts: list[int], patch: int, n: int) -> torch.Tensor:
    """(K, n) float matrix: 1 where voxel i lies in cube k along this axis."""
    index = torch.arange(n)
    begin = torch.tensor(starts)[:, None]
    return ((index >= begin) & (index < begin + patch)).float()


def _scorer(target) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``score(embeddings, reference) -> (B,)``; the map is score(occluded) - score(intact)."""
    if target is None:
        return lambda e, ref: (e - ref).norm(dim=1)
    if callable(target):

        def call(e, ref):
            out = torch.as_tensor(target(e), dtype=torch.float32, device=e.device)
            if out.shape != (e.shape[0],):
                raise ValueError(
                    f"target callable must return one value per embedding, shape "
                    f"({e.shape[0]},), got {tuple(out.shape)}"
                )
            return out

        return call
    try:
        if torch.is_tensor(target):
            w = target.detach().float().cpu()
        else:
            w = torch.as_tensor(np.asarray(target, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"target must be None, a direction (F,) or a callable, got {type(target).__name__}"
        ) from err
    if w.ndim != 1 or not torch.isfinite(w).all():
        raise ValueError(f"target direction must be a finite 1D array (F,), got {tuple(w.shape)}")

    def project(e, ref):
        if e.shape[1] != len(w):
            raise ValueError(
                f"target direction has {len(w)} values but the embeddings have {e.shape[1]}"
            )
        return e @ w.to(e.device)

    return project


# ---------------------------------------------------------------- input checks


def _encoder_of(model) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The encoder module, and the input shape it expects (None when unknown)."""
    if isinstance(model, nn.Module):
        return model, None
    if hasattr(model, "transform") and hasattr(model, "fit"):  # a VICReg estimator
        if not hasattr(model, "encoder_"):
            raise ValueError("the VICReg model is not fitted: call fit() or load() first")
        return model.encoder_, tuple(model.input_size_)
    raise TypeError(f"model must be an nn.Module or a fitted VICReg, got {type(model).__name__}")


def _check_settings(shape, expected, batch_size, reduce) -> None:
    if expected is not None and shape != tuple(expected):
        raise ValueError(
            f"volumes have shape {shape} but the model was trained on "
            f"{tuple(expected)}: resize them first (e.g. torch.nn.functional.interpolate)"
        )
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def _as_batch(volumes, name: str) -> torch.Tensor:
    """(N, C, D, H, W) float32 from one volume (D, H, W) / (C, D, H, W) or a batch."""
    x = volumes.detach() if torch.is_tensor(volumes) else torch.as_tensor(np.asarray(volumes))
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.float().cpu()
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be (D, H, W), (C, D, H, W) or (N, C, D, H, W) with N >= 1, "
            f"got shape {tuple(volumes.shape) if hasattr(volumes, 'shape') else type(volumes)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return x


def _triple(value, name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    if any(v > n for v, n in zip(values, shape, strict=True)):
        raise ValueError(f"{name}={values} is larger than the volume shape {shape}")
    return tuple(int(v) for v in values)


def _baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    """The replacement volume (C, D, H, W)."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros(x.shape[1:])
        if baseline == "mean":
            if len(x) < 2:
                raise ValueError(
                    "baseline='mean' is the voxel-wise mean of the volumes and needs at "
                    "least 2 of them (with one, occluding changes nothing); pass several "
                    "volumes, a reference volume, 'zero' or a number"
                )
            return x.mean(0)
        raise ValueError(f"baseline must be 'mean', 'zero', a number or a volume, got {baseline!r}")
    if np.ndim(baseline) == 0:
        value = float(baseline)
        if not np.isfinite(value):
            raise ValueError(f"baseline must be finite, got {value}")
        return torch.full(x.shape[1:], value)
    base = _as_batch(baseline, "baseline")
    if len(base) != 1 or base.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"a baseline volume must have the shape of one volume {tuple(x.shape[1:])} "
            f"(or {tuple(x.shape[2:])}), got {tuple(np.shape(baseline))}"
        )
    return base[0]


def _progress(x: torch.Tensor, enabled: bool):
    if not enabled:
        return x
    from tqdm.auto import tqdm

    return tqdm(x, desc="occlusion", unit="volume")


# ---------------------------------------------------------------- a direction to read


def ridge_direction(embeddings, y, alphas=None) -> tuple[np.ndarray, float]:
    """A numeric target's linear direction in embedding space (standardised ridge).

    ``StandardScaler`` then ``RidgeCV`` (leave-one-out alpha), fitted on all rows and
    folded into raw embedding units: ``prediction = embeddings @ w + b``. Pass ``w`` as
    the ``target`` of :func:`occlusion_sensitivity` to map the prediction's change in the
    units of ``y`` (e.g. age). It describes; to *evaluate* a probe use
    :func:`vicreg_lab.probes.probe_table` (cross-validated). ``alphas`` defaults to
    ``vicreg_lab.probes.RIDGE_ALPHAS``; returns ``w`` (float32 (F,)) and ``b`` (float).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> w, b = ridge_direction(X, 2 * X[:, 0] + 1)
    >>> np.round(w, 1).tolist(), round(b, 1)
    ([2.0, 0.0, 0.0], 1.0)
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from vicreg_lab.probes import RIDGE_ALPHAS

    X = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(X) < 3:
        raise ValueError(
            f"embeddings must be (N, F) and y (N,) with N >= 3, got {X.shape} and {y.shape}"
        )
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("embeddings and y must be finite")
    scaler = StandardScaler().fit(X)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS if alphas is None else alphas)
    ridge.fit(scaler.transform(X), y)
    w = ridge.coef_ / scaler.scale_
    b = float(ridge.intercept_ - scaler.mean_ @ w)
    return w.astype(np.float32), b


# ---------------------------------------------------------------- images and figures


def _image_or_mni(image):
    """``image``, or nilearn's 2 mm MNI152 template when it is the string ``"mni"``."""
    if isinstance(image, str) and image == "mni":
        from nilearn.datasets import load_mni152_template

        return load_mni152_template(resolution=2)
    return image


def to_nifti(saliency, affine, resample_to="mni", interpolation: str = "linear"):
    """The map as a NIfTI image, optionally resampled onto another grid (the MNI template).

    Parameters
    ----------
    saliency : array-like (D, H, W)
        A map on the input grid (:func:`occlusion_sensitivity`).
    affine : array-like (4, 4)
        Voxel-to-world (mm) affine of that grid, e.g. ``SyntheticCohort.affine``.
    resample_to : "mni", None or image
        ``"mni"``: nilearn's 2 mm MNI152 template grid (bundled, offline); ``None``: keep
        the map's grid; a NIfTI image (or path): its grid. 0 outside the map's field of view.
    interpolation : {"linear", "nearest", "continuous"}
        ``"linear"`` does not overshoot at the cube edges.

    Returns
    -------
    nibabel.Nifti1Image
        float32.

    Examples
    --------
    >>> import numpy as np
    >>> img = to_nifti(np.ones((8, 8, 8)), np.diag([4.0, 4.0, 4.0, 1.0]), resample_to=None)
    >>> img.shape
    (8, 8, 8)
    """
    import nibabel as nib

    data = saliency.detach().cpu().numpy() if torch.is_tensor(saliency) else np.asarray(saliency)
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"saliency must be a numeric 3D map (D, H, W), got shape {data.shape}")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"affine must be a finite 4x4 array, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine is singular: its 3x3 part must be invertible")
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    if resample_to is None:
        return img
    from nilearn.image import resample_to_img

    target = _image_or_mni(resample_to)
    resampled = resample_to_img(
        img, target, interpolation=interpolation, force_resample=True, copy_header=True
    )
    return nib.Nifti1Image(resampled.get_fdata(dtype=np.float32), resampled.affine)


def plot_occlusion(
    image,
    bg_img="mni",
    title: str | None = None,
    threshold="auto",
    display_mode: str = "ortho",
    cut_coords=None,
    **kwargs,
):
    """Show an occlusion map over a background brain with nilearn's ``plot_stat_map``.

    A map with no negative value (an embedding distance, a ``"mean_abs"`` map) gets a
    sequential colour scale from 0; a signed one a diverging scale centred on 0 (red:
    hiding the region raises the read-out, blue: lowers it).

    Parameters
    ----------
    image : nibabel image
        A 3D map (:func:`to_nifti`).
    bg_img : "mni" or image
        Background: nilearn's 2 mm MNI152 template (offline), or any image.
    threshold : "auto", float or None
        ``|value| <= threshold`` is not drawn, so the brain shows through. ``"auto"``: the
        median of ``|value|`` where the map is not 0 (the stronger half is drawn).
    display_mode, cut_coords, **kwargs
        Passed to :func:`nilearn.plotting.plot_stat_map` (``transparency`` defaults to 0.6).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    if not isinstance(image, nib.spatialimages.SpatialImage) or len(image.shape) != 3:
        raise ValueError(
            "image must be a 3D nibabel image (see to_nifti), got "
            f"{type(image).__name__} of shape {getattr(image, 'shape', None)}"
        )
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if not np.isfinite(data).all():
        raise ValueError("image has NaN or infinite values")
    threshold = _auto_threshold(data, threshold)
    if data.min() >= 0:
        kwargs = {"cmap": "hot", "symmetric_cbar": False, "vmin": 0.0, **kwargs}
    fig = plt.figure(figsize=(7.5, 2.8) if display_mode == "ortho" else (3.5, 3.5))
    plt.close(fig)
    kwargs = {"draw_cross": False, "transparency": 0.6, **kwargs}  # the anatomy shows through
    plotting.plot_stat_map(
        image, bg_img=_image_or_mni(bg_img), figure=fig, title=title, threshold=threshold,
        display_mode=display_mode, cut_coords=cut_coords, **kwargs,
    )  # fmt: skip
    return fig


def _auto_threshold(data: np.ndarray, threshold):
    """``threshold``, or for ``"auto"`` the median of ``|data|`` where it is not 0."""
    if not isinstance(threshold, str):
        return threshold
    if threshold != "auto":
        raise ValueError(f"threshold must be 'auto', a number or None, got {threshold!r}")
    defined = np.abs(data[data != 0])
    return float(np.median(defined)) if defined.size else None
