"""Build the student version of an assignment from its source (solution) notebook.

This does what ``nbgrader generate_assignment`` does to a notebook, without nbgrader
(and without its database):

1. check the nbgrader cell metadata (schema version 3: ``grade``, ``solution``,
   ``locked``, unique ``grade_id``, ``points`` on grade cells, markdown grade cells
   are also solution cells) and the ``### BEGIN/END`` markers;
2. lock cells: solution cells cannot be deleted; grade and read-only cells can be
   neither deleted nor edited (``metadata.deletable`` / ``metadata.editable``);
3. replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with
   ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (code, indented like the
   marker) or ``YOUR ANSWER HERE`` (markdown); a solution cell without markers is
   replaced whole;
4. clear outputs and execution counts;
5. remove every ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` region;
6. store nbgrader's checksum and cell type in the metadata of grade, solution and
   locked cells, so that nbgrader can tell an untouched answer from a new one.

The result is a valid nbgrader student notebook. With nbgrader, instructors can run
``nbgrader generate_assignment`` on the same sources instead (it also records the
hidden tests in its database, so that ``nbgrader autograde`` puts them back).

Examples
--------
>>> from vicreg_lab.classroom.release import release                 # doctest: +SKIP
>>> release("assignments", "student-version")                       # doctest: +SKIP
[PosixPath('student-version/01_loss_terms.ipynb'), ...]
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

__all__ = ["ReleaseError", "read_source", "release", "release_notebook", "CODE_STUB", "TEXT_STUB"]

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
SCHEMA_VERSION = 3
_GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")
_KEYS = {"schema_version", "grade", "solution", "locked", "task", "grade_id", "points"}
_KEYS |= {"checksum", "cell_type"}


class ReleaseError(ValueError):
    """A source notebook that cannot be released (bad metadata or markers)."""


def release_notebook(nb, name: str = "notebook"):
    """The student version of one source notebook (a new notebook; ``nb`` is unchanged).

    Parameters
    ----------
    nb : nbformat.NotebookNode
        The source notebook, nbformat 4.
    name : str
        Used in error messages (e.g. the file name).

    Returns
    -------
    nbformat.NotebookNode

    Raises
    ------
    ReleaseError
        Invalid nbgrader metadata, a duplicate ``grade_id``, a solution region outside a
        solution cell, a hidden-test region outside a grade cell, nested or unclosed
        markers.
    """
    nb = copy.deepcopy(nb)
    _check_metadata(nb, name)
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        meta = cell.metadata.get("nbgrader", {})
        _lock(cell, meta)
        _clear_solution(cell, meta, where)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            for key in ("collapsed", "scrolled"):
                cell.metadata.pop(key, None)
        _clear_hidden_tests(cell, meta, where)
        if meta.get("grade") or meta.get("solution") or is_locked(meta):
            meta["checksum"] = compute_checksum(cell)
            meta["cell_type"] = cell.cell_type
    nb.metadata.pop("celltoolbar", None)
    return nb


def default_source() -> Path:
    """``assignments/`` beside the package (a source checkout), else in the current folder."""
    checkout = Path(__file__).resolve().parents[2] / "assignments"
    return checkout if checkout.is_dir() else Path("assignments")


def release(source, out_dir, force: bool = False) -> list[Path]:
    """Write the student version of every source notebook into ``out_dir``.

    Parameters
    ----------
    source : str or Path
        A source notebook, or a folder whose ``*.ipynb`` files are released (not
        recursively; checkpoints are skipped).
    out_dir : str or Path
        Output folder, created if needed. Files keep their names.
    force : bool, default=False
        Overwrite notebooks that already exist in ``out_dir``.

    Returns
    -------
    list of Path
        The notebooks written, sorted.

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist, or holds no notebook.
    FileExistsError
        A target exists and ``force`` is False (nothing is written then).
    ReleaseError
        A source notebook cannot be released (nothing is written then).
    """
    import nbformat

    from vicreg_lab._io import atomic_path

    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"assignment source {source} does not exist")
    paths = [source] if source.is_file() else sorted(source.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no .ipynb notebook in {source}")
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"output {out_dir} exists and is not a folder")
    if out_dir.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise FileExistsError(f"output folder {out_dir} is the source folder: pick another one")
    targets = [out_dir / path.name for path in paths]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass force=True (--force)")
    released = []
    for path in paths:  # every notebook is checked before anything is written
        released.append(release_notebook(read_source(path), name=path.name))
    for nb, target in zip(released, targets, strict=True):
        nbformat.validate(nb)
        with atomic_path(target) as tmp:
            nbformat.write(nb, tmp)
    return targets


def read_source(path: Path):
    """A source notebook, read and validated (nbformat 4); :class:`ReleaseError` if it is not."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - JSON, schema or structure: one reason
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ReleaseError(
            f"{path.name} is not a valid notebook ({type(err).__name__}: {reason})"
        ) from None
    for index, cell in enumerate(nb.cells):
        if not isinstance(cell.get("metadata", {}).get("nbgrader", {}), dict):
            raise ReleaseError(f"{path.name}, cell {index}: metadata.nbgrader must be an object")
    return nb


