"""VICRegL: matching, cell locations from the augmentation geometry, the loss, gradients."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import mni_brain
from torch import nn

from vicreg_lab.augment import BatchedAugment
from vicreg_lab.losses import vicreg_loss
from vicreg_lab.models import build_encoder, build_local_expander
from vicreg_lab.vicregl import (
    TERMS,
    VICRegLLoss,
    cell_centres,
    feature_locations,
    nearest_neighbour_matches,
    vicregl_loss,
)

HERE = Path(__file__).parent


# ----------------------------------------------------------------------------- matching


def _brute_force_matches(distances, k):
    queries, matches = [], []
    for d in distances.tolist():  # one sample
        pairs = [(min(row), i, row.index(min(row))) for i, row in enumerate(d)]
        kept = sorted(sorted(pairs)[:k], key=lambda t: t[1])
        queries.append([i for _, i, _ in kept])
        matches.append([j for _, _, j in kept])
    return torch.tensor(queries), torch.tensor(matches)


@pytest.mark.parametrize("shape, k", [((3, 10, 7), 4), ((2, 5, 12), 5), ((1, 6, 6), 1)])
def test_nearest_neighbour_matches_equal_a_brute_force_loop(shape, k):
    distances = torch.rand(shape, generator=torch.Generator().manual_seed(k))
    query, match = nearest_neighbour_matches(distances, k)
    expected_query, expected_match = _brute_force_matches(distances, k)
    assert torch.equal(query, expected_query)
    assert torch.equal(match, expected_match)


def test_nearest_neighbour_matches_refuses_bad_counts():
    with pytest.raises(ValueError, match=r"num_matches must lie in \[1, 4\]"):
        nearest_neighbour_matches(torch.rand(2, 4, 3), 5)
    with pytest.raises(ValueError, match=r"\(B, Lq, Lc\)"):
        nearest_neighbour_matches(torch.rand(4, 3), 2)


# ----------------------------------------------------------------------------- locations


def test_cell_centres_follow_the_grid_or_split_the_view_evenly():
    centres = cell_centres((2, 3, 4), grid=(8, 1.5))
    assert centres.shape == (2, 3, 4, 3)
    assert centres[1, 2, 3].tolist() == [9.5, 17.5, 25.5]
    even = cell_centres((2, 3, 4), view_shape=(16, 24, 32))
    assert even[0, 0, 0].tolist() == [3.5, 3.5, 3.5]
    assert even[1, 2, 3].tolist() == [11.5, 19.5, 27.5]
    with pytest.raises(ValueError, match="needs view_shape"):
        cell_centres((2, 2, 2))


def _symmetric_kernels(encoder):
    """Mirror-symmetric kernels along W: the encoder becomes exactly flip-equivariant
    about its cells' receptive-field centres."""
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return encoder.eval()


@pytest.mark.parametrize(
    "name, kwargs, sizes",
    [
        ("small_cnn", {"widths": (4, 4, 8, 8)}, range(32, 38)),
        ("small_cnn", {"widths": (4, 4, 8, 8), "output_stride": 8}, range(33, 38)),
        ("small_cnn", {"widths": (4, 4, 8, 8), "output_stride": 4}, range(30, 34)),
        ("resnet10_3d", {"width": 0.0625}, range(32, 35)),
    ],
)
def test_declared_feature_grid_is_where_the_encoder_is_flip_symmetric(name, kwargs, sizes):
    # A flip-equivariant encoder maps a flipped view to the flipped feature map exactly
    # when its cell centres are symmetric about the view's centre: a test of the offset.
    torch.manual_seed(0)
    encoder = _symmetric_kernels(build_encoder(name, **kwargs))
    stride, offset = encoder.feature_grid
    outcomes = set()
    for n in sizes:
        x = torch.randn(1, 1, n, n, n)
        with torch.no_grad():
            maps, flipped = encoder.forward_features(x), encoder.forward_features(x.flip(-1))
        centres = offset + stride * torch.arange(maps.shape[-1])
        symmetric = torch.allclose(centres, (n - 1) - centres.flip(0))
        equivariant = torch.allclose(flipped, maps.flip(-1), atol=1e-5)
        assert equivariant == symmetric, f"n={n}: grid {encoder.feature_grid} is wrong"
        outcomes.add(symmetric)
    assert outcomes == {True, False}  # both cases were seen


