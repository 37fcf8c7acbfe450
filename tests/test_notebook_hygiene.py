"""Notebook hygiene: what is committed is clean, short, and tells a story.

nbval (run on ``notebooks/`` by the same ``pytest`` call) proves the cells execute;
these tests check the files themselves: kernel ``python3``, no stored outputs except
``# NBVAL_CHECK_OUTPUT`` cells, no code cell over 25 lines, learning objectives
first, "Try it" prompts, a summary last, and the profile read in the first code cell.
"""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CURRICULUM = [
    "00_welcome_and_data",
    "01_augmentations",
    "02_vicreg_loss",
    "03_training",
    "04_ablations_and_collapse",
    "05_what_the_embedding_learned",
    "06_vicregl_local_features",
    "07_confounds_and_unseen_scanners",
    "08_expander_and_peers",
    "09_appendix_systems",
]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ASSIGNMENTS = sorted((ROOT / "assignments").glob("**/*.ipynb"))
MAX_LINES = 25
CHECK = "# NBVAL_CHECK_OUTPUT"


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _read(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def _checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK)


def test_the_curriculum_is_complete():
    assert [p.stem for p in NOTEBOOKS] == CURRICULUM


@pytest.mark.parametrize("path", NOTEBOOKS + ASSIGNMENTS, ids=_ids(NOTEBOOKS + ASSIGNMENTS))
def test_kernel_and_outputs(path):
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name} cell {index}"
        if _checked(cell):
            assert cell.outputs, f"{where}: {CHECK} cell has no stored output to compare"
            for output in cell.outputs:
                assert set(output.get("data", {})) <= {"text/plain"}, f"{where}: non-text output"
        else:
            assert not cell.outputs, f"{where}: stored outputs (clear them before committing)"
            assert cell.execution_count is None, f"{where}: execution count stored"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_cells_are_short_and_the_story_is_told(path):
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            lines = len(cell.source.splitlines())
            assert lines <= MAX_LINES, f"{path.name} cell {index}: {lines} lines > {MAX_LINES}"
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and "learning objectives" in first.source.lower()
    assert last.cell_type == "markdown" and "summary" in last.source.lower()
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "try it" in markdown, f"{path.name}: no 'Try it' prompt"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "get_profile" in code[0].source, f"{path.name}: first code cell must read the profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_at_least_one_checked_cell(path):
    nb = _read(path)
    assert any(_checked(c) for c in nb.cells), f"{path.name}: no {CHECK} cell"


DRIVES_WIDGETS = ("sliders[", ".click()", "set_weights(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_cells_that_drive_widgets_from_code_are_tagged_and_folded(path):
    """A cell that moves sliders or presses buttons from code (for the tests, and to show
    what a click does) is tagged ``test-driver`` and ``remove-input`` (a rendered page
    shows its output only) and its source is folded in JupyterLab."""
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not any(d in cell.source for d in DRIVES_WIDGETS):
            continue
        where = f"{path.name} cell {index}"
        tags = cell.metadata.get("tags", [])
        assert {"test-driver", "remove-input"} <= set(tags), f"{where}: tags {tags}"
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, f"{where}: not folded"