def compute_checksum(cell) -> str:
    """nbgrader's checksum of a cell: md5 of its source, type, flags, id and points."""
    meta = cell.metadata["nbgrader"]
    m = hashlib.md5()
    m.update(cell.source.encode("utf-8"))
    m.update(cell.cell_type.encode("utf-8"))
    m.update(str(bool(meta.get("grade", False))).encode("utf-8"))
    m.update(str(bool(meta.get("solution", False))).encode("utf-8"))
    m.update(str(is_locked(meta)).encode("utf-8"))
    m.update(meta["grade_id"].encode("utf-8"))
    if meta.get("grade", False):
        m.update(str(float(meta["points"])).encode("utf-8"))
    return m.hexdigest()


# ----------------------------------------------------------------------------- steps


def is_locked(meta: dict) -> bool:
    """nbgrader's rule: solution cells are never locked, grade cells always are."""
    if not meta or meta.get("solution", False):
        return False
    return bool(meta.get("grade", False) or meta.get("locked", False))


def _lock(cell, meta: dict) -> None:
    if meta.get("solution"):
        cell.metadata["deletable"] = False
    elif meta.get("grade") or meta.get("locked"):
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False


def _clear_solution(cell, meta: dict, where: str) -> None:
    stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
    lines, replaced = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub, where)
    if replaced and not meta.get("solution"):
        raise ReleaseError(
            f"{where}: a '### {BEGIN_SOLUTION}' region in a cell that is not a solution cell "
            "(set metadata.nbgrader.solution = true)"
        )
    if replaced:
        cell.source = lines
    elif meta.get("solution"):
        cell.source = stub


def _clear_hidden_tests(cell, meta: dict, where: str) -> None:
    source, removed = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None, where)
    if removed and not meta.get("grade"):
        raise ReleaseError(
            f"{where}: a '### {BEGIN_HIDDEN}' region in a cell that is not a grade cell "
            "(set metadata.nbgrader.grade = true)"
        )
    cell.source = source


def _replace_regions(source: str, begin: str, end: str, stub: str | None, where: str):
    """Replace each begin..end region (marker lines included) by ``stub`` (or nothing)."""
    out, inside, found = [], False, False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ReleaseError(f"{where}: nested '{begin}' markers")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + stub_line for stub_line in stub.split("\n"))
        elif end in line:
            if not inside:
                raise ReleaseError(f"{where}: '{end}' without a '{begin}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: '{begin}' without a matching '{end}'")
    return "\n".join(out), found


def _check_metadata(nb, name: str) -> None:
    """nbgrader's metadata rules (schema version 3), with errors that name the cell."""
    ids = set()
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        if meta is None:
            continue
        where = f"{name}, cell {index}"
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ReleaseError(
                f"{where}: nbgrader schema_version must be {SCHEMA_VERSION}, "
                f"got {meta.get('schema_version')!r}"
            )
        unknown = set(meta) - _KEYS
        if unknown:
            raise ReleaseError(f"{where}: unknown nbgrader keys {sorted(unknown)}")
        for key in ("grade", "solution", "locked"):
            if not isinstance(meta.get(key), bool):
                raise ReleaseError(f"{where}: nbgrader.{key} must be true or false")
        if not (meta["grade"] or meta["solution"] or meta["locked"]):
            continue
        grade_id = meta.get("grade_id", "")
        if not isinstance(grade_id, str) or not _GRADE_ID.match(grade_id):
            raise ReleaseError(
                f"{where}: nbgrader.grade_id must be letters, digits, '_' or '-', got {grade_id!r}"
            )
        if grade_id in ids:
            raise ReleaseError(f"{where}: duplicate grade_id {grade_id!r}")
        ids.add(grade_id)
        if meta["grade"]:
            points = meta.get("points")
            if not isinstance(points, int | float) or isinstance(points, bool) or points < 0:
                raise ReleaseError(f"{where}: grade cell {grade_id!r} needs points >= 0")
        if meta.get("task"):
            if cell.cell_type != "markdown":
                raise ReleaseError(f"{where}: task cells must be markdown")
        elif cell.cell_type == "markdown" and meta["grade"] != meta["solution"]:
            raise ReleaseError(
                f"{where}: a markdown cell graded by hand must be both a grade and a solution cell"
            )
