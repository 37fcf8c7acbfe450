"""Grade a folder of submitted assignments: student code in a contained child, checks here.

For every submission ``SUBMISSIONS/<student>/.../<notebook>.ipynb`` whose file name is
one of the source notebooks:

1. the answer cells are found by the ``grade_id`` of the source's solution cells; a
   ``grade_id`` that appears twice in the submission (a copied or forged cell) or an
   answer cell that is missing refuses the notebook, with the reason, before anything
   runs. Nothing else of the submission is used: its check cells, imports and any cell
   a student added are never run;
2. the answer cells run in a child process (:mod:`~vicreg_lab.classroom.sandbox`): a
   private temporary folder, a scrubbed environment, memory, CPU and wall-clock
   limits, no ``vicreg_lab`` import (the library's answers are out of reach), no file
   outside its folder, no process or signal; the whole process group is killed at the
   end. The child calls the student's functions on the check's cases (visible and
   hidden) and sends back plain data;
3. the checks run here, in the grading process, on that data: a function scores the
   share of its cases it gets right (partial credit); a value (``collapsing_weights``,
   the dict ``my_augmentations()`` returns) is judged by running the experiment here.
   Hidden cases are named with their hint, never with their input or expected value.
   Markdown grade cells (written answers) are listed ``status="by hand"``; marks an
   instructor gives them are merged from a CSV (:func:`merge_hand_grades`).

Only after every child is gone are the results written, each file atomically:
``grades.csv`` (one row per student, notebook and grade cell), ``gradebook.csv`` (one
row per student: ID, points per notebook, total; what an LMS imports), ``by_hand.csv``
(each written answer beside its rubric from ``assignments/rubrics.json``, a ``points``
column to fill and merge) and
``feedback/<student>/<notebook>.ipynb`` (the student's own notebook with the grader's
feedback after each grade cell, to hand back).

Examples
--------
>>> from vicreg_lab.classroom.grade import grade                     # doctest: +SKIP
>>> table = grade("submissions", out_dir="grading", profile="cpu")   # doctest: +SKIP
>>> gradebook(table)                                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd

from ._core import CheckResult, judge_case
from .sandbox import Limits, run_answers

__all__ = [
    "COLUMNS",
    "GRADED",
    "SubmissionError",
    "grade",
    "grade_notebook",
    "gradebook",
    "hand_sheet",
    "load_hidden",
    "load_rubrics",
    "merge_hand_grades",
    "totals",
]

COLUMNS = ["student", "notebook", "grade_id", "status", "points", "max_points", "feedback"]
_SKIP_PARTS = {".ipynb_checkpoints"}


def _registry() -> dict:
    from . import augmentations, loss_terms, loss_weights, rankme

    graded = {}
    for module in (loss_terms, rankme, augmentations, loss_weights):
        graded |= module.GRADED
    return graded


#: grade_id -> :class:`~vicreg_lab.classroom.Task`: how each code grade cell is scored.
GRADED = _registry()


class SubmissionError(ValueError):
    """A submission the grader refuses to run (duplicate or missing answer cells)."""


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _flags(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def answer_cells(source, nb) -> list[tuple[str, str]]:
    """(grade_id, source) of the submission's answer cells, in the source's order.

    Raises
    ------
    SubmissionError
        A ``grade_id`` on several cells of the submission, or a code answer cell of
        the source missing from it.
    """
    seen: dict[str, list[int]] = {}
    for index, cell in enumerate(nb.cells):
        grade_id = _grade_id(cell)
        if grade_id:
            seen.setdefault(str(grade_id), []).append(index)
    doubled = {g: at for g, at in seen.items() if len(at) > 1}
    if doubled:
        g, at = sorted(doubled.items())[0]
        raise SubmissionError(
            f"grade_id {g!r} is on {len(at)} cells ({', '.join(map(str, at))}): a copied or "
            "forged cell; keep one (the instructor can fix the file and grade it again)"
        )
    cells = []
    for cell in source.cells:
        flags = _flags(cell)
        if cell.cell_type != "code" or not flags.get("solution"):
            continue
        grade_id = flags["grade_id"]
        if grade_id not in seen:
            raise SubmissionError(f"the answer cell {grade_id!r} is missing")
        answer = nb.cells[seen[grade_id][0]]
        if answer.get("cell_type") != "code" or not isinstance(answer.get("source"), str):
            raise SubmissionError(f"the answer cell {grade_id!r} is not a code cell")
        cells.append((grade_id, answer.source))
    return cells


def load_hidden(folder) -> dict:
    """grade_id -> hidden cases, from ``hidden_cases.py`` in ``folder`` ({} when absent)."""
    from ._core import HIDDEN_FILE, hidden_cases

    if not (Path(folder) / HIDDEN_FILE).is_file():
        return {}
    return {grade_id: hidden_cases(grade_id, folder) for grade_id in GRADED}


def _tasks(source, name: str, hidden: dict | None = None) -> list[dict]:
    """The child's calls for every code grade cell of ``source`` (instructor errors raise).

    Without ``hidden``: every grade cell with its visible cases. With it: the function
    grade cells that have hidden cases, with those only (they run in a child of their
    own, which sees no visible case and whose messages never reach the feedback).
    """
    tasks = []
    for cell in source.cells:
        flags = _flags(cell)
        if cell.cell_type != "code" or not flags.get("grade"):
            continue
        task = GRADED.get(flags["grade_id"])
        if task is None:
            raise ValueError(f"{name}: no grader knows the grade cell {flags['grade_id']!r}")
        if hidden is None:
            cases = task.cases() if task.kind == "function" else []
        elif task.kind == "function" and hidden.get(flags["grade_id"]):
            cases = hidden[flags["grade_id"]]
        else:
            continue
        calls = [{"args": c.args, "kwargs": c.kwargs, "grad": c.grad} for c in cases]
        tasks.append({"grade_id": flags["grade_id"], "answer": task.answer, "kind": task.kind})
        tasks[-1]["cases"] = calls
    return tasks


def grade_notebook(
    source, nb, profile: str = "ci", limits: Limits | None = None, forbidden=(), hidden=None
):
    """Grade one submission; return one row per grade cell of the source.

    Parameters
    ----------
    source : nbformat.NotebookNode
        The source (instructor) notebook.
    nb : nbformat.NotebookNode
        The student's notebook (never run: only its answer cells are).
    profile : str, default="ci"
        The profile the experiments of value answers run in (assignment 3).
    limits : Limits, optional
        Resources of the child.
    forbidden : sequence of path
        Folders the child may not read (the sources, the submissions, the output).
    hidden : dict, optional
        grade_id -> hidden cases (:func:`load_hidden`); none by default.

    Returns
    -------
    list of dict
        ``grade_id``, ``status`` ("passed", "partial", "failed", "by hand"), ``points``,
        ``max_points``, ``feedback``.

    Raises
    ------
    SubmissionError
        See :func:`answer_cells`.
    """

    cells = answer_cells(source, nb)
    hidden = hidden or {}
    run = run_answers(cells, _tasks(source, "source"), forbidden=forbidden, limits=limits)
    hidden_tasks = _tasks(source, "source", hidden)
    secret = run_answers(cells, hidden_tasks, forbidden, limits) if hidden_tasks else None
    written = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
    edited = edited_locked_cells(source, written)
    rows = []
    for cell in source.cells:
        if _flags(cell).get("grade"):
            rows.append(_row(cell, written, run, secret, hidden, profile))
            if rows[-1]["grade_id"] in edited:
                rows[-1]["feedback"] += (
                    " [this locked check cell was edited: the edit is ignored, the grader "
                    "runs its own checks]"
                )
    return rows


def edited_locked_cells(source, written: dict) -> set[str]:
    """grade_ids of the locked cells (checks) whose text a submission changed.

    ``written`` maps grade_id -> the submission's cell. The texts accepted are the
    released one (hidden tests removed) and the source's, so an untouched notebook has
    none. Edits change no score (check cells never run); they are reported to the student.
    """
    from .release import is_locked, release_notebook

    edited = set()
    for cell, original in zip(release_notebook(source).cells, source.cells, strict=True):
        flags = _flags(cell)
        if not is_locked(flags) or flags.get("grade_id") not in written:
            continue
        if written[flags["grade_id"]].get("source") not in (cell.source, original.source):
            edited.add(flags["grade_id"])
    return edited


def _row(cell, written: dict, run, secret, hidden: dict, profile: str) -> dict:
    """The grade of one grade cell of the source."""
    from .release import TEXT_STUB

    flags = _flags(cell)
    grade_id, points = flags["grade_id"], float(flags.get("points", 0))
    row = {"grade_id": grade_id, "max_points": points}
    if cell.cell_type != "code":
        text = str(written.get(grade_id, {}).get("source", "")).strip()
        said = f"written answer, {len(text)} characters"
        said = "not answered" if text in ("", TEXT_STUB) else said
        return row | {"status": "by hand", "points": None, "feedback": said}
    if run.problem is not None:
        return row | {"status": "failed", "points": 0.0, "feedback": f"not graded: {run.problem}"}
    task = GRADED[grade_id]
    answer = run.answers.get(grade_id, {"status": "missing"})
    error = _cell_error(run.cells, answer, task.answer)
    cases = None
    if task.kind == "function":
        cases = (task.cases(), hidden.get(grade_id, []), _hidden_outcomes(secret, grade_id))
    return row | _score(task, answer, points, profile, error, cases)


def _hidden_outcomes(secret, grade_id: str) -> list | None:
    """The hidden run's outcomes for one grade cell; None when that run gave none."""
    if secret is None or secret.problem is not None:
        return None
    answer = secret.answers.get(grade_id, {})
    return answer.get("outcomes") if answer.get("status") == "called" else None


