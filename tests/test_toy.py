"""The toy VICReg problem: standard weights stay healthy, no variance term collapses."""

import numpy as np
import pytest
import torch

from vicreg_lab.diagnostics import collapse_report
from vicreg_lab.lab.toy import make_toy_data, plot_toy_run, principal_axes, torch_threads, train_toy


def test_toy_data_is_seeded():
    a, la = make_toy_data(n=64, seed=3)
    b, lb = make_toy_data(n=64, seed=3)
    assert a.shape == (64, 8) and (a == b).all() and (la == lb).all()
    with pytest.raises(ValueError, match="n >= 2"):
        make_toy_data(n=1)


def test_variance_term_prevents_collapse():
    healthy = train_toy(steps=150, seed=0, lr=1e-2)
    collapsed = train_toy(steps=150, seed=0, lr=1e-2, var_coeff=0.0)
    assert collapse_report(healthy["embeddings"], target_std=1.0).verdict == "healthy"
    # shrunk towards the origin, the directions stay diverse: only the target sees it
    assert collapse_report(collapsed["embeddings"], target_std=1.0).verdict == "complete collapse"
    assert collapse_report(collapsed["embeddings"]).verdict != "complete collapse"
    assert healthy["history"]["variance"][-1] < 0.5 * healthy["history"]["variance"][0]
    # VICReg asks for std 1 per dimension; without the variance term every dimension
    # shrinks towards a constant (judge collapse by the std first)
    assert np.std(healthy["embeddings"], axis=0).mean() > 0.5
    assert np.std(collapsed["embeddings"], axis=0).max() < 0.05


def test_callback_can_stop_early():
    seen = []
    run = train_toy(steps=50, callback=lambda step, terms: seen.append(terms) or step < 4)
    assert len(seen) == 5 and len(run["history"]["loss"]) == 5
    assert set(seen[0]) == {"loss", "invariance", "variance", "covariance"}


def test_training_threads_are_restored_and_checked():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        train_toy(
            steps=2, num_threads=1, callback=lambda s, t: seen.append(torch.get_num_threads())
        )
        assert seen == [1, 1] and torch.get_num_threads() == 2
        train_toy(
            steps=1, num_threads=None, callback=lambda s, t: seen.append(torch.get_num_threads())
        )
        assert seen[-1] == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        train_toy(steps=2, num_threads=0)


def test_principal_axes_keep_the_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3)) * [3.0, 1.0, 0.01] + 5.0
    coords, spread = principal_axes(z)
    np.testing.assert_allclose(spread, [3.0, 1.0, 0.01], rtol=0.15)
    np.testing.assert_allclose(coords.std(axis=0, ddof=1), spread)
    np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-9)  # centred, not rescaled
    with pytest.raises(ValueError, match=r"shape \(N, D\) with N >= 2"):
        principal_axes(np.ones(5))


def test_plot_toy_run_shows_terms_embeddings_and_spread():
    run = train_toy(steps=20, n=64, seed=1, var_coeff=0.5)
    assert run["weights"] == {"inv_coeff": 25.0, "var_coeff": 0.5, "cov_coeff": 1.0}
    fig = plot_toy_run(run, title="toy")
    loss_ax, emb_ax, spread_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["invariance", "variance", "covariance"]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), run["history"]["variance"])
    assert len(emb_ax.collections[0].get_offsets()) == 64
    _, spread = principal_axes(run["embeddings"])
    assert [p.get_height() for p in spread_ax.patches] == pytest.approx(list(spread))
    assert emb_ax.get_xlim()[1] >= 3.0  # at least the fixed half-width
    with pytest.raises(ValueError, match="lacks"):
        plot_toy_run({"history": run["history"]})


def test_collapsed_embeddings_stay_a_dot_in_the_scatter():
    collapsed = train_toy(steps=150, seed=0, n=256, var_coeff=0.0)
    emb_ax = plot_toy_run(collapsed).axes[1]
    assert emb_ax.get_xlim() == pytest.approx((-3.0, 3.0))  # fixed axes, no zooming in
    assert np.abs(emb_ax.collections[0].get_offsets()).max() < 0.5


def test_torch_threads_sets_and_always_restores_the_thread_count():
    outer = torch.get_num_threads()
    with torch_threads(2):  # a known starting point, even under OMP_NUM_THREADS=1
        _restores_to(2)
    assert torch.get_num_threads() == outer


def _restores_to(before):
    assert torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None: leave it as it is
        assert torch.get_num_threads() == before
