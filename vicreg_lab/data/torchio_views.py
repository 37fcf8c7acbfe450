"""Per-sample SimCLR/VICReg views of a 3D volume, built from TorchIO transforms."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio

from vicreg_lab.augment import AugmentParams
from vicreg_lab.data.checks import (
    check_tensor_volume,
    check_upsampling,
    parse_input_size,
    worker_seed,
)

_D = AugmentParams  # class attributes hold the defaults: one source of truth


class RandomResizedCrop(tio.SpatialTransform):
    """Crop a random box of random volume fraction, then resize it to ``size``.

    Each side of the box is ``fraction ** (1/3)`` times the image side (the aspect
    ratio is kept), ``fraction ~ U(scale)``. The crop is resized trilinearly (nearest
    for label maps) and the affine reset to identity, so later sizes are in view
    voxels. Draws from torch's global RNG, like every TorchIO random transform.

    Parameters
    ----------
    size : tuple of int
        Output spatial size (D, H, W).
    scale : (float, float)
        Range of the crop's volume fraction, in (0, 1].
    **kwargs
        Passed to :class:`torchio.Transform` (``p``, ``copy``, ...).
    """

    def __init__(self, size, scale, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)
        self.scale = AugmentParams(crop_scale=scale).crop_scale

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        shape = subject.spatial_shape
        lo, hi = self.scale
        side = (lo + (hi - lo) * torch.rand(1).item()) ** (1 / 3)
        extent = [max(1, round(side * n)) for n in shape]
        start = [int(torch.randint(0, n - c + 1, (1,))) for n, c in zip(shape, extent, strict=True)]
        box = tuple(slice(s, s + c) for s, c in zip(start, extent, strict=True))
        for image in self.get_images(subject):
            crop = image.data[(slice(None), *box)][None].float()
            if isinstance(image, tio.LabelMap):
                out = F.interpolate(crop, size=self.size, mode="nearest")
            else:
                out = F.interpolate(crop, size=self.size, mode="trilinear", align_corners=False)
            image.set_data(out[0])
            image.affine = np.eye(4)
        return subject


class SimCLRTransform:
    """Random view of a 3D brain volume for SimCLR/VICReg, from TorchIO transforms.

    The pipeline: ``RescaleIntensity((0, 1))``, :class:`RandomResizedCrop`,
    ``RandomFlip``, ``RandomAffine`` (if ``rotation_degrees > 0``), then
    ``RandomGamma`` + ``RandomBiasField`` (``p_intensity``), ``RandomBlur``
    (``p_blur``) and ``RandomNoise`` (``p_noise``). Sizes are in view voxels; the
    input's affine is ignored.

    Parameters
    ----------
    input_size : int or tuple of int, default=(1, 64, 64, 64)
        Output size: an int (cube), (D, H, W) or (1, D, H, W).
    crop_scale, flip_prob, flip_axes, rotation_degrees, blur_sigma, noise_std, gamma, \