def _cell_error(cells: dict, answer: dict, name: str) -> str:
    if answer.get("status") != "missing":
        return ""
    errors = [f"{g}: {e}" for g, e in cells.items() if e and e != "not implemented"]
    said = f" (an answer cell failed: {errors[0]})" if errors else ""
    return f"`{name}` is not defined by the answer cells{said}"


def _score(task, answer: dict, points: float, profile: str, error: str, cases) -> dict:
    status = answer.get("status")
    if error:
        return {"status": "failed", "points": 0.0, "feedback": error}
    if status == "not implemented":
        text = f"Not implemented yet: `{task.answer}` still raises NotImplementedError."
        return {"status": "failed", "points": 0.0, "feedback": text}
    if status in ("timeout", "raised", "not callable"):
        why = {"timeout": "ran out of time", "not callable": f"is a {answer.get('type')}"}
        said = why.get(status) or f"raised {str(answer.get('error', ''))[:200]}"
        return {"status": "failed", "points": 0.0, "feedback": f"`{task.answer}` {said}"}
    if task.kind == "function":
        return _score_cases(task, answer["outcomes"], points, *cases)
    return _score_value(task, answer, points, profile, status)


def _expects_error(case) -> bool:
    return isinstance(case.expected, type) and issubclass(case.expected, BaseException)


