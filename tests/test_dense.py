"""Local-feature helpers: per-cell averages, the dense probe, and their figures."""

import itertools

import numpy as np
import pytest
import torch

from vicreg_lab.dense import (
    cell_average,
    cells_to_volume,
    dense_probe,
    feature_maps,
    plot_cell_map,
    plot_location_matches,
)
from vicreg_lab.models import build_encoder
from vicreg_lab.vicregl import cell_centres, feature_locations


@pytest.mark.parametrize(
    "grid, map_shape", [((8, 1.5), (3, 2, 2)), ((16, 1.5), (2, 2, 1)), (None, (3, 2, 2))]
)
def test_cell_average_equals_a_voxel_loop(grid, map_shape):
    volumes = torch.rand(2, 20, 18, 16, generator=torch.Generator().manual_seed(0))
    centres = cell_centres(map_shape, volumes.shape[1:], grid)
    axes = [centres[:, 0, 0, 0], centres[0, :, 0, 1], centres[0, 0, :, 2]]
    sums, counts = np.zeros((2, *map_shape)), np.zeros(map_shape)
    for voxel in itertools.product(*(range(n) for n in volumes.shape[1:])):
        cell = tuple(
            int(np.argmin(np.abs(a.numpy() - v))) for a, v in zip(axes, voxel, strict=True)
        )
        sums[(slice(None), *cell)] += volumes[(slice(None), *voxel)].numpy()
        counts[cell] += 1
    np.testing.assert_allclose(cell_average(volumes, map_shape, grid), sums / counts, rtol=1e-5)


def test_cells_to_volume_paints_each_voxel_with_its_cell():
    cells = np.arange(8.0).reshape(2, 2, 2)
    volume = cells_to_volume(cells, (16, 16, 16), grid=(8, 3.5))
    assert volume.shape == (16, 16, 16)
    assert volume[0, 0, 0] == 0 and volume[15, 15, 15] == 7 and volume[8, 0, 7] == 4
    np.testing.assert_allclose(cell_average(volume[None], (2, 2, 2), grid=(8, 3.5))[0], cells)
    # a cell beyond the volume holds no voxel: NaN
    assert np.isnan(cell_average(volume[None], (3, 2, 2), grid=(8, 3.5))[0, 2]).all()
    with pytest.raises(ValueError, match=r"\(d, h, w\) or \(N, d, h, w\)"):
        cells_to_volume(np.zeros(3), (4, 4, 4))


def test_dense_probe_separates_position_from_subject_specific_signal():
    rng = np.random.default_rng(0)
    n, cells = 60, (2, 2, 2)
    position = rng.normal(size=(1, 4, *cells)).repeat(n, 0)  # the same for every subject
    subject = rng.normal(size=(n, 4, *cells))  # this subject's own anatomy
    maps = np.concatenate([position, subject], axis=1)
    by_place = position[:, 0] + 0.05 * rng.normal(size=(n, *cells))
    by_subject = subject[:, 0] + 0.05 * rng.normal(size=(n, *cells))

    place = dense_probe(maps, by_place)
    own = dense_probe(maps, by_subject)
    assert place["r2"] > 0.9 and place["r2_within_cell"] < 0.2
    assert own["r2"] > 0.9 and own["r2_within_cell"] > 0.9
    assert len(own["test_index"]) == 15 and own["prediction"].shape == (15, *cells)
    test = own["test_index"]
    deviation = by_subject[test] - by_subject[np.setdiff1d(np.arange(n), test)].mean(0)
    assert np.corrcoef(own["prediction_within_cell"].ravel(), deviation.ravel())[0, 1] > 0.9

    mask = np.zeros(cells, bool)
    mask[0] = True
    masked = dense_probe(maps, by_subject, mask=mask)
    assert np.isnan(masked["prediction"][:, 1]).all()
    assert np.isfinite(masked["prediction"][:, 0]).all()


def test_dense_probe_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="same N and cells"):
        dense_probe(np.zeros((10, 3, 2, 2, 2)), np.zeros((10, 2, 2, 3)))
    with pytest.raises(ValueError, match="at least 2 training and 2 test"):
        dense_probe(np.zeros((3, 3, 2, 2, 2)), np.zeros((3, 2, 2, 2)))


def test_figures(brain):
    grid = (8, 1.5)
    fig = plot_cell_map(np.random.default_rng(0).random((4, 4, 4)), brain, np.eye(4), grid)
    assert type(fig).__name__ == "Figure"
    crop = torch.tensor([[[0.5, 0, 0, 8], [0, 0.5, 0, 8], [0, 0, 0.5, 8]]])
    flip = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 31]]])
    loc1 = feature_locations(crop, (4, 4, 4), grid=grid)[0]
    loc2 = feature_locations(flip, (4, 4, 4), grid=grid)[0]
    fig = plot_location_matches(brain, loc1, loc2, num_matches=64, axis=0)
    ax = fig.axes[0]
    assert len(ax.lines) == 16  # one match per view-1 cell of the middle layer (4 x 4)
    assert len(ax.collections) == 2  # the two views' cells


def test_feature_maps_are_the_eval_mode_maps_in_batches():
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", widths=(4, 4, 8, 8), output_stride=8)
    x = torch.randn(5, 1, 24, 24, 24)
    maps = feature_maps(encoder, x, batch_size=2)
    assert encoder.training  # flag restored
    with torch.no_grad():
        expected = encoder.eval().forward_features(x)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no forward_features"):
        feature_maps(torch.nn.Linear(2, 2), x)
