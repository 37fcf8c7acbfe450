"""Grade a folder of submitted assignments without nbgrader.

For every submission ``SUBMISSIONS/<student>/.../<notebook>.ipynb`` whose file name is
one of the source notebooks:

1. the instructor's grade cells are put back (matched by ``grade_id``): this restores
   the hidden tests and undoes any edit a student made to a locked check; a grade cell
   the student deleted is inserted again at its place in the source;
2. the notebook runs top to bottom in a real kernel (``python3``), errors allowed, in
   the submission's folder, with ``VICREG_LAB_PROFILE`` set to the profile asked for;
3. each code grade cell scores its points when it ran without an error, 0 otherwise;
   the first line of the error is kept as the feedback. Markdown grade cells (written
   answers) are listed with ``status="by hand"``: an instructor reads them.

One submission that cannot be read or run scores 0 with the reason, and the other
submissions are still graded. The result is a tidy table (one row per student,
notebook and grade cell), written as ``grades.csv``; the executed notebooks are kept
beside it (``graded/<student>/<notebook>.ipynb``), so that students can read the
feedback of every check.

Examples
--------
>>> from vicreg_lab.classroom.grade import grade                     # doctest: +SKIP
>>> table = grade("submissions", out_dir="grading", profile="cpu")   # doctest: +SKIP
>>> table.groupby("student")["points"].sum()                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd

__all__ = ["COLUMNS", "grade", "grade_notebook", "totals"]

COLUMNS = ["student", "notebook", "grade_id", "status", "points", "max_points", "feedback"]
_SKIP_PARTS = {".ipynb_checkpoints"}


def _grade_cells(nb) -> dict:
    """``grade_id`` -> cell for every grade cell (code or markdown) of a notebook."""
    return {
        _grade_id(cell): cell
        for cell in nb.cells
        if _grade_id(cell) and cell.metadata["nbgrader"].get("grade")
    }


def _restore_checks(source, nb):
    """A copy of ``nb`` whose code grade cells are the source's (missing ones inserted).

    A grade cell the student deleted goes back right after the nearest cell before it in
    the source that the submission still has (matched by nbgrader ``grade_id``).
    """
    nb = copy.deepcopy(nb)

    def position(grade_id):
        return next((i for i, c in enumerate(nb.cells) if _grade_id(c) == grade_id), None)

    anchor = -1  # index in nb of the last source cell with a grade_id found so far
    for cell in source.cells:
        grade_id = _grade_id(cell)
        if grade_id is None:
            continue
        at = position(grade_id)
        meta = cell.metadata["nbgrader"]
        if meta.get("grade") and cell.cell_type == "code":
            fresh = copy.deepcopy(cell)
            fresh.outputs, fresh.execution_count = [], None
            if at is None:
                at = anchor + 1
                nb.cells.insert(at, fresh)
            else:
                nb.cells[at] = fresh
        if at is not None:
            anchor = at
    return nb


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _error_line(cell, max_chars: int = 1000) -> str | None:
    """The error a cell raised, on one line (`` | `` between its lines), or None."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            lines = [line.strip() for line in (output.get("evalue") or "").splitlines()]
            message = " | ".join(line for line in lines if line)
            text = f"{output.get('ename', 'Error')}: {message}" if message else output.get("ename")
            return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
    return None


def grade_notebook(source, nb, profile: str = "ci", timeout: int = 900, cwd=None):
    """Run one submission with the instructor's checks; return (rows, executed notebook).

    Parameters
    ----------
    source : nbformat.NotebookNode
        The source (instructor) notebook: its grade cells are the checks.
    nb : nbformat.NotebookNode
        The student's notebook.
    profile : str, default="ci"
        ``VICREG_LAB_PROFILE`` of the kernel: grade in the profile the students used.
    timeout : int, default=900
        Seconds a cell may run.
    cwd : str or Path, optional
        Folder the kernel runs in (default: the current one).

    Returns
    -------
    rows : list of dict
        One per grade cell of the source: ``grade_id``, ``status`` ("passed", "failed"
        or "by hand"), ``points``, ``max_points``, ``feedback``.
    executed : nbformat.NotebookNode
    """
    from nbclient import NotebookClient

    from .release import TEXT_STUB

    nb = _restore_checks(source, nb)
    env = {**os.environ, "VICREG_LAB_PROFILE": profile, "MPLBACKEND": "Agg"}
    resources = {"metadata": {"path": str(cwd or Path.cwd())}}
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=True, resources=resources
    )
    client.execute(env=env)
    ran = _grade_cells(nb)
    rows = []
    for grade_id, cell in _grade_cells(source).items():
        points = float(cell.metadata["nbgrader"].get("points", 0))
        row = {"grade_id": grade_id, "max_points": points}
        if cell.cell_type != "code":
            answer = ran.get(grade_id)
            text = answer.source.strip() if answer is not None else ""
            said = f"written answer, {len(text)} characters"
            if text in ("", TEXT_STUB):
                said = "not answered"
            row.update(status="by hand", points=None, feedback=said)
        else:
            error = _error_line(ran[grade_id])
            passed = error is None
            row.update(
                status="passed" if passed else "failed",
                points=points if passed else 0.0,
                feedback="" if passed else error,
            )
        rows.append(row)
    return rows, nb


