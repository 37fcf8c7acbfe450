"""Tests of vicreg_lab.diagnostics on constructed embeddings, and of the diagnostics figures."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from vicreg_lab import diagnostics as diag
from vicreg_lab.diagnostics import collapse_report, rankme
from vicreg_lab.lab import plots as viz

RNG_SEED = 0


def _isotropic(n, d, seed=RNG_SEED):
    return np.random.default_rng(seed).normal(size=(n, d))


def _rank_k(n, d, k, seed=RNG_SEED):
    """Isotropic Gaussian in a random k-dimensional subspace of R^D."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, k)))  # D x k, orthonormal columns
    return rng.normal(size=(n, k)) @ basis.T


# ----------------------------------------------------------------------------- verdicts


def test_constant_embeddings_are_a_complete_collapse():
    z = np.tile(np.arange(16.0), (100, 1))  # every sample is the same vector
    report = collapse_report(z)
    assert report.verdict == "complete collapse"
    assert report.mean_std == 0.0
    assert report.normalized_std == 0.0
    assert report.dead_fraction == 1.0
    assert report.rankme == pytest.approx(1.0, abs=1e-3)
    assert report.mean_abs_correlation == 0.0  # no NaN from the zero std


def test_one_point_plus_tiny_noise_is_a_complete_collapse():
    z = 3.0 + 1e-6 * _isotropic(500, 32)
    report = collapse_report(torch.from_numpy(z).float())
    assert report.verdict == "complete collapse"
    assert report.normalized_std < 0.1 / np.sqrt(32)


def test_rank_k_gaussian_is_a_dimensional_collapse_with_rankme_near_k():
    k, d = 4, 64
    report = collapse_report(_rank_k(3000, d, k))
    assert report.verdict == "dimensional collapse"
    assert report.rankme == pytest.approx(k, rel=0.05)
    assert report.rankme_fraction == pytest.approx(k / d, rel=0.05)
    assert report.dead_fraction == 0.0  # no dimension is dead: rank, not std, reveals it


def test_isotropic_gaussian_is_healthy_with_rankme_near_d():
    d = 32
    report = collapse_report(_isotropic(5000, d))
    assert report.verdict == "healthy"
    assert report.rankme == pytest.approx(d, rel=0.05)
    assert report.normalized_std * np.sqrt(d) == pytest.approx(1.0, rel=0.05)
    assert report.mean_std == pytest.approx(1.0, rel=0.05)
    assert report.dead_fraction == 0.0
    assert report.mean_abs_correlation < 0.05


def test_many_dead_dimensions_are_a_dimensional_collapse():
    z = _isotropic(1000, 16)
    z[:, :12] = 1.0  # 12 of 16 dimensions constant (the median std is 0: not the reference)
    report = collapse_report(z)
    assert report.dead_fraction == 0.75
    assert report.verdict == "dimensional collapse"


def test_shrunk_around_the_origin_is_a_complete_collapse_only_against_a_target():
    # an invariance-only expander: std 0.013, yet its directions stay diverse
    z = 0.013 * _isotropic(1000, 16)
    free, target = collapse_report(z), collapse_report(z, target_std=1.0)
    assert free.normalized_std * 4 == pytest.approx(1.0, rel=0.05)
    assert free.verdict == "healthy"  # no scale-free rule can see it
    assert target.verdict == "complete collapse"  # mean std < 0.1 * target_std
    assert (free.scale, target.scale) == ("free", "target_std=1")
    assert (free.target_std, target.target_std) == (None, 1.0)
    # the line moves with the target and with the fraction
    assert collapse_report(z, target_std=0.1).verdict == "healthy"
    assert collapse_report(z, target_std=1.0, complete_std_fraction=0.01).verdict == "healthy"
    assert collapse_report(z, target_std=0.1).scale == "target_std=0.1"


