"""02_vicreg_loss.ipynb in JupyterLab: it runs, its widgets render, the loss weights retrain.

What a learner does: open the notebook, Run All, then play with the ``LossWeightsPanel``:
raise the invariance weight, drag the variance weight to the far left and watch the
embeddings collapse, press the button that restores the paper's 25 / 25 / 1.
"""

import re

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NOTEBOOK = "02_vicreg_loss.ipynb"
PANEL = ".vicreg-loss-panel"  # the CSS classes LossWeightsPanel documents
READOUT = ".vicreg-loss-readout"
FIGURE = ".vicreg-loss-figure"
VERDICT = ".vicreg-loss-verdict"


def test_loss_weights_notebook_runs_and_its_sliders_retrain(lab, notebook_copy):
    lab.open(notebook_copy(NOTEBOOK))
    state = lab.run_all()
    lab.screenshot("ran-all")
    assert lab.cell_errors() == []
    assert [c["index"] for c in state["cells"] if not c["empty"] and c["count"] is None] == []

    panel = lab.page.locator(PANEL).first
    panel.scroll_into_view_if_needed()
    panel.wait_for(state="visible")
    assert lab.widget_errors() == []
    sliders = {name: lab.slider(name, panel) for name in ("invariance", "variance", "covariance")}
    for name, slider in sliders.items():
        assert slider.count() == 1, f"no slider described {name!r} in {PANEL}"
    readout = panel.locator(READOUT)
    figure = panel.locator(FIGURE)
    text = _settled(lab, readout, None, "the readout")
    picture = lab.wait_for_change(lambda: lab.image_digest(figure), None, "the figure")
    lab.screenshot("panel-before", panel)

    # Raise the invariance weight: the readout shows the slider's new value, the figure redraws.
    lab.move_slider(sliders["invariance"], "PageUp")
    text = _settled(lab, readout, text, "the readout after the invariance slider")
    shown = float(lab.readout(sliders["invariance"]))
    assert shown > 25 and _weight(text, "inv") == pytest.approx(shown, rel=0.01)
    picture = lab.wait_for_change(lambda: lab.image_digest(figure), picture, "the figure")
    lab.screenshot("panel-invariance-up", panel)

    # Variance weight to the far left: the embeddings collapse, and the panel says so.
    lab.move_slider(sliders["variance"], "Home")
    text = _settled(lab, readout, text, "the readout after the variance slider")
    assert float(lab.readout(sliders["variance"])) == pytest.approx(0.001)
    assert _weight(text, "var") == pytest.approx(0.001)
    assert panel.locator(VERDICT).inner_text() == "complete collapse"
    picture = lab.wait_for_change(lambda: lab.image_digest(figure), picture, "the figure")
    lab.screenshot("panel-variance-off", panel)

    # Back to the paper's weights with the button: healthy again.
    panel.locator(".widget-button", has_text="Paper: 25 / 25 / 1").click()
    text = _settled(lab, readout, text, "the readout after the reset button")
    assert [_weight(text, key) for key in ("inv", "var", "cov")] == [25, 25, 1]
    assert panel.locator(VERDICT).inner_text() == "healthy"
    lab.wait_for_change(lambda: lab.image_digest(figure), picture, "the figure")
    lab.screenshot("panel-reset", panel)

    assert lab.cell_errors() == [] and lab.widget_errors() == []


def _settled(lab, readout, before, what):
    """The readout's text once the kernel has retrained: not ``before``, not "training ..."."""

    def read():
        text = readout.inner_text()
        return None if "training with" in text else text

    return lab.wait_for_change(read, before, what)


def _weight(text: str, key: str) -> float:
    """A weight as the readout prints it: ``_weight("weights inv 79.4 · var 25", "inv")``."""
    match = re.search(rf"\b{key} ([-+0-9.e]+)", text)
    assert match, f"no {key!r} weight in the readout {text!r}"
    return float(match.group(1))