def test_locations_are_exact_on_known_crops_and_flips():
    # view 1: a 16^3 crop starting at voxel (8, 4, 0) of the source;
    # view 2: a half-resolution crop (scale 2) starting at (0, 0, 0), flipped along W.
    crop = torch.tensor([[1.0, 0, 0, 8], [0, 1, 0, 4], [0, 0, 1, 0]])
    half_flipped = torch.tensor([[2.0, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, -2, 0.5 + 30]])
    geometry = torch.stack([crop, half_flipped])
    loc = feature_locations(geometry, (2, 2, 2), grid=(8, 1.5))
    assert loc.shape == (2, 2, 2, 2, 3)
    # crop: cell (j, k, l) at view voxel 1.5 + 8 * (j, k, l), shifted by the crop start
    assert loc[0, 1, 0, 1].tolist() == [9.5 + 8, 1.5 + 4, 9.5]
    # scale 2 (view voxel v spans source voxels 2v, 2v+1: centre 2v + 0.5), W flipped
    assert loc[1, 0, 1, 0].tolist() == [2 * 1.5 + 0.5, 2 * 9.5 + 0.5, 30.5 - 2 * 1.5]
    assert loc[1, 0, 1, 1].tolist() == [3.5, 19.5, 30.5 - 2 * 9.5]


def test_locations_from_batched_augment_point_at_what_the_view_shows(brain):
    # With one cell per voxel (grid (1, 0)), each location is where the view sampled
    # the source: interpolating the source there gives back the view.
    augment = BatchedAugment(
        input_size=(1, 12, 12, 12), crop_scale=(0.3, 0.8), flip_prob=0.5, rotation_degrees=20,
        p_blur=0.0, p_noise=0.0, p_intensity=0.0, seed=3,
    )  # fmt: skip
    source = brain[None].repeat(4, 1, 1, 1, 1)
    views, geometry = augment(source)
    loc = feature_locations(geometry, (12, 12, 12), grid=(1, 0.0))
    n = torch.tensor(source.shape[2:], dtype=torch.float32)
    normalised = ((2 * loc + 1) / n - 1).flip(-1)  # (d, h, w) index -> grid_sample's (x, y, z)
    sampled = F.grid_sample(source, normalised, padding_mode="border", align_corners=False)
    lo, hi = source.amin(), source.amax()
    torch.testing.assert_close((sampled - lo) / (hi - lo), views, atol=1e-4, rtol=0)


def test_location_matching_pairs_each_cell_with_its_mirror_in_a_flipped_view():
    # A flip-equivariant encoder on n = 36 (symmetric grid): view 2 is view 1 flipped.
    # With the flip in the geometry, every matched pair holds the same features: the
    # local invariance is exactly zero. Ignoring the flip (identity geometry, as the
    # official --no-flip-grid default does) pairs cells that see different places.
    torch.manual_seed(0)
    encoder = _symmetric_kernels(build_encoder("small_cnn", output_stride=8))
    x = torch.stack([mni_brain((36, 36, 36)), mni_brain((36, 36, 36)).roll(3, -1)])
    with torch.no_grad():
        m1, m2 = encoder.forward_features(x), encoder.forward_features(x.flip(-1))
    identity = torch.eye(3, 4).expand(2, 3, 4)
    flip = identity.clone()
    flip[:, 2, 2], flip[:, 2, 3] = -1.0, 35.0
    grid = encoder.feature_grid
    loc1 = feature_locations(identity, m1.shape[2:], grid=grid)
    z = m1.mean((2, 3, 4))

    def local_invariance(geometry2, **kwargs):
        loc2 = feature_locations(geometry2, m2.shape[2:], grid=grid)
        return float(vicregl_loss(z, z, m1, m2, loc1, loc2, **kwargs)["local_invariance"])

    scale = float(m1.var())
    assert local_invariance(flip, num_matches=125, l2_all_matches=True) < 1e-10 * scale
    assert local_invariance(identity, num_matches=125, l2_all_matches=True) > 1e-3 * scale


# ----------------------------------------------------------------------------- the loss