bias_field, p_blur, p_noise, p_intensity
        Strengths; see :class:`~vicreg_lab.augment.AugmentParams`. Also settable
        together as ``transform.params``.
    seed : int or None, default=None
        Seed of the instance's own generator (mixed with the DataLoader worker id);
        each call runs under ``torch.random.fork_rng``, leaving the global RNG
        alone. None uses torch's global RNG.

    Examples
    --------
    >>> transform = SimCLRTransform(input_size=(1, 16, 16, 16), seed=0)
    >>> view = transform(torch.rand(1, 24, 24, 24))
    >>> tuple(view.shape), view.dtype
    ((1, 16, 16, 16), torch.float32)
    """

    def __init__(
        self,
        input_size=(1, 64, 64, 64),
        crop_scale=_D.crop_scale,
        flip_prob=_D.flip_prob,
        flip_axes=_D.flip_axes,
        rotation_degrees=_D.rotation_degrees,
        blur_sigma=_D.blur_sigma,
        noise_std=_D.noise_std,
        gamma=_D.gamma,
        bias_field=_D.bias_field,
        p_blur=_D.p_blur,
        p_noise=_D.p_noise,
        p_intensity=_D.p_intensity,
        seed: int | None = None,
    ):
        self.input_size = parse_input_size(input_size)
        self.params = AugmentParams(
            crop_scale, flip_prob, flip_axes, rotation_degrees, blur_sigma, noise_std,
            gamma, bias_field, p_blur, p_noise, p_intensity,
        )  # fmt: skip
        self.seed = seed
        self._generator = None
        self._generator_seed = None

    @property
    def params(self) -> AugmentParams:
        """The strengths; setting them rebuilds the TorchIO pipeline."""
        return self._params

    @params.setter
    def params(self, params: AugmentParams):
        if not isinstance(params, AugmentParams):
            raise TypeError(f"params must be an AugmentParams, got {type(params).__name__}")
        self._params = params
        self.pipeline = _build_pipeline(params, self.input_size[1:])

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.params.as_dict().items())
        return f"SimCLRTransform(input_size={self.input_size}, {knobs}, seed={self.seed})"

    def __call__(self, x) -> torch.Tensor:
        """A float32 random view, of shape ``input_size``, of ``x``.

        Parameters
        ----------
        x : torch.Tensor, numpy.ndarray, torchio.ScalarImage or torchio.Subject
            One floating-point volume (1, D, H, W). A Subject must hold an image
            named ``"image"`` or exactly one intensity image.
        """
        x = _as_tensor(x)
        check_tensor_volume(x, 4, "SimCLRTransform")
        check_upsampling(x.shape[1:], self.input_size[1:], "SimCLRTransform")
        image = tio.ScalarImage(tensor=x.detach().cpu().float().clone())  # never touch x
        if self.seed is None:
            return self.pipeline(image).data.float()
        call_seed = int(torch.randint(2**62, (1,), generator=self._seeded_generator()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(call_seed)
            return self.pipeline(image).data.float()

    def _seeded_generator(self) -> torch.Generator:
        seed = worker_seed(self.seed)
        if self._generator_seed != seed:
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_seed = seed
        return self._generator


def _build_pipeline(p: AugmentParams, size) -> tio.Compose:
    steps = [
        tio.RescaleIntensity(out_min_max=(0, 1), copy=False),
        RandomResizedCrop(size, p.crop_scale, copy=False),
    ]
    if p.flip_axes:
        steps.append(tio.RandomFlip(axes=p.flip_axes, flip_probability=p.flip_prob, copy=False))
    if p.rotation_degrees > 0:
        steps.append(
            tio.RandomAffine(scales=0, degrees=p.rotation_degrees, translation=0, copy=False)
        )
    intensity = [tio.RandomGamma(log_gamma=p.gamma, copy=False)]
    if p.bias_field > 0:
        intensity.append(tio.RandomBiasField(coefficients=p.bias_field, order=3, copy=False))
    steps += [
        tio.Compose(intensity, p=p.p_intensity, copy=False),
        tio.RandomBlur(std=p.blur_sigma, p=p.p_blur, copy=False),
        tio.RandomNoise(mean=0, std=p.noise_std, p=p.p_noise, copy=False),
    ]
    return tio.Compose(steps, copy=False)  # __call__ passes its own copy


def _as_tensor(x) -> torch.Tensor:
    """The volume held by a tensor, array, TorchIO image or subject."""
    if isinstance(x, tio.Subject):
        images = x.get_images_dict(intensity_only=True)
        if "image" in images:
            return images["image"].data
        if len(images) != 1:
            raise ValueError(
                "SimCLRTransform: a Subject must hold an image named 'image' or exactly one "
                f"intensity image, got {sorted(images)}"
            )
        return next(iter(images.values())).data
    if isinstance(x, tio.Image):
        return x.data
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x
