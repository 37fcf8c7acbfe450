"""Which regions matter: occlusion sensitivity of an encoder, shown over the MNI template.

Occlusion (Zeiler & Fergus 2014) asks the encoder directly: hide a cube of the input
(replace it by a baseline, e.g. the cohort's mean image) and measure how much the
output changes. Sliding the cube over the volume gives a 3D map on the input grid:

- :func:`occlusion_sensitivity`: the map. The output measured is the embedding itself
  (L2 distance), a linear read-out of it (e.g. the age direction of a ridge probe: the
  map is then in years), or any function of the embedding. All occluded copies of a
  volume are built with tensor operations and run through the encoder in batches.
- :func:`ridge_direction`: the age (or any numeric target) direction in embedding
  space, to pass as ``target``.
- :func:`to_nifti`: the map as a NIfTI image, resampled onto the MNI152 template grid.
- :func:`plot_occlusion`: the image over the template with nilearn's ``plot_stat_map``.

A map is a description of one encoder on some volumes, not a test: it shows where the
encoder's output is sensitive, including places a probe would not use.

Examples
--------
>>> import torch
>>> from torch import nn
>>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(16**3, 4))
>>> volumes = torch.rand(3, 1, 16, 16, 16)
>>> occlusion_sensitivity(encoder, volumes, patch=8).shape
(16, 16, 16)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

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

    For every position of a ``patch``-sized cube (moved by ``stride``; the last cube
    along each axis is shifted to end at the border, so every voxel is covered), the
    cube is replaced by ``baseline`` and the change of the output is recorded. A voxel's
    value is the mean change over all the cubes that contain it. The encoder runs in
    eval mode (BatchNorm uses its running statistics, so a copy's output does not depend
    on the others in its batch), without gradients; its train/eval flags are restored.

    Parameters
    ----------
    model : nn.Module or fitted VICReg
        An encoder mapping ``(B, C, D, H, W)`` to ``(B, F)``, or a fitted
        :class:`vicreg_lab.VICReg` (its ``encoder_``; volumes must then have its
        ``input_size_``).
    volumes : tensor or array
        One volume ``(D, H, W)`` or ``(C, D, H, W)``, or a batch ``(N, C, D, H, W)``.
        Must be finite.
    target : None, array-like (F,) or callable
        What change is measured, for an occluded copy with embedding ``e`` and the
        intact volume's ``e0``:

        - ``None``: the embedding's L2 distance ``||e - e0||`` (>= 0);
        - a direction ``w`` (F,): the signed change ``(e - e0) @ w``, e.g. of a linear
          age prediction (see :func:`ridge_direction`; the map is then in years);
        - a callable ``f(embeddings (B, F) tensor) -> (B,)``: the signed change
          ``f(e) - f(e0)``.
    patch : int or 3 ints
        Side(s) of the occluding cube, in voxels.
    stride : int or 3 ints, optional
        Step between cube positions (default: ``patch``, cubes side by side). A smaller
        stride gives a smoother map at a cost of ``(patch / stride)^3`` more forwards.
    baseline : "mean", "zero", float or array-like
        What replaces the cube. ``"mean"``: the voxel-wise mean of ``volumes`` (needs
        N >= 2; the map then shows where a subject's departure from the average brain
        matters). ``"zero"`` or a number: a constant. An array ``(D, H, W)`` or
        ``(C, D, H, W)``: a reference volume, e.g. a cohort's mean image.
    batch_size : int
        Occluded copies per forward pass.
    reduce : {"mean", "mean_abs", None}
        How the volumes' maps are combined: their mean, the mean of their absolute
        values, or not at all (one map per volume). With a signed ``target`` and
        ``baseline="mean"``, the mean map of an encoder that is nearly linear is nearly
        0 (occluding moves each subject towards the average, up for some and down for
        others): ask for ``"mean_abs"`` to see where the read-out moves at all.
    progress : bool
        Show a ``tqdm.auto`` progress bar over the volumes.

    Returns
    -------
    numpy.ndarray
        float32 ``(D, H, W)``, or ``(N, D, H, W)`` when ``reduce=None``, on the input
        grid.

    Raises
    ------
    TypeError
        ``model`` is neither an ``nn.Module`` nor a fitted VICReg; ``target`` of an
        unknown kind.
    ValueError
        Volumes of a bad shape or not finite, shapes that do not match the model,
        bad ``patch``/``stride``/``batch_size``/``baseline``/``reduce``, a direction whose length
        is not the embedding size, a callable target returning the wrong shape.

    Examples
    --------
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
    encoder, expected = _encoder_of(model)
    x = _as_batch(volumes, "volumes")
    if expected is not None and tuple(x.shape[2:]) != tuple(expected):
        raise ValueError(
            f"volumes have shape {tuple(x.shape[2:])} but the model was trained on "
            f"{tuple(expected)}: resize them first (e.g. torch.nn.functional.interpolate)"
        )
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    shape = tuple(x.shape[2:])
    patch = _triple(patch, "patch", shape)
    stride = patch if stride is None else _triple(stride, "stride", shape)
    base = _baseline(baseline, x)
    starts = [_starts(n, p, s) for n, p, s in zip(shape, patch, stride, strict=True)]
    device = _device_of(encoder)
    score = _scorer(target)

    flags = {m: m.training for m in encoder.modules()}
    maps = []
    try:
        encoder.eval()
        with torch.no_grad():
            for volume in _progress(x, progress):
                values = _occlusion_values(
                    encoder, volume.to(device), base.to(device), starts, patch, score, batch_size
                )
                maps.append(_spread(values, starts, patch, shape))
    finally:
        for module, flag in flags.items():
            module.training = flag
    stacked = torch.stack(maps).numpy().astype(np.float32, copy=False)
    if reduce is None:
        return stacked
    return (np.abs(stacked) if reduce == "mean_abs" else stacked).mean(0)


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


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


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
    too_big = [v > n for v, n in zip(values, shape, strict=True)]
    if any(too_big):
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

    ``StandardScaler`` then ``RidgeCV`` (alpha chosen by leave-one-out among
    ``alphas``) are fitted on all rows, and folded into one direction in the raw
    embedding units: ``prediction = embeddings @ w + b``. Pass ``w`` as the ``target``
    of :func:`occlusion_sensitivity` to map the change of the prediction (in the units
    of ``y``). Fitted on all rows, it describes; to *evaluate* a probe, use
    :func:`vicreg_lab.probes.probe_table` (cross-validated).

    Parameters
    ----------
    embeddings : array-like (N, F)
    y : array-like (N,)
        Numeric target (e.g. age).
    alphas : sequence of float, optional
        Ridge penalties to choose from; default that of the probes
        (``vicreg_lab.probes.RIDGE_ALPHAS``).

    Returns
    -------
    w : numpy.ndarray (F,)
    b : float

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
        ``"mni"``: nilearn's 2 mm MNI152 template grid (bundled, offline). ``None``: keep
        the map's grid. A NIfTI image (or path): its grid. Outside the map's field of view
        the image is 0.
    interpolation : {"linear", "nearest", "continuous"}
        Resampling interpolation; ``"linear"`` does not overshoot at the cube edges.

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

    A map with no negative value (an embedding distance, a ``"mean_abs"`` map) is drawn
    with a sequential colour scale from 0; a signed one with a diverging scale centred
    on 0 (red: hiding the region raises the read-out, blue: lowers it).

    Parameters
    ----------
    image : nibabel image
        A 3D map (:func:`to_nifti`).
    bg_img : "mni" or image
        Background: nilearn's 2 mm MNI152 template (offline), or any image.
    title : str, optional
    threshold : "auto", float or None
        Values with ``|value| <= threshold`` are not drawn, so the brain shows through.
        ``"auto"``: the median of ``|value|`` over the voxels where the map is not 0
        (its field of view), so the stronger half is drawn. ``None``: draw everything.
    display_mode : str
        nilearn display mode: ``"ortho"``, ``"z"``, ``"x"``, ...
    cut_coords : sequence of float, optional
        Where to cut (mm). Default: nilearn's choice (near the map's strongest region).
    **kwargs
        Passed to :func:`nilearn.plotting.plot_stat_map` (``vmax``, ``cmap``,
        ``transparency``: the map's opacity, 0.6 by default...).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> img = to_nifti(np.random.default_rng(0).random((12, 12, 12)), np.diag([12.0] * 3 + [1]))
    >>> fig = plot_occlusion(img, title="random map")
    >>> type(fig).__name__
    'Figure'
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
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold must be 'auto', a number or None, got {threshold!r}")
        defined = np.abs(data[data != 0])
        threshold = float(np.median(defined)) if defined.size else None
    if data.min() >= 0:
        kwargs.setdefault("cmap", "hot")
        kwargs.setdefault("symmetric_cbar", False)
        kwargs.setdefault("vmin", 0.0)
    fig = plt.figure(figsize=(7.5, 2.8) if display_mode == "ortho" else (3.5, 3.5))
    plt.close(fig)
    kwargs.setdefault("draw_cross", False)
    kwargs.setdefault("transparency", 0.6)  # the anatomy shows through
    plotting.plot_stat_map(
        image,
        bg_img=_image_or_mni(bg_img),
        figure=fig,
        title=title,
        threshold=threshold,
        display_mode=display_mode,
        cut_coords=cut_coords,
        **kwargs,
    )
    return fig
