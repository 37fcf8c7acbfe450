"""Run a student's answer cells in a contained child process and bring back plain data.

The grader never runs a check where student code runs. For one submission it:

1. copies the child script (:mod:`vicreg_lab.classroom.sandbox_child`) and the request
   (the answer cells' source, the inputs of every case) into a fresh temporary folder;
2. starts the supervisor (:mod:`vicreg_lab.classroom.sandbox_supervisor`) there, in a new
   session, with a scrubbed environment and resource limits (address space, CPU time,
   file size); the supervisor starts ``python -I`` on the child under Landlock where the
   kernel has it (read Python and its folder, write nothing but two result descriptors,
   no TCP, no signal outside), and the child's audit hook keeps student code away from
   ``vicreg_lab``, other files, processes and signals before the first student line;
3. the supervisor enforces the wall clock, then kills every process the child left
   behind; the grader kills the process group and any process carrying the run's token;
4. reads ``results.json`` (a regular file, size-capped) and ``outputs.npz`` (each
   member's header checked, ``allow_pickle=False``) and deletes the folder.

What comes back is data. The checks and the reference values stay in the grading
process: a child that patches, hides errors or lies about its own results can only
hand back wrong values. :func:`walls` says which walls this machine has.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sandbox_child, sandbox_supervisor
from .sandbox_child import decode, encode

__all__ = ["Limits", "Run", "PREAMBLE", "run_answers", "walls"]

#: What the answer cells may take for granted (the imports of the assignments' setup
#: cells, minus ``vicreg_lab``).
PREAMBLE = "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
_TOKEN_VARIABLE = "VICREG_LAB_GRADING_RUN"
_MAX_RESULTS_BYTES = 64 * 2**20
_MAX_FILE_BYTES = 512 * 2**20  # RLIMIT_FSIZE of the child: no file it writes grows past this


@dataclass(frozen=True)
class Limits:
    """Resources of one child: the whole notebook, each cell, memory, CPU time."""

    wall_seconds: int = 300
    cell_seconds: int = 60
    memory_mb: int = 4096
    cpu_seconds: int = 600
    require_landlock: bool = False

    def __post_init__(self):
        for name in ("wall_seconds", "cell_seconds", "memory_mb", "cpu_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a whole number >= 1, got {value!r}")


@dataclass
class Run:
    """What came back from one child.

    ``cells``: grade_id -> the error the cell raised (None when it ran). ``answers``:
    grade_id -> the answer's record, values decoded. ``problem``: why nothing came
    back (a timeout, a crash, an unreadable result), else None.
    """

    cells: dict = field(default_factory=dict)
    answers: dict = field(default_factory=dict)
    problem: str | None = None
    log: str = ""


def run_answers(cells, tasks, forbidden=(), limits: Limits | None = None) -> Run:
    """Run the answer ``cells`` in a child and make the ``tasks``' calls there.

    Parameters
    ----------
    cells : list of (grade_id, source)
        The student's answer cells, in the order of the source notebook.
    tasks : list of dict
        ``{"grade_id", "answer": name, "kind": "function" | "value" | "call",
        "cases": [{"args": tuple, "kwargs": dict, "grad": bool}]}``.
    forbidden : sequence of path
        Folders student code may neither read nor import from (the package is always
        among them).
    limits : Limits, optional

    Returns
    -------
    Run
    """
    limits = limits or Limits()
    package = Path(sandbox_child.__file__).resolve().parents[1]
    forbidden = [str(package)] + [str(Path(p).resolve()) for p in forbidden]
    arrays: dict = {}
    request = {
        "cells": [{"grade_id": g, "source": s} for g, s in cells],
        "tasks": [_encode_task(task, arrays) for task in tasks],
        "preamble": PREAMBLE,
        "forbidden": forbidden,
        "cell_seconds": limits.cell_seconds,
    }
    work = Path(tempfile.mkdtemp(prefix="vicreg-lab-grading-"))
    try:
        shutil.copyfile(sandbox_child.__file__, work / "child.py")
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        with open(work / "inputs.npz", "wb") as f:
            np.savez(f, **arrays)
        problem, log = _launch(work, limits)
        run = Run(problem=problem, log=log)
        if problem is None:
            run.problem = _read(work, run)
    finally:
        _remove(work)
    return run


def _remove(folder: Path) -> None:
    """Delete the work folder, whatever the student left in it (deep trees, odd modes)."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():  # e.g. thousands of nested folders: rmtree's recursion gives up
        subprocess.run(["rm", "-rf", "--", str(folder)], check=False, capture_output=True)


def _encode_task(task: dict, arrays: dict) -> dict:
    cases = [
        {
            "args": encode(tuple(case["args"]), arrays),
            "kwargs": encode(dict(case.get("kwargs", {})), arrays),
            "grad": bool(case.get("grad", False)),
        }
        for case in task.get("cases", ())
    ]
    return {"grade_id": task["grade_id"], "answer": task["answer"], "kind": task["kind"]} | {
        "cases": cases
    }


def _limit(limits: Limits):
    def apply():  # runs in the child, between fork and exec
        import resource

        memory = limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (_MAX_FILE_BYTES, _MAX_FILE_BYTES))

    return apply