def _submissions(root: Path, names: set[str], exclude=None) -> list[tuple[str, Path]]:
    """(student, path) of every submitted notebook named like a source, sorted.

    Notebooks under ``exclude`` (the output folder, should it sit inside ``root``) and
    in Jupyter's checkpoint folders are skipped.
    """
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
    timeout: int = 900,
    progress=None,
) -> pd.DataFrame:
    """Grade every submission under ``submissions``; write ``grades.csv`` if ``out_dir``.

    Parameters
    ----------
    submissions : str or Path
        ``<student>/<notebook>.ipynb`` (deeper folders are fine, e.g. nbgrader's
        ``<student>/<assignment>/<notebook>.ipynb``); the first folder names the student.
        Notebooks whose name is not a source notebook are ignored.
    source : str or Path, optional
        The source notebooks (a folder or one notebook); default: ``assignments/``.
    out_dir : str or Path, optional
        Where to write ``grades.csv`` and ``graded/<student>/<notebook>.ipynb``.
    profile : str, optional
        ``VICREG_LAB_PROFILE`` for the kernels: grade in the profile the students worked
        in. Default: as :func:`vicreg_lab.get_profile` chooses it here (the environment
        variable, else "gpu" with CUDA and "cpu" without), as a student's kernel would.
    timeout : int, default=900
        Seconds a cell may run.
    progress : callable, optional
        Called with a line of text before each submission runs.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``points`` is empty (NaN) for answers graded by hand.

    Raises
    ------
    FileNotFoundError
        ``submissions`` or ``source`` missing, or no submitted notebook matches a source.
    ValueError
        A submitted notebook that is not in a student's folder (nothing is run then).
    """
    import nbformat

    from vicreg_lab._io import atomic_path, write_text
    from vicreg_lab.profiles import get_profile

    from .release import default_source

    submissions = Path(submissions)
    source = Path(source) if source is not None else default_source()
    profile = get_profile(profile).name  # checks the name; None: as the students' default
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder {submissions} does not exist")
    if not source.exists():
        raise FileNotFoundError(f"assignment source {source} does not exist")
    sources = [source] if source.is_file() else sorted(source.glob("*.ipynb"))
    sources = {path.name: nbformat.read(path, as_version=4) for path in sources}
    found = _submissions(submissions, set(sources), exclude=out_dir)
    if not found:
        raise FileNotFoundError(
            f"no submission under {submissions} is named like a source notebook "
            f"({', '.join(sorted(sources))}); expected {submissions}/<student>/<notebook>"
        )
    rows = []
    for student, path in found:
        if progress is not None:
            progress(f"grading {student}/{path.name}")
        base = {"student": student, "notebook": path.name}
        try:
            nb = nbformat.read(path, as_version=4)
            graded, executed = grade_notebook(
                sources[path.name], nb, profile=profile, timeout=timeout, cwd=path.parent
            )
        except Exception as err:  # one broken submission must not stop the class
            reason = f"could not be graded: {type(err).__name__}: {err}".splitlines()[0]
            for grade_id, cell in _grade_cells(sources[path.name]).items():
                points = float(cell.metadata["nbgrader"].get("points", 0))
                rows.append(
                    {**base, "grade_id": grade_id, "status": "error", "points": 0.0}
                    | {"max_points": points, "feedback": reason}
                )
            continue
        rows += [{**base, **row} for row in graded]
        if out_dir is not None:
            target = Path(out_dir) / "graded" / student / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                nbformat.write(executed, tmp)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if out_dir is not None:
        write_text(Path(out_dir) / "grades.csv", table.to_csv(index=False))
    return table


def totals(table: pd.DataFrame) -> pd.DataFrame:
    """Autograded points per student and notebook (answers graded by hand left out)."""
    auto = table[table["status"] != "by hand"]
    return auto.pivot_table(
        index="student", columns="notebook", values="points", aggfunc="sum", fill_value=0
    )
