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
import json
import os
import tempfile
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


HOOK_SWAP = """
import gc, types
hook = next(o for o in gc.get_objects() if isinstance(o, types.FunctionType)
            and o.__name__ == "hook" and o.__code__.co_freevars)
names = hook.__code__.co_freevars
ns = {}
exec("def outer():\\n    " + " = ".join(names) + " = None\\n    def hook(event, args):\\n"
     "        return (" + ", ".join(names) + ")\\n    return hook\\n", ns)
hook.__code__ = ns["outer"]().__code__
from vicreg_lab import losses
ok = True
"""
# Starts a shell that writes a marker 2 s later, through a fork_exec found by the code before it.
_SPAWN = """
script = "sleep 2; echo x > {}"
r, w = os.pipe()
pid = fork_exec([b"/bin/sh", b"-c", script.encode()], [b"/bin/sh"], True, (w,), None,
                [b"PATH=/usr/bin:/bin"], -1, -1, -1, -1, -1, -1, r, w, True, True, -1,
                None, None, None, -1, None, False)
ok = pid > 0
"""
# _posixsubprocess.fork_exec raises no audit event: taken from subprocess, or imported
FORK_EXEC = (
    """
import os, sys, subprocess
try:
    fork_exec = subprocess._fork_exec
except AttributeError:
    import _posixsubprocess
    fork_exec = _posixsubprocess.fork_exec
"""
    + _SPAWN
)
# the same extension module, loaded again under another package name
RESPAWN = (
    """
import glob, importlib.machinery, os, sys
so = glob.glob(sys.base_prefix + "/lib/python3.11/lib-dynload/_posixsubprocess*.so")[0]
loader = importlib.machinery.ExtensionFileLoader("x._posixsubprocess", so)
spec = importlib.machinery.ModuleSpec("x._posixsubprocess", loader, origin=so)
fork_exec = loader.create_module(spec).fork_exec
"""
    + _SPAWN
)
NPZ_BOMB = """
import atexit, os, sys, zipfile
import numpy as np

KEEP = os.dup(int(sys.argv[3]))  # the outputs' descriptor, kept past the harness's close

def _bomb(n_bytes=300 * 2**20):
    with os.fdopen(KEEP, "wb") as raw:
        raw.seek(0)
        raw.truncate()
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("bomb.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f8", "fortran_order": False, "shape": (n_bytes // 8,)})
                chunk = bytes(2**22)
                for _ in range(n_bytes // len(chunk)):
                    f.write(chunk)

atexit.register(_bomb)

def invariance_term(z1, z2):
    return ((z1 - z2) ** 2).mean()
"""