def _launch(work: Path, limits: Limits) -> tuple[str | None, str]:
    token = secrets.token_hex(16)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        _TOKEN_VARIABLE: token,
    }
    spec = {
        "wall_seconds": limits.wall_seconds,
        "results": str(work / "results.json"),
        "outputs": str(work / "outputs.npz"),
        "require_landlock": limits.require_landlock,
        **_landlock_paths(work),
    }
    (work / "supervisor.json").write_text(json.dumps(spec), encoding="utf-8")
    child = [sys.executable, "-I", "-B", str(work / "child.py"), str(work)]
    supervisor = [sys.executable, "-I", "-B", sandbox_supervisor.__file__]
    command = [*supervisor, str(work / "supervisor.json"), "--", *child]
    with tempfile.TemporaryFile() as log:  # read through this handle, never by path
        process = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_limit(limits),  # noqa: PLW1509 - resource limits need it
        )
        start = time.monotonic()
        try:
            code = process.wait(timeout=limits.wall_seconds + 60)
        except subprocess.TimeoutExpired:
            code = 124
        finally:
            _kill_group(process.pid)
            process.wait()
            _kill_token(token)
        log_text = _tail(log)
    if code == 124:
        return f"ran longer than the {limits.wall_seconds} s a notebook may take", log_text
    if code == 125:
        return "not graded: this machine's kernel offers no Landlock (required)", log_text
    if code != 0:
        seconds = time.monotonic() - start
        how = f"signal {code - 128}" if code > 128 else f"exit status {code}"
        return f"the notebook's code stopped the run ({how} after {seconds:.0f} s)", log_text
    return None, log_text


def _landlock_paths(work: Path) -> dict:
    """What the child may read under Landlock: Python, a few system folders, its folder.

    site-packages is listable, and each of its entries readable except the ``vicreg_lab``
    package (whose files, in a regular installation, live there).
    """
    import site

    prefixes = {Path(p).resolve() for p in (sys.base_prefix, sys.base_exec_prefix)}
    read_dirs = [str(p) for p in sorted(prefixes)]
    read_dirs += ["/usr", "/lib", "/lib64", "/etc", "/sys", str(work)]
    list_dirs, packages = [], {Path(p) for p in site.getsitepackages()}
    for folder in sorted(packages):
        if not folder.is_dir():
            continue
        list_dirs.append(str(folder))
        read_dirs += [
            str(entry) for entry in folder.iterdir() if not entry.name.startswith("vicreg_lab")
        ]
    read_files = [str(Path(sys.prefix) / "pyvenv.cfg"), "/dev/urandom"]
    read_files += ["/proc/cpuinfo", "/proc/meminfo"]
    return {"read_dirs": read_dirs, "read_files": read_files, "list_dirs": list_dirs}


def walls() -> str:
    """What contains student code on this machine, in words (for the grader's log)."""
    abi = sandbox_supervisor.landlock_abi()
    kernel = f"Landlock ABI {abi} (files, TCP" + (", signals)" if abi >= 6 else ")")
    return (kernel if abi else "no Landlock in this kernel") + " + audit hook + rlimits"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_token(token: str) -> None:
    """Kill every process whose environment carries ``token`` (one that left the group)."""
    needle = f"{_TOKEN_VARIABLE}={token}".encode()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _tail(log, size: int = 4000) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - size))
    return log.read(size).decode("utf-8", "replace")


_MAX_ARRAY_BYTES = 256 * 2**20


def _open_regular(path: Path, limit: int):
    """A read handle on ``path`` if it is a regular file (not a link) of at most ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        raise ValueError(f"{path.name} is not a regular file of at most {limit} bytes")
    return os.fdopen(fd, "rb")


def _checked_npz(handle) -> None:
    """Refuse an .npz whose members are not plain arrays of a bounded size (before loading)."""
    import zipfile

    total = 0
    with zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy") or info.file_size > _MAX_ARRAY_BYTES:
                raise ValueError(f"unexpected member {info.filename!r} in the outputs")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0
                if version != (1, 0):
                    read_header = np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
            if dtype.hasobject:
                raise ValueError("an output array holds Python objects")
            total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if total > _MAX_ARRAY_BYTES:
                raise ValueError("the outputs are too large")
    handle.seek(0)


def _read(work: Path, run: Run) -> str | None:
    """Fill ``run`` from the child's files; the reason when they cannot be read."""
    try:
        with _open_regular(work / "results.json", _MAX_RESULTS_BYTES) as handle:
            text = handle.read(_MAX_RESULTS_BYTES)
        if not text:  # the supervisor made the file; the child never wrote it
            return "the notebook's code ended the run before it finished"
        data = json.loads(text.decode("utf-8"))
        with _open_regular(work / "outputs.npz", _MAX_ARRAY_BYTES) as handle:
            _checked_npz(handle)
            with np.load(handle, allow_pickle=False) as arrays:  # members load when used
                run.cells = {str(c["grade_id"]): c.get("error") for c in data["cells"]}
                run.answers = {
                    str(k): _decode_answer(v, arrays) for k, v in data["answers"].items()
                }
    except FileNotFoundError:
        return "the notebook's code ended the run before it finished"
    except Exception as error:  # noqa: BLE001 - whatever the child wrote, grading goes on
        return f"the run's results could not be read ({type(error).__name__})"
    return None


def _decode_answer(answer: dict, arrays: dict) -> dict:
    answer = dict(answer)
    if "value" in answer:
        answer["value"] = decode(answer["value"], arrays)
    outcomes = []
    for outcome in answer.get("outcomes", ()):
        outcome = dict(outcome)
        outcome["value"] = decode(outcome["value"], arrays)
        if isinstance(outcome.get("grad"), list):
            outcome["grad"] = [decode(g, arrays) for g in outcome["grad"]]
        outcomes.append(outcome)
    if "outcomes" in answer:
        answer["outcomes"] = outcomes
    return answer