def _textbook_vicreg_terms(x, y, gamma=1.0, eps=1e-4):
    """(invariance, variance, covariance) of two (N, D) batches, from the definitions."""

    def var(z):
        return torch.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()

    def cov(z):
        c = torch.cov(z.T)
        return (c - torch.diag(torch.diag(c))).pow(2).sum() / z.shape[1]

    return ((x - y) ** 2).mean(), (var(x) + var(y)) / 2, cov(x) + cov(y)


def _loop_matches(q_feat, c_feat, q_where, c_where, k, on_location):
    """Matched rows (B, k, C), one sample and one query cell at a time."""
    rows_q, rows_c = [], []
    for b in range(q_feat.shape[0]):
        pairs = []
        for i in range(q_feat.shape[1]):
            q, c = (q_where, c_where) if on_location else (q_feat, c_feat)
            d = [float(torch.linalg.norm(q[b, i] - c[b, j])) for j in range(c.shape[1])]
            pairs.append((min(d), i, int(np.argmin(d))))
        kept = sorted(sorted(pairs)[:k], key=lambda t: t[1])
        rows_q.append(torch.stack([q_feat[b, i] for _, i, _ in kept]))
        rows_c.append(torch.stack([c_feat[b, j] for _, _, j in kept]))
    return torch.stack(rows_q), torch.stack(rows_c)


def _naive_vicregl(z1, z2, m1, m2, p1, p2, alpha, num_matches, l2_all_matches):
    coeffs = torch.tensor([25.0, 25.0, 1.0], dtype=torch.float64)
    glob = torch.stack(_textbook_vicreg_terms(z1, z2))
    x1, x2 = m1.flatten(2).transpose(1, 2), m2.flatten(2).transpose(1, 2)
    w1, w2 = p1.flatten(1, 3), p2.flatten(1, 3)

    def count(cells):
        return math.ceil(20 / 49 * cells) if num_matches is None else min(num_matches, cells)

    local = torch.zeros(3, dtype=torch.float64)
    for on_location in (False, True):  # the two matchings are summed ...
        for qf, cf, qw, cw in ((x1, x2, w1, w2), (x2, x1, w2, w1)):  # ... their directions averaged
            k = qf.shape[1] if (l2_all_matches and not on_location) else count(qf.shape[1])
            a, b = _loop_matches(qf, cf, qw, cw, k, on_location)
            per_index = [torch.stack(_textbook_vicreg_terms(a[:, i], b[:, i])) for i in range(k)]
            terms = torch.stack(per_index).mean(0)
            terms[0] = ((a - b) ** 2).mean()
            local = local + terms / 2
    total = alpha * (coeffs @ glob) + (1 - alpha) * (coeffs @ local)
    names = ("invariance", "variance", "covariance")
    return {
        "loss": total,
        "global": coeffs @ glob,
        "local": coeffs @ local,
        **dict(zip(names, glob, strict=True)),
        **{f"local_{n}": t for n, t in zip(names, local, strict=True)},
    }


