"""The live comparisons of notebooks 05 and 06, over several seeds (issue 15, item 6).

A notebook trains each arm of a comparison once, with one seed, in the time a student
waits. One seed is a lead, not a result, so this script reruns the same comparisons
over several seeds and ships the table (``vicreg_lab/cached/<comparison>-cpu.csv``, the
command on its first line), which the notebooks show beside the student's own run.

``augment`` (notebook 05, "Age or site?"): VICReg with and without intensity
augmentation, and with a scanner-like one (``p_intensity=1, gamma=0.5,
bias_field=0.5``), at two lengths: the notebook's live run in the ``cpu`` profile (512
subjects, 6 epochs = 96 steps) and the ``cpu`` profile's own recipe (1024 subjects, 12
epochs = 384 steps; ``make demo``). Training subjects come from ``SyntheticCohort(seed=0)``
at 48^3; every run is probed on the same 256 HELD-OUT subjects of the same scanners
(subjects 1024-1279, those of notebook 05): linear age R^2 and site balanced accuracy,
5 folds, fold seed 0, as the notebook does. The baselines of
:func:`vicreg_lab.baselines.embeddings_with_baselines` are rows too (recipe ``baseline``).

``vicregl`` (notebook 06): VICReg and VICRegL (``alpha=0.75``) with the notebook's
``cpu``-profile budget (256 subjects at 48^3, small_cnn with output_stride 8, expander
512-512, batch 32, 12 epochs = 96 steps), and the random-init encoder (BatchNorm
recalibrated): the dense grey-matter probe of the notebook (75% of subjects to fit, the
rest to score, split seed 0), R^2 overall and within cell.

Usage (the commands behind the shipped tables and docs/learning.md / docs/vicregl.md)::

    .venv/bin/python benchmarks/bench_live_runs.py augment --seeds 0 1 2 \
        --write vicreg_lab/cached/augment-cpu.csv
    .venv/bin/python benchmarks/bench_live_runs.py vicregl --seeds 0 1 2 \
        --write vicreg_lab/cached/vicregl-cpu.csv
    .venv/bin/python benchmarks/bench_live_runs.py augment --seeds 0 --quick   # smoke test
    .venv/bin/python benchmarks/bench_live_runs.py vicregl --table   # the shipped table (markdown)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vicreg_lab import VICReg
from vicreg_lab.baselines import TRAINED, embeddings_with_baselines
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.dense import cell_average, dense_probe, feature_maps
from vicreg_lab.lab.report import seed_summary
from vicreg_lab.models import build_encoder
from vicreg_lab.pretrained import cached_results
from vicreg_lab.probes import probe, recalibrate_batchnorm
from vicreg_lab.profiles import get_profile
from vicreg_lab.vicregl import VICRegL

CPU = get_profile("cpu")
SHAPE = CPU.shape
ARMS = {  # augmentation arm -> augment_params
    "no intensity augmentation": {"p_intensity": 0.0},
    "default intensity augmentation": {},
    "scanner-like intensity augmentation": {"p_intensity": 1.0, "gamma": 0.5, "bias_field": 0.5},
}
RECIPES = {  # recipe -> (training subjects, epochs)
    "notebook 05 live run": (512, round(CPU.max_epochs * CPU.n_subjects / 512 / 4)),
    "cpu profile recipe": (CPU.n_subjects, CPU.max_epochs),
}
N_TEST = 256


def _linear(z: np.ndarray, y, task: str) -> float:
    rows = probe(z, y, task=task, cv=5, seed=0)
    return next(r["mean"] for r in rows if r["probe"] == "linear" and r["metric"] != "mae")


def _scores(embedding: np.ndarray, factors: pd.DataFrame) -> dict:
    return {
        "age_r2": _linear(embedding, factors.age.to_numpy(), "regression"),
        "site_balanced_accuracy": _linear(embedding, factors.site.to_numpy(), "classification"),
    }


def augment_rows(seed: int, quick: bool) -> list[dict]:
    """Every arm x recipe at one seed, and the baselines, probed on the held-out subjects."""
    full = SyntheticCohort(CPU.n_subjects, shape=SHAPE, seed=0)
    test = full.held_out(N_TEST)
    factors = test.participants
    rows = []
    for recipe, (n_train, epochs) in RECIPES.items():
        train = full if n_train == len(full) else SyntheticCohort(n_train, shape=SHAPE, seed=0)
        for arm, params in ARMS.items():
            start = time.perf_counter()
            model = VICReg(
                encoder=CPU.encoder,
                expander=CPU.expander,
                batch_size=CPU.batch_size,
                max_epochs=1 if quick else epochs,
                augment_params=params,
                seed=seed,
                progress=False,
            ).fit(train)
            seconds = time.perf_counter() - start
            embeddings = embeddings_with_baselines(model, test, seed=seed)
            row = {"recipe": recipe, "arm": arm, "seed": seed, "n_train": n_train}
            row |= {"steps": len(model.history_["step"]), "train_seconds": round(seconds, 1)}
            rows.append(row | _scores(embeddings[TRAINED], factors))
            print(rows[-1], flush=True)
            del model
        train.clear_cache()
    for name, z in embeddings.items():  # the last run's baselines (they depend on the seed only)
        if name != TRAINED:
            row = {"recipe": "baseline", "arm": name, "seed": seed, "n_train": 0, "steps": 0}
            rows.append(row | {"train_seconds": 0.0} | _scores(z, factors))
    return rows


def vicregl_rows(seed: int, quick: bool) -> list[dict]:
    """VICReg, VICRegL and the random-init encoder at one seed: the dense probe of notebook 06."""
    n_subjects = min(CPU.n_subjects, 256)
    cohort = SyntheticCohort(n_subjects, shape=SHAPE, seed=0)
    volumes = cohort.generate(range(n_subjects))
    encoder_kwargs = {"output_stride": 8}
    torch.manual_seed(seed)
    random_init = build_encoder(CPU.encoder, **encoder_kwargs)
    map_shape = tuple(random_init.forward_features(volumes[:1]).shape[2:])
    grid = random_init.feature_grid
    tissues = cohort.tissue_maps(range(n_subjects), tissues=("gm", "mask"))
    targets = cell_average(tissues["gm"], map_shape, grid)
    inside = cell_average(tissues["mask"], map_shape, grid).mean(0) > 0.1
    del tissues
    common = dict(
        encoder=CPU.encoder,
        encoder_kwargs=encoder_kwargs,
        expander=CPU.expander,
        batch_size=CPU.batch_size,
        max_epochs=1 if quick else CPU.max_epochs,
        seed=seed,
        progress=False,
    )
    arms = {
        "VICReg": (VICReg, {}),
        "VICRegL": (VICRegL, {"alpha": 0.75, "local_expander": CPU.expander}),
    }
    maps, info = (
        {"random init": feature_maps(recalibrate_batchnorm(random_init, volumes), volumes)},
        {},
    )
    for name, (estimator, extra) in arms.items():
        start = time.perf_counter()
        model = estimator(**common, **extra).fit(cohort)
        info[name] = (len(model.history_["step"]), round(time.perf_counter() - start, 1))
        maps[name] = model.feature_maps(volumes)
    rows = []
    for name, m in maps.items():
        result = dense_probe(m, targets, mask=inside)
        steps, seconds = info.get(name, (0, 0.0))
        rows.append(
            {
                "arm": name,
                "seed": seed,
                "steps": steps,
                "train_seconds": seconds,
                "r2_overall": round(float(result["r2"]), 4),
                "r2_within_cell": round(float(result["r2_within_cell"]), 4),
            }
        )
        print(rows[-1], flush=True)
    return rows


def markdown_table(comparison: str) -> str:
    """The shipped table as markdown: mean (min to max) over the seeds, one row per arm."""
    runs, command = cached_results(f"{comparison}-cpu")
    keys = ["recipe", "arm"] if comparison == "augment" else ["arm"]
    metrics = (
        ["age_r2", "site_balanced_accuracy"]
        if comparison == "augment"
        else ["r2_overall", "r2_within_cell"]
    )
    summary = seed_summary(runs, metrics + ["train_seconds"], by=keys)
    lines = [f"`{command}`", "", "| " + " | ".join(keys + metrics) + " | seeds | train s |"]
    lines.append("|" + "---|" * len(keys) + "---:|" * (len(metrics) + 2))
    for group, row in summary.iterrows():
        group = group if isinstance(group, tuple) else (group,)
        cells = [
            f"{row[(m, 'mean')]:.3f} ({row[(m, 'min')]:.3f} to {row[(m, 'max')]:.3f})"
            for m in metrics
        ]
        seconds = f"{row[('train_seconds', 'mean')]:.0f}"
        lines.append(
            "| " + " | ".join([*group, *cells, str(int(row[("seeds", "n")])), seconds]) + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=["augment", "vicregl"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one epoch per run (smoke test)")
    parser.add_argument("--write", type=Path, help="CSV to (re)write after every seed")
    parser.add_argument("--table", action="store_true", help="print the shipped table and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.comparison))
        return
    if args.write is not None and not args.write.parent.is_dir():
        parser.error(f"--write: folder {args.write.parent} does not exist")
    command = shlex.join(["benchmarks/bench_live_runs.py", *(argv or sys.argv[1:])])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    rows_of = augment_rows if args.comparison == "augment" else vicregl_rows
    rows, start = [], time.perf_counter()
    for seed in args.seeds:
        rows += rows_of(seed, args.quick)
        if args.write is not None:
            with open(args.write, "w", encoding="utf-8") as f:
                f.write(f"# {command} | {time.perf_counter() - start:.0f} s\n")
                pd.DataFrame(rows).round(4).to_csv(f, index=False)
    table = pd.DataFrame(rows)
    keys = ["recipe", "arm"] if args.comparison == "augment" else ["arm"]
    print(table.drop(columns="seed").groupby(keys, sort=False).agg(["mean", "min", "max"]).round(3))


if __name__ == "__main__":
    main()
