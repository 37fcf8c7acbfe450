"""The browser harness sees what goes wrong: a cell's error, a widget that cannot render.

The notebook tests pass when ``Lab.cell_errors`` and ``Lab.widget_errors`` are empty;
this test shows they are not empty when a learner would see a traceback or "Error
displaying widget", and that "Run All" stops at the failing cell as JupyterLab does.
"""

import nbformat
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# A widget view whose model the kernel never created: JupyterLab shows "Error displaying
# widget" in its place, as it would for a widget the front end cannot render.
_MISSING_WIDGET = """\
from IPython.display import display
view = {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}
display({"application/vnd.jupyter.widget-view+json": view}, raw=True)"""


def _broken_notebook(path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A notebook that goes wrong"),
        nbformat.v4.new_code_cell(_MISSING_WIDGET),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("print('never run')"),
    ]
    nbformat.write(notebook, path)


def test_harness_reports_cell_errors_and_broken_widgets(lab, jupyter_server):
    _broken_notebook(jupyter_server.root / "broken.ipynb")
    lab.open("broken.ipynb")
    state = lab.run_all()
    lab.screenshot("ran-all")

    counts = {c["index"]: c["count"] for c in state["cells"]}
    assert counts[1] is not None and counts[2] is not None
    assert counts[3] is None  # Run All stopped at the error
    assert lab.cell_errors() == ["cell 2: ZeroDivisionError: division by zero"]
    errors = lab.widget_errors()  # waits for "Loading widget..." to turn into the error
    assert len(errors) == 1 and errors[0].startswith("Error displaying widget")
    lab.screenshot("widget-error")