def _random_inputs(batch=5, channels=6, map1=(2, 2, 3), map2=(2, 3, 2), dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return (
        rand(batch, dim),
        rand(batch, dim),
        rand(batch, channels, *map1),
        rand(batch, channels, *map2),
        10 * rand(batch, *map1, 3),
        10 * rand(batch, *map2, 3),
    )


@pytest.mark.parametrize(
    "alpha, num_matches, l2_all_matches, map2",
    [
        (0.75, None, False, (2, 3, 2)),
        (0.5, 3, True, (2, 3, 2)),
        (0.0, 100, False, (1, 2, 2)),  # more than the cells: all of them
    ],
)
def test_loss_equals_a_naive_reference(alpha, num_matches, l2_all_matches, map2):
    inputs = _random_inputs(map2=map2)
    out = vicregl_loss(*inputs, alpha=alpha, num_matches=num_matches, l2_all_matches=l2_all_matches)
    expected = _naive_vicregl(*inputs, alpha, num_matches, l2_all_matches)
    assert set(out) == set(TERMS) == set(expected)
    for key in TERMS:
        assert out[key].dtype == torch.float64
        torch.testing.assert_close(out[key], expected[key], rtol=1e-10, atol=1e-12, msg=key)


# -------------------------------------------------- the official code (facebookresearch/VICRegL)
# A rewrite of the loss functions of main_vicregl.py as they stand after commit d14c226
# ("Fix local loss"), in 3D: maps are (B, C, d, h, w), flattened to (B, cells, C) in
# raster order; locations (B, d, h, w, 3). One process (gather_center = centring), the
# official hard-coded gamma = 1 and eps = 1e-4, no fast-vc-reg, no classifier.


def _official_nearest(query, candidates, distances, num_matches):
    """neirest_neighbores: keep the num_matches queries whose nearest candidate is closest."""
    batch, cells = distances.shape[:2]
    k = cells if num_matches is None else num_matches
    nearest, match = distances.min(dim=-1)
    rank = nearest.argsort(dim=1).argsort(dim=1)  # rank of every query's distance
    keep = rank < k  # masked_select keeps the query order
    q_idx = torch.arange(cells).expand(batch, cells)[keep].reshape(batch, k)
    c_idx = match[keep].reshape(batch, k)
    pick = torch.vmap(lambda rows, idx: rows[idx])
    return pick(query, q_idx), pick(candidates, c_idx)


def _official_vicreg(x, y, coeffs):
    """VICRegL._vicreg_loss on matched cells (B, k, C): weighted (inv, var, cov)."""
    inv_c, var_c, cov_c = coeffs
    inv = inv_c * F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
    var = var_c * (F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2)
    sides = []
    for z in (x.transpose(0, 1), y.transpose(0, 1)):  # (k, B, C): one batch per match index
        z = z - z.mean(dim=1, keepdim=True)
        cov = z.transpose(1, 2) @ z / (z.shape[1] - 1)  # (k, C, C)
        off = cov * (1 - torch.eye(z.shape[2], dtype=z.dtype))
        sides.append(off.pow(2).sum(dim=(1, 2)) / z.shape[2])
    cov = cov_c * (sides[0] / 2 + sides[1] / 2).mean()
    return inv, var, cov


def _official_pair(maps_1, maps_2, loc_1, loc_2, num_matches, l2_all_matches, coeffs):
    """VICRegL._local_loss of one ordered pair of views: both matchings, summed."""
    on_l2 = [None, None] if l2_all_matches else num_matches
    loc_1, loc_2 = loc_1.flatten(1, 3), loc_2.flatten(1, 3)
    total = torch.zeros(3, dtype=maps_1.dtype)
    for dist_1, dist_2, counts in (
        (torch.cdist(maps_1, maps_2), torch.cdist(maps_2, maps_1), on_l2),
        (torch.cdist(loc_1, loc_2), torch.cdist(loc_2, loc_1), num_matches),
    ):
        one = _official_vicreg(*_official_nearest(maps_1, maps_2, dist_1, counts[0]), coeffs)
        two = _official_vicreg(*_official_nearest(maps_2, maps_1, dist_2, counts[1]), coeffs)
        total = total + torch.stack(one) / 2 + torch.stack(two) / 2
    return total


def _official_local(maps, locations, num_matches, l2_all_matches, coeffs):
    """VICRegL.local_loss with two views: the pairs (0, 1) and (1, 0), summed, / 2."""
    pairs = [(0, 1), (1, 0)]
    total = sum(
        _official_pair(maps[i], maps[j], locations[i], locations[j], num_matches,
                       l2_all_matches, coeffs)
        for i, j in pairs
    )  # fmt: skip
    return total / len(pairs)


def _official_global(z, coeffs):
    """VICRegL.global_loss with two views: covariance *averaged* over the views."""
    inv_c, var_c, cov_c = coeffs
    inv = inv_c * (F.mse_loss(z[0], z[1]) + F.mse_loss(z[1], z[0])) / 2
    var = cov = 0.0
    for x in z:
        x = x - x.mean(dim=0)
        var = var + F.relu(1 - torch.sqrt(x.var(dim=0) + 1e-4)).mean()
        c = x.T @ x / (x.shape[0] - 1)
        cov = cov + (c - torch.diag(c.diagonal())).pow(2).sum() / x.shape[1]
    return torch.stack([inv, var_c * var / 2, cov_c * cov / 2])


def _official_vicregl(z1, z2, m1, m2, p1, p2, alpha, num_matches, l2_all_matches, coeffs):
    maps = [m.flatten(2).transpose(1, 2) for m in (m1, m2)]  # (B, cells, C)
    glob = _official_global([z1, z2], coeffs)
    local = _official_local(maps, [p1, p2], num_matches, l2_all_matches, coeffs)
    return alpha * glob.sum() + (1 - alpha) * local.sum(), glob, local


@pytest.mark.parametrize(
    "alpha, num_matches, l2_all_matches, coeffs",
    [
        (0.75, 5, True, (25.0, 25.0, 1.0)),  # the official defaults, 5 of the 12 cells
        (0.75, 5, False, (25.0, 25.0, 1.0)),
        (0.3, 12, False, (2.0, 3.0, 5.0)),
    ],
)
def test_loss_equals_the_official_code_after_the_local_loss_fix(
    alpha, num_matches, l2_all_matches, coeffs
):
    inputs = _random_inputs(batch=6, channels=5, map1=(2, 2, 3), map2=(3, 2, 2), seed=4)
    inv_c, var_c, cov_c = coeffs
    # our covariance is summed over the two views, the official one averaged: half the weight
    ours = vicregl_loss(
        *inputs, alpha=alpha, num_matches=num_matches, l2_all_matches=l2_all_matches,
        inv_coeff=inv_c, var_coeff=var_c, cov_coeff=cov_c / 2,
    )  # fmt: skip
    loss, glob, local = _official_vicregl(*inputs, alpha, [num_matches] * 2, l2_all_matches, coeffs)
    close = dict(rtol=1e-12, atol=0.0)
    torch.testing.assert_close(ours["loss"], loss, **close)
    torch.testing.assert_close(ours["global"], glob.sum(), **close)
    torch.testing.assert_close(ours["local"], local.sum(), **close)
    names = ("local_invariance", "local_variance", "local_covariance")
    unweighted = torch.stack([ours[n] for n in names]) * torch.tensor([1.0, 1.0, 0.5])
    torch.testing.assert_close(unweighted * torch.tensor(coeffs).double(), local, **close)


def test_maps_of_different_sizes_match_the_official_pair_loss():
    # With a large and a small view the official local_loss calls _local_loss once per
    # (large, other) pair, num_matches = [for the large map's queries, for the small's].
    inputs = _random_inputs(batch=5, channels=4, map1=(2, 3, 3), map2=(1, 2, 2), seed=5)
    z1, z2, m1, m2, p1, p2 = inputs
    ours = vicregl_loss(*inputs, alpha=0.0, num_matches=3, cov_coeff=0.5)
    maps = [m.flatten(2).transpose(1, 2) for m in (m1, m2)]
    expected = _official_pair(*maps, p1, p2, [3, 3], False, (25.0, 25.0, 1.0))
    torch.testing.assert_close(ours["loss"], expected.sum(), rtol=1e-12, atol=0.0)


def test_official_rewrite_matches_our_matching_helper():
    # the two selections are written differently (ranks and a mask / topk and a sort)
    distances = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(2))
    cells = torch.arange(3 * 9 * 1.0).reshape(3, 9, 1)
    candidates = torch.arange(3 * 7 * 1.0).reshape(3, 7, 1) + 100
    q, c = _official_nearest(cells, candidates, distances, 4)
    query, match = nearest_neighbour_matches(distances, 4)
    assert torch.equal(q[..., 0], cells[..., 0].gather(1, query))
    assert torch.equal(c[..., 0], candidates[..., 0].gather(1, match))


