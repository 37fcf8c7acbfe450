"""Probes on synthetic embeddings, the tidy table, guard rails, baselines and encode."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vicreg_lab.baselines import raw_voxel_features
from vicreg_lab.models import build_encoder
from vicreg_lab.probes import TABLE_COLUMNS, encode, probe, probe_table, recalibrate_batchnorm


def _rows(rows):
    return {(r["probe"], r["metric"]): r for r in rows}


@pytest.fixture
def linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10))
    y = X @ rng.normal(size=10) + 0.1 * rng.normal(size=120)
    return X, y


@pytest.fixture
def clusters():
    """Three well separated Gaussian clusters in 6-D, 30 points each."""
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c"], 30)
    centres = {"a": 0.0, "b": 6.0, "c": -6.0}
    X = rng.normal(size=(90, 6)) + np.array([centres[c] for c in labels])[:, None]
    return X, labels


def test_ridge_reads_a_linear_target(linear_data):
    X, y = linear_data
    rows = _rows(probe(X, y, task="regression"))
    assert set(rows) == {("linear", "r2"), ("linear", "mae"), ("knn", "r2"), ("knn", "mae")}
    assert rows["linear", "r2"]["mean"] > 0.9
    assert rows["linear", "r2"]["chance"] == 0.0
    assert rows["linear", "mae"]["mean"] < 0.3 * rows["linear", "mae"]["chance"]
    assert rows["linear", "r2"]["mean"] > rows["knn", "r2"]["mean"]  # the truth is linear
    assert rows["linear", "r2"]["n_splits"] == 5 and rows["linear", "r2"]["sd"] > 0


def test_shuffled_target_gives_no_r2(linear_data):
    X, y = linear_data
    y = np.random.default_rng(2).permutation(y)
    rows = _rows(probe(X, y, task="regression"))
    assert rows["linear", "r2"]["mean"] < 0.1
    assert rows["knn", "r2"]["mean"] < 0.1


def test_classification_of_separable_clusters(clusters):
    X, labels = clusters
    rows = _rows(probe(X, labels, task="classification"))
    assert set(rows) == {("linear", "balanced_accuracy"), ("knn", "balanced_accuracy")}
    for row in rows.values():
        assert row["mean"] > 0.95
        assert row["chance"] == pytest.approx(1 / 3)


def test_random_labels_are_near_chance(clusters):
    X, _ = clusters
    labels = np.random.default_rng(3).integers(0, 3, size=len(X))
    for row in probe(X, labels, task="classification"):
        assert abs(row["mean"] - 1 / 3) < 0.15


def test_same_seed_same_result_and_another_seed_another_split(linear_data):
    X, y = linear_data
    assert probe(X, y, seed=4) == probe(X, y, seed=4)
    assert probe(X, y, seed=4) != probe(X, y, seed=5)


def test_probe_table_rows_and_columns(linear_data):
    X, age = linear_data
    rng = np.random.default_rng(4)
    targets = pd.DataFrame(
        {
            "age": age,
            "site": rng.choice(["s1", "s2", "s3"], size=len(X)),
            "sex": rng.choice(["F", "M"], size=len(X)),
        }
    )
    embeddings = {"good": X, "noise": rng.normal(size=(len(X), 4))}
    table = probe_table(embeddings, targets, cv=3, seeds=(0, 1))
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 2 * (4 + 2 + 2)
    assert not table.duplicated(["embedding", "target", "probe", "metric"]).any()
    assert list(table["embedding"].unique()) == ["good", "noise"]
    assert list(table["target"].unique()) == ["age", "site", "sex"]
    assert (table["n_splits"] == 6).all()  # 2 seeds x 3 folds, pooled
    chance = table.set_index(["embedding", "target", "metric"])["chance"]
    assert chance["good", "site", "balanced_accuracy"].iloc[0] == pytest.approx(1 / 3)
    assert chance["good", "sex", "balanced_accuracy"].iloc[0] == pytest.approx(1 / 2)
    r2 = table.query("target == 'age' and probe == 'linear' and metric == 'r2'")
    assert (
        r2.set_index("embedding")["mean"]["good"] > 0.9 > r2.set_index("embedding")["mean"]["noise"]
    )
    pd.testing.assert_frame_equal(table, probe_table(embeddings, targets, cv=3, seeds=(0, 1)))


def test_probe_table_defaults_to_the_columns_present_and_accepts_a_dict(linear_data):
    X, y = linear_data
    table = probe_table({"x": X}, {"age": y, "other": y}, cv=3)
    assert set(table["target"]) == {"age"}
    table = probe_table({"x": X}, {"bmi": y}, columns={"bmi": "regression"}, cv=3)
    assert set(table["target"]) == {"bmi"} and (table["n_splits"] == 3).all()


def test_probe_table_several_seeds_pool_the_folds(linear_data):
    X, y = linear_data
    one = [probe_table({"x": X}, {"age": y}, cv=3, seeds=(s,)) for s in (0, 1)]
    both = probe_table({"x": X}, {"age": y}, cv=3, seeds=(0, 1))
    np.testing.assert_allclose(both["mean"], (one[0]["mean"] + one[1]["mean"]) / 2)


def test_bad_probe_inputs_are_rejected(linear_data):
    X, y = linear_data
    with pytest.raises(ValueError, match=r"N=8, need N >= 2 \* cv = 10"):
        probe(X[:8], y[:8], cv=5)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        probe(bad, y)
    with pytest.raises(ValueError, match=r"y needs one value per sample.*\(119,\)"):
        probe(X, y[:-1])
    with pytest.raises(ValueError, match="task must be one of"):
        probe(X, y, task="ranking")
    with pytest.raises(ValueError, match="cv must be an int >= 2"):
        probe(X, y, cv=1)
    with pytest.raises(ValueError, match="1 missing"):
        probe(X, np.where(np.arange(len(y)) == 0, np.nan, y))
    with pytest.raises(ValueError, match="numeric y"):
        probe(X, np.array(["a"] * len(y)), task="regression")


def test_rare_classes_reduce_the_folds_or_fail(clusters):
    X, labels = clusters
    labels = labels.astype(object)
    labels[:3] = "rare"
    with pytest.warns(UserWarning, match="'rare'.*3 members.*using 3 folds"):
        rows = probe(X, labels, task="classification", cv=5)
    assert all(r["n_splits"] == 3 for r in rows)
    labels[:2] = "a"  # 'rare' now has a single member
    with pytest.raises(ValueError, match=r"\['rare'\] have a single member"):
        probe(X, labels, task="classification")
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe(X, np.zeros(len(X)), task="classification")


def test_bad_table_inputs_are_rejected(linear_data):
    X, y = linear_data
    with pytest.raises(ValueError, match="no column \\['site'\\]"):
        probe_table({"x": X}, {"age": y}, columns={"site": "classification"})
    with pytest.raises(ValueError, match="unknown tasks \\{'age': 'ordinal'\\}"):
        probe_table({"x": X}, {"age": y}, columns={"age": "ordinal"})
    with pytest.raises(ValueError, match="none of the default columns"):
        probe_table({"x": X}, {"bmi": y})
    with pytest.raises(ValueError, match="'short' has 100 rows but targets has 120"):
        probe_table({"x": X, "short": X[:100]}, {"age": y})


# ---------------------------------------------------------------- baselines & encode


def test_raw_voxel_features_shape_and_mean_intensity():
    volumes = torch.rand(3, 1, 32, 24, 16) * torch.arange(1, 4).view(3, 1, 1, 1, 1)
    features = raw_voxel_features(volumes, size=8)
    assert features.shape == (3, 512) and features.dtype == np.float32
    np.testing.assert_allclose(features.mean(1), volumes.mean(dim=(1, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_array_equal(features, raw_voxel_features(volumes.numpy(), size=8))
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\), got \(32, 24, 16\)"):
        raw_voxel_features(volumes[0, 0])
    with pytest.raises(ValueError, match="larger than the volume"):
        raw_voxel_features(volumes, size=20)


def _bn_stats(module):
    return [
        (m.running_mean.clone(), m.running_var.clone())
        for m in module.modules()
        if isinstance(m, nn.BatchNorm3d)
    ]


@pytest.fixture
def untrained():
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", widths=(8, 8, 16, 16))
    volumes = 3.0 + 2.0 * torch.rand(12, 1, 32, 32, 32)  # far from BN's initial mean 0 / var 1
    return encoder, volumes


def test_encode_in_eval_mode_leaves_the_encoder_as_it_was(untrained):
    encoder, volumes = untrained
    before = _bn_stats(encoder)
    out = encode(encoder, volumes, batch_size=5)
    assert out.shape == (12, 16) and out.dtype == np.float32
    assert encoder.training  # flag restored
    for (m0, v0), (m1, v1) in zip(before, _bn_stats(encoder), strict=True):
        assert torch.equal(m0, m1) and torch.equal(v0, v1)
    encoder.eval()
    with torch.no_grad():
        np.testing.assert_allclose(out, encoder(volumes).numpy(), rtol=1e-5, atol=1e-6)


def test_recalibration_changes_the_copy_only_and_the_embeddings(untrained):
    encoder, volumes = untrained
    before = _bn_stats(encoder)
    copy = recalibrate_batchnorm(encoder, volumes, batch_size=4)
    assert copy is not encoder and not copy.training
    for (m0, _), (m1, _) in zip(before, _bn_stats(copy), strict=True):
        assert not torch.allclose(m0, m1)
    for (m0, v0), (m1, v1) in zip(before, _bn_stats(encoder), strict=True):
        assert torch.equal(m0, m1) and torch.equal(v0, v1)
    eval_out = encode(encoder, volumes, bn_mode="eval")
    recal_out = encode(encoder, volumes, bn_mode="recalibrate")
    assert not np.allclose(eval_out, recal_out, rtol=1e-2)
    np.testing.assert_allclose(recal_out, encode(encoder, volumes, bn_mode="recalibrate"))


def test_recalibration_is_a_cumulative_average_over_all_batches():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(1, 3, 3), nn.BatchNorm3d(3), nn.AdaptiveAvgPool3d(1), nn.Flatten()
    )
    volumes = torch.randn(8, 1, 8, 8, 8) + torch.arange(8.0).view(8, 1, 1, 1, 1)
    copy = recalibrate_batchnorm(net, volumes, batch_size=2)
    with torch.no_grad():
        expected = net[0](volumes).mean(dim=(0, 2, 3, 4))  # equal batches: mean of means
    torch.testing.assert_close(copy[1].running_mean, expected)
    assert copy[1].momentum is None


def test_encode_accepts_loaders_in_order(untrained):
    encoder, volumes = untrained
    dataset = torch.utils.data.TensorDataset(volumes, torch.arange(len(volumes)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    for bn_mode in ("eval", "recalibrate"):
        np.testing.assert_allclose(
            encode(encoder, loader, bn_mode=bn_mode),
            encode(encoder, volumes, batch_size=5, bn_mode=bn_mode),
            rtol=1e-5,
            atol=1e-6,
        )
    dicts = [{"image": volumes[:6]}, {"image": volumes[6:]}]
    assert encode(encoder, dicts).shape == (12, 16)


def test_bad_encode_inputs_are_rejected(untrained):
    encoder, volumes = untrained
    with pytest.raises(ValueError, match="re-iterable"):
        encode(encoder, iter([volumes]), bn_mode="recalibrate")
    with pytest.raises(ValueError, match="bn_mode must be"):
        encode(encoder, volumes, bn_mode="train")
    with pytest.raises(ValueError, match="no data"):
        encode(encoder, [])
    with pytest.raises(ValueError, match="'image' key"):
        encode(encoder, [{"t1": volumes}])
    with pytest.raises(ValueError, match=r"must return \(B, F\)"):
        encode(nn.Conv3d(1, 2, 3), volumes)


# ---------------------------------------------------------------- baselines (issue 14)


def test_random_init_like_keeps_the_architecture_and_draws_new_weights():
    from vicreg_lab.baselines import random_init_like

    trained = build_encoder("small_cnn", widths=(4, 8, 8, 24))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # "training"
    fresh = random_init_like(trained, seed=3)
    assert fresh is not trained and fresh.representation_size == 24

    def pairs(a, b):
        return zip(a.parameters(), b.parameters(), strict=True)

    shapes = [p.shape for p in fresh.parameters()]
    assert shapes == [p.shape for p in trained.parameters()]
    assert not any(torch.equal(a, b) for a, b in pairs(fresh, trained))
    again = random_init_like(trained, seed=3)
    assert all(torch.equal(a, b) for a, b in pairs(fresh, again))
    # the constructor's initialisation (Kaiming fan-out convolutions, unit BatchNorm)
    built = build_encoder("small_cnn", widths=(4, 8, 8, 24))
    for a, b in pairs(fresh, built):
        assert float(a.std(correction=0)) == pytest.approx(
            float(b.std(correction=0)), rel=0.3, abs=1e-6
        )


def test_random_init_like_reinitialises_a_user_module():
    from vicreg_lab.baselines import random_init_like

    net = nn.Sequential(
        nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.AdaptiveAvgPool3d(1), nn.Flatten()
    )
    with torch.no_grad():
        net[0].weight.fill_(5.0)
        net[1].running_mean.fill_(3.0)
    fresh = random_init_like(net, seed=0)
    assert net[0].weight.eq(5.0).all(), "the original is untouched"
    assert fresh[0].weight.abs().max() < 1.0 and fresh[1].running_mean.eq(0).all()


def test_histogram_features_see_the_scanner_not_the_anatomy():
    from vicreg_lab.baselines import intensity_histogram_features

    x = torch.rand(6, 1, 8, 8, 8)
    h = intensity_histogram_features(x, bins=16)
    assert h.shape == (6, 16) and np.allclose(h.sum(1), 1.0)
    shuffled = x.flatten(2)[:, :, torch.randperm(512)].view_as(x)  # anatomy scrambled
    np.testing.assert_allclose(intensity_histogram_features(shuffled, bins=16), h)
    brighter = torch.cat([x[:3], 2 * x[3:]])
    assert not np.allclose(intensity_histogram_features(brighter)[3:], h[3:])


def test_embeddings_with_baselines_use_the_trained_architecture():
    # 20 volumes: the dataset path fills its prepared copy in chunks of 16, the tensor
    # path slices; a seam between chunks must not show.
    from vicreg_lab import VICReg, embeddings_with_baselines
    from vicreg_lab.baselines import HISTOGRAM, RANDOM_EVAL, RAW, TRAINED
    from vicreg_lab.data import SyntheticCohort

    cohort = SyntheticCohort(20, shape=(16, 16, 16), seed=0)
    model = VICReg(
        expander="32-32",
        batch_size=10,
        max_epochs=1,
        progress=False,
        encoder_kwargs={"widths": (4, 8, 8, 12)},
    ).fit(cohort)
    out = embeddings_with_baselines(model, cohort)
    assert list(out)[:2] == [TRAINED, RANDOM_EVAL] and HISTOGRAM in out and RAW in out
    assert out[TRAINED].shape == out[RANDOM_EVAL].shape == (20, 12)  # encoder_kwargs kept
    assert not np.allclose(out[TRAINED], out[RANDOM_EVAL])
    stacked = torch.stack([cohort[i]["image"] for i in range(len(cohort))])
    from_tensor = embeddings_with_baselines(model, stacked)
    assert out.keys() == from_tensor.keys()
    for name, X in out.items():
        np.testing.assert_allclose(X, from_tensor[name], rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="empty"):
        embeddings_with_baselines(model, stacked[:0])


def test_histogram_features_count_every_voxel_in_chunks():
    # 40 volumes span three chunks; the counts must be numpy's over the global range.
    from vicreg_lab.baselines import intensity_histogram_features

    x = torch.rand(40, 1, 5, 6, 7, generator=torch.Generator().manual_seed(0)) ** 2
    x[7] *= 3.0  # one bright volume sets the global maximum
    h = intensity_histogram_features(x, bins=8)
    edges = np.linspace(float(x.min()), float(x.max()), 9)
    expected = np.stack([np.histogram(v.numpy().ravel(), bins=edges)[0] for v in x]) / 210
    np.testing.assert_allclose(h, expected, atol=1 / 210 + 1e-7)
    np.testing.assert_allclose(h.sum(1), 1.0, rtol=1e-6)


def test_latent_table_reads_each_latent():
    from vicreg_lab.baselines import latent_table

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    latents = pd.DataFrame({"a": X[:, 0], "b": X[:, 1] + X[:, 2], "noise": rng.normal(size=80)})
    table = latent_table({"X": X, "first": X[:, :1]}, latents)
    assert list(table.index) == ["a", "b", "noise", "mean"]
    assert table.loc["b", "X"] > 0.9 and table.loc["b", "first"] < 0.2
    assert table.loc["noise", "X"] < 0.2
    assert table.loc["mean", "X"] == pytest.approx(table.loc[["a", "b", "noise"], "X"].mean())
    with pytest.raises(ValueError, match="no column"):
        latent_table({"X": X}, latents, columns=["c"])


def _confounded(n=240, seed=0):
    """Four sites, each scanning its own age band; a site code, and a noisy age reading."""
    rng = np.random.default_rng(seed)
    site = rng.integers(4, size=n)
    age = 20 + 15 * site + 15 * rng.random(n)  # site j scans ages 20+15j .. 35+15j
    site_code = np.eye(4)[site] + 0.05 * rng.normal(size=(n, 4))
    anatomy = (age + 3 * rng.normal(size=n))[:, None] + 0.1 * rng.normal(size=(n, 3))
    return pd.DataFrame({"age": age, "site": site}), {"site code": site_code, "anatomy": anatomy}


def test_leaving_one_site_out_unmasks_a_probe_that_reads_age_through_site():
    targets, embeddings = _confounded()
    columns = {"age": "regression"}
    naive = probe_table(embeddings, targets, columns=columns).query("probe == 'linear'")
    unseen = probe_table(embeddings, targets, columns=columns, groups="site")
    unseen = unseen.query("probe == 'linear'")
    r2 = naive.query("metric == 'r2'").set_index("embedding")["mean"]
    assert r2["site code"] > 0.8 and r2["anatomy"] > 0.8  # shuffled folds: both look good
    mae = unseen.query("metric == 'mae'").set_index("embedding")
    assert (mae["n_splits"] == 4).all()  # one fold per site
    assert mae.loc["anatomy", "mean"] < 0.5 * mae.loc["anatomy", "chance"]  # transfers
    assert mae.loc["site code", "mean"] > 0.8 * mae.loc["site code", "chance"]  # does not


@pytest.mark.parametrize(
    "groups, columns, word",
    [
        ("site", {"age": "regression", "site": "classification"}, "cannot be probed"),
        ("scanner", {"age": "regression"}, r"no column \['scanner'\]"),
        ("one", {"age": "regression"}, "at least 2 distinct groups"),
    ],
)
def test_bad_groups_are_refused(groups, columns, word):
    targets, embeddings = _confounded(n=40)
    targets["one"] = "A"
    with pytest.raises(ValueError, match=word):
        probe_table(embeddings, targets, columns=columns, groups=groups)
    with pytest.raises(ValueError, match="groups needs one value per sample"):
        probe(embeddings["anatomy"], targets["age"], groups=targets["site"][:-1])
