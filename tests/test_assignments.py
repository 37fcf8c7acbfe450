"""The classroom assignments, end to end, with a real Jupyter kernel (profile ci).

- every source (solution) notebook in assignments/ runs without error and passes every
  grade cell;
- ``vicreg-lab assignments release`` builds student versions without solutions or
  hidden tests, with stubs, and with the nbgrader metadata kept;
- every student notebook runs to the end, and every grade cell fails with the
  checker's feedback (a CheckFailed, an AssertionError), not with a crash.
"""

import os
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from vicreg_lab.classroom import MAX_SITE_ACCURACY
from vicreg_lab.classroom.release import CODE_STUB, TEXT_STUB, compute_checksum
from vicreg_lab.lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "assignments").glob("*.ipynb"))
NAMES = [path.name for path in SOURCES]
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _execute(nb, workdir: Path):
    env = {**os.environ, "VICREG_LAB_PROFILE": "ci", "MPLBACKEND": "Agg"}
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    return nb


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("assignments")


@pytest.fixture(scope="module")
def student_dir(workdir):
    out = workdir / "student"
    assert main(["assignments", "release", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run(workdir, student_dir):
    """``run(kind, name)``: the executed source or student notebook (each executed once)."""

    @cache
    def _run(kind: str, name: str):
        folder = ROOT / "assignments" if kind == "source" else student_dir
        return _execute(nbformat.read(folder / name, as_version=4), workdir)

    return _run


def _errors(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def _stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_the_four_assignments_are_there():
    assert NAMES == [
        "01_loss_terms.ipynb",
        "02_rankme_diagnosis.ipynb",
        "03_augmentations_age_not_site.ipynb",
        "04_collapse_weights.ipynb",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_source_version_passes_every_check(run, name):
    nb = run("source", name)
    grade_cells = [c for c in nb.cells if c.cell_type == "code" and _nbgrader(c).get("grade")]
    assert grade_cells, f"{name}: no autograded cell"
    for index, cell in enumerate(nb.cells):
        assert not _errors(cell), f"{name} cell {index}: {_errors(cell)[0].evalue[:500]}"
    for cell in grade_cells:
        points = _nbgrader(cell)["points"]
        out = _stdout(cell)
        assert out.startswith("PASSED") and f"{points:g}/{points:g} points" in out, out
        stderr = [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{name}: nbgrader fails a grade cell that writes to stderr"
        assert not [o for o in cell.outputs if o.output_type == "execute_result"], (
            "nbgrader would read a cell result as partial credit"
        )


def test_the_photograph_recipe_fails_and_the_solution_passes_the_criterion(run):
    nb = run("source", "03_augmentations_age_not_site.ipynb")
    (baseline,) = [c for c in nb.cells if "augmentation_experiment(NATURAL" in c.source]
    site = float(re.search(r"site balanced accuracy = ([\d.]+)", _stdout(baseline)).group(1))
    assert site > MAX_SITE_ACCURACY + 0.2, "the starting point must clearly keep the scanner"


@pytest.mark.parametrize("name", NAMES)
def test_release_removes_solutions_and_hidden_tests_and_keeps_nbgrader_metadata(student_dir, name):
    source = nbformat.read(ROOT / "assignments" / name, as_version=4)
    student = nbformat.read(student_dir / name, as_version=4)
    nbformat.validate(student)
    assert [c.id for c in student.cells] == [c.id for c in source.cells]
    text = "\n".join(c.source for c in student.cells)
    assert not [m for m in MARKERS if m in text]
    hidden = 0
    for src, cell in zip(source.cells, student.cells, strict=True):
        meta, src_meta = _nbgrader(cell), _nbgrader(src)
        assert {k: v for k, v in meta.items() if k not in ("checksum", "cell_type")} == src_meta
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        if not src_meta:
            assert cell.source == src.source
            continue
        assert meta["checksum"] == compute_checksum(cell) and meta["cell_type"] == cell.cell_type
        if src_meta["solution"]:
            stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
            lines = [line.strip() for line in cell.source.splitlines()]
            assert all(line in lines for line in stub.splitlines()), cell.source
            solution = src.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            kept = [line for line in solution.splitlines() if line.strip() in cell.source]
            assert not [line for line in kept if line.strip()], kept
            assert cell.metadata["deletable"] is False
        if src_meta["grade"] and not src_meta["solution"]:
            assert cell.metadata["editable"] is False and cell.metadata["deletable"] is False
            hidden += "BEGIN HIDDEN TESTS" in src.source
            assert cell.source.strip() and cell.source in src.source
    if name.startswith(("01", "02")):
        assert hidden >= 2, "these assignments have hidden tests"


@pytest.mark.parametrize("name", NAMES)
def test_student_version_runs_and_every_check_fails_with_its_feedback(run, name):
    nb = run("student", name)
    n_checks = 0
    for index, cell in enumerate(nb.cells):
        meta, errors, where = _nbgrader(cell), _errors(cell), f"{name} cell {index}"
        if cell.cell_type != "code":
            continue
        if meta.get("grade"):
            n_checks += 1
            assert len(errors) == 1, f"{where}: a check must fail in the student version"
            error = errors[0]
            assert error.ename == "CheckFailed", f"{where}: crashed with {error.ename}"
            assert error.evalue.startswith("FAILED"), error.evalue
            assert "Not implemented yet" in error.evalue
            assert f"0/{meta['points']:g} points" in error.evalue
        elif meta.get("solution"):
            assert [e.ename for e in errors] in ([], ["NotImplementedError"]), where
        else:
            assert not errors, f"{where}: {errors[0].ename}: {errors[0].evalue[:300]}"
    assert n_checks >= 1
