"""A red team against ``vicreg-lab assignments grade``: every attack scores what its code earns.

Each attacker hands in assignment 1 (or 2) with the stubs left in place, plus an attack.
Most attacks are written so that, should the attack work, the answer cell unlocks a
correct function (``UNLOCK``): a score above 0 would prove the attack got through. The
honest student graded in the same run keeps every point, and her file is unchanged.

All of them scored full marks against the grader that ran the checks in the student's
kernel (issue 17).
"""

import copy
import hashlib
import os
import textwrap
import time

import nbformat
import pandas as pd
import pytest

from vicreg_lab.classroom.grade import grade
from vicreg_lab.classroom.release import default_source, release_notebook
from vicreg_lab.classroom.sandbox import Limits

pytestmark = pytest.mark.slow

NAME, NAME2 = "01_loss_terms.ipynb", "02_rankme_diagnosis.ipynb"
NAME4 = "04_collapse_weights.ipynb"
SOURCE = nbformat.read(default_source() / NAME, as_version=4)
SOURCE2 = nbformat.read(default_source() / NAME2, as_version=4)
STUDENT = release_notebook(SOURCE, NAME)
STUDENT2 = release_notebook(SOURCE2, NAME2)
STUDENT4 = release_notebook(nbformat.read(default_source() / NAME4, as_version=4), NAME4)
# the visible cases' answers, looked up: right on every visible case, wrong on hidden ones
HARD_CODED = """
def collapsed_loss(inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4):
    table = {(25.0, 25.0, 1.0, 1.0, 1e-4): 24.75, (1.0, 1.0, 1.0, 1.0, 1e-4): 0.99,
             (25.0, 0.0, 1.0, 1.0, 1e-4): 0.0, (10.0, 5.0, 1.0, 2.0, 1e-4): 9.95,
             (25.0, 25.0, 1.0, 1.0, 0.01): 22.5}
    return table.get((inv_coeff, var_coeff, cov_coeff, gamma, eps), 0.0)
"""
CODE_CHECKS = ["invariance-check", "variance-check", "off-diagonal-check", "covariance-check"]
CODE_CHECKS += ["total-check"]
SECRET = "VICREG_LAB_TEST_INSTRUCTOR_SECRET"

# A correct invariance term, defined only when the attack in ``ok`` succeeded.
UNLOCK = """
def invariance_term(z1, z2):
    if not ok:
        raise NotImplementedError()
    return ((z1 - z2) ** 2).mean()
"""


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _cell(nb, grade_id):
    return next(c for c in nb.cells if _grade_id(c) == grade_id)


def _with(nb, grade_id=None, source=None, new_cells=(), at=None):
    """A copy of ``nb`` whose answer cell ``grade_id`` holds ``source``, plus new cells."""
    nb = copy.deepcopy(nb)
    if grade_id is not None:
        _cell(nb, grade_id).source = textwrap.dedent(source)
    for text in new_cells:
        nb.cells.insert(len(nb.cells) if at is None else at, nbformat.v4.new_code_cell(text))
    return nb


def _unlock(attack: str) -> str:
    """An answer cell that runs ``attack`` (which sets ``ok``) and then :data:`UNLOCK`."""
    body = textwrap.indent(textwrap.dedent(attack), "    ")
    return f"ok = False\ntry:\n{body}\nexcept Exception:\n    ok = False\n{UNLOCK}"


def _late_write(marker) -> str:
    """Python that writes ``marker`` 2 s later (after the grader would have finished)."""
    return f"import time, pathlib; time.sleep(2); pathlib.Path({str(marker)!r}).write_text('x')"