def test_module_matches_function_and_alpha_one_is_vicreg():
    inputs = [t.float() for t in _random_inputs()]
    criterion = VICRegLLoss(alpha=1.0, num_matches=3, cov_coeff=0.5)
    out = criterion(*inputs)
    functional = vicregl_loss(*inputs, alpha=1.0, num_matches=3, cov_coeff=0.5)
    for key in TERMS:
        torch.testing.assert_close(out[key], functional[key])
    torch.testing.assert_close(out["loss"], vicreg_loss(*inputs[:2], cov_coeff=0.5)["loss"])
    assert "alpha=1.0" in repr(criterion)


def test_gradients_flow_to_the_encoder_feature_maps():
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", widths=(8, 8, 16, 16), output_stride=8)
    head = build_local_expander(16, "32-32")
    augment = BatchedAugment(input_size=(1, 24, 24, 24), seed=0)
    x = torch.rand(4, 1, 32, 32, 32)
    maps, embeddings, where = [], [], []
    for view, geometry in (augment(x), augment(x)):
        features = encoder.forward_features(view)
        features.retain_grad()
        maps.append(features)
        embeddings.append(features.mean((2, 3, 4)))
        where.append(feature_locations(geometry, features.shape[2:], grid=encoder.feature_grid))
    out = vicregl_loss(*embeddings, head(maps[0]), head(maps[1]), *where, alpha=0.0)
    out["loss"].backward()
    for features in maps:  # the local term alone reaches every cell of both maps
        assert torch.isfinite(features.grad).all()
        assert (features.grad.abs().sum(dim=1) > 0).float().mean() > 0.5
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert head[0].weight.grad.abs().sum() > 0


