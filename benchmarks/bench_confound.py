"""Site-age confounding: does a probe "learn age" through the scanner? (issue 19)

Cohorts of new subjects (``SyntheticCohort(site_age_confound=c)``; at c > 0 each site scans
its own part of the age range) are embedded by the shipped encoder and by every baseline of
:func:`vicreg_lab.baselines.embeddings_with_baselines`; a linear age probe is scored twice:

- **shuffled folds** (5-fold ``KFold``), the usual protocol: test subjects come from scanners
  the probe has seen, so reading the *site* predicts age wherever site and age go together;
- **leave one site out** (``probe_table(groups="site")``): every test subject comes from a
  scanner the probe never saw. Only age read from the anatomy transfers.

Each embedding is also probed after ComBat (:func:`vicreg_lab.lab.confounds.combat`) over the
sites, without and with the ages as a covariate to keep (see ``confound_table``).

Controls: the intensity histogram reads each scanner's contrast and the brain's overall tissue
proportions, not where anything is; 128 random numbers per subject carry nothing at all, so
any age read from them after a harmonization came from the labels it was given.

Usage (the command behind the table in docs/learning.md)::

    .venv/bin/python benchmarks/bench_confound.py --n 256 --seeds 0 1 2 --markdown \\
        --write vicreg_lab/cached/confound-cpu.csv

Prints one row per (confound, seed, embedding, protocol) and, with ``--markdown``, a
table of means over seeds (sd in brackets).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from vicreg_lab.baselines import RANDOM_EVAL, embeddings_with_baselines
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab.confounds import PROTOCOLS, confound_table
from vicreg_lab.pretrained import load_pretrained

NOISE = "random numbers (128)"


def measure(n: int, confounds, seeds, name: str = "synthetic-small") -> pd.DataFrame:
    """Linear age probes (R^2, MAE and its chance) per confound, seed, embedding, protocol."""
    model = load_pretrained(name)
    shape = tuple(model.pretrained_info_["shape"])
    frames = []
    for confound in confounds:
        for seed in seeds:
            started = time.perf_counter()
            # a cohort of new subjects and scanners (another seed than the encoder's)
            cohort = SyntheticCohort(n, shape=shape, seed=1000 + seed, site_age_confound=confound)
            embeddings = embeddings_with_baselines(model, cohort, seed=seed)
            del embeddings[RANDOM_EVAL]  # the recalibrated random encoder is the fairer one
            # the control that carries nothing: any age read from it came from the labels
            embeddings[NOISE] = np.random.default_rng(seed).normal(size=(n, 128))
            table = confound_table(embeddings, cohort.participants, seed=seed)
            frames.append(table.assign(confound=confound, seed=seed))
            seconds = time.perf_counter() - started
            print(f"confound {confound} seed {seed}: {seconds:.0f} s", flush=True)
    return pd.concat(frames, ignore_index=True)


def markdown(frame: pd.DataFrame) -> str:
    """Age R^2 (shuffled folds) and MAE in years (chance in brackets) under both protocols.

    R^2 on an unseen site is left out: it is computed within the held-out site, whose age
    band is narrow under a confound, so it is negative for every embedding and says more
    about the band than about the probe; the MAE against its chance level does not.
    """
    lines = []
    for confound, part in frame.groupby("confound"):
        lines += [
            f"\nsite_age_confound = {confound}: linear age probe, mean (sd) over "
            f"{part['seed'].nunique()} cohorts of {{n}} new subjects\n",
            "| embedding | R^2, shuffled folds | MAE, shuffled folds (chance) "
            "| MAE, unseen site (chance) |",
            "|---|---:|---:|---:|",
        ]
        for embedding, rows in part.groupby("embedding", sort=False):
            cells = []
            for metric, protocol in [("r2", "shuffled folds"), *(("mae", p) for p in PROTOCOLS)]:
                values = rows[(rows.metric == metric) & (rows.protocol == protocol)]
                cell = f"{values.value.mean():.2f} ({values.value.std(ddof=1):.2f})"
                if metric == "mae":
                    cell += f" ({values.chance.mean():.1f})"
                cells.append(cell)
            lines.append(f"| {embedding} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="subjects per cohort")
    parser.add_argument("--confounds", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--write", help="write every row here, after a '# COMMAND | SECONDS' line (cached_results)"
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    frame = measure(args.n, args.confounds, args.seeds)
    if args.write:
        command = " ".join(["benchmarks/bench_confound.py", *sys.argv[1:]])
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(f"# {command} | {time.perf_counter() - started:.0f} s\n")
            frame.round(4).to_csv(f, index=False)
    print(frame.to_string(index=False))
    if args.markdown:
        print(markdown(frame).replace("{n}", str(args.n)))


if __name__ == "__main__":
    main()
