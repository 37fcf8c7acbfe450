"""The supervisor of one grading child: kernel walls, the wall clock, no process left behind.

Run by :mod:`vicreg_lab.classroom.sandbox` as its own process (``python -I`` this file);
it imports nothing from ``vicreg_lab``. It:

1. makes itself a subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so that every process
   the child leaves behind, in whatever session, becomes its child;
2. opens the two result files for the child and passes them as file descriptors;
3. starts the child under **Landlock** (Linux 5.13+, when the kernel offers it): the
   child may read Python's installation (not the ``vicreg_lab`` package), a few system
   folders and its work folder, write nowhere (only to the two descriptors and
   ``/dev/null``), make no TCP connection, and (ABI 6+) signal no process outside its
   own domain. The kernel enforces this for every file access, whichever library or
   native code makes it; the child's audit hook is the first, friendlier layer;
4. waits at most the wall clock, then kills the child and, until none is left, every
   process that came back to it.

Usage: ``python -I sandbox_supervisor.py SPEC.json -- CHILD_COMMAND...``; ``SPEC.json``
holds ``wall_seconds``, ``results``, ``outputs``, ``read_dirs``, ``read_files``,
``list_dirs``, ``require_landlock``. Exit status: the child's, 124 after the wall clock,
125 when Landlock was required and is missing.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

# Landlock access rights (linux/landlock.h)
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
FS_RIGHTS_BY_ABI |= {5: (1 << 16) - 1}
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 38, 36


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when Landlock is unavailable)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return max(0, int(libc.syscall(SYS_CREATE_RULESET, None, 0, 1)))
    except (OSError, AttributeError):
        return 0


def restrict(read_dirs, read_files, write_files, list_dirs=()) -> int:
    """Apply Landlock to this process (and what it execs); return the ABI used (0: none).

    ``read_dirs``: read and execute beneath; ``read_files``: read; ``write_files``: read
    and write; ``list_dirs``: list only (site-packages: its entries are granted one by
    one, all but the ``vicreg_lab`` package's).
    """
    abi = landlock_abi()
    if abi < 1:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    handled = FS_RIGHTS_BY_ABI[min(abi, 5)]
    attr = _RulesetAttr(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    rules = [(p, EXECUTE | READ_FILE | READ_DIR) for p in read_dirs]
    rules += [(p, READ_FILE) for p in read_files]
    rules += [(p, READ_FILE | WRITE_FILE) for p in write_files]
    rules += [(p, READ_DIR) for p in list_dirs]
    for path, access in rules:
        try:
            parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a folder this machine does not have
        if not os.path.isdir(path):  # a file takes file rights only
            access &= EXECUTE | WRITE_FILE | READ_FILE
        rule = _PathBeneath(access & handled, parent)
        done = libc.syscall(SYS_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)
        os.close(parent)
        if done != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.syscall(SYS_RESTRICT_SELF, ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)
    return abi


def _strays():
    """Processes whose parent is this supervisor (the child's leftovers come back here)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == me:
                yield int(entry)


def kill_strays(seconds: float = 30.0) -> None:
    """Kill every process that came back to this supervisor, until none is left."""
    end, quiet = time.monotonic() + seconds, 0
    while time.monotonic() < end and quiet < 3:
        found = list(_strays())
        quiet = 0 if found else quiet + 1
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in found:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        time.sleep(0 if found else 0.02)


def main(argv) -> int:
    spec_path, command = argv[0], argv[2:]
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if spec["require_landlock"] and landlock_abi() < 1:
        print("grading: the kernel offers no Landlock and it was required", file=sys.stderr)
        return 125
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    results = os.open(spec["results"], flags, 0o600)
    outputs = os.open(spec["outputs"], flags, 0o600)

    def walls():  # in the child, between fork and exec
        restrict(spec["read_dirs"], spec["read_files"], ["/dev/null"], spec["list_dirs"])

    child = subprocess.Popen(
        [*command, str(results), str(outputs)], pass_fds=(results, outputs), preexec_fn=walls
    )
    os.close(results)
    os.close(outputs)
    try:
        code = child.wait(timeout=float(spec["wall_seconds"]))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        code = 124
    kill_strays()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
