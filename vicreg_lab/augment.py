"""Two augmented views of each volume, drawn for a whole (B, 1, D, H, W) batch on its device.

- :class:`AugmentParams`: the strengths (crop, flip, affine, intensity), shared with the
  per-sample TorchIO pipeline (:class:`vicreg_lab.SimCLRTransform`) and the lab's widget.
- :class:`BatchedAugment`: the augmentations of ``SimCLRTransform`` on a whole batch. Crop,
  flips and rotation make one affine map per view, resampled by ONE ``F.grid_sample`` straight
  to the output size; then min-max rescaling, gamma and bias field, blur and noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F

from vicreg_lab.data.checks import (
    check_tensor_volume,
    check_upsampling,
    parse_input_size,
    worker_seed,
)

__all__ = ["LIMITS", "AugmentParams", "BatchedAugment", "gaussian_blur", "gaussian_matrices"]

# knob -> (lowest, highest) allowed value, for a number and both ends of a range
LIMITS = {"crop_scale": (0.0, 1.0), "flip_prob": (0.0, 1.0), "rotation_degrees": (0.0, 180.0),
          "blur_sigma": (0.0, 10.0), "noise_std": (0.0, 1.0), "gamma": (-2.0, 2.0),
          "bias_field": (0.0, 2.0), "p_blur": (0.0, 1.0), "p_noise": (0.0, 1.0),
          "p_intensity": (0.0, 1.0)}  # fmt: skip


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the SimCLR/VICReg-style 3D augmentations, validated on creation.

    Intensities are first rescaled to [0, 1]; sizes are in voxels of the view. As in TorchIO, one
    number ``x`` for a range means ``(0, x)``, or ``(-x, x)`` for ``gamma``."""

    crop_scale: tuple[float, float] = (0.85, 1.0)  # volume fraction of the crop, in (0, 1]
    flip_prob: float = 0.5  # chance of flipping each of flip_axes
    flip_axes: tuple[int, ...] = (0,)  # 0, 1, 2 = D, H, W; a brain is ~symmetric left-right only
    rotation_degrees: float = 0.0  # each axis turns by an angle from U(-x, x) degrees
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # range of the blur's sigma, drawn per axis
    noise_std: tuple[float, float] = (0.0, 0.05)  # range of the additive noise's std
    gamma: tuple[float, float] = (-0.15, 0.15)  # range of log(gamma)
    bias_field: float = 0.15  # largest coefficient of the order-3 polynomial exp'd into a field
    p_blur: float = 0.5  # probability of the blur
    p_noise: float = 0.5  # probability of the noise
    p_intensity: float = 0.8  # probability of gamma and bias field, together

    def __post_init__(self):
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if name == "flip_axes":
                value = _as_axes(value)
            elif name in ("crop_scale", "blur_sigma", "noise_std", "gamma"):
                value = _as_range(value, name)
            else:
                value = _as_number(value, name)
            object.__setattr__(self, name, value)
        if self.crop_scale[0] <= 0:
            raise ValueError(
                f"crop_scale must lie in (0, 1] (a crop needs some volume), got {self.crop_scale}"
            )

    def replace(self, **changes) -> AugmentParams:
        """A validated copy with some knobs changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The knobs as a plain dict."""
        return asdict(self)


