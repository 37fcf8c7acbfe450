"""Time and peak memory of each notebook, executed top to bottom in a real kernel.

Each notebook runs with ``jupyter nbconvert --execute`` under GNU ``time -v`` (peak memory is
the largest process, i.e. the kernel). ``--cpus 0`` pins the run to one core, as on Binder.

Usage::

    python benchmarks/bench_notebooks.py --profile cpu              # all notebooks
    python benchmarks/bench_notebooks.py --profile cpu --cpus 0 03  # one, on one core
    python benchmarks/bench_notebooks.py --folder assignments       # the assignments' sources
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(path: Path, profile: str, cpus: str | None) -> dict:
    """Execute one notebook; return its wall time (s), peak memory (MiB) and exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "jupyter", "nbconvert"]
        cmd += ["--to", "notebook", "--execute", "--output-dir", tmp, str(path)]
        cmd += ["--ExecutePreprocessor.timeout=1800"]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        env = dict(os.environ, VICREG_LAB_PROFILE=profile, MPLBACKEND="Agg")
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=path.parent)
        wall = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return {
        "notebook": path.stem,
        "seconds": round(wall, 1),
        "peak_mib": round(int(peak.group(1)) / 1024) if peak else None,
        "ok": done.returncode == 0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"])
    parser.add_argument("--cpus", default=None, help="taskset CPU list, e.g. 0 (Binder: 1 CPU)")
    parser.add_argument(
        "--folder", default="notebooks", help="folder of the notebooks, relative to the root"
    )
    parser.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 03 05")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / args.folder).glob("*.ipynb"))
    if not paths:
        parser.error(f"no notebooks in {ROOT / args.folder}")
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(k) for k in args.only)]
    load = os.getloadavg()[0]
    print(
        f"{args.folder}: profile {args.profile}, cpus {args.cpus or 'all'}, load average {load:.1f}"
    )
    print("| notebook | seconds | peak MiB | ok |\n|---|---|---|---|")
    failed = 0
    for path in paths:
        row = run_notebook(path, args.profile, args.cpus)
        failed += not row["ok"]
        print(f"| {row['notebook']} | {row['seconds']} | {row['peak_mib']} | {row['ok']} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