def _score_value(task, answer: dict, points: float, profile: str, status: str) -> dict:
    if task.judge is None or status != "returned":
        return {"status": "failed", "points": 0.0, "feedback": f"no answer ({status})"}
    result: CheckResult = task.judge(answer["value"], points, profile)
    earned = float(result.points)
    status = "passed" if earned >= points else ("partial" if earned > 0 else "failed")
    said = result.report() if result.earned is None else f"{earned:g}/{points:g} points"
    if result.earned is not None and result.details:
        said += "\n" + result.details
    if result.earned is not None and not result.details:
        said += "\n" + "\n".join(result.failures)
    return {"status": status, "points": earned, "feedback": said}


_NO_ANSWER = {"status": "raised", "error": {"names": ["Error"], "message": "", "where": ""}}


def _score_cases(task, outcomes: list, points: float, visible, hidden, secret) -> dict:
    """Points for the share of cases right; error cases count only beside a right value."""
    cases = [(c, False) for c in visible] + [(c, True) for c in hidden]
    if len(outcomes) != len(visible) or (secret is not None and len(secret) != len(hidden)):
        return {"status": "failed", "points": 0.0, "feedback": "the run's answers are incomplete"}
    outcomes = list(outcomes) + (list(secret) if secret is not None else [_NO_ANSWER] * len(hidden))
    failures, values_right, errors_right = [], 0, 0
    for (case, redact), outcome in zip(cases, outcomes, strict=True):
        feedback = judge_case(outcome, case, task.answer, redact=redact)
        if feedback == "not implemented":
            text = f"Not implemented yet: `{task.answer}` still raises NotImplementedError."
            return {"status": "failed", "points": 0.0, "feedback": text}
        if feedback:
            failures.append(feedback)
        elif _expects_error(case):
            errors_right += 1
        else:
            values_right += 1
    passed = values_right + errors_right if values_right else 0
    earned = round(points * passed / len(cases), 2) if cases else points
    status = "passed" if not failures else ("partial" if passed else "failed")
    said = f"{passed}/{len(cases)} cases ({len(hidden)} hidden)"
    lines = [f"{task.answer}: {said}, {earned:g}/{points:g} points"]
    if failures:
        lines += ["", failures[0]]
        lines += [f"  - {f.splitlines()[0]}" for f in failures[1:]]
    return {"status": status, "points": earned, "feedback": "\n".join(lines)}