@pytest.mark.parametrize(
    "z",
    [
        _isotropic(600, 16),
        _rank_k(600, 16, 2),
        np.hstack([_isotropic(600, 6), np.zeros((600, 10))]),  # 10 of 16 dimensions dead
        3.0 + 1e-6 * _isotropic(600, 16),
    ],
    ids=["healthy", "rank 2", "dead dimensions", "one point"],
)
def test_scale_free_verdict_does_not_change_with_scale(z):
    reference = collapse_report(z)
    for factor in (0.5, 1e-3, 1e3):
        scaled = collapse_report(factor * z)
        assert scaled.verdict == reference.verdict, factor
        assert scaled.dead_fraction == reference.dead_fraction
        assert scaled.normalized_std == pytest.approx(reference.normalized_std, rel=1e-9)
        assert scaled.mean_std == pytest.approx(factor * reference.mean_std, rel=1e-9)


def test_dead_dimensions_are_judged_relative_to_the_scale():
    z = 1e-4 * _isotropic(1000, 16)  # every std near 1e-4: small, not dead
    assert collapse_report(z).dead_fraction == 0.0
    z[:, :10] *= 1e-4  # 10 of 16 dimensions 10^4 times below the others
    report = collapse_report(z)
    assert report.dead_fraction == 10 / 16
    assert report.verdict == "dimensional collapse"
    assert collapse_report(1e8 * z).dead_fraction == 10 / 16
    # against a target, dead means 1000 times below the target std
    assert collapse_report(1e3 * z, target_std=1.0).dead_fraction == 10 / 16
    assert collapse_report(z, target_std=1.0).dead_fraction == 1.0


