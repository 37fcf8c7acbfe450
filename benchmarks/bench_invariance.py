"""Learned invariance against ComBat on unseen scanners (issue 19, item 1).

Two encoders are trained per seed with the ``cpu`` profile's recipe (small_cnn, 1024 subjects
of ``SyntheticCohort(seed=0)`` at 48^3, 384 steps; what ``make demo`` trains); they differ in
one thing, the intensity augmentations:

- ``cpu recipe``: the profile's views (no gamma / bias field: ``p_intensity=0``);
- ``scanner-like views``: every view gets a gamma and a bias field as wide as the cohort's
  scanners differ (:data:`SCANNER_LIKE`: log-gamma in +-0.3, bias field 0.3, blur up to 2
  voxels), so the loss asks the encoder to ignore the scanner's look.

Both are embedded on cohorts of new subjects *and new scanners* (``seed=1000 + seed``, as in
``bench_confound.py``), without and with site-age confounding, and probed for age with
shuffled folds and leave-one-site-out (:func:`vicreg_lab.lab.confounds.confound_table`), each
also after ComBat over the sites; a linear site probe (balanced accuracy, shuffled folds)
measures how much scanner each representation still carries.

Usage (the command behind the table in docs/confounds.md)::

    .venv/bin/python benchmarks/bench_invariance.py --seeds 0 1 2 \\
        --write vicreg_lab/cached/invariance-cpu.csv
    .venv/bin/python benchmarks/bench_invariance.py --seeds 0 --quick   # smoke test
    .venv/bin/python benchmarks/bench_invariance.py --table vicreg_lab/cached/invariance-cpu.csv
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from vicreg_lab import VICReg
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab.confounds import confound_table
from vicreg_lab.probes import probe
from vicreg_lab.profiles import get_profile

CPU = get_profile("cpu")
# as wide as the cohort's scanners differ (vicreg_lab.data.effects: site_gamma 0.75-1.35,
# site_bias up to 0.3, site_blur up to 2 voxels)
SCANNER_LIKE = {"p_intensity": 1.0, "gamma": 0.3, "bias_field": 0.3, "blur_sigma": 2.0}
ARMS = {"cpu recipe": {}, "scanner-like views": SCANNER_LIKE}
COLUMNS = ["embedding", "protocol", "metric", "value", "chance", "confound", "seed"]


def rows_for_seed(seed: int, n: int, confounds, quick: bool) -> pd.DataFrame:
    """Train both arms at one seed; probe them on new cohorts at every confound."""
    train = SyntheticCohort(CPU.n_subjects, shape=CPU.shape, seed=0)
    models = {}
    for arm, changed in ARMS.items():
        started = time.perf_counter()
        models[arm] = VICReg(
            encoder=CPU.encoder,
            expander=CPU.expander,
            batch_size=CPU.batch_size,
            max_epochs=1 if quick else CPU.max_epochs,
            augment_params={**dict(CPU.augment), **changed},
            seed=seed,
            progress=False,
        ).fit(train)
        print(f"seed {seed} {arm}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    frames = []
    for confound in confounds:
        cohort = SyntheticCohort(n, shape=CPU.shape, seed=1000 + seed, site_age_confound=confound)
        embeddings = {arm: model.transform(cohort) for arm, model in models.items()}
        table = confound_table(embeddings, cohort.participants, seed=seed)
        sites = cohort.participants["site"].to_numpy()
        for arm, z in embeddings.items():
            rows = probe(z, sites, task="classification", cv=5, seed=seed)
            value = next(r for r in rows if r["probe"] == "linear")
            site = dict(embedding=arm, protocol="shuffled folds", metric="site_bacc")
            site.update(value=value["mean"], chance=value["chance"])
            table = pd.concat([table, pd.DataFrame([site])], ignore_index=True)
        frames.append(table.assign(confound=confound, seed=seed))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def markdown_table(path: str) -> str:
    """Mean (sd) over seeds: age MAE under both protocols and the site probe, per confound."""
    from vicreg_lab.pretrained import cached_results

    runs, command = cached_results("invariance-cpu", path=path)
    lines = [f"`{command}`"]
    cells = [
        ("mae", "shuffled folds", "MAE, shuffled folds"),
        ("mae", "leave one site out", "MAE, unseen site"),
        ("site_bacc", "shuffled folds", "site bal. acc."),
    ]
    for confound, part in runs.groupby("confound"):
        lines += [
            f"\nsite_age_confound = {confound}: mean (sd) over {part['seed'].nunique()} seeds\n",
            "| embedding | " + " | ".join(c[2] for c in cells) + " |",
            "|---|" + "---:|" * len(cells),
        ]
        chance = [
            part[(part.metric == m) & (part.protocol == p)].chance.mean() for m, p, _ in cells
        ]
        lines.append("| chance | " + " | ".join(f"{c:.2f}" for c in chance) + " |")
        for embedding, rows in part.groupby("embedding", sort=False):
            out = []
            for metric, protocol, _ in cells:
                v = rows[(rows.metric == metric) & (rows.protocol == protocol)].value
                out.append(f"{v.mean():.2f} ({v.std(ddof=1):.2f})" if len(v) else "")
            lines.append(f"| {embedding} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=256, help="subjects per test cohort")
    parser.add_argument("--confounds", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--quick", action="store_true", help="1 epoch per run (smoke test)")
    parser.add_argument("--write", help="write the rows here, after a command line")
    parser.add_argument("--table", help="print the markdown table of a written file, and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return
    started, frames = time.strftime("%Y-%m-%d %H:%M"), []
    for seed in args.seeds:
        frames.append(rows_for_seed(seed, args.n, args.confounds, args.quick))
        frame = pd.concat(frames, ignore_index=True)
        print(frame[frame.seed == seed].to_string(index=False), flush=True)
        if args.write:  # rewritten after every seed, so a stopped run keeps the seeds it finished
            command = " ".join(["benchmarks/bench_invariance.py", *sys.argv[1:]])
            with open(args.write, "w", encoding="utf-8") as f:
                f.write(f"# {command} | {started} to {time.strftime('%Y-%m-%d %H:%M')}\n")
                frame.round(4).to_csv(f, index=False)


if __name__ == "__main__":
    main()