def _submissions(root: Path, names: set[str], exclude=None) -> list[tuple[str, Path]]:
    """(student, path) of every submitted notebook named like a source, sorted."""
    exclude = Path(exclude).resolve() if exclude is not None else None
    found = []
    for path in sorted(root.rglob("*.ipynb")):
        relative = path.relative_to(root)
        if _SKIP_PARTS & set(relative.parts) or path.name not in names:
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if len(relative.parts) < 2:
            raise ValueError(
                f"submission {path} is not in a student's folder: expected "
                f"{root}/<student>/{path.name}"
            )
        found.append((relative.parts[0], path))
    return found


def grade(
    submissions,
    source=None,
    out_dir=None,
    profile: str | None = None,
    limits: Limits | None = None,
    progress=None,
) -> pd.DataFrame:
    """Grade every submission under ``submissions``; write the results if ``out_dir``.

    Parameters
    ----------
    submissions : str or Path
        ``<student>/<notebook>.ipynb`` (deeper folders are fine, e.g. nbgrader's
        ``<student>/<assignment>/<notebook>.ipynb``); the first folder names the student.
    source : str or Path, optional
        The source notebooks (a folder or one notebook); default: ``assignments/``.
    out_dir : str or Path, optional
        Where to write ``grades.csv``, ``gradebook.csv`` and ``feedback/``.
    profile : str, optional
        The profile the students worked in (sizes of assignment 3's experiment).
    limits : Limits, optional
        Resources of each child (wall-clock per notebook and per cell, memory, CPU).
    progress : callable, optional
        Called with a line of text before each submission runs.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``points`` is empty (NaN) for answers graded by hand.
    """

    from vicreg_lab.profiles import get_profile

    from .release import default_source

    submissions = Path(submissions)
    source = Path(source) if source is not None else default_source()
    profile = get_profile(profile).name
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder {submissions} does not exist")
    sources, hidden = _load_sources(source)
    found = _submissions(submissions, set(sources), exclude=out_dir)
    if not found:
        raise FileNotFoundError(
            f"no submission under {submissions} is named like a source notebook "
            f"({', '.join(sorted(sources))}); expected {submissions}/<student>/<notebook>"
        )
    forbidden = [submissions, source if source.is_dir() else source.parent]
    forbidden += [out_dir] if out_dir is not None else []
    rows, handed = _grade_all(found, sources, hidden, (profile, limits, forbidden), progress)
    table = _clean(pd.DataFrame(rows, columns=COLUMNS))
    if out_dir is not None:
        rubrics = load_rubrics(source if source.is_dir() else source.parent)
        _write(Path(out_dir), table, handed, hand_sheet(handed, sources, rubrics))
    return table