def test_a_random_small_cnn_is_never_a_complete_collapse():
    from vicreg_lab import SyntheticCohort
    from vicreg_lab.models import build_encoder

    n = 48
    cohort = SyntheticCohort(n_subjects=n, shape=(32, 32, 32), seed=0)
    brains = torch.stack([torch.as_tensor(cohort[i]["image"]) for i in range(n)]).float()
    noise = torch.randn(n, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, volumes in (("brains", brains.reshape(n, 1, 32, 32, 32)), ("noise", noise)):
        for seed in range(3):
            torch.manual_seed(seed)
            encoder = build_encoder("small_cnn").eval()  # BatchNorm's initial statistics
            with torch.no_grad():
                z = encoder(volumes)
            report = collapse_report(z)
            assert report.mean_std < 0.1, (name, seed)  # an absolute rule would call collapse
            assert report.verdict != "complete collapse", (name, seed, report)
            assert collapse_report(0.5 * z).verdict == report.verdict


def test_target_std_must_be_positive():
    z = _isotropic(100, 4)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target_std must be a positive number"):
            collapse_report(z, target_std=bad)
    assert diag.target_std_of("free") is None
    with pytest.raises(ValueError, match="scale must be"):
        diag.target_std_of("gamma=1")


def test_thresholds_are_parameters():
    z = _rank_k(1000, 16, 8)  # RankMe fraction about 0.5
    assert collapse_report(z).verdict == "healthy"
    assert collapse_report(z, dimensional_rank_fraction=0.75).verdict == "dimensional collapse"
    z = _isotropic(1000, 16)
    z[:, :6] = 0.0
    assert collapse_report(z).verdict == "healthy"
    assert collapse_report(z, dimensional_dead_fraction=0.25).verdict == "dimensional collapse"


def test_report_reads_as_attributes_keys_and_dict():
    report = collapse_report(_isotropic(200, 8))
    as_dict = report.to_dict()
    assert set(as_dict) == {
        "n_samples",
        "n_dims",
        "mean_std",
        "normalized_std",
        "rankme",
        "rankme_fraction",
        "dead_fraction",
        "mean_abs_correlation",
        "scale",
        "verdict",
    }
    assert report["verdict"] == report.verdict == as_dict["verdict"]
    assert dict(report) == as_dict
    assert (as_dict["n_samples"], as_dict["n_dims"]) == (200, 8)
    with pytest.raises(KeyError, match="rankmee"):
        report["rankmee"]


# ----------------------------------------------------------------------------- single metrics


def test_numpy_and_torch_inputs_agree():
    z = _isotropic(300, 12)
    from_numpy = collapse_report(z).to_dict()
    from_torch = collapse_report(torch.from_numpy(z).requires_grad_(True)).to_dict()
    assert from_numpy == from_torch
    np.testing.assert_allclose(diag.embedding_std(z), z.std(axis=0, ddof=1), rtol=1e-12)


def test_rankme_matches_the_formula():
    z = _isotropic(50, 6)
    sigma = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    np.testing.assert_allclose(diag.singular_values(z), sigma, rtol=1e-10)


def test_rankme_centring_ignores_a_constant_offset():
    z = _isotropic(2000, 16)
    assert rankme(z + 100.0) == pytest.approx(rankme(z), rel=1e-6)
    # uncentred (as in the paper), the offset is one dominant direction
    assert rankme(z + 100.0, center=False) < 2.0
    assert rankme(z, center=False) == pytest.approx(16, rel=0.05)


def test_dead_dimension_fraction_threshold():
    z = _isotropic(500, 4)
    z[:, 0] *= 1e-4
    z[:, 1] *= 1e-2
    assert diag.dead_dimension_fraction(z) == 0.25
    assert diag.dead_dimension_fraction(z, threshold=0.1) == 0.5
    with pytest.raises(ValueError, match="threshold must be a non-negative"):
        diag.dead_dimension_fraction(z, threshold=-1.0)


def test_mean_abs_correlation():
    x = _isotropic(400, 3)
    copies = np.hstack([x[:, :1], -3 * x[:, :1], 2 * x[:, :1] + 1])
    assert diag.mean_abs_correlation(copies) == pytest.approx(1.0)
    # a constant column is left out instead of giving NaN
    with_constant = np.hstack([copies, np.full((400, 1), 7.0)])
    assert diag.mean_abs_correlation(with_constant) == pytest.approx(1.0)
    # computing the matrix by blocks does not change the result
    z = _rank_k(300, 40, 5)
    full = diag.mean_abs_correlation(z)
    assert 0.05 < full < 1
    assert diag.mean_abs_correlation(z, block_size=7) == pytest.approx(full, rel=1e-12)
    assert full == pytest.approx(
        np.abs(np.corrcoef(z.T)[~np.eye(40, dtype=bool)]).mean(), rel=1e-10
    )


@pytest.mark.parametrize(
    "function",
    [
        diag.embedding_std,
        diag.normalized_std,
        diag.singular_values,
        rankme,
        diag.dead_dimension_fraction,
        diag.mean_abs_correlation,
        collapse_report,
    ],
)
@pytest.mark.parametrize(
    "z,match",
    [
        (np.ones(10), r"2-D with shape \(N, D\).*got shape \(10,\)"),
        (np.ones((1, 8)), r"N >= 2.*got shape \(1, 8\)"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]]), "NaN or infinite"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "NaN or infinite"),
        ("not numbers", "cannot be converted"),
    ],
)
def test_bad_input_raises(function, z, match):
    with pytest.raises(ValueError, match=match):
        function(z)


# ----------------------------------------------------------------------------- figures


def _history(steps=5):
    return {
        "step": list(range(0, 10 * steps, 10)),
        "loss": np.linspace(40, 10, steps),
        "invariance": np.linspace(1, 0.1, steps),
        "variance": np.linspace(0.9, 0.1, steps),
        "covariance": np.linspace(2, 0.5, steps),
    }


def test_plot_loss_terms_one_axis_per_term():
    fig = viz.plot_loss_terms(_history())
    assert isinstance(fig, matplotlib.figure.Figure)
    assert [ax.get_title() for ax in fig.axes] == [
        "loss (weighted total)",
        "invariance",
        "variance",
        "covariance",
    ]
    line = fig.axes[1].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 10, 20, 30, 40])  # the step column
    np.testing.assert_allclose(line.get_ydata(), _history()["invariance"])


def test_plot_loss_terms_dataframe_records_and_subsets():
    frame = pd.DataFrame(_history())[["loss", "variance"]]
    fig = viz.plot_loss_terms(frame)
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), np.arange(5))  # no step
    records = [{"loss": torch.tensor(3.0), "covariance": 1.0}, {"loss": 2.0, "covariance": 0.5}]
    fig = viz.plot_loss_terms(records)
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [3.0, 2.0])


