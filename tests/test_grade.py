"""Grading a class: ``vicreg-lab assignments grade`` on real notebooks, real child processes.

A small class of submissions of assignment 1 (the fastest notebook):

- alice hands in the student version untouched (every check fails);
- bob hands in the solutions, but replaced one locked check with ``pass`` and deleted
  another: the grader never runs check cells, so both are scored on his code;
- eve uses the biased variance: the variance check loses points with its hint (and the
  total, which uses her variance term); the other checks pass;
- carol's file is not a notebook: she scores 0 with the reason, the others are graded.

The attacks of students who try to cheat are in tests/test_grade_attacks.py.
"""

import copy

import nbformat
import pandas as pd
import pytest

from vicreg_lab.classroom.grade import (
    COLUMNS,
    SubmissionError,
    answer_cells,
    grade,
    gradebook,
    merge_hand_grades,
    totals,
)
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
    (out / "feedback" / "old").mkdir(parents=True)
    nbformat.write(SOURCE, out / "feedback" / "old" / NAME)  # as left by an earlier run
    status = main(["assignments", "grade", str(subs), "--out", str(out), "--profile", "ci"])
    return status, out


def test_the_command_writes_grades_a_gradebook_and_feedback_notebooks(graded):
    status, out = graded
    assert status == 0
    table = pd.read_csv(out / "grades.csv")
    assert list(table.columns) == COLUMNS
    assert sorted(table["student"].unique()) == ["alice", "bob", "carol", "eve"]  # no "grading"
    assert set(table["notebook"]) == {NAME}  # scratch.ipynb was not graded
    book = pd.read_csv(out / "gradebook.csv", index_col="student")
    assert list(book.index) == ["alice", "bob", "carol", "eve"]  # one row per student
    assert list(book.columns) == [NAME, "total", "max_points", "pending"]
    assert book.loc["bob", "total"] == book.loc["bob", NAME] == 12  # every autograded point
    assert (book["max_points"] == 14).all() and book.loc["bob", "pending"] == 1
    for student in ("alice", "bob", "eve"):
        handed = nbformat.read(out / "feedback" / student / NAME, as_version=4)
        notes = [c.source for c in handed.cells if c.metadata.get("vicreg_lab")]
        assert len(notes) == len(CHECKS)  # bob's deleted check: its feedback comes last
        assert all(note.startswith("**Grader: ") for note in notes)
        if student == "alice":  # a released notebook: the grader adds no hidden test
            assert "BEGIN HIDDEN TESTS" not in nbformat.writes(handed)
    assert not (out / "feedback" / "carol").exists()


def test_each_student_gets_what_their_code_deserves(graded):
    table = pd.read_csv(graded[1] / "grades.csv")
    code = table[table["status"] != "by hand"]
    points = code.pivot_table(index="student", columns="grade_id", values="points")[CHECKS]
    top = code.groupby("grade_id")["max_points"].first()[CHECKS]
    assert (points.loc["alice"] == 0).all()
    assert (points.loc["bob"] == top).all()  # his edits to check cells change nothing
    bob = code[code["student"] == "bob"].set_index("grade_id")["feedback"]
    assert "9/9 cases (3 hidden)" in bob["invariance-check"]  # from assignments/hidden_cases.py
    edited = bob.index[bob.str.contains("locked check cell was edited")]
    assert list(edited) == ["invariance-check"]  # reported, and ignored
    eve = code[code["student"] == "eve"].set_index("grade_id")
    # her loss uses her variance term, so the total is wrong too; the rest passes
    short = eve.index[eve["points"] < top[eve.index]]
    assert list(short) == ["variance-check", "total-check"]
    assert 0 < eve.loc["variance-check", "points"] < top["variance-check"]  # partial credit
    assert eve.loc["variance-check", "status"] == "partial"
    assert "biased variance" in eve.loc["variance-check", "feedback"]
    alice = code[code["student"] == "alice"]
    assert alice["feedback"].str.contains("Not implemented yet: `[a-z_]+` still raises").all()
    assert (alice["status"] == "failed").all()
    assert not code["feedback"][code["student"] != "bob"].str.contains("was edited").any()


def test_a_broken_file_scores_zero_with_the_reason(graded):
    table = pd.read_csv(graded[1] / "grades.csv")
    carol = table[table["student"] == "carol"]
    assert (carol["status"] == "error").all() and (carol["points"] == 0).all()
    assert carol["feedback"].str.contains("could not be graded: NotJSONError").all()
    assert len(carol) == len(table[table["student"] == "bob"])  # every grade cell listed