def _as_number(value, name: str, check: bool = True) -> float:
    """``value`` as a finite float, inside ``LIMITS[name]`` if ``check``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    lo, hi = LIMITS[name]
    if check and not lo <= number <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {number}")
    return number


def _as_axes(value) -> tuple[int, ...]:
    try:
        axes = tuple((value,) if isinstance(value, int) else value)
    except TypeError:
        axes = (None,)
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) < len(axes):
        raise ValueError(
            f"flip_axes must be distinct spatial axes among 0, 1, 2 (D, H, W), got {value!r}"
        )
    return tuple(sorted(int(a) for a in axes))


def _as_range(value, name: str) -> tuple[float, float]:
    """A (low, high) pair in ``LIMITS[name]``; a number x means (0, x), or (-x, x) for gamma."""
    if name == "crop_scale" and not isinstance(value, (tuple, list)):
        raise TypeError(f"crop_scale must be a (low, high) pair, got {value!r}")
    if isinstance(value, (int, float)):
        x = _as_number(abs(_as_number(value, name, False)) if name == "gamma" else value, name)
        value = (-x, x) if name == "gamma" else (0.0, x)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = (_as_number(v, name, check=False) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    return (_as_number(lo, name), _as_number(hi, name))


_D = AugmentParams  # class attributes hold the defaults: one source of truth


class BatchedAugment:
    """Random crop/flip/rotation + blur/noise/gamma/bias field on a batch of volumes.

    The strengths are the fields of :class:`AugmentParams`. Each call draws one ``torch.rand`` of
    shape (B, 38), then the noise, whatever the strengths: a knob changes how strong an operation
    is, not which random numbers it uses. A location maps from view 1 to view 2 by ``inv(A2) @ A1``.

    Parameters
    ----------
    input_size : int or tuple of int, default=(1, 64, 64, 64)
        An int (cube), (D, H, W) or (1, D, H, W).
    seed : int or None, default=None
        Seeds the instance's generator (mixed with the DataLoader worker id); None: global RNG.
    """

    def __init__(
        self, input_size=(1, 64, 64, 64), crop_scale=_D.crop_scale, flip_prob=_D.flip_prob,
        flip_axes=_D.flip_axes, rotation_degrees=_D.rotation_degrees, blur_sigma=_D.blur_sigma,
        noise_std=_D.noise_std, gamma=_D.gamma, bias_field=_D.bias_field, p_blur=_D.p_blur,
        p_noise=_D.p_noise, p_intensity=_D.p_intensity, seed: int | None = None,
    ):  # fmt: skip
        self.input_size = parse_input_size(input_size)
        self.params = AugmentParams(
            crop_scale, flip_prob, flip_axes, rotation_degrees, blur_sigma, noise_std, gamma,
            bias_field, p_blur, p_noise, p_intensity)  # fmt: skip
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.params.as_dict().items())
        return f"BatchedAugment(input_size={self.input_size}, {knobs}, seed={self.seed})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Augment a float batch (B, 1, D, H, W) on any device; ``generator`` may be on the CPU.

        Returns float32 ``views`` (B, *input_size) and ``geometry`` (B, 3, 4), the maps ``A`` from
        view to source voxel indices (d, h, w): ``src = A[:, :, :3] @ idx + A[:, :, 3]``."""
        check_tensor_volume(x, 5, "BatchedAugment")
        size = self.input_size[1:]
        check_upsampling(x.shape[2:], size, "BatchedAugment")
        gen = self._generator(x.device) if generator is None else generator
        on = x.device if gen is None else gen.device  # a CPU generator draws on the CPU
        # uniforms: 0-9 geometry, 10-31 gamma and bias field, 32-35 blur, 36-37 noise
        u = torch.rand((x.shape[0], 38), generator=gen, device=on).to(x.device)
        geometry = _geometry(u[:, :10], self.params, x.shape[2:], size)
        lo, hi = x.float().flatten(1).aminmax(dim=1)  # rescaling commutes with resampling
        views = _resample(x.float(), geometry, size)
        views = (views - _col(lo)) / _col(hi - lo).clamp_min(1e-12)
        return _intensity(views, u, self.params, size, gen), geometry

    def two_views(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Two independent views of each volume: ``(view1, view2, geometry1, geometry2)``."""
        (v1, g1), (v2, g2) = self(x, generator), self(x, generator)
        return v1, v2, g1, g2

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        seed = worker_seed(self.seed)
        if (key := f"{device}/{seed}") not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[key]


def _intensity(views, u, p: AugmentParams, size, gen) -> torch.Tensor:
    """Gamma and bias field, blur, then noise, each on the samples its uniform picks."""

    def gamma_bias(v, i):  # v ** gamma * exp(poly) = exp(gamma * log(v) + poly)
        log_gamma = p.gamma[0] + (p.gamma[1] - p.gamma[0]) * u[i, 11]
        v = v.clamp_min(0).log_().mul_(_col(torch.exp(log_gamma)))
        if p.bias_field > 0:
            v += _log_bias_field((2 * u[i, 12:32] - 1) * p.bias_field, size)
        return v.exp_()

    def blur(v, i):
        return gaussian_blur(v, p.blur_sigma[0] + (p.blur_sigma[1] - p.blur_sigma[0]) * u[i, 33:36])

    def noise(v, i):
        std = p.noise_std[0] + (p.noise_std[1] - p.noise_std[0]) * u[i, 37]
        z = torch.randn(v.shape, generator=gen, device=v.device if gen is None else gen.device)
        return v + _col(std) * z.to(v.device)

    views = _apply_where(u[:, 10] < p.p_intensity, views, gamma_bias)
    views = _apply_where((u[:, 32] < p.p_blur) & (p.blur_sigma[1] > 0), views, blur)
    return _apply_where((u[:, 36] < p.p_noise) & (p.noise_std[1] > 0), views, noise)


def _apply_where(mask: torch.Tensor, views: torch.Tensor, fn) -> torch.Tensor:
    """``fn(views[i], i)`` where ``mask[i]`` holds; the other samples are kept."""
    idx = mask.nonzero()[:, 0]
    if len(idx) == len(mask):
        return fn(views, idx)
    if len(idx) > 0:
        views[idx] = fn(views[idx], idx)
    return views


def _col(v: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1, 1), to broadcast over a batch of volumes."""
    return v.view(-1, 1, 1, 1, 1)


def _geometry(u: torch.Tensor, p: AugmentParams, src_shape, size) -> torch.Tensor:
    """(B, 3, 4) view -> source index maps; ``u``: crop fraction, position, flips, angles."""
    n, m = (torch.tensor(s, dtype=torch.float32, device=u.device) for s in (src_shape, size))
    fraction = p.crop_scale[0] + (p.crop_scale[1] - p.crop_scale[0]) * u[:, :1]
    extent = fraction ** (1 / 3) * n  # (B, 3) crop sides, in source voxels
    start = u[:, 1:4] * (n - extent)  # first crop edge (voxel edges at 0 .. n)
    scale = extent / m
    # crop: view voxel centre k -> source index, with voxel i spanning [i - 0.5, i + 0.5]
    crop = _affine(torch.diag_embed(scale), start + 0.5 * scale - 0.5)
    may_flip = torch.tensor([a in p.flip_axes for a in range(3)], device=u.device)
    flipped = ((u[:, 4:7] < p.flip_prob) & may_flip).float()
    total = crop @ _affine(torch.diag_embed(1 - 2 * flipped), flipped * (m - 1))  # then flips
    if p.rotation_degrees > 0:
        rot = _rotation(torch.deg2rad((2 * u[:, 7:10] - 1) * p.rotation_degrees))
        centre = (m - 1) / 2  # rotate about the view's centre
        total = total @ _affine(rot, centre - rot @ centre)
    return total[:, :3]


def _affine(linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) and (B, 3) -> homogeneous (B, 4, 4)."""
    out = torch.zeros(linear.shape[0], 4, 4, device=linear.device)
    out[:, :3, :3], out[:, :3, 3], out[:, 3, 3] = linear, shift, 1
    return out


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles (radians) about the d, h, w axes -> (B, 3, 3) rotations."""
    c, s = torch.cos(angles), torch.sin(angles)

    def plane(i, a, b):  # rotation by angle i in the (a, b) plane
        r = torch.diag_embed(torch.ones_like(c))
        r[:, a, a], r[:, a, b], r[:, b, a], r[:, b, b] = c[:, i], -s[:, i], s[:, i], c[:, i]
        return r

    return plane(0, 1, 2) @ plane(1, 0, 2) @ plane(2, 0, 1)


def _resample(x: torch.Tensor, geometry: torch.Tensor, size) -> torch.Tensor:
    """Sample ``x`` at ``geometry``; normalised coordinate (2 i + 1) / n - 1 is index i."""
    n, m = (torch.tensor(s, dtype=torch.float32, device=x.device) for s in (x.shape[2:], size))
    ones = torch.ones_like(n)[None].expand(x.shape[0], 3)
    to_index = _affine(torch.diag_embed(ones * m / 2), ones * (m - 1) / 2)  # view norm -> idx
    to_norm = _affine(torch.diag_embed(ones * 2 / n), ones * (1 / n - 1))  # src idx -> norm
    full = _affine(geometry[:, :, :3], geometry[:, :, 3])
    theta = (to_norm @ full @ to_index)[:, :3]
    theta = torch.cat([theta[:, :, :3].flip(1, 2), theta[:, :, 3:].flip(1)], 2)  # (d,h,w)->(x,y,z)
    return F.grid_sample(x, _affine_grid(theta, size), "bilinear", "border", align_corners=False)


def _affine_grid(theta: torch.Tensor, size) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, *size))``, faster on a CPU: a sum of three 1-D terms."""

    def axis(n, col):  # (B, 3, n): normalised voxel centres times one column of theta
        t = (torch.arange(n, device=theta.device, dtype=theta.dtype) * 2 + 1) / n - 1
        return theta[:, :, col, None] * t

    d, h, w = size
    ad, ah, aw = axis(d, 2) + theta[:, :, 3, None], axis(h, 1), axis(w, 0)  # along d, h, w
    grid = torch.empty(theta.shape[0], d, h, w, 3, device=theta.device, dtype=theta.dtype)
    for c in range(3):  # x, y, z = w, h, d
        grid[..., c] = ad[:, c, :, None, None] + ah[:, c, None, :, None] + aw[:, c, None, None]
    return grid


def _log_bias_field(coefs: torch.Tensor, size) -> torch.Tensor:
    """(B, 20) coefficients -> order-3 polynomial on [-1, 1]^3, (B, 1, *size); TorchIO's exp."""
    b, dev = coefs.shape[0], coefs.device
    pd, ph, pw = (torch.linspace(-1, 1, s, device=dev)[None] ** torch.arange(4, device=dev)[:, None]
                  for s in size)  # fmt: skip
    exps = [(i, j, k) for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]
    i, j, k = torch.tensor(exps, device=dev).T
    c = torch.zeros(b, 4, 4, 4, device=dev)  # c[b, i, j, k]: coefficient of d^i h^j w^k
    c[:, i, j, k] = coefs
    field = ph.T @ (c @ pw)  # (H, 4) @ (B, 4, 4, W) -> (B, 4, H, W)
    return (pd.T @ field.reshape(b, 4, -1)).reshape(b, 1, *size)  # (D, 4) @ (B, 4, H * W)


