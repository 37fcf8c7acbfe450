"""Occlusion sensitivity: the map finds what an encoder looks at; NIfTI export and the figure."""

import numpy as np
import pytest
import torch
from nilearn.datasets import load_mni152_template
from torch import nn

from vicreg_lab.saliency import (
    occlusion_sensitivity,
    plot_occlusion,
    ridge_direction,
    to_nifti,
)

REGION = (slice(8, 16), slice(0, 8), slice(16, 24))  # an aligned 8^3 block of a 32^3 grid


class LooksAt(nn.Module):
    """A toy encoder whose embedding is the voxels of one region, nothing else."""

    def __init__(self, region=REGION):
        super().__init__()
        self.region = region

    def forward(self, x):
        return x[(slice(None), slice(None), *self.region)].flatten(1)


class RegionMeans(nn.Module):
    """Embedding = (mean of region A, mean of region B)."""

    def __init__(self, a=REGION, b=(slice(24, 32), slice(24, 32), slice(0, 8))):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        means = [x[(slice(None), slice(None), *r)].mean((1, 2, 3, 4)) for r in (self.a, self.b)]
        return torch.stack(means, dim=1)


@pytest.fixture
def volumes():
    return torch.rand(3, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5


def _outside(region, shape=(32, 32, 32)):
    inside = np.zeros(shape, dtype=bool)
    inside[region] = True
    return ~inside


def test_map_is_high_exactly_where_the_encoder_looks(volumes):
    saliency = occlusion_sensitivity(LooksAt(), volumes, patch=8, baseline="zero")
    assert saliency.shape == (32, 32, 32) and saliency.dtype == np.float32
    assert saliency[REGION].min() > 1.0  # hiding the region changes every value in it
    assert np.abs(saliency[_outside(REGION)]).max() == 0.0
    # the L2 change equals the norm of the hidden voxels (baseline zero), mean over volumes
    expected = np.mean([np.linalg.norm(v[0][REGION].numpy()) for v in volumes])
    np.testing.assert_allclose(saliency[REGION], expected, rtol=1e-5)


def test_overlapping_cubes_peak_on_the_region_and_fade_away(volumes):
    saliency = occlusion_sensitivity(LooksAt(), volumes, patch=8, stride=4, baseline="mean")
    peak = np.unravel_index(saliency.argmax(), saliency.shape)
    assert all(r.start <= p < r.stop for r, p in zip(REGION, peak, strict=True))
    assert saliency[24:, 24:, :8].max() == 0.0  # cubes there never reach the region
    assert np.isfinite(saliency).all()


def test_direction_gives_the_signed_change_of_a_linear_readout(volumes):
    encoder = RegionMeans()
    saliency = occlusion_sensitivity(encoder, volumes, target=[1.0, 0.0], patch=4, baseline=0.0)
    # hiding a 4^3 cube of region A lowers its mean by (sum of the cube) / 8^3
    x = volumes[:, 0].numpy()
    cube = (slice(8, 12), slice(0, 4), slice(16, 20))
    expected = -np.mean([v[cube].sum() / 8**3 for v in x])
    np.testing.assert_allclose(saliency[cube], expected, rtol=1e-4)
    assert saliency[REGION].max() < 0
    assert np.abs(saliency[_outside(REGION)]).max() < 1e-7  # region B has weight 0


def test_callable_target_equals_the_direction(volumes):
    encoder = RegionMeans()
    kwargs = dict(patch=8, baseline="zero")
    by_direction = occlusion_sensitivity(encoder, volumes, target=np.array([2.0, -1.0]), **kwargs)
    by_callable = occlusion_sensitivity(
        encoder, volumes, target=lambda e: 2 * e[:, 0] - e[:, 1], **kwargs
    )
    np.testing.assert_allclose(by_callable, by_direction, atol=1e-6)
    assert by_direction[REGION].max() < 0
    assert by_direction[24:, 24:, :8].min() > 0  # region B matters, with the opposite sign


def test_mean_baseline_signed_maps_cancel_for_a_linear_encoder_but_not_their_sizes(volumes):
    encoder = RegionMeans()
    kwargs = dict(target=[1.0, 0.0], patch=8, baseline="mean")
    signed = occlusion_sensitivity(encoder, volumes, **kwargs)
    sizes = occlusion_sensitivity(encoder, volumes, reduce="mean_abs", **kwargs)
    assert np.abs(signed).max() < 1e-6  # each subject moves towards the average
    assert sizes[REGION].min() > 1e-3 and sizes[_outside(REGION)].max() < 1e-6


def test_per_volume_maps_batches_and_uneven_cubes(volumes):
    encoder = RegionMeans()
    kwargs = dict(target=[1.0, 1.0], patch=(6, 7, 5), stride=(5, 6, 4))
    per_volume = occlusion_sensitivity(encoder, volumes, reduce=None, batch_size=7, **kwargs)
    assert per_volume.shape == (3, 32, 32, 32)
    average = occlusion_sensitivity(encoder, volumes, batch_size=64, **kwargs)
    np.testing.assert_allclose(per_volume.mean(0), average, atol=1e-6)
    assert np.isfinite(average).all()  # the last cube ends at the border: no voxel uncovered
    assert not np.allclose(per_volume[0], per_volume[1])


def test_batchnorm_runs_in_eval_mode_and_flags_are_restored():
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv3d(1, 4, 4, stride=4), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4 * 4**3, 8)
    )
    encoder.train()
    volumes = torch.rand(2, 1, 16, 16, 16)
    one = occlusion_sensitivity(encoder, volumes, patch=4, batch_size=1)
    many = occlusion_sensitivity(encoder, volumes, patch=4, batch_size=64)
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-6)  # train-mode BN would differ
    assert all(m.training for m in encoder.modules())
    assert encoder[1].num_batches_tracked.item() == 0  # running statistics untouched


