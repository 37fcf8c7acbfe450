"""Grading a class without nbgrader: ``vicreg-lab assignments grade``, real kernels.

A small class of submissions of assignment 1 (the fastest notebook):

- alice hands in the student version untouched (every check fails);
- bob hands in the solutions, but replaced one locked check with ``pass`` and deleted
  another: both are put back and pass on his code;
- eve uses the biased variance: the variance check fails with its hint (and the total,
  which uses her variance term); the other checks pass;
- carol's file is not a notebook: she scores 0 with the reason, the others are graded.
"""

import copy

import nbformat
import pandas as pd
import pytest

from vicreg_lab.classroom.grade import COLUMNS, _restore_checks, grade, totals
from vicreg_lab.classroom.release import default_source, release_notebook
from vicreg_lab.lab.cli import main

NAME = "01_loss_terms.ipynb"
SOURCE = nbformat.read(default_source() / NAME, as_version=4)
CHECKS = ["invariance-check", "variance-check", "off-diagonal-check", "covariance-check"]
CHECKS += ["total-check"]


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _cell(nb, grade_id):
    return next(c for c in nb.cells if _grade_id(c) == grade_id)


def _bob():
    nb = copy.deepcopy(SOURCE)
    _cell(nb, "invariance-check").source = "pass  # nothing to see here"
    nb.cells.remove(_cell(nb, "off-diagonal-check"))
    return nb


def _eve():
    nb = copy.deepcopy(SOURCE)
    solution = _cell(nb, "variance-solution")
    solution.source = solution.source.replace("z.var(dim=0)", "z.var(dim=0, correction=0)")
    assert "correction=0" in solution.source, "the solution's variance line changed"
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    for student, nb in [
        ("alice", release_notebook(SOURCE, NAME)),
        ("bob", _bob()),
        ("eve", _eve()),
    ]:
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / NAME)
    (subs / "carol").mkdir()
    (subs / "carol" / NAME).write_text("{this is not a notebook")
    (subs / "bob" / "scratch.ipynb").write_text("{}")  # not an assignment: ignored
    out = subs / "grading"  # inside the submissions: its notebooks are not submissions
    (out / "graded" / "old").mkdir(parents=True)
    nbformat.write(SOURCE, out / "graded" / "old" / NAME)  # as left by an earlier run
    status = main(["assignments", "grade", str(subs), "--out", str(out), "--profile", "ci"])
    return status, out


def test_the_command_writes_grades_and_the_executed_notebooks(graded):
    status, out = graded
    assert status == 0
    table = pd.read_csv(out / "grades.csv")
    assert list(table.columns) == COLUMNS
    assert sorted(table["student"].unique()) == ["alice", "bob", "carol", "eve"]  # no "grading"
    assert set(table["notebook"]) == {NAME}  # scratch.ipynb was not graded
    for student in ("alice", "bob", "eve"):
        executed = nbformat.read(out / "graded" / student / NAME, as_version=4)
        assert [_grade_id(c) for c in executed.cells if _grade_id(c) in CHECKS] == CHECKS
    assert not (out / "graded" / "carol").exists()


def test_each_student_gets_what_their_code_deserves(graded):
    table = pd.read_csv(graded[1] / "grades.csv")
    code = table[table["status"] != "by hand"]
    points = code.pivot_table(index="student", columns="grade_id", values="points")[CHECKS]
    assert (points.loc["alice"] == 0).all()
    assert (points.loc["bob"] == code.groupby("grade_id")["max_points"].first()[CHECKS]).all()
    eve = code[code["student"] == "eve"].set_index("grade_id")
    # her loss uses her variance term, so the total is wrong too; the rest passes
    assert list(eve.index[eve["status"] == "failed"]) == ["variance-check", "total-check"]
    assert "biased variance" in eve.loc["variance-check", "feedback"]
    alice = code[code["student"] == "alice"]
    assert alice["feedback"].str.contains("Not implemented yet: `[a-z_]+` still raises").all()
    assert (alice["status"] == "failed").all()


def test_a_broken_file_scores_zero_with_the_reason(graded):
    table = pd.read_csv(graded[1] / "grades.csv")
    carol = table[table["student"] == "carol"]
    assert (carol["status"] == "error").all() and (carol["points"] == 0).all()
    assert carol["feedback"].str.contains("could not be graded: NotJSONError").all()
    assert len(carol) == len(table[table["student"] == "bob"])  # every grade cell listed


def test_written_answers_are_left_for_the_instructor(graded):
    table = pd.read_csv(graded[1] / "grades.csv")
    by_hand = table[table["status"] == "by hand"]
    assert set(by_hand["student"]) == {"alice", "bob", "eve"}
    assert by_hand["points"].isna().all() and (by_hand["max_points"] > 0).all()
    said = by_hand.set_index("student")["feedback"]
    assert said["alice"] == "not answered"  # the stub "YOUR ANSWER HERE" is no answer
    assert said["bob"].startswith("written answer, ") and said["bob"].endswith(" characters")
    earned = totals(table)  # autograded points per student and notebook
    bob = table[(table["student"] == "bob") & (table["status"] != "by hand")]
    assert earned.loc["bob", NAME] == bob["max_points"].sum() > 0
    assert earned.loc["alice", NAME] == 0 == earned.loc["carol", NAME]


def test_checks_are_restored_in_place_and_deleted_ones_inserted_where_they_were():
    bob = _bob()
    assert len(bob.cells) == len(SOURCE.cells) - 1
    restored = _restore_checks(SOURCE, bob)
    assert [c.source for c in restored.cells] == [c.source for c in SOURCE.cells]
    assert all(not c.get("outputs") for c in restored.cells if c.cell_type == "code")
    assert len(bob.cells) == len(SOURCE.cells) - 1  # the submission itself is untouched


def test_bad_layouts_are_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="submissions folder .* does not exist"):
        grade(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown profile 'laptop'"):
        grade(tmp_path, profile="laptop")
    (tmp_path / "notes.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no submission .* named like a source"):
        grade(tmp_path)
    nbformat.write(SOURCE, tmp_path / NAME)  # not inside a student's folder
    with pytest.raises(ValueError, match=r"not in a student's folder: expected .*<student>"):
        grade(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["assignments", "grade", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "submissions folder" in capsys.readouterr().err
