"""Run a student's answer cells and call their answers; plain data in, plain data out.

This file is the child side of :mod:`vicreg_lab.classroom.sandbox`. The grader copies
it into a fresh temporary folder and runs it there with ``python -I``, in a new
process group, a scrubbed environment and resource limits. It imports nothing from
``vicreg_lab`` (the student's code must not reach the library's answers), and the
audit hook it installs before the first student line refuses:

- importing ``vicreg_lab`` (or anything from a forbidden folder: the package, the
  instructor's sources, the submissions, the grading output);
- opening files in a forbidden folder, or for writing anywhere but the work folder;
- starting processes, sending signals, sockets and ``ctypes``.

An audit hook is not a security boundary against native code; the process limits,
the process-group kill and, for untrusted classes, a container (docs/teaching.md)
are the outer walls. What the hook guarantees is that plain Python in a student's
cell cannot call the library's answer, read the hidden cases, or touch another file.

Protocol: ``request.json`` and ``inputs.npz`` in the work folder describe the cells
to run and the calls to make; ``results.json`` and ``outputs.npz`` come back. Arrays
travel through ``.npz`` files read with ``allow_pickle=False``; everything else is
JSON. The grader trusts nothing it cannot check: values are compared with references
computed in the grading process.

The functions that call one case (:func:`call_case`) are shared with the in-notebook
checks, so that a student sees in the notebook what the grader will find.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings

import numpy as np

MAX_TEXT = 300  # characters of an error message or a repr that come back
_DTYPES = {name: name for name in ("float16", "float32", "float64", "int8", "int16")}
_DTYPES |= {name: name for name in ("int32", "int64", "uint8", "bool", "complex64")}
_DTYPES |= {"bfloat16": "float32", "complex128": "complex128"}

# ----------------------------------------------------------------------------- one call


def call_case(fn, args: tuple, kwargs: dict, grad: bool) -> dict:
    """Call ``fn(*args, **kwargs)`` on copies of the inputs; what happened, as a dict.

    Keys: ``status`` ("returned", "raised" or "not implemented"), ``value`` (what was
    returned), ``error`` (``{"names": [exception class and its bases], "message",
    "where"}``), ``modified`` (indices of tensor arguments changed in place), ``grad``
    (for ``grad`` cases: ``None`` when the result has no graph, a string when backward
    failed, else the list of input gradients, ``None`` for an unused input).
    """
    import torch

    passed = _clone(args, requires_grad=grad)
    kwargs = _clone(kwargs, requires_grad=False)
    out: dict = {"status": "returned", "value": None, "error": None, "modified": [], "grad": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = fn(*passed, **kwargs)
    except NotImplementedError:
        out["status"] = "not implemented"
        return out
    except Exception as error:  # noqa: BLE001 - any student error is an outcome
        out["status"] = "raised"
        out["error"] = {
            "names": [c.__name__ for c in type(error).__mro__],
            "message": _clip(str(error)),
            "where": _where(error, fn),
        }
        return out
    out["value"] = got
    out["modified"] = [
        i
        for i, (a, b) in enumerate(zip(args, passed, strict=True))
        if isinstance(a, torch.Tensor) and not torch.equal(a, b.detach())
    ]
    if grad and isinstance(got, torch.Tensor):
        out["grad"] = _gradients(got, passed)
    return out


def _gradients(got, passed):
    import torch

    inputs = [a for a in passed if isinstance(a, torch.Tensor) and a.requires_grad]
    if not got.requires_grad:
        return None
    try:
        grads = torch.autograd.grad(got.sum(), inputs, allow_unused=True)
    except RuntimeError as error:
        return f"backward() failed: {_clip(str(error))}"
    return [None if g is None else g.detach() for g in grads]


def _clone(value, requires_grad: bool):
    import torch

    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        if requires_grad and out.is_floating_point():
            out.requires_grad_(True)
        return out
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple | list):
        return type(value)(_clone(v, requires_grad) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v, requires_grad) for k, v in value.items()}
    return value


def _where(error: Exception, fn) -> str:
    """`` (line N of `name`: <code>)`` for the deepest frame in the student's function."""
    code = getattr(fn, "__code__", None)
    filename = getattr(code, "co_filename", None)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    if not frames or code is None:
        return ""
    frame = frames[-1]
    line = frame.lineno - code.co_firstlineno + 1
    text = f" (line {line} of `{fn.__name__}`"
    return text + (f": {frame.line})" if frame.line else ")")


