"""AugmentationPanel and LossWeightsPanel driven headless, and the figures they show."""

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from conftest import mni_brain
from matplotlib.figure import Figure

from vicreg_lab import BatchedAugment, SimCLRTransform
from vicreg_lab.augment import LIMITS, AugmentParams
from vicreg_lab.lab.plots import plot_views
from vicreg_lab.lab.widgets import LOSS_WEIGHTS, SLIDERS, AugmentationPanel, LossWeightsPanel


@pytest.fixture(scope="module")
def brain():
    return mni_brain((24, 28, 24))


@pytest.fixture(params=[SimCLRTransform, "batched"])
def panel(request, brain):
    return AugmentationPanel(brain, transform_cls=request.param, input_size=16, seed=0)


def test_panel_is_built_and_draws_once(panel):
    assert isinstance(panel.widget, widgets.VBox)
    assert "vicreg-augment-panel" in panel.widget._dom_classes  # for styling and browser tests
    assert "vicreg-augment-new-sample" in panel.button._dom_classes
    assert "vicreg-augment-views" in panel.image._dom_classes
    assert set(panel.sliders) == set(SLIDERS)
    assert all(not s.continuous_update for s in panel.sliders.values())
    assert panel.n_redraws == 1 and isinstance(panel.figure, Figure)
    assert panel.image.value[:4] == b"\x89PNG"
    assert [tuple(v.shape) for v in panel.views] == [(1, 16, 16, 16)] * 2
    assert not torch.equal(*panel.views)
    assert panel.transform.params == AugmentParams()  # sliders start at the defaults


def test_moving_a_slider_changes_the_transform_and_the_views(panel):
    before, png = panel.views, panel.image.value
    panel.sliders["crop_scale_min"].value = 0.5
    assert panel.transform.params.crop_scale == (0.5, 1.0)
    assert panel.n_redraws == 2 and panel.image.value != png
    assert not torch.equal(before[0], panel.views[0])

    panel.sliders["gamma_max"].value = 0.6
    panel.sliders["blur_sigma_max"].value = 2.0
    assert panel.transform.params.gamma == (-0.6, 0.6)
    assert panel.transform.params.blur_sigma == (0.0, 2.0)
    assert panel.n_redraws == 4


def test_slider_moves_keep_the_sample_and_the_button_draws_a_new_one(panel):
    first = panel.views[0].clone()
    panel.sliders["noise_std_max"].value = 0.05  # unchanged value: no redraw
    assert panel.n_redraws == 1
    panel.sliders["rotation_degrees"].value = 1.0
    panel.sliders["rotation_degrees"].value = 0.0  # back: the same sample again
    assert torch.equal(panel.views[0], first)

    panel.button.click()
    assert panel.sample == 1 and panel.n_redraws == 4
    assert not torch.equal(panel.views[0], first)
    assert panel.transform.seed == 1


def test_batched_panel_uses_batched_augment(brain):
    assert isinstance(AugmentationPanel(brain, "batched").transform, BatchedAugment)
    default = AugmentationPanel(brain[:, :12, :14, :12])
    assert default.views[0].shape == (1, 12, 14, 12)  # small volumes keep their size


def test_slider_ranges_are_valid_augment_params():
    for name, (_, lo, hi, _) in SLIDERS.items():
        knob = name.removesuffix("_min").removesuffix("_max")
        assert LIMITS[knob][0] <= lo <= hi <= LIMITS[knob][1], name


def test_panel_refuses_bad_input(brain):
    with pytest.raises(TypeError, match="floating-point"):
        AugmentationPanel(torch.zeros(1, 16, 16, 16, dtype=torch.int16))
    with pytest.raises(ValueError, match="4-D tensor"):
        AugmentationPanel(brain[None])
    with pytest.raises(ValueError, match="transform_cls must be"):
        AugmentationPanel(brain, transform_cls="monai")