def _attackers(subs, out, honest):
    source_file = str(default_source() / NAME)
    package = os.path.dirname(os.path.dirname(__import__("vicreg_lab").__file__))
    losses = os.path.join(package, "vicreg_lab", "losses.py")
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
        # found by a second red team (helper-6), against the first hardening:
        # a read through os.open's dir_fd, which the audit event does not show
        "dirfd_reader": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import os\nroot = os.open('/', os.O_RDONLY)\n"
                f"fd = os.open({source_file.lstrip('/')!r}, os.O_RDONLY, dir_fd=root)\n"
                "ok = len(os.read(fd, 100)) > 0"
            ),
        ),
        "dirfd_vandal": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import os\nroot = os.open('/', os.O_RDONLY)\n"
                f"fd = os.open({str(honest).lstrip('/')!r}, os.O_WRONLY, dir_fd=root)\n"
                "os.write(fd, b'{}')\nok = True"
            ),
        ),
        # a file of the checkout outside the forbidden folders (this very test file)
        "repo_reader": _with(
            STUDENT, "invariance-solution", _unlock(f"ok = 'UNLOCK' in open({__file__!r}).read()")
        ),
        # switches the audit hook off: found through gc, its code replaced
        "hook_code": _with(STUDENT, "invariance-solution", _unlock(HOOK_SWAP)),
        # rebinds the tables the hook reads, then starts a detached process
        "hook_tables": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import sys, subprocess\nmain = sys.modules['__main__']\n"
                "for name in dir(main):\n"
                "    if name.isupper() or name.startswith('_REFUSED') or name.endswith('EVENTS'):\n"
                "        setattr(main, name, ())\n"
                f"subprocess.Popen([sys.executable, '-c', {_late_write(marker)!r}], "
                "start_new_session=True, env={'PATH': '/usr/bin:/bin'})\nok = True"
            ),
        ),
        # _posixsubprocess.fork_exec raises no audit event
        "fork_exec": _with(STUDENT, "invariance-solution", _unlock(FORK_EXEC.format(marker))),
        # rewrites its outputs after the run: a deflated array far larger than memory should hold
        "npz_bomb": _with(STUDENT, "invariance-solution", NPZ_BOMB),
        # every function raises the error some cases expect
        "raiser": _with(
            _with(
                _with(
                    STUDENT,
                    "variance-solution",
                    "def variance_term(z, gamma=1.0, eps=1e-4):\n    raise ValueError('no')\n",
                ),
                "off-diagonal-solution",
                "def off_diagonal(m):\n    raise ValueError('no')\n",
            ),
            "covariance-solution",
            "def covariance_term(z):\n    raise ValueError('no')\n",
        ),
        # found by a third red team (helper-7), against the audit hook alone: the kernel's
        # Landlock walls (files, signals) now stop what no audit event reports
        "procroot": _with(
            STUDENT,
            "invariance-solution",
            _unlock(f"ok = len(open('/proc/self/root' + {source_file!r}).read()) > 0"),
        ),
        "from_file": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                f"import os, torch\np = {source_file!r}\n"
                "t = torch.from_file(p, shared=False, size=os.stat(p).st_size, dtype=torch.uint8)\n"
                "ok = b'nbgrader' in bytes(t.numpy())"
            ),
        ),
        "torch_save": _with(
            STUDENT,
            "invariance-solution",
            _unlock(f"import os, torch\ntorch.save({{'x': 1}}, {str(marker)!r})\nok = True"),
        ),
        "sqlite": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                f"import sqlite3\nc = sqlite3.connect({str(marker)!r})\n"
                "c.execute('create table t(x)')\nc.commit()\nok = True"
            ),
        ),
        "pidfd": _with(
            STUDENT,
            "invariance-solution",
            _unlock(
                "import os, signal\nfd = os.pidfd_open(os.getppid())\n"
                "signal.pidfd_send_signal(fd, 0)\nok = True"
            ),
        ),
        "respawn": _with(STUDENT, "invariance-solution", _unlock(RESPAWN.format(marker))),
        "surrogate_code": _with(
            STUDENT,
            "variance-solution",
            "def variance_term(z, gamma=1.0, eps=1e-4):\n    raise ValueError('\\udcff')\n",
        ),
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


def write_submissions(subs, out, folder=lambda student, name: student) -> dict:
    """Every attacker's submission under ``subs`` (``folder`` gives the path inside a
    student's folder: benchmarks/bench_grader_attacks.py hands the same files to
    nbgrader); returns the file's path for each student."""
    paths = {}
    honest = subs / folder("alice", NAME) / NAME  # whom the vandals aim at
    for student, nb in _attackers(subs, out, honest).items():
        name, nb = nb if isinstance(nb, tuple) else (NAME, nb)
        paths[student] = subs / folder(student, name) / name
        paths[student].parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, paths[student])
    # a written answer holding a lone surrogate (valid JSON, not encodable as UTF-8)
    odd = copy.deepcopy(STUDENT)
    _cell(odd, "written-cov-scale").source = "\ud800"
    paths["surrogate_md"] = subs / folder("surrogate_md", NAME) / NAME
    paths["surrogate_md"].parent.mkdir(parents=True)
    paths["surrogate_md"].write_text(json.dumps(odd, ensure_ascii=True))
    # a shadow package beside the notebook, whose checks always pass
    paths["shadow"] = subs / folder("shadow", NAME) / NAME
    shadow = paths["shadow"].parent
    shadow.mkdir(parents=True)
    nbformat.write(STUDENT, paths["shadow"])
    for package in (shadow / "vicreg_lab", shadow / "vicreg_lab" / "classroom"):
        package.mkdir()
        (package / "__init__.py").write_text(
            "def __getattr__(name):\n    return lambda *a, **k: None\n"
        )
    return paths


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam")
    subs, out = root / "submissions", root / "grading"
    write_submissions(subs, out)
    honest_before = hashlib.sha256((subs / "alice" / NAME).read_bytes()).hexdigest()
    os.environ[SECRET] = "the answer key lives here"
    private_tmp = root / "tmp"  # the grader's work folders, apart from any other run's
    private_tmp.mkdir()
    tempfile.tempdir = str(private_tmp)
    try:
        table = grade(
            subs, out_dir=out, profile="ci", limits=Limits(wall_seconds=120, cell_seconds=20)
        )
    finally:
        del os.environ[SECRET]
        tempfile.tempdir = None
    time.sleep(3)  # what a detached process would have waited for
    return table, subs, out, honest_before, private_tmp


