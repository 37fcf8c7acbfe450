"""Speed of SyntheticCohort generation: subjects per second at several volume shapes.

Usage (prints a markdown table)::

    .venv/bin/python benchmarks/bench_cohort.py                # 256 at 64^3, 48^3; 16 at 128^3
    .venv/bin/python benchmarks/bench_cohort.py --n 64 --shape 48 64 --threads 1

Times are wall-clock for ``cohort.generate(range(n))`` on a fresh cohort (templates
already loaded, so the one-off nilearn loading, about 2 s, is reported separately).
The target: 256 subjects at 64^3 in at most 30 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from vicreg_lab.data import SyntheticCohort
from vicreg_lab.data._templates import mni_templates


def _measure(n: int, size: int, modality: str) -> tuple[float, float]:
    cohort = SyntheticCohort(n, shape=(size,) * 3, modality=modality, cache=False)
    start = time.perf_counter()
    volumes = cohort.generate(range(n))
    seconds = time.perf_counter() - start
    assert volumes.shape == (n, 1, size, size, size)
    return seconds, n / seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="subjects per shape (default 256)")
    parser.add_argument(
        "--shape", type=int, nargs="+", default=[48, 64, 128], help="cube sizes (default 48 64 128)"
    )
    parser.add_argument(
        "--n-large", type=int, default=16, help="subjects for sizes above 64 (default 16)"
    )
    parser.add_argument("--modality", nargs="+", default=["t1", "gm"], choices=["t1", "gm"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    mni_templates()
    print(f"template loading (once per process): {time.perf_counter() - start:.1f} s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| shape | modality | subjects | total (s) | subjects/s | ms/subject |")
    print("|---|---|---:|---:|---:|---:|")
    for size in args.shape:
        n = args.n if size <= 64 else min(args.n, args.n_large)
        for modality in args.modality:
            seconds, rate = _measure(n, size, modality)
            print(
                f"| {size}^3 | {modality} | {n} | {seconds:.1f} | {rate:.1f} | {1000 / rate:.0f} |"
            )


if __name__ == "__main__":
    main()