def test_plot_views_shows_three_volumes_as_mid_slices(brain):
    view = torch.rand(1, 16, 16, 16)
    fig = plot_views(brain, view, view[0].numpy(), title="views")
    assert isinstance(fig, Figure) and len(fig.axes) == 9
    assert fig._suptitle.get_text() == "views"
    first = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(first, brain[0, 12].numpy().T)  # D mid-slice, transposed
    assert fig.axes[3].get_ylabel() == "view 1"
    with pytest.raises(ValueError, match=r"view 2 must be \(D, H, W\)"):
        plot_views(brain, view, torch.rand(2, 2))


# ---------------------------------------------------------------- LossWeightsPanel


@pytest.fixture
def loss_panel():
    return LossWeightsPanel(steps=150, n=256, seed=0)


def test_loss_panel_is_built_for_browsers_and_trains_once(loss_panel):
    assert "vicreg-loss-panel" in loss_panel.widget._dom_classes
    assert "vicreg-loss-readout" in loss_panel.readout._dom_classes
    assert "vicreg-loss-figure" in loss_panel.image._dom_classes
    assert "vicreg-loss-reset" in loss_panel.reset_button._dom_classes
    assert isinstance(loss_panel.readout, widgets.HTML)
    sliders = loss_panel.sliders
    assert [s.description for s in sliders.values()] == ["invariance", "variance", "covariance"]
    assert all(isinstance(s, widgets.FloatLogSlider) for s in sliders.values())
    assert all(not s.continuous_update for s in sliders.values())
    assert [f"vicreg-loss-{key}" in s._dom_classes for key, s in sliders.items()] == [True] * 3
    assert loss_panel.weights == {"inv_coeff": 25.0, "var_coeff": 25.0, "cov_coeff": 1.0}
    assert loss_panel.n_updates == 1 and len(loss_panel.run["history"]["step"]) == 150
    assert loss_panel.image.value[:4] == b"\x89PNG"
    assert loss_panel.report.verdict == "healthy"
    assert 'data-verdict="healthy"' in loss_panel.readout.value


def test_variance_weight_near_zero_collapses_and_the_readout_says_so(loss_panel):
    readout, png = loss_panel.readout.value, loss_panel.image.value
    loss_panel.sliders["var"].value = 1e-3  # what releasing the slider does
    assert loss_panel.n_updates == 2
    assert loss_panel.run["weights"]["var_coeff"] == pytest.approx(1e-3)
    assert loss_panel.report.verdict == "complete collapse"
    assert loss_panel.report.mean_std < 0.1
    assert loss_panel.readout.value != readout and loss_panel.image.value != png
    assert 'data-verdict="complete-collapse"' in loss_panel.readout.value
    assert "var 0.001" in loss_panel.readout.value


def test_set_weights_retrains_once_and_reset_restores_the_paper(loss_panel):
    loss_panel.set_weights(var=25.0, cov=1e-3)
    assert loss_panel.n_updates == 2
    assert loss_panel.report.verdict == "dimensional collapse"
    loss_panel.reset_button.click()
    assert loss_panel.n_updates == 3
    assert loss_panel.weights == {"inv_coeff": 25.0, "var_coeff": 25.0, "cov_coeff": 1.0}
    assert loss_panel.report.verdict == "healthy"


def test_a_failed_run_is_shown_in_the_readout(loss_panel):
    loss_panel.lr = -1.0  # Adam refuses a negative learning rate
    loss_panel.sliders["inv"].value = 10.0
    assert "training failed" in loss_panel.readout.value
    assert "learning rate" in loss_panel.readout.value.lower()


def test_loss_panel_refuses_weights_off_the_sliders():
    assert set(LOSS_WEIGHTS) == {"inv", "var", "cov"}
    with pytest.raises(ValueError, match=r"var_coeff must be a number in \[0.001, 100\]"):
        LossWeightsPanel(var_coeff=0.0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        LossWeightsPanel(steps=0)