def test_plot_loss_terms_several_runs_and_given_axes():
    runs = {"run a": _history(), "run b": pd.DataFrame(_history(7))}
    fig = viz.plot_loss_terms(runs)
    assert len(fig.axes) == 4
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == ["run a", "run b"]

    one_ax = matplotlib.figure.Figure().subplots()
    fig = viz.plot_loss_terms(_history(), ax=one_ax)
    assert fig is one_ax.figure and len(one_ax.lines) == 4
    assert one_ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="one Axes per term"):
        viz.plot_loss_terms(_history(), ax=[one_ax, one_ax])


def test_plot_loss_terms_bad_history():
    with pytest.raises(ValueError, match="none of the loss terms.*'lr'"):
        viz.plot_loss_terms({"lr": [0.1, 0.2]})
    with pytest.raises(ValueError, match="history must be"):
        viz.plot_loss_terms(42)


def test_plot_spectrum():
    z = _isotropic(200, 16)
    fig = viz.plot_spectrum(z)
    (ax,) = fig.axes
    assert len(ax.lines) == 1
    assert ax.get_yscale() == "log"
    assert ax.lines[0].get_ydata()[0] == pytest.approx(1.0)  # normalised by sigma_1

    embeddings = [z, _rank_k(200, 16, 3), np.ones((200, 16))]
    fig = viz.plot_spectrum(embeddings, labels=["iso", "rank 3", "constant"])
    lines = fig.axes[0].lines
    assert len(lines) == 3
    assert np.isfinite(lines[1].get_ydata()).sum() == 3  # the zero directions are not drawn
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[1].startswith("rank 3 (RankMe ")
    assert 2.5 < float(legend[1].removeprefix("rank 3 (RankMe ").rstrip(")")) <= 3.05
    with pytest.raises(ValueError, match="3 embeddings but 2 labels"):
        viz.plot_spectrum(embeddings, labels=["a", "b"])


def test_plot_collapse_reports():
    reports = {
        "healthy": collapse_report(_isotropic(300, 16)),
        "rank 2": collapse_report(_rank_k(300, 16, 2)),
        "constant": collapse_report(np.ones((300, 16))).to_dict(),
    }
    fig = viz.plot_collapse_reports(reports)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 4
    assert [len(ax.patches) for ax in fig.axes[:3]] == [3, 3, 3]
    texts = [t.get_text() for t in fig.axes[3].texts]
    assert texts == [
        "healthy: healthy (scale-free)",
        "rank 2: dimensional collapse (scale-free)",
        "constant: complete collapse (scale-free)",
    ]
    assert len(fig.axes[0].lines) == 0  # no absolute threshold for scale-free reports
    expander = {"expander": collapse_report(0.05 * _isotropic(300, 16), target_std=2.0)}
    fig = viz.plot_collapse_reports({**reports, **expander})
    assert fig.axes[3].texts[-1].get_text() == "expander: complete collapse (target_std=2)"
    (line,) = fig.axes[0].lines
    assert line.get_ydata()[0] == pytest.approx(0.2)  # 0.1 x the target
    with pytest.raises(ValueError, match="lacks"):
        viz.plot_collapse_reports({"partial": {"rankme": 3.0}})


def test_training_collapse_uses_batch_statistics_and_leaves_the_networks_untouched():
    from torch import nn

    from vicreg_lab.diagnostics import training_collapse

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16))
    expander = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32))
    encoder.eval(), expander.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x = 1e3 * torch.randn(256, 8)  # large inputs: stored statistics (mean 0, var 1) would
    # leave a std in the hundreds; the batch's own statistics rescale it to 1
    out = training_collapse(encoder, expander, x)
    assert set(out) == {"collapse", "collapse_expander"}
    assert out["collapse"]["scale"] == "free"
    assert out["collapse_expander"]["scale"] == "target_std=1"
    assert out["collapse"]["mean_std"] == pytest.approx(1.0, rel=0.05)  # BatchNorm: unit std
    assert not encoder.training and expander.training  # modes restored (copies were used)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