def test_a_fitted_vicreg_is_accepted_at_its_input_size():
    from vicreg_lab import VICReg

    data = list(torch.rand(8, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)))
    model = VICReg(expander="16-16", batch_size=4, max_epochs=1, progress=False).fit(data)
    volumes = torch.stack(data[:2])
    via_model = occlusion_sensitivity(model, volumes, patch=8)
    via_encoder = occlusion_sensitivity(model.encoder_, volumes, patch=8)
    np.testing.assert_allclose(via_model, via_encoder)
    assert via_model.max() > 0
    with pytest.raises(ValueError, match="trained on"):
        occlusion_sensitivity(model, torch.rand(2, 1, 32, 32, 32), patch=8)
    with pytest.raises(ValueError, match="not fitted"):
        occlusion_sensitivity(VICReg(), volumes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(volumes=torch.rand(2, 2)), "must be \\(D, H, W\\)"),
        (dict(volumes=torch.full((2, 1, 8, 8, 8), float("nan"))), "NaN"),
        (dict(patch=9), "larger than the volume"),
        (dict(patch=0), "positive int"),
        (dict(stride=(2, 2)), "3 positive ints"),
        (dict(batch_size=0), "batch_size"),
        (dict(reduce="max"), "reduce must be"),
        (dict(volumes=torch.rand(1, 1, 8, 8, 8)), "at least 2"),
        (dict(baseline="median"), "baseline must be"),
        (dict(baseline=float("inf")), "finite"),
        (dict(baseline=torch.zeros(4, 4, 4)), "shape of one volume"),
        (dict(target=[1.0, 2.0]), "has 2 values but the embeddings have 512"),
        (dict(target=[[1.0]]), "1D"),
        (dict(target=lambda e: e), "one value per embedding"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, match):
    args = dict(model=LooksAt((slice(0, 8),) * 3), volumes=torch.rand(2, 1, 8, 8, 8), patch=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        occlusion_sensitivity(**args)


def test_bad_model_or_encoder_output():
    with pytest.raises(TypeError, match="nn.Module or a fitted VICReg"):
        occlusion_sensitivity("resnet", torch.rand(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        occlusion_sensitivity(nn.Identity(), torch.rand(2, 1, 8, 8, 8), patch=4)


def test_ridge_direction_recovers_a_linear_target():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)) * [1, 10, 0.1, 1, 1] + 3  # unequal scales, offsets
    y = X @ np.array([0.5, 0.1, 4.0, 0.0, 0.0]) - 7
    w, b = ridge_direction(X, y)
    np.testing.assert_allclose(X @ w + b, y, atol=0.05)
    assert w.shape == (5,)
    with pytest.raises(ValueError, match="N >= 3"):
        ridge_direction(X, y[:-1])


def test_to_nifti_keeps_or_resamples_the_grid_in_world_space():
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    affine[:3, 3] = [-80.0, -110.0, -70.0]
    saliency = np.zeros((32, 36, 30), dtype=np.float32)
    saliency[20:24, 10:14, 18:22] = 1.0  # a hot block
    saliency[0, 0, 0] = 0.25  # (not a binary image)
    native = to_nifti(saliency, affine, resample_to=None)
    np.testing.assert_array_equal(native.affine, affine)
    np.testing.assert_array_equal(native.get_fdata(), saliency)

    mni = to_nifti(saliency, affine)
    template = load_mni152_template(resolution=2)
    assert mni.shape == template.shape
    np.testing.assert_allclose(mni.affine, template.affine)
    centre_mm = (affine @ [21.5, 11.5, 19.5, 1])[:3]
    hot = np.argwhere(mni.get_fdata() > 0.5)
    hot_mm = hot @ template.affine[:3, :3].T + template.affine[:3, 3]
    np.testing.assert_allclose(hot_mm.mean(0), centre_mm, atol=2.0)
    assert mni.get_fdata().max() <= 1.0 + 1e-6  # linear interpolation: no overshoot


def test_to_nifti_bad_input():
    with pytest.raises(ValueError, match="3D map"):
        to_nifti(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        to_nifti(np.zeros((4, 4, 4)), np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        to_nifti(np.zeros((4, 4, 4)), np.zeros((4, 4)))


def test_plot_occlusion_draws_over_the_template():
    saliency = np.zeros((16, 16, 16), dtype=np.float32)
    saliency[4:8, 6:10, 8:12] = 2.0
    img = to_nifti(saliency, np.diag([10.0, 10.0, 10.0, 1.0]))
    fig = plot_occlusion(img, title="toy", display_mode="z", cut_coords=[60])
    assert len(fig.axes) >= 2  # the slice and its colour bar
    with pytest.raises(ValueError, match="3D nibabel image"):
        plot_occlusion(saliency)


def test_target_kinds(volumes):
    encoder = RegionMeans()
    as_list = occlusion_sensitivity(encoder, volumes[:2], target=[1.0, 0.5], patch=16)
    w = torch.tensor([1.0, 0.5])
    as_tensor = occlusion_sensitivity(encoder, volumes[:2], target=w, patch=16)
    np.testing.assert_array_equal(as_list, as_tensor)
    with pytest.raises(TypeError, match="direction \\(F,\\) or a callable"):
        occlusion_sensitivity(encoder, volumes, target="age")