def test_bf16_autocast_gives_float32_terms():
    inputs = [t.float() for t in _random_inputs()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vicregl_loss(*[t.bfloat16() for t in inputs[:4]], *inputs[4:])
    assert all(out[k].dtype == torch.float32 and torch.isfinite(out[k]) for k in TERMS)


@pytest.mark.parametrize(
    "change, match",
    [
        ({2: torch.zeros(5, 6, 4)}, r"maps1 must be a floating point feature map"),
        ({3: torch.zeros(4, 6, 2, 3, 2)}, "maps2 has batch size 4"),
        ({3: torch.zeros(5, 7, 2, 3, 2)}, "same channels"),
        ({4: torch.zeros(5, 2, 2, 2, 3)}, r"locations1 must .* \(5, 2, 2, 3, 3\)"),
        ({5: torch.full((5, 2, 3, 2, 3), float("nan"))}, "locations2 contains NaN"),
    ],
)
def test_bad_inputs_are_refused(change, match):
    inputs = [t.float() for t in _random_inputs()]
    for i, value in change.items():
        inputs[i] = value
    with pytest.raises(ValueError, match=match):
        vicregl_loss(*inputs)


def test_bad_settings_are_refused():
    inputs = [t.float() for t in _random_inputs()]
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        vicregl_loss(*inputs, alpha=1.5)
    with pytest.raises(ValueError, match="num_matches must be a positive int"):
        vicregl_loss(*inputs, num_matches=0)
    with pytest.raises(ValueError, match=r"geometry must be \(B, 3, 4\)"):
        feature_locations(torch.zeros(2, 4, 4), (2, 2, 2), grid=(8, 1.5))


def test_local_expander_is_the_expander_as_1x1x1_convolutions():
    head = build_local_expander(16, "32-8")
    assert [type(m).__name__ for m in head] == ["Conv3d", "BatchNorm3d", "ReLU", "Conv3d"]
    assert head[0].kernel_size == (1, 1, 1) and head[-1].bias is None
    maps = torch.randn(3, 16, 2, 3, 4)
    out = head.eval()(maps)
    assert out.shape == (3, 8, 2, 3, 4)
    # each cell goes through the same per-location MLP
    cell = head(maps[:, :, 1:2, 2:3, 3:4])
    torch.testing.assert_close(cell, out[:, :, 1:2, 2:3, 3:4])
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        build_local_expander(0, "8")


# ----------------------------------------------------------------------------- distributed


@pytest.mark.distributed
@pytest.mark.slow
def test_vicregl_under_torchrun_keeps_the_ranks_in_step(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, str(HERE / "_vicregl_ddp_script.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ("encoder", "local_expander"):
        for key, value in ranks[0][part].items():
            if "running" in key or "num_batches" in key:
                continue  # BatchNorm buffers are per-rank statistics
            assert torch.equal(value, ranks[1][part][key]), f"ranks disagree on {part}.{key}"
    first = [r["first"] for r in ranks]
    # gathered across ranks: the same value on both; the invariances stay local
    for term in ("variance", "covariance", "local_variance", "local_covariance"):
        assert first[0][term] == pytest.approx(first[1][term], rel=1e-5), term
    assert first[0]["local_invariance"] != first[1]["local_invariance"]