def test_written_answers_are_left_for_the_instructor_and_merged(graded, tmp_path):
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
    sheet = pd.read_csv(graded[1] / "by_hand.csv")  # what the instructor fills in
    assert list(sheet.columns) == COLUMNS[:3] + ["max_points", "points", "rubric", "answer"]
    bob_row = sheet[sheet["student"] == "bob"].iloc[0]
    assert bob_row["rubric"].startswith("1 pt: Division by D") and "chatter" in bob_row["answer"]
    assert sheet["points"].isna().all()
    sheet.loc[sheet["student"] == "bob", "points"] = 1.5
    hand = tmp_path / "hand.csv"
    sheet.to_csv(hand, index=False)
    merged = merge_hand_grades(table, hand)  # rows left empty (alice, eve) are skipped
    assert gradebook(merged).loc["bob", "total"] == 13.5
    assert gradebook(merged).loc["bob", "pending"] == 0
    hand.write_text(f"student,notebook,grade_id,points\nbob,{NAME},written-cov-scale,9\n")
    with pytest.raises(ValueError, match="outside"):
        merge_hand_grades(table, hand)
    hand.write_text(f"student,notebook,grade_id,points\nbob,{NAME},variance-check,1\n")
    with pytest.raises(ValueError, match="no written answer"):
        merge_hand_grades(table, hand)


def test_duplicate_or_missing_answer_cells_are_refused_with_the_reason():
    nb = copy.deepcopy(SOURCE)
    nb.cells.append(copy.deepcopy(_cell(nb, "invariance-check")))
    with pytest.raises(SubmissionError, match="'invariance-check' is on 2 cells"):
        answer_cells(SOURCE, nb)
    nb = copy.deepcopy(SOURCE)
    nb.cells.remove(_cell(nb, "variance-solution"))
    with pytest.raises(SubmissionError, match="'variance-solution' is missing"):
        answer_cells(SOURCE, nb)
    cells = answer_cells(SOURCE, _bob())
    assert [g for g, _ in cells][:2] == ["invariance-solution", "variance-solution"]


def test_every_written_answer_has_a_rubric_worth_its_points():
    from vicreg_lab.classroom.grade import load_rubrics

    rubrics = load_rubrics(default_source())
    for path in sorted(default_source().glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            flags = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and flags.get("grade"):
                items = rubrics[flags["grade_id"]]
                assert sum(item["points"] for item in items) == flags["points"], path.name


def test_hidden_cases_live_in_the_instructors_source_not_in_the_package(tmp_path):
    from vicreg_lab.classroom import check_invariance, hidden_cases
    from vicreg_lab.classroom.release import release

    assert len(hidden_cases("invariance-check")) == 3  # this checkout's assignments/
    release(default_source(), tmp_path / "student")
    assert not list((tmp_path / "student").glob("*.py"))  # release hands out notebooks only
    with pytest.raises(FileNotFoundError, match="instructor's source"):
        hidden_cases("invariance-check", source=tmp_path / "student")

    def invariance_term(z1, z2):
        return ((z1 - z2) ** 2).mean()

    assert check_invariance(invariance_term, hidden=True).passed


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


def test_assignment_3_is_graded_by_the_experiment_over_three_seeds(tmp_path):
    # the child only returns the design (a dict); the grader runs the experiment itself
    name = "03_augmentations_age_not_site.ipynb"
    source = nbformat.read(default_source() / name, as_version=4)
    photo = release_notebook(source, name)
    _cell(photo, "augmentations-solution").source = (
        "def my_augmentations():\n    return dict(NATURAL_IMAGE_RECIPE)\n"
        "NATURAL_IMAGE_RECIPE = {'crop_scale': (0.4, 1.0), 'flip_prob': 0.5, "
        "'p_intensity': 0.0, 'p_blur': 0.0, 'p_noise': 0.0}\n"
    )
    for student, nb in [("solver", source), ("photographer", photo)]:
        (tmp_path / student).mkdir()
        nbformat.write(nb, tmp_path / student / name)
    table = grade(tmp_path, profile="ci").set_index(["student", "grade_id"])
    solver, photographer = (
        table.loc[(s, "augmentations-check")] for s in ("solver", "photographer")
    )
    assert solver["points"] == solver["max_points"] == 4
    assert [line[:5] for line in solver["feedback"].splitlines()[1:]] == ["run 1", "run 2", "run 3"]
    # age kept at every seed (half the credit), the scanner kept too (none of the other half)
    assert photographer["points"] == 2 and photographer["status"] == "partial"
