"""VICReg beside its peers, and the expander's width, on one harness (issue 19, item 3).

Every arm trains with the ``cpu`` profile's recipe (small_cnn, 1024 subjects of
``SyntheticCohort(seed=0)`` at 48^3, batch 32, 12 epochs = 384 steps, the profile's
augmentations; what ``make demo`` trains) and differs from the first in one thing:

- ``VICReg, expander 512-512``: the cpu recipe itself;
- ``VICReg, no expander`` / ``128-128`` / ``2048-2048``: the expander's width (the loss sees the
  representation itself when there is none);
- ``Barlow Twins`` (``lambd=0.0051``, the paper's) and ``SimCLR (InfoNCE)`` (``temperature=0.1``):
  the loss, through :mod:`vicreg_lab.peers`.

Each run is probed on the same 256 held-out subjects (subjects 1024-1279, those of notebook
05): linear age R^2 and site balanced accuracy (5 folds, fold seed 0), and RankMe of the
representation (``collapse_report``). The random-init encoder (BatchNorm recalibrated) and the
raw voxels are rows too. Rows are appended to the ``--write`` file as each run ends, after a
``# COMMAND | started`` line.

Usage (the command behind the table in docs/learning.md and notebook 04)::

    .venv/bin/python benchmarks/bench_peers.py --seeds 0 1 2 --write vicreg_lab/cached/peers-cpu.csv
    .venv/bin/python benchmarks/bench_peers.py --seeds 0 --quick   # smoke test (1 epoch)
    .venv/bin/python benchmarks/bench_peers.py --table vicreg_lab/cached/peers-cpu.csv
    # a run stopped after some seeds goes on with the others, its command added to line 1:
    .venv/bin/python benchmarks/bench_peers.py --seeds 2 --append \\
        --write vicreg_lab/cached/peers-cpu.csv
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from vicreg_lab import VICReg
from vicreg_lab.baselines import RANDOM_RECAL, RAW, TRAINED, embeddings_with_baselines
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.diagnostics import collapse_report
from vicreg_lab.peers import BarlowTwins, SimCLR
from vicreg_lab.probes import probe
from vicreg_lab.profiles import get_profile

CPU = get_profile("cpu")
N_TEST = 256
ARMS = {  # name -> (estimator, changed settings)
    "VICReg, expander 512-512": (VICReg, {}),
    "VICReg, no expander": (VICReg, {"expander": "none"}),
    "VICReg, expander 128-128": (VICReg, {"expander": "128-128"}),
    "VICReg, expander 2048-2048": (VICReg, {"expander": "2048-2048"}),
    "Barlow Twins, expander 512-512": (BarlowTwins, {"lambd": 0.0051}),
    "SimCLR (InfoNCE), expander 512-512": (SimCLR, {"temperature": 0.1}),
}
COLUMNS = ["arm", "seed", "steps", "train_seconds", "age_r2", "site_balanced_accuracy"]
COLUMNS += ["rankme", "final_loss"]


def _linear(z: np.ndarray, y, task: str) -> float:
    rows = probe(z, y, task=task, cv=5, seed=0)
    return next(r["mean"] for r in rows if r["probe"] == "linear" and r["metric"] != "mae")


def _row(arm: str, seed: int, z: np.ndarray, factors, steps=0, seconds=0.0, loss=np.nan) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "age_r2": round(_linear(z, factors.age.to_numpy(), "regression"), 4),
        "site_balanced_accuracy": round(_linear(z, factors.site.to_numpy(), "classification"), 4),
        "rankme": round(float(collapse_report(z).rankme), 2),
        "final_loss": round(float(loss), 4),
    }


def rows_for_seed(seed: int, train, test, quick: bool):
    """Every arm at one seed, then the baselines; yields each row as its run ends."""
    recipe = dict(
        encoder=CPU.encoder,
        expander=CPU.expander,
        batch_size=CPU.batch_size,
        max_epochs=1 if quick else CPU.max_epochs,
        augment_params=dict(CPU.augment),
        seed=seed,
        progress=False,
    )
    factors = test.participants
    embeddings = None
    for arm, (estimator, changed) in ARMS.items():
        start = time.perf_counter()
        model = estimator(**{**recipe, **changed}).fit(train)
        seconds = time.perf_counter() - start
        embeddings = embeddings_with_baselines(model, test, seed=seed)
        loss = model.history_["epoch"][-1]["loss"]
        steps = len(model.history_["step"])
        yield _row(arm, seed, embeddings[TRAINED], factors, steps, seconds, loss)
    for name in (RANDOM_RECAL, RAW):  # they depend on the seed only
        yield _row(name, seed, embeddings[name], factors)


def markdown_table(path: str) -> str:
    """Mean (sd) over seeds per arm from a written file, and the computed RankMe sentence."""
    from vicreg_lab.lab.objectives import rankme_against_probe
    from vicreg_lab.pretrained import cached_results

    runs, command = cached_results("peers-cpu", path=path)
    columns = ["age_r2", "site_balanced_accuracy", "rankme"]
    lines = [
        f"`{command}`\n",
        "| arm | seeds | age R^2 | site bal. acc. | RankMe |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm, rows in runs.groupby("arm", sort=False):
        cells = [f"{rows[c].mean():.3f} ({rows[c].std(ddof=1):.3f})" for c in columns]
        lines.append(f"| {arm} | {len(rows)} | " + " | ".join(cells) + " |")
    trained = runs[runs["steps"] > 0].groupby("arm", sort=False)[columns].mean().reset_index()
    lines.append("\n" + rankme_against_probe(trained, rankme="rankme"))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="1 epoch per run (smoke test)")
    parser.add_argument("--write", help="append the rows here, after a command line")
    parser.add_argument(
        "--append", action="store_true", help="add the rows to an existing --write file"
    )
    parser.add_argument("--table", help="print the markdown table of a written file, and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return
    full = SyntheticCohort(CPU.n_subjects, shape=CPU.shape, seed=0)
    test = full.held_out(N_TEST)
    command = " ".join(["benchmarks/bench_peers.py", *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M")
    if args.write and args.append:
        with open(args.write, encoding="utf-8") as f:
            first, rest = f.readline(), f.read()
        if not rest.startswith(",".join(COLUMNS)):
            raise SystemExit(f"--append: {args.write} is not a table this script wrote")
        with open(args.write, "w", encoding="utf-8") as f:  # the new command joins line 1
            f.write(f"{first.rstrip()}; then {command} | started {started}\n{rest}")
    elif args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(f"# {command} | started {started}\n")
            f.write(",".join(COLUMNS) + "\n")
    for seed in args.seeds:
        for row in rows_for_seed(seed, full, test, args.quick):
            print(row, flush=True)
            if args.write:
                with open(args.write, "a", encoding="utf-8") as f:
                    pd.DataFrame([row], columns=COLUMNS).to_csv(f, header=False, index=False)


if __name__ == "__main__":
    main()
