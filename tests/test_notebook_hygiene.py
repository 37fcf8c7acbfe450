"""Notebook hygiene: what is committed is clean, short, and tells a story.

nbval (run on ``notebooks/`` by the same ``pytest`` call) proves the cells execute;
these tests check the files themselves: kernel ``python3``, no stored outputs except
``# NBVAL_CHECK_OUTPUT`` cells, no code cell over 25 lines, learning objectives
first, "Try it" prompts, a summary last, the profile read in the first code cell, and
at least two self-checked exercises per notebook, with their answers in the instructors' key.
"""

import re
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
ANSWERS = ROOT / "assignments" / "answers.md"
EXERCISES = "Exercises (self-checked in the notebook):"
MIN_EXERCISES = 2


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


def _answer_key() -> dict[str, str]:
    """The sections of the answer key, by notebook number ("00", "01", ...)."""
    sections = re.split(r"^## ", ANSWERS.read_text(encoding="utf-8"), flags=re.M)[1:]
    return {section[:2]: section for section in sections}


@pytest.mark.parametrize("name", CURRICULUM)
def test_students_act_self_checked_exercises(name):
    """Every notebook asks the student to act at least twice: a markdown cell "**Exercise N.**"
    poses the question, and the code cell right after it sets the student's variable to None
    (so the notebook still runs top to bottom) and hands it to ``self_check`` with the value
    computed live. The answer key lists the notebook's exercises with their answers."""
    nb = _read(ROOT / "notebooks" / f"{name}.ipynb")
    checked = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for variable in re.findall(r"self_check\(\s*(\w+)", cell.source):
            where = f"{name} cell {index}"
            assert re.search(rf"^{variable} = None\b", cell.source, re.M), (
                f"{where}: the student's variable {variable} is not set to None in the cell"
            )
            before = nb.cells[index - 1]
            assert before.cell_type == "markdown" and "**Exercise" in before.source, (
                f"{where}: no markdown '**Exercise' cell right before the self-check"
            )
            checked.append(index)
    assert len(set(checked)) >= MIN_EXERCISES, (
        f"{name}: {len(set(checked))} self-checked exercise(s), at least {MIN_EXERCISES} wanted"
    )
    section = _answer_key().get(name[:2], "")
    assert EXERCISES in section, f"{ANSWERS.name}: no '{EXERCISES}' line for {name}"
    answers = section.split(EXERCISES, 1)[1].split("\n\n", 1)[0]
    assert "1." in answers and "2." in answers, f"{ANSWERS.name}: {name}'s exercises not numbered"


@pytest.mark.parametrize("name", CURRICULUM)
def test_students_predict_before_a_key_cell(name):
    """A "**Predict ...**" prompt in a markdown cell directly before a code cell."""
    nb = _read(ROOT / "notebooks" / f"{name}.ipynb")
    prompts = [
        i
        for i, cell in enumerate(nb.cells[:-1])
        if cell.cell_type == "markdown"
        and "**Predict" in cell.source
        and nb.cells[i + 1].cell_type == "code"
    ]
    assert prompts, f"{name}: no '**Predict first:**' prompt right before a code cell"
