"""01_augmentations.ipynb in JupyterLab: it runs, its widgets render, the panel redraws.

What a learner does: open the notebook, Run All, move a strength slider of the
``AugmentationPanel``, press "New sample", and see the two views change each time.
"""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NOTEBOOK = "01_augmentations.ipynb"
PANEL = ".vicreg-augment-panel"  # the CSS classes AugmentationPanel documents


def test_augmentations_notebook_runs_and_its_panel_redraws(lab, notebook_copy):
    lab.open(notebook_copy(NOTEBOOK))
    state = lab.run_all()
    lab.screenshot("ran-all")
    assert lab.cell_errors() == []
    assert [c["index"] for c in state["cells"] if not c["empty"] and c["count"] is None] == []

    panel = lab.page.locator(PANEL).first
    panel.scroll_into_view_if_needed()
    panel.wait_for(state="visible")
    assert lab.widget_errors() == []
    views = panel.locator(".vicreg-augment-views")
    picture = lab.wait_for_change(lambda: lab.image_digest(views), None, "the views")
    lab.screenshot("panel-before", panel)

    crop = lab.slider("crop min", panel)
    value = lab.readout(crop)
    lab.move_slider(crop, "PageUp")
    lab.wait_for_change(lambda: lab.readout(crop), value, "the crop slider")
    picture = lab.wait_for_change(
        lambda: lab.image_digest(views), picture, "the views after the crop slider"
    )
    lab.screenshot("panel-after-crop", panel)

    panel.locator(".vicreg-augment-new-sample", has_text="New sample").click()
    lab.wait_for_change(lambda: lab.image_digest(views), picture, "the views after New sample")
    lab.screenshot("panel-after-new-sample", panel)

    assert lab.cell_errors() == [] and lab.widget_errors() == []
