"""BatchedAugment: each operation, the geometry, seeding, and agreement with SimCLRTransform."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, stats

from vicreg_lab import SimCLRTransform
from vicreg_lab.augment import BatchedAugment, _affine_grid, gaussian_blur, gaussian_matrices

OFF = dict(p_blur=0.0, p_noise=0.0, p_intensity=0.0)  # geometry only


def _rescaled(x):
    return (x - x.min()) / (x.max() - x.min())


def _index_grid(size):
    axes = [torch.arange(s, dtype=torch.float32) for s in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)


def test_output_shape_dtype_device(brain):
    x = brain[None].repeat(3, 1, 1, 1, 1).double()
    views, geometry = BatchedAugment((1, 16, 20, 24), seed=0)(x)
    assert views.shape == (3, 1, 16, 20, 24) and views.dtype == torch.float32
    assert geometry.shape == (3, 3, 4) and geometry.dtype == torch.float32
    assert views.device == x.device and torch.isfinite(views).all()
    assert BatchedAugment(16)(x.half())[0].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stays_on_cuda(brain):
    x = brain[None].repeat(2, 1, 1, 1, 1).cuda()
    views, geometry = BatchedAugment(16, seed=0)(x)
    assert views.is_cuda and geometry.is_cuda
    cpu_gen = torch.Generator().manual_seed(0)
    assert BatchedAugment(16)(x, generator=cpu_gen)[0].is_cuda


def test_full_crop_without_flip_is_identity(brain):
    views, geometry = BatchedAugment(32, crop_scale=(1, 1), flip_prob=0, **OFF)(brain[None])
    torch.testing.assert_close(views[0], _rescaled(brain), atol=1e-5, rtol=0)
    torch.testing.assert_close(geometry[0], torch.eye(3, 4))


def test_forced_flip_matches_torch_flip(brain):
    augment = BatchedAugment(32, crop_scale=(1, 1), flip_prob=1, flip_axes=(0, 1, 2), **OFF)
    views, geometry = augment(brain[None])
    torch.testing.assert_close(views[0], _rescaled(brain).flip(1, 2, 3), atol=1e-5, rtol=0)
    expected = torch.tensor([[-1.0, 0, 0, 31], [0, -1, 0, 31], [0, 0, -1, 31]])
    torch.testing.assert_close(geometry[0], expected)


def test_default_flips_are_left_right_only(brain):
    views, geometry = BatchedAugment(32, crop_scale=(1, 1), flip_prob=1, **OFF)(brain[None])
    torch.testing.assert_close(views[0], _rescaled(brain).flip(1), atol=1e-5, rtol=0)
    assert torch.linalg.diagonal(geometry[0, :, :3]).tolist() == [-1.0, 1.0, 1.0]
    never = BatchedAugment(16, flip_prob=1, flip_axes=(), **OFF, seed=0)
    _, geometry = never(brain[None].expand(20, -1, -1, -1, -1))
    assert (torch.linalg.diagonal(geometry[:, :, :3]) > 0).all()


def test_flip_rate_follows_flip_prob(brain):
    _, geometry = BatchedAugment(16, flip_prob=0.3, flip_axes=(0, 1, 2), **OFF, seed=1)(
        brain[None].expand(400, -1, -1, -1, -1)
    )
    flipped = torch.linalg.diagonal(geometry[:, :, :3]) < 0  # (400, 3)
    assert abs(flipped.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / 1200) ** 0.5


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_geometry_maps_view_voxels_to_source_voxels(rotation):
    """On a linear image trilinear interpolation is exact: view == source at A @ idx."""
    shape, size = (30, 34, 28), (20, 22, 24)
    d, h, w = _index_grid(shape).reshape(3, *shape)
    source = 0.3 * d - 0.2 * h + 0.5 * w
    augment = BatchedAugment((1, *size), rotation_degrees=rotation, **OFF, seed=2)
    views, geometry = augment(source[None, None].expand(6, 1, -1, -1, -1))
    src = geometry[:, :, :3] @ _index_grid(size) + geometry[:, :, 3:]  # (6, 3, N)
    expected = (0.3 * src[:, 0] - 0.2 * src[:, 1] + 0.5 * src[:, 2] - source.min()) / (
        source.max() - source.min()
    )
    inside = ((src >= 0) & (src <= torch.tensor(shape).view(1, 3, 1) - 1)).all(1)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(views.reshape(6, -1)[inside], expected[inside], atol=1e-5, rtol=0)


def test_geometry_on_brain_matches_scipy_interpolation(brain):
    augment = BatchedAugment(24, crop_scale=(0.3, 0.6), flip_prob=0.5, **OFF, seed=3)
    views, geometry = augment(brain[None].expand(4, -1, -1, -1, -1))
    source = _rescaled(brain)[0].numpy()
    for view, a in zip(views, geometry, strict=True):
        src = (a[:, :3] @ _index_grid((24, 24, 24)) + a[:, 3:]).numpy()
        expected = ndimage.map_coordinates(source, src, order=1, mode="nearest")
        np.testing.assert_allclose(view.numpy().ravel(), expected, atol=1e-5)


def test_crop_volume_fraction_lies_in_range(brain):
    lo, hi = 0.2, 0.7
    augment = BatchedAugment((1, 16, 20, 12), crop_scale=(lo, hi), **OFF, seed=4)
    _, geometry = augment(brain[None].expand(300, -1, -1, -1, -1))
    # |det A| = source voxels per view voxel, so fraction = |det A| * view voxels / source voxels
    fraction = torch.linalg.det(geometry[:, :, :3]).abs() * (16 * 20 * 12) / 32**3
    assert fraction.min() >= lo - 1e-4 and fraction.max() <= hi + 1e-4
    assert fraction.min() < lo + 0.05 and fraction.max() > hi - 0.05  # the range is used
    # the crop box lies inside the source: the first and last view voxels map inside
    corners = geometry[:, :, 3]
    far = geometry[:, :, :3] @ torch.tensor([15.0, 19.0, 11.0]) + corners
    for ends in (corners, far):
        assert (ends >= -0.5).all() and (ends <= 31.5).all()


def test_affine_grid_equals_torch_affine_grid():
    theta = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [3, 1, 5, 6, 7], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, (5, 6, 7)), expected, atol=1e-6, rtol=0)


def _gaussian_kernel(sigma):
    radius = int(4.0 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    return k / k.sum(), radius


def test_toeplitz_blur_matches_conv3d_and_scipy():
    x = torch.rand(
        2, 1, 20, 24, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    sigma = torch.tensor([[0.8, 1.3, 2.0], [1.1, 0.0, 0.6]], dtype=torch.float64)
    out = gaussian_blur(x, sigma)
    for b in range(2):
        kernels = [_gaussian_kernel(s) if s > 0 else (torch.ones(1, dtype=x.dtype), 0)
                   for s in sigma[b].tolist()]  # fmt: skip
        kernel = torch.einsum("i,j,k->ijk", *(k for k, _ in kernels))
        pads = [r for _, r in kernels]
        # reflect borders as scipy's "reflect" (edge voxel repeated): index with np.pad
        padded = np.pad(x[b, 0].numpy(), [(r, r) for r in pads], mode="symmetric")
        ref = F.conv3d(torch.from_numpy(padded)[None, None], kernel[None, None])[0, 0]
        torch.testing.assert_close(out[b, 0], ref, atol=1e-5, rtol=0)
        scipy_ref = ndimage.gaussian_filter(x[b, 0].numpy(), sigma[b].numpy(), mode="reflect")
        np.testing.assert_allclose(out[b, 0].numpy(), scipy_ref, atol=1e-10)


def test_gaussian_matrices_rows_sum_to_one_and_zero_sigma_is_identity():
    mats = gaussian_matrices(torch.tensor([0.0, 0.5, 3.0]), 10)
    torch.testing.assert_close(mats.sum(-1), torch.ones(3, 10))
    torch.testing.assert_close(mats[0], torch.eye(10))
    assert (mats[2] - mats[2].T).abs().max() > 0  # borders reflect: not symmetric


def _high_frequency_energy(v):
    spectrum = torch.fft.fftn(v - v.mean(), dim=(-3, -2, -1)).abs() ** 2
    freqs = [torch.fft.fftfreq(n).abs() for n in v.shape[-3:]]
    high = (freqs[0][:, None, None] > 0.25) | (freqs[1][:, None] > 0.25) | (freqs[2] > 0.25)
    return spectrum[..., high].sum().item()


def test_blur_lowers_high_frequency_energy(brain):
    x = brain[None].expand(4, -1, -1, -1, -1)
    kwargs = dict(crop_scale=(1, 1), flip_prob=0, p_noise=0, p_intensity=0, seed=5)
    sharp, _ = BatchedAugment(32, p_blur=0, **kwargs)(x)
    blurred, _ = BatchedAugment(32, p_blur=1, blur_sigma=(1.0, 1.5), **kwargs)(x)
    assert _high_frequency_energy(blurred) < 0.2 * _high_frequency_energy(sharp)
    torch.testing.assert_close(blurred.mean(), sharp.mean(), atol=1e-3, rtol=0)


def test_noise_has_the_requested_std(brain):
    x = brain[None].expand(4, -1, -1, -1, -1)
    kwargs = dict(crop_scale=(1, 1), p_blur=0, p_intensity=0, seed=6)
    clean, _ = BatchedAugment(32, p_noise=0, **kwargs)(x)
    noisy, _ = BatchedAugment(32, p_noise=1, noise_std=(0.1, 0.1), **kwargs)(x)
    residual = (noisy - clean).flatten(1)
    torch.testing.assert_close(residual.std(1), torch.full((4,), 0.1), atol=0.003, rtol=0)
    assert residual.mean().abs() < 0.003


def test_gamma_is_a_monotonic_power(brain):
    kwargs = dict(crop_scale=(1, 1), flip_prob=0, p_blur=0, p_noise=0, bias_field=0, seed=7)
    clean, _ = BatchedAugment(32, p_intensity=0, **kwargs)(brain[None])
    out, _ = BatchedAugment(32, p_intensity=1, gamma=(0.4, 0.4), **kwargs)(brain[None])
    torch.testing.assert_close(out, clean.pow(np.exp(0.4)), atol=1e-5, rtol=0)
    order = clean.flatten().argsort()
    assert (out.flatten()[order].diff() >= 0).all()  # monotonic: the ranking is kept


def test_bias_field_is_smooth_and_multiplicative():
    x = torch.ones(2, 1, 24, 24, 24)
    x[:, :, 0, 0, 0] = 0  # rescaled to 1 everywhere else: the view is the bias field
    kwargs = dict(crop_scale=(1, 1), flip_prob=0, p_blur=0, p_noise=0, gamma=(0, 0), seed=8)
    out, _ = BatchedAugment(24, p_intensity=1, bias_field=0.5, **kwargs)(x)
    log_field = out[:, 0, 1:, 1:, 1:].double().log()
    assert log_field.std() > 0.05  # it does change intensities
    for dim in (1, 2, 3):  # log of the field is a cubic polynomial: 4th differences vanish
        assert torch.diff(log_field, n=4, dim=dim).abs().max() < 1e-3
    assert torch.diff(log_field, n=1, dim=1).abs().max() < 0.5  # no jumps


def test_seeded_runs_repeat_exactly(brain):
    x = brain[None].expand(3, -1, -1, -1, -1)
    kwargs = dict(input_size=16, rotation_degrees=10)
    a = BatchedAugment(**kwargs, seed=0).two_views(x)
    b = BatchedAugment(**kwargs, seed=0).two_views(x)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], a[1])  # two views differ
    assert not torch.equal(a[0], BatchedAugment(**kwargs, seed=1)(x)[0])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    unseeded = BatchedAugment(**kwargs)
    assert torch.equal(unseeded(x, generator=g1)[0], unseeded(x, generator=g2)[0])


def _crop_side_and_flip(view, n):
    """Crop side fraction and D-flip of a view of a ramp along D (0 .. 1 over n voxels)."""
    profile = view[0, :, 0, 0]
    m = profile.numel()
    extent = (profile.max() - profile.min()).item() * (n - 1) * m / (m - 1)
    return extent / n, bool(profile[0] > profile[-1])


def test_crop_and_flip_distributions_match_torchio():
    n, m, draws = 48, 12, 200
    ramp = torch.linspace(0, 1, n).view(1, n, 1, 1).expand(1, n, 4, 4).contiguous()
    kwargs = dict(input_size=(1, m, 2, 2), crop_scale=(0.3, 0.9), flip_prob=0.3, **OFF, seed=9)
    torchio = SimCLRTransform(**kwargs)
    tio_stats = np.array([_crop_side_and_flip(torchio(ramp), n) for _ in range(draws)])
    views, _ = BatchedAugment(**kwargs)(ramp[None].expand(draws, -1, -1, -1, -1))
    batch_stats = np.array([_crop_side_and_flip(v, n) for v in views])
    # TorchIO rounds crop sides to whole voxels (1/48 steps): allow that in the KS test
    assert stats.ks_2samp(tio_stats[:, 0], batch_stats[:, 0]).pvalue > 1e-3
    for s in (tio_stats, batch_stats):
        assert abs(s[:, 1].mean() - 0.3) < 4 * (0.3 * 0.7 / draws) ** 0.5


def test_intensity_statistics_match_torchio(brain):
    draws = 200
    kwargs = dict(input_size=16, noise_std=(0.0, 0.1), seed=10)  # default knobs otherwise
    torchio = SimCLRTransform(**kwargs)
    tio_views = torch.stack([torchio(brain) for _ in range(draws)])
    batch_views, _ = BatchedAugment(**kwargs)(brain[None].expand(draws, -1, -1, -1, -1))
    for statistic in (torch.mean, torch.std):
        a = statistic(tio_views.flatten(1), dim=1).numpy()
        b = statistic(batch_views.flatten(1), dim=1).numpy()
        se = np.hypot(a.std(), b.std()) / draws**0.5
        assert abs(a.mean() - b.mean()) < 4 * se, statistic.__name__
        assert stats.ks_2samp(a, b).pvalue > 1e-3, statistic.__name__


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(1, 16, 16, 16), ValueError, r"5-D tensor \(B, 1, D, H, W\)"),
        (torch.rand(2, 2, 16, 16, 16), ValueError, "1 channel"),
        (torch.randint(0, 9, (1, 1, 16, 16, 16)), TypeError, "floating-point"),
        (np.zeros((1, 1, 16, 16, 16), np.float32), TypeError, "torch.Tensor"),
        (torch.rand(1, 1, 4, 4, 4), ValueError, "more than 4x the source"),
    ],
)
def test_bad_batches_are_refused(x, error, match):
    with pytest.raises(error, match=match):
        BatchedAugment(24)(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_scale": (0.0, 1.0)}, r"crop_scale must lie in \(0, 1\]"),
        ({"crop_scale": (0.5, 1.2)}, r"crop_scale must lie in \[0.0, 1.0\]"),
        ({"crop_scale": (0.8, 0.5)}, "low <= high"),
        ({"blur_sigma": (-1.0, 1.0)}, "blur_sigma must lie in"),
        ({"noise_std": -0.1}, "noise_std must lie in"),
        ({"flip_prob": 1.5}, "flip_prob must lie in"),
        ({"input_size": 300}, r"each side of input_size must lie in \[2, 256\]"),
        ({"input_size": (2, 16, 16, 16)}, "1 channel"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedAugment(**kwargs)