def _points(table, student):
    rows = table[(table["student"] == student) & (table["status"] != "by hand")]
    return rows.set_index("grade_id")["points"]


ATTACKS = ["decoy", "rebind", "patch", "transformer", "shortcut", "shortcut_by_file"]
ATTACKS += ["shortcut_by_spec", "reader", "environment", "vandal", "daemon", "forker"]
ATTACKS += ["killer", "native", "exit", "shadow", "rankme_shortcut"]
ATTACKS += ["dirfd_reader", "dirfd_vandal", "repo_reader", "hook_code", "hook_tables"]
ATTACKS += ["fork_exec", "raiser", "procroot", "from_file", "torch_save", "sqlite", "pidfd"]
ATTACKS += ["respawn", "surrogate_code", "surrogate_md"]
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
    table, subs, _, before, _ = attacked
    points = _points(table, "alice")
    maximum = table[table["student"] == "alice"].set_index("grade_id")["max_points"]
    assert (points == maximum[points.index]).all()
    assert hashlib.sha256((subs / "alice" / NAME).read_bytes()).hexdigest() == before


def test_nothing_escaped_and_the_grades_are_the_graders(attacked):
    table, subs, out, _, _ = attacked
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
    # the bomb never lands (no file to write, no descriptor to reopen): a right answer counts
    assert feedback[("npz_bomb", "invariance-check")].startswith("invariance_term: 9/9")


def test_the_kernel_walls_are_up_on_this_machine():
    from vicreg_lab.classroom.sandbox import walls

    assert walls().startswith("Landlock ABI"), walls()  # Linux >= 5.13 with Landlock on


def test_the_grader_stays_small_and_leaves_nothing_behind(attacked, tmp_path):
    import resource

    # the npz bomb (300 MiB of zeros, deflated) was refused before loading
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2 * 2**20  # KiB: < 2 GiB
    left = list(attacked[4].glob("vicreg-lab-grading-*"))  # work folders, deep trees: gone
    assert not left, left


def test_results_the_grader_cannot_trust_are_refused_before_loading(tmp_path):
    import zipfile

    import numpy as np

    from vicreg_lab.classroom.sandbox import Run, _read

    (tmp_path / "results.json").write_text('{"cells": [], "answers": {}}')
    with zipfile.ZipFile(tmp_path / "outputs.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("a0.npy", "w", force_zip64=True) as f:  # 300 MiB of zeros, deflated
            header = {"descr": "<f8", "fortran_order": False, "shape": (300 * 2**20 // 8,)}
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(75):
                f.write(bytes(2**22))
    assert "could not be read" in _read(tmp_path, Run())
    (tmp_path / "outputs.npz").unlink()
    (tmp_path / "outputs.npz").symlink_to("/dev/zero")
    assert "could not be read" in _read(tmp_path, Run())


def test_hidden_inputs_never_reach_the_feedback(tmp_path):
    # the function reads every input it can find and raises them as its message
    leak = _with(
        STUDENT,
        "invariance-solution",
        """
        def invariance_term(z1, z2):
            import glob, os
            import numpy as np
            said = []
            for path in glob.glob(os.path.join(os.getcwd(), "inputs*.npz")):
                with np.load(path) as data:
                    said += [str(data[k].shape) for k in data.files]
            raise ValueError("LEAK " + " ".join(said))
        """,
    )
    (tmp_path / "subs" / "leak").mkdir(parents=True)
    nbformat.write(leak, tmp_path / "subs" / "leak" / NAME)
    table = grade(tmp_path / "subs", profile="ci")
    said = table.set_index("grade_id").loc["invariance-check", "feedback"]
    assert "LEAK (2, 3)" in said  # the visible inputs, in the visible feedback
    for shape in ("(7, 3)", "(64, 128)", "(3, 257)"):  # assignments/hidden_cases.py
        assert shape not in said


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