def _clip(text: str) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


# ----------------------------------------------------------------------------- codec


def encode(value, arrays: dict):
    """A JSON-able form of ``value``; tensors and arrays go into ``arrays`` (by key)."""
    import torch

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return {"t": "int", "v": str(value)}  # exact, whatever its size
    if isinstance(value, float):
        return {"t": "float", "v": repr(value)}  # nan and inf survive JSON
    if isinstance(value, torch.Tensor | np.ndarray):
        key = f"a{len(arrays)}"
        is_tensor = isinstance(value, torch.Tensor)
        array = value.detach().cpu() if is_tensor else value
        if is_tensor and array.dtype == torch.bfloat16:
            array = array.float()
        arrays[key] = np.asarray(array.numpy() if is_tensor else array)
        meta = {"t": "tensor" if is_tensor else "array", "k": key}
        if is_tensor:
            meta |= {"dtype": str(value.dtype).removeprefix("torch."), "grad": value.requires_grad}
        return meta
    if isinstance(value, np.generic):
        return encode(value.item(), arrays)
    if isinstance(value, tuple | list):
        return {"t": type(value).__name__, "v": [encode(v, arrays) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict", "v": {k: encode(v, arrays) for k, v in value.items()}}
    return {"t": "other", "type": type(value).__name__, "repr": _clip(_safe_repr(value))}


def decode(value, arrays):
    """The inverse of :func:`encode` (an ``other`` value becomes an :class:`Opaque`)."""
    import torch

    if value is None or isinstance(value, bool | str):
        return value
    if not isinstance(value, dict) or "t" not in value:
        raise ValueError(f"not an encoded value: {type(value).__name__}")
    kind = value["t"]
    if kind == "int":
        return int(value["v"])
    if kind == "float":
        return float(value["v"])
    if kind in ("tensor", "array"):
        array = np.asarray(arrays[value["k"]])
        if kind == "array":
            return array
        tensor = torch.from_numpy(array.copy()).to(getattr(torch, value["dtype"]))
        return (
            tensor.requires_grad_(True)
            if value.get("grad") and tensor.is_floating_point()
            else tensor
        )
    if kind in ("tuple", "list"):
        items = [decode(v, arrays) for v in value["v"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {str(k): decode(v, arrays) for k, v in value["v"].items()}
    if kind == "other":
        return Opaque(str(value.get("type", "object")), str(value.get("repr", "")))
    raise ValueError(f"unknown encoded kind {kind!r}")


class Opaque:
    """A value that could not come back as data: its type name and a clipped repr."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text


def _safe_repr(value) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a student's __repr__ may raise
        return f"<{type(value).__name__}>"


# ----------------------------------------------------------------------------- the guard

_REFUSED_PREFIXES = (
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.spawn",
    "os.exec",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.setsid",
    "os.chdir",
    "signal.pthread_kill",
    "subprocess.Popen",
    "pty.spawn",
    "socket.",
    "sys.addaudithook",
    "sys.setprofile",
    "sys.settrace",
    "sys._current_frames",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "ctypes.",
    "webbrowser.open",
    "sqlite3.",
    "resource.prlimit",
    "resource.setrlimit",
)
_WRITE_EVENTS = (
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.utime",
    "os.mkfifo",
    "os.mknod",
    "os.setxattr",
    "os.removexattr",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
)
_READ_EVENTS = ("os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob")
_FUNCTION_PARTS = ("__code__", "__defaults__", "__kwdefaults__")
#: Readable besides the work folder and Python's own installation (not the package).
_SYSTEM_READS = ("/usr/lib", "/usr/share", "/usr/local/lib", "/lib", "/lib64", "/etc", "/dev/null")
_SYSTEM_READS += ("/dev/urandom", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices")


def _scrub_unaudited_spawn() -> None:
    """Remove what raises no audit event: ``_posixsubprocess`` and the pidfd functions."""
    for module, name in ((os, "pidfd_open"), (signal, "pidfd_send_signal")):
        if hasattr(module, name):
            delattr(module, name)
    for module_name in ("posix", "_signal"):
        loaded = sys.modules.get(module_name)
        for name in ("pidfd_open", "pidfd_send_signal"):
            if loaded is not None and hasattr(loaded, name):
                delattr(loaded, name)
    module = sys.modules.pop("_posixsubprocess", None)
    if module is None:
        return
    fork_exec = getattr(module, "fork_exec", None)
    for loaded in list(sys.modules.values()):
        for name, value in list(getattr(loaded, "__dict__", {}).items()):
            if value is module or (fork_exec is not None and value is fork_exec):
                try:
                    delattr(loaded, name)
                except (AttributeError, TypeError):
                    pass


def _path_checks(work: str, forbidden: tuple, allowed: tuple):
    """``(normal, check_read, check_write)`` closures over values bound now, at installation."""
    str_, bytes_, int_, type_, denied = str, bytes, int, type, PermissionError

    def normal(path):
        """An absolute, ``..``-free path; None for a relative one (or an fd: None too)."""
        if type_(path) is bytes_:
            path = bytes_.decode(path, "utf-8", "surrogateescape")
        if type_(path) is not str_ or not path.startswith("/"):
            return None
        kept = []
        for part in path.split("/"):
            if part == "..":
                if kept:
                    kept.pop()
            elif part not in ("", "."):
                kept.append(part)
        return "/" + "/".join(kept)

    def under(path, folders) -> bool:
        for folder in folders:
            if path == folder or path.startswith(folder.rstrip("/") + "/"):
                return True
        return False

    def check_read(raw):
        if type_(raw) is int_:
            return  # an fd: it was opened through this hook
        path = normal(raw)
        if path is None:
            raise denied("grading: relative paths are refused here; use absolute ones")
        if under(path, forbidden) or not under(path, allowed):
            raise denied(f"grading: {path} is out of bounds for student code")

    def check_write(raw):
        path = normal(raw)
        if path is None or not (path == "/dev/null" or under(path, (work,))):
            raise denied(f"grading: student code may not write {raw!r}")

    return normal, check_read, check_write


def install_guard(work: str, forbidden: list[str], readable=()) -> None:
    """Install the audit hook (see the module docstring). It cannot be removed.

    Reads are allowed in ``work``, ``readable`` (Python's installation) and a few system
    folders, never in ``forbidden`` (which wins); writes only in ``work``. Relative
    paths are refused where the event cannot tell what they are relative to (``os.open``
    and friends take a ``dir_fd`` the event does not show). Everything the hook uses is
    bound here, at installation, so that student code cannot rebind it.
    """
    _scrub_unaudited_spawn()
    realpath, tuple_, str_, bytes_, int_, type_ = os.path.realpath, tuple, str, bytes, int, type
    set_, len_, denied, refused_import = set, len, PermissionError, ImportError
    function = type_(_scrub_unaudited_spawn)
    work = realpath(work)
    forbidden = tuple_(realpath(p) for p in forbidden)
    allowed = tuple_([work] + [realpath(p) for p in readable] + list(_SYSTEM_READS))
    refused, writes, reads = _REFUSED_PREFIXES, frozenset(_WRITE_EVENTS), frozenset(_READ_EVENTS)
    parts = frozenset(_FUNCTION_PARTS)
    spawner = "_posixsubprocess"  # under any package name: its init symbol is the last part
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    normal, check_read, check_write = _path_checks(work, forbidden, allowed)

    def hook(event, args):
        if event == "import":
            name = str_(args[0])
            if name == "vicreg_lab" or name.startswith("vicreg_lab.") or name.endswith(spawner):
                raise refused_import(f"grading: student code may not import {name}")
            if len_(args) > 1 and args[1]:
                check_read(args[1])
        elif event == "open":
            mode, flags = args[1], int_(args[2] or 0)
            if mode is None and type_(args[0]) is not int_ and normal(args[0]) is None:
                raise denied("grading: os.open needs an absolute path here")
            check_read(args[0])
            if (mode is not None and set_(str_(mode)) & set_("wax+")) or flags & write_flags:
                check_write(args[0])
        elif event in writes:
            for arg in args:
                if type_(arg) in (str_, bytes_):
                    check_write(arg)
        elif event in reads:
            if args and type_(args[0]) in (str_, bytes_):
                check_read(args[0])
        elif event == "object.__setattr__" or event == "object.__delattr__":
            if type_(args[0]) is function and args[1] in parts:
                raise denied("grading: student code may not replace a function's code")
        elif event.startswith(refused):
            raise denied(f"grading: student code may not use {event}")

    sys.addaudithook(hook)


# ----------------------------------------------------------------------------- main


class _CellTimeout(BaseException):
    """A cell or a call ran past its time (BaseException: ``except Exception`` misses it)."""


def _alarm(seconds: int) -> None:
    def ring(signum, frame):
        raise _CellTimeout()

    signal.signal(signal.SIGALRM, ring)
    signal.alarm(max(1, int(seconds)))


def _plain_source(source: str) -> str:
    """A cell without IPython magics and shell escapes (they are not Python)."""
    keep = []
    for line in source.split("\n"):
        stripped = line.lstrip()
        keep.append("" if stripped.startswith(("%", "!")) else line)
    return "\n".join(keep)


def _run_cells(request: dict, namespace: dict) -> list[dict]:
    ran = []
    for cell in request["cells"]:
        record = {"grade_id": cell["grade_id"], "error": None}
        try:
            _alarm(request["cell_seconds"])
            code = compile(_plain_source(cell["source"]), f"<cell {cell['grade_id']}>", "exec")
            exec(code, namespace)  # noqa: S102 - the student's cell, in this contained child
        except _CellTimeout:
            record["error"] = f"the cell ran longer than {request['cell_seconds']} s"
        except NotImplementedError:
            record["error"] = "not implemented"
        except BaseException as error:  # noqa: BLE001 - SystemExit and all: keep going
            record["error"] = _clip(f"{type(error).__name__}: {error}")
        finally:
            signal.alarm(0)
        ran.append(record)
    return ran


def _answer(task: dict, namespace: dict, inputs, arrays: dict, seconds: int) -> dict:
    name = task["answer"]
    if name not in namespace:
        return {"status": "missing"}
    value = namespace[name]
    try:
        _alarm(seconds)
        if task["kind"] == "value":
            return {"status": "returned", "value": encode(value, arrays)}
        if task["kind"] == "call":
            return {"status": "returned", "value": encode(value(), arrays)}
        if not callable(value):
            return {"status": "not callable", "type": type(value).__name__}
        outcomes = []
        for case in task["cases"]:
            args, kwargs = decode(case["args"], inputs), decode(case["kwargs"], inputs)
            outcome = call_case(value, tuple(args), kwargs, bool(case["grad"]))
            outcome["value"] = encode(outcome["value"], arrays)
            if isinstance(outcome["grad"], list):
                outcome["grad"] = [encode(g, arrays) for g in outcome["grad"]]
            outcomes.append(outcome)
        return {"status": "called", "outcomes": outcomes}
    except _CellTimeout:
        return {"status": "timeout"}
    except NotImplementedError:
        return {"status": "not implemented"}
    except BaseException as error:  # noqa: BLE001
        return {"status": "raised", "error": _clip(f"{type(error).__name__}: {error}")}
    finally:
        signal.alarm(0)


def main(work: str, results_fd: int, outputs_fd: int) -> int:
    """Run the request in ``work``; write the results to the two descriptors given.

    The descriptors were opened by the supervisor: under Landlock the work folder is
    read-only for this process.
    """
    with open(os.path.join(work, "request.json"), encoding="utf-8") as f:
        request = json.load(f)
    with np.load(os.path.join(work, "inputs.npz"), allow_pickle=False) as data:
        inputs = {key: data[key] for key in data.files}
    import torch  # noqa: F401 - loaded before the guard: it reads its own files
    import torch.nn.functional  # noqa: F401

    torch.manual_seed(0)
    results = os.fdopen(results_fd, "w", encoding="utf-8")
    outputs = os.fdopen(outputs_fd, "wb")
    dump, savez = json.dump, np.savez  # kept before any student code runs
    import site

    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    install_guard(work, request["forbidden"], sorted(python))
    namespace = {"__name__": "__main__"}
    exec(request["preamble"], namespace)  # noqa: S102 - the grader's own imports
    cells = _run_cells(request, namespace)
    arrays: dict = {}
    answers = {
        task["grade_id"]: _answer(task, namespace, inputs, arrays, request["cell_seconds"])
        for task in request["tasks"]
    }
    with outputs:
        savez(outputs, **arrays)
    with results:
        dump({"cells": cells, "answers": answers}, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