def _attackers(subs, out):
    package = os.path.dirname(os.path.dirname(__import__("vicreg_lab").__file__))
    losses = os.path.join(package, "vicreg_lab", "losses.py")
    honest = subs / "alice" / NAME
    marker = out.parent / "escaped.txt"
    decoy = copy.deepcopy(STUDENT)
    decoy.cells.append(copy.deepcopy(_cell(decoy, "invariance-check")))
    decoy.cells[-1].source = "pass"
    return {
        # copies a check cell's nbgrader metadata onto a harmless cell
        "decoy": decoy,
        # rebinds the checks in the unlocked import cell
        "rebind": _with(
            STUDENT,
            new_cells=[
                "check_invariance = check_variance = check_off_diagonal = "
                "check_covariance = check_vicreg_total = lambda *a, **k: None"
            ],
            at=4,
        ),
        # patches the library's checks in a new cell
        "patch": _with(
            STUDENT,
            new_cells=[
                "import vicreg_lab.classroom as c\n"
                "for n in dir(c):\n"
                "    if n.startswith('check_'):\n"
                "        setattr(c, n, lambda *a, **k: None)"
            ],
            at=4,
        ),
        # blanks every later cell, then swallows every error
        "transformer": _with(
            STUDENT,
            "invariance-solution",
            "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])\n"
            "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
            "def invariance_term(z1, z2):\n    raise NotImplementedError()\n",
        ),
        # calls the library's own answers
        "shortcut": _with(
            STUDENT, "invariance-solution", _unlock("from vicreg_lab import losses\nok = True")
        ),
        "shortcut_by_file": _with(
            STUDENT,
            "invariance-solution",
            _unlock(f"ns = {{}}\nexec(open({losses!r}).read(), ns)\nok = True"),
        ),
        "shortcut_by_spec": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import importlib.util\n"
                f"spec = importlib.util.spec_from_file_location('x', {losses!r})\n"
                "spec.loader.exec_module(importlib.util.module_from_spec(spec))\nok = True"
            ),
        ),
        # reads the instructor's source (solutions and hidden tests)
        "reader": _with(
            STUDENT,
            "invariance-solution",
            _unlock(f"ok = len(open({str(default_source() / NAME)!r}).read()) > 0"),
        ),
        # reads the instructor's environment
        "environment": _with(
            STUDENT, "invariance-solution", _unlock(f"import os\nok = {SECRET!r} in os.environ")
        ),
        # overwrites a classmate's notebook
        "vandal": _with(
            STUDENT,
            "invariance-solution",
            _unlock(f"open({str(honest)!r}, 'w').write('{{}}')\nok = True"),
        ),
        # starts a detached process that would rewrite the grades later
        "daemon": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import subprocess, sys\n"
                f"subprocess.Popen([sys.executable, '-c', {_late_write(marker)!r}], "
                "start_new_session=True)\nok = True"
            ),
        ),
        "forker": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(2)\n"
                f"    open({str(marker)!r}, 'w').write('escaped')\n    os._exit(0)\nok = True"
            ),
        ),
        # signals the grading process
        "killer": _with(
            STUDENT,
            "invariance-solution",
            _unlock("import os\nos.kill(os.getppid(), 0)\nok = True"),
        ),
        # native code
        "native": _with(
            STUDENT,
            "invariance-solution",
            _unlock("import ctypes\nctypes.CDLL(None).getpid()\nok = True"),
        ),
        # leaves the run early, so that nothing is scored
        "exit": _with(STUDENT, "invariance-solution", "import os\nos._exit(0)\n"),
        # no attack: proves that a successful attack would unlock the points
        "control": _with(STUDENT, "invariance-solution", _unlock("ok = True")),
        # the honest student whose notebook the vandal aims at
        "alice": copy.deepcopy(SOURCE),
        # answers written for the visible cases only
        "hardcoder": (NAME4, _with(STUDENT4, "collapsed-loss-solution", HARD_CODED)),
        # assignment 2 by the library's answer
        "rankme_shortcut": (
            NAME2,
            _with(
                STUDENT2,
                "rankme-solution",
                "import vicreg_lab.diagnostics\nrankme = vicreg_lab.diagnostics.rankme\n",
            ),
        ),
    }


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam")
    subs, out = root / "submissions", root / "grading"
    for student, nb in _attackers(subs, out).items():
        name, nb = nb if isinstance(nb, tuple) else (NAME, nb)
        (subs / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, subs / student / name)
    # a shadow package beside the notebook, whose checks always pass
    shadow = subs / "shadow"
    shadow.mkdir()
    nbformat.write(STUDENT, shadow / NAME)
    for folder in (shadow / "vicreg_lab", shadow / "vicreg_lab" / "classroom"):
        folder.mkdir()
        (folder / "__init__.py").write_text(
            "def __getattr__(name):\n    return lambda *a, **k: None\n"
        )
    honest_before = hashlib.sha256((subs / "alice" / NAME).read_bytes()).hexdigest()
    os.environ[SECRET] = "the answer key lives here"
    try:
        table = grade(
            subs, out_dir=out, profile="ci", limits=Limits(wall_seconds=120, cell_seconds=20)
        )
    finally:
        del os.environ[SECRET]
    time.sleep(3)  # what a detached process would have waited for
    return table, subs, out, honest_before


