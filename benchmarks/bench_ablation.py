"""The paper's Table 7, replayed on cohort v2 over several seeds: the cached sweep of notebook 04.

Each configuration of :data:`CONFIGS` (rows of :data:`vicreg_lab.lab.ablation.PAPER_TABLE7`) is
trained with :func:`vicreg_lab.lab.ablation.run_ablation` at the sizes of
:func:`vicreg_lab.lab.ablation.ablation_settings` for the profile, once per seed, on
``SyntheticCohort(settings.n_subjects, seed=0)``; it is measured on
``held_out(settings.n_eval)`` (new people, same scanners). One CSV row per run is written
to ``vicreg_lab/cached/ablation-<profile>.csv``, which notebook 04 reads with
:func:`vicreg_lab.lab.ablation.cached_sweep`; a markdown summary is printed.

Usage (the command behind the cached file and docs/learning.md)::

    .venv/bin/python benchmarks/bench_ablation.py --profile cpu --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from vicreg_lab._io import write_text
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab.ablation import (
    ablation_settings,
    cached_sweep,
    paper_findings,
    run_ablation,
    training_settings,
)
from vicreg_lab.pretrained import CACHED_DIR

CONFIGS = {
    "invariance only": (1.0, 0.0, 0.0),
    "no variance": (25.0, 0.0, 1.0),
    "no invariance": (0.0, 25.0, 1.0),
    "no covariance": (1.0, 1.0, 0.0),
    "equal weights": (1.0, 1.0, 1.0),
    "lighter inv/var": (5.0, 5.0, 1.0),
    "standard": (25.0, 25.0, 1.0),
}
COLUMNS = ["name", "inv", "var", "cov", "seed", "steps", "exp_std", "rep_rankme", "verdict"]
COLUMNS += ["age_r2", "train_seconds"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="CSV (default: the cached file)")
    parser.add_argument(
        "--recipe",
        choices=["short", "training"],
        default="short",
        help="short: ablation_settings (collapse); training: the profile's own training run",
    )
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to run")
    args = parser.parse_args(argv)
    configs = {name: CONFIGS[name] for name in args.only or CONFIGS}
    pick = training_settings if args.recipe == "training" else ablation_settings
    settings = pick(args.profile)
    train = SyntheticCohort(settings.n_subjects, shape=settings.shape, seed=0)
    held_out = train.held_out(settings.n_eval)
    start = time.perf_counter()
    frames = []
    out = args.out or CACHED_DIR / f"ablation-{args.profile}.csv"
    only = " --only " + " ".join(f'"{name}"' for name in args.only) if args.only else ""
    for seed in args.seeds:  # the file is rewritten after every seed: a cut run keeps its seeds
        sweep = run_ablation(configs, train, held_out, settings=settings, cache=False, seed=seed)
        frames.append(sweep.table.assign(seed=seed)[COLUMNS])
        table = pd.concat(frames, ignore_index=True)
        done = sorted(set(table["seed"]))
        header = (
            f"# bench_ablation.py --profile {args.profile} --recipe {args.recipe}{only} "
            f"--seeds {' '.join(map(str, done))}"
            f" | {settings.steps} steps per run | {time.perf_counter() - start:.0f} s\n"
        )
        write_text(out, header + table.to_csv(index=False, float_format="%.4g"))
    summary = cached_sweep(args.profile, path=out)
    print(header)
    print(summary.table.round(3).to_string(index=False))
    print()
    print(paper_findings(summary).to_string(index=False))


if __name__ == "__main__":
    main()