def gaussian_matrices(sigma: torch.Tensor, n: int, truncate: float = 4.0) -> torch.Tensor:
    """(B, n, n) matrices of 1-D Gaussian blurs by ``sigma`` (B,) voxels, cut at ``truncate`` sigma.

    Row i holds the weights of output i, as ``scipy.ndimage.gaussian_filter(mode="reflect")``;
    a sigma of 0 gives the identity."""
    i = torch.arange(n, device=sigma.device, dtype=sigma.dtype)
    radius = torch.floor(truncate * sigma + 0.5)[:, None, None]
    s = sigma.clamp_min(1e-3)[:, None, None]

    def weight(offset):  # offset = input position - output position, before reflection
        return torch.exp(-0.5 * (offset / s) ** 2) * (offset.abs() <= radius)

    out, inp = i[:, None], i[None, :]
    mats = weight(inp - out) + weight(-1 - inp - out) + weight(2 * n - 1 - inp - out)
    return mats / mats.sum(-1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``x`` (B, 1, D, H, W) by ``sigma`` (B, 3): one batched matmul per axis."""
    b, _, d, h, w = x.shape
    sigma = sigma.to(device=x.device, dtype=x.dtype)
    v = x.reshape(b, d * h, w) @ gaussian_matrices(sigma[:, 2], w).transpose(1, 2)
    v = gaussian_matrices(sigma[:, 0], d) @ v.reshape(b, d, h * w)
    v = torch.einsum("bij,bdjw->bdiw", gaussian_matrices(sigma[:, 1], h), v.reshape(b, d, h, w))
    return v.reshape(b, 1, d, h, w)
