"""The red team's submissions against two graders: ``nbgrader autograde`` and ours (issue 17).

Every submission of ``tests/test_grade_attacks.py`` (the attacks, the control whose attack
is a no-op that unlocks the invariance points, and the honest ``alice``) is graded twice,
from the same files:

- by nbgrader, in a scratch course (one nbgrader assignment per notebook, ``nbgrader
  generate_assignment`` then ``nbgrader autograde``), reading each notebook's autograded
  code score from nbgrader's gradebook;
- by ``vicreg_lab.classroom.grade.grade`` (profile ci).

Both runs see the instructor's secret in the environment (the ``environment`` attack),
and both are followed by a check that a classmate's file (alice's) is unchanged and that
no detached process wrote its marker after the grader exited.

nbgrader must be installed in a separate environment that also has vicreg-lab (its
kernel ``python3`` runs the notebooks), e.g.::

    python -m venv /tmp/nbgv && /tmp/nbgv/bin/pip install torch==2.13.0 nbgrader==0.9.6
    /tmp/nbgv/bin/pip install -e .
    python benchmarks/bench_grader_attacks.py --nbgrader-python /tmp/nbgv/bin/python

Prints, and with ``--markdown`` writes as a table, each submission's autograded points
under each grader. The attacks run for real under nbgrader (in a temporary folder: their
writes go to markers there, and nothing is aimed outside it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = {"01_loss_terms.ipynb": "a1", "02_rankme_diagnosis.ipynb": "a2"}
ASSIGNMENT["04_collapse_weights.ipynb"] = "a4"
CONFIG = """c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "redteam"
c.ExecutePreprocessor.timeout = {timeout}
"""
SCORES = """import json, sys
from nbgrader.api import Gradebook
rows = []
with Gradebook("sqlite:///" + sys.argv[1] + "/gradebook.db") as gb:
    for a in sys.argv[2:]:
        for sub in gb.assignment_submissions(a):
            for nb in sub.notebooks:
                rows.append([sub.student_id, nb.name + ".ipynb", nb.code_score, nb.max_code_score])
print(json.dumps(rows))
"""


def _redteam():
    sys.path.insert(0, str(ROOT / "tests"))
    import test_grade_attacks as redteam

    return redteam


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "gone"


def run_nbgrader(root: Path, python: str, timeout: int) -> tuple[dict, dict]:
    """Points per student under ``nbgrader autograde``, and what the run left behind."""
    redteam = _redteam()
    course = root / "course"
    for name, assignment in ASSIGNMENT.items():
        (course / "source" / assignment).mkdir(parents=True)
        shutil.copy(ROOT / "assignments" / name, course / "source" / assignment / name)
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course), timeout=timeout))
    nbgrader = [python, "-m", "nbgrader"]
    env = dict(os.environ, VICREG_LAB_PROFILE="ci", **{redteam.SECRET: "the answer key"})
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env['PATH']}"  # nbgrader runs alembic

    def call(*args):
        subprocess.run([*nbgrader, *args], cwd=course, env=env, check=True, capture_output=True)

    for assignment in ASSIGNMENT.values():
        call("db", "assignment", "add", assignment)
        call("generate_assignment", assignment, "--force")
    subs, out = course / "submitted", course / "grading"
    paths = redteam.write_submissions(
        subs, out, folder=lambda student, name: f"{student}/{ASSIGNMENT[name]}"
    )
    before = _sha(paths["alice"])
    started = time.perf_counter()
    for student, path in sorted(paths.items()):
        # one run per student: a submission nbgrader refuses (the decoy's duplicate grade_id)
        # stops a whole-class run; a failing notebook makes it exit 1, and the scores are
        # read from its gradebook
        subprocess.run(
            [*nbgrader, "autograde", ASSIGNMENT[path.name], "--student", student, "--force"],
            cwd=course,
            env=env,
            capture_output=True,
        )
    seconds = time.perf_counter() - started
    done = subprocess.run(
        [python, "-c", SCORES, str(course), *ASSIGNMENT.values()],
        capture_output=True,
        text=True,
        check=True,
    )
    points = {}
    for student, name, score, top in json.loads(done.stdout):
        if (student, name) in _handed(paths):
            points[student] = (float(score or 0), float(top))
    time.sleep(3)  # what a detached process waits for
    facts = {
        "seconds": seconds,
        "alice_file_changed": _sha(paths["alice"]) != before,
        "escaped": (out.parent / "escaped.txt").exists(),
    }
    return points, facts


def _handed(paths: dict) -> set:
    return {(student, path.name) for student, path in paths.items()}


def run_ours(root: Path) -> tuple[dict, dict]:
    """Points per student under ``vicreg_lab.classroom.grade.grade`` (profile ci)."""
    from vicreg_lab.classroom.grade import grade
    from vicreg_lab.classroom.sandbox import Limits

    redteam = _redteam()
    subs, out = root / "submissions", root / "grading"
    paths = redteam.write_submissions(subs, out)
    before = _sha(paths["alice"])
    os.environ[redteam.SECRET] = "the answer key"
    started = time.perf_counter()
    try:
        table = grade(subs, out_dir=out, profile="ci", limits=Limits(120, 20))
    finally:
        del os.environ[redteam.SECRET]
    seconds = time.perf_counter() - started
    code = table[~table["grade_id"].str.startswith("written-")]  # autograded cells only
    points = {}
    for student, rows in code.groupby("student"):
        points[student] = (float(rows["points"].sum()), float(rows["max_points"].sum()))
    time.sleep(3)
    facts = {
        "seconds": seconds,
        "alice_file_changed": _sha(paths["alice"]) != before,
        "escaped": (out.parent / "escaped.txt").exists(),
    }
    return points, facts


def table(nbgrader: tuple, ours: tuple) -> str:
    """The markdown table for docs/teaching.md."""
    redteam = _redteam()
    order = ["alice", "control", *redteam.ATTACKS, "hardcoder"]
    lines = [
        "| submission | nbgrader 0.9.6 autograde | `vicreg-lab assignments grade` |",
        "| --- | --- | --- |",
    ]
    for student in order:
        cells = []
        for points in (nbgrader[0], ours[0]):
            got, top = points.get(student, (float("nan"), float("nan")))
            cells.append(f"{got:g} / {top:g}")
        lines.append(f"| {student} | {cells[0]} | {cells[1]} |")
    for fact, words in [
        ("alice_file_changed", "alice's notebook altered by a classmate"),
        ("escaped", "a detached process wrote after the grader exited"),
    ]:
        said = ["yes" if run[1][fact] else "no" for run in (nbgrader, ours)]
        lines.append(f"| {words} | {said[0]} | {said[1]} |")
    seconds = [f"{run[1]['seconds']:.0f} s" for run in (nbgrader, ours)]
    lines.append(f"| time to grade the {len(ours[0])} submissions | {seconds[0]} | {seconds[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nbgrader-python", required=True, help="python of an nbgrader env")
    parser.add_argument("--timeout", type=int, default=60, help="nbgrader's per-cell timeout")
    parser.add_argument("--json", type=Path, help="write the raw points and facts here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="redteam-") as tmp:
        nbgrader = run_nbgrader(Path(tmp) / "nbgrader", args.nbgrader_python, args.timeout)
        ours = run_ours(Path(tmp) / "ours")
    if args.json:
        args.json.write_text(json.dumps({"nbgrader": nbgrader, "ours": ours}, indent=1))
    print(table(nbgrader, ours))


if __name__ == "__main__":
    main()