def _points(table, student):
    rows = table[(table["student"] == student) & (table["status"] != "by hand")]
    return rows.set_index("grade_id")["points"]


ATTACKS = ["decoy", "rebind", "patch", "transformer", "shortcut", "shortcut_by_file"]
ATTACKS += ["shortcut_by_spec", "reader", "environment", "vandal", "daemon", "forker"]
ATTACKS += ["killer", "native", "exit", "shadow", "rankme_shortcut"]
# hardcoder is not an attack on the grader: test_answers_written_for_the_visible_cases...


@pytest.mark.parametrize("student", ATTACKS)
def test_an_attack_scores_zero(attacked, student):
    table = attacked[0]
    points = _points(table, student)
    assert len(points) > 0 and (points == 0).all(), points.to_dict()


def test_an_attack_that_got_through_would_score(attacked):
    points = _points(attacked[0], "control")
    assert points["invariance-check"] == 2 and points.drop("invariance-check").sum() == 0


def test_the_honest_student_keeps_every_point_and_her_file(attacked):
    table, subs, _, before = attacked
    points = _points(table, "alice")
    maximum = table[table["student"] == "alice"].set_index("grade_id")["max_points"]
    assert (points == maximum[points.index]).all()
    assert hashlib.sha256((subs / "alice" / NAME).read_bytes()).hexdigest() == before


def test_nothing_escaped_and_the_grades_are_the_graders(attacked):
    table, subs, out, _ = attacked
    assert not (out.parent / "escaped.txt").exists()
    on_disk = pd.read_csv(out / "grades.csv")
    assert len(on_disk) == len(table)
    assert on_disk["points"].fillna(-1).tolist() == table["points"].fillna(-1).tolist()


def test_answers_written_for_the_visible_cases_lose_the_hidden_ones(attacked):
    table = attacked[0].set_index(["student", "grade_id"])
    row = table.loc[("hardcoder", "collapsed-loss-check")]
    assert row["status"] == "partial" and 0 < row["points"] < row["max_points"]
    assert "6/8 cases (3 hidden)" in row["feedback"]  # its default 0 is right once
    assert "Wrong on hidden case" in row["feedback"]


def test_refusals_say_why(attacked):
    table = attacked[0]
    feedback = table.set_index(["student", "grade_id"])["feedback"]
    assert "is on 2 cells" in feedback[("decoy", "invariance-check")]
    assert "may not import vicreg_lab" in feedback[("rankme_shortcut", "rankme-check")]
    assert "ended the run" in feedback[("exit", "invariance-check")]


def test_hidden_cases_are_named_never_shown(tmp_path):
    # every case raises an error that prints its input: visible ones show it, hidden do not
    echo = _with(
        STUDENT,
        "invariance-solution",
        "def invariance_term(z1, z2):\n    raise ValueError('INPUT ' + repr(z1.tolist()))\n",
    )
    (tmp_path / "subs" / "echo").mkdir(parents=True)
    nbformat.write(echo, tmp_path / "subs" / "echo" / NAME)
    table = grade(tmp_path / "subs", profile="ci")
    said = table.set_index("grade_id").loc["invariance-check", "feedback"]
    visible, hidden = [], []
    for line in said.splitlines():
        (hidden if "hidden case" in line else visible).append(line)
    assert hidden and all("INPUT" not in line for line in hidden)
    assert "INPUT" in said.split("Wrong on hidden case")[0]  # the first, visible, failure
    assert "expected:" not in "".join(line for line in said.splitlines() if "hidden" in line)