def _clean_text(value):
    """A str that UTF-8 can encode (a lone surrogate from a student becomes ``\\udcff``)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _clean(table: pd.DataFrame) -> pd.DataFrame:
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].map(_clean_text)
    return table


def _grade_all(found, sources: dict, hidden: dict, settings, progress) -> tuple[list, list]:
    """Rows of every submission, and what each hands back (a broken one scores 0)."""
    import nbformat

    profile, limits, forbidden = settings
    rows, handed = [], []
    for student, path in found:
        if progress is not None:
            progress(f"grading {student}/{path.name}")
        base = {"student": student, "notebook": path.name}
        try:
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
            graded = grade_notebook(sources[path.name], nb, profile, limits, forbidden, hidden)
        except Exception as err:  # noqa: BLE001 - one broken submission must not stop the class
            reason = f"could not be graded: {type(err).__name__}: {err}".splitlines()[0]
            graded = _refused(sources[path.name], reason)
            nb = None
        rows += [{**base, **row} for row in graded]
        handed.append((student, path.name, nb, graded))
    return rows, handed


def _load_sources(source: Path) -> tuple[dict, dict]:
    """The source notebooks (by file name) and their hidden cases, checked before grading."""
    from .release import read_source

    if not source.exists():
        raise FileNotFoundError(f"assignment source {source} does not exist")
    paths = [source] if source.is_file() else sorted(source.glob("*.ipynb"))
    sources = {path.name: read_source(path) for path in paths}
    hidden = load_hidden(source if source.is_dir() else source.parent)
    for name, nb in sources.items():
        _tasks(nb, name, hidden)  # an unknown grade cell stops everything before a child runs
    return sources, hidden


def _refused(source, reason: str) -> list[dict]:
    rows = []
    for cell in source.cells:
        flags = _flags(cell)
        if flags.get("grade"):
            points = float(flags.get("points", 0))
            rows.append(
                {"grade_id": flags["grade_id"], "status": "error", "points": 0.0}
                | {"max_points": points, "feedback": reason}
            )
    return rows


def load_rubrics(folder) -> dict:
    """grade_id -> rubric (a list of ``{"points", "criterion"}``) from ``rubrics.json``.

    The rubrics belong to the instructor's source, like the hidden cases; {} when absent.
    """
    import json

    path = Path(folder) / "rubrics.json"
    if not path.is_file():
        return {}
    rubrics = json.loads(path.read_text(encoding="utf-8"))
    for grade_id, items in rubrics.items():
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and {"points", "criterion"} <= set(i) for i in items
        ):
            raise ValueError(
                f"{path}: the rubric of {grade_id!r} must be a list of points/criterion"
            )
    return rubrics


def hand_sheet(handed, sources: dict, rubrics: dict) -> pd.DataFrame:
    """One row per student and written answer: the answer, its rubric, ``points`` to fill."""
    rows = []
    for student, name, nb, _ in handed:
        written = {_grade_id(c): c for c in nb.cells if _grade_id(c)} if nb is not None else {}
        for cell in sources[name].cells:
            flags = _flags(cell)
            if cell.cell_type == "code" or not flags.get("grade"):
                continue
            grade_id = flags["grade_id"]
            rubric = " | ".join(
                f"{item['points']:g} pt: {item['criterion']}" for item in rubrics.get(grade_id, [])
            )
            answer = str(written.get(grade_id, {}).get("source", "")).strip()
            rows.append(
                {"student": student, "notebook": name, "grade_id": grade_id}
                | {"max_points": float(flags.get("points", 0)), "points": None}
                | {"rubric": rubric, "answer": answer}
            )
    return pd.DataFrame(rows)


def _write(out: Path, table: pd.DataFrame, handed, sheet: pd.DataFrame) -> None:
    """Every child is gone: write the results, each file atomically."""
    from vicreg_lab._io import write_text

    out.mkdir(parents=True, exist_ok=True)
    for student, name, nb, graded in handed:
        if nb is None:
            continue
        target = out / "feedback" / student / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(feedback_notebook(nb, graded), indent=1, ensure_ascii=True)
        write_text(target, text + "\n")  # ASCII JSON: whatever the student's cells hold
    write_text(out / "grades.csv", table.to_csv(index=False))
    write_text(out / "gradebook.csv", gradebook(table).to_csv())
    write_text(out / "by_hand.csv", _clean(sheet).to_csv(index=False))


def feedback_notebook(nb, rows: list[dict]):
    """The student's notebook with the grader's feedback after each grade cell."""
    import nbformat

    nb = copy.deepcopy(nb)
    by_id = {row["grade_id"]: row for row in rows}
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        row = by_id.pop(_grade_id(cell), None) if _grade_id(cell) else None
        if row is not None and cell.cell_type == "code":
            cells.append(_feedback_cell(nbformat, row))
    cells += [_feedback_cell(nbformat, row) for row in by_id.values() if row["points"] is not None]
    nb.cells = cells
    return nb


def _feedback_cell(nbformat, row: dict):
    points = "by hand" if row["points"] is None else f"{row['points']:g}/{row['max_points']:g}"
    head = f"**Grader: {row['grade_id']}: {row['status']}, {points}**"
    text = f"{head}\n\n```\n{row['feedback']}\n```"
    return nbformat.v4.new_markdown_cell(text, metadata={"vicreg_lab": {"feedback": True}})


def merge_hand_grades(table: pd.DataFrame, hand) -> pd.DataFrame:
    """``table`` with the points an instructor gave the written answers.

    ``hand`` is a CSV (or DataFrame) with columns ``student``, ``notebook``, ``grade_id``,
    ``points`` (a filled copy of ``by_hand.csv``; rows left empty are skipped); each row
    must name a written answer of the table and stay within its maximum.
    """
    hand = pd.read_csv(hand) if not isinstance(hand, pd.DataFrame) else hand
    missing = {"student", "notebook", "grade_id", "points"} - set(hand.columns)
    if missing:
        raise ValueError(f"hand grades need the columns {sorted(missing)}")
    table = table.copy()
    hand = hand[hand["points"].notna()]  # rows of by_hand.csv not graded yet
    for row in hand.itertuples(index=False):
        where = (
            (table["student"] == str(row.student))
            & (table["notebook"] == row.notebook)
            & (table["grade_id"] == row.grade_id)
            & (table["status"] == "by hand")
        )
        if where.sum() != 1:
            raise ValueError(
                f"hand grade {row.student}/{row.notebook}/{row.grade_id}: no written answer "
                "of that student has this grade_id"
            )
        points, top = float(row.points), float(table.loc[where, "max_points"].iloc[0])
        if not 0 <= points <= top:
            raise ValueError(
                f"hand grade {row.student}/{row.notebook}/{row.grade_id}: {points:g} is "
                f"outside 0-{top:g}"
            )
        table.loc[where, ["points", "status"]] = [points, "graded by hand"]
    return table


def gradebook(table: pd.DataFrame) -> pd.DataFrame:
    """One row per student: points per notebook, total and maximum (what an LMS imports).

    Every student's maximum counts every notebook of the table, submitted or not (a
    notebook a student did not hand in scores 0). Written answers not yet graded by hand
    count 0 and are counted in ``pending``.
    """
    points = table.pivot_table(
        index="student", columns="notebook", values="points", aggfunc="sum", fill_value=0
    )
    book = points.reindex(sorted(table["student"].unique()), fill_value=0)
    book["total"] = book.sum(axis=1)
    per_notebook = table.groupby(["notebook", "student"])["max_points"].sum()
    book["max_points"] = float(per_notebook.groupby("notebook").max().sum())
    pending = table[table["status"] == "by hand"].groupby("student").size()
    book["pending"] = pending.reindex(book.index, fill_value=0).astype(int)
    book.index.name = "student"
    book.columns.name = None
    return book


def totals(table: pd.DataFrame) -> pd.DataFrame:
    """Autograded points per student and notebook (answers graded by hand left out)."""
    auto = table[table["status"] != "by hand"]
    return auto.pivot_table(
        index="student", columns="notebook", values="points", aggfunc="sum", fill_value=0
    )
