"""How strong should the views be? The view/subject distance ratio and a probe, per crop scale.

For each crop scale and intensity preset this prints a markdown row with the
between-subject / within-subject distance ratio of :func:`vicreg_lab.lab.view_distance_ratio`
on the synthetic cohort (seed 0, 128 subjects, at 32^3 and 48^3), and, with
``--steps > 0``, the linear age R^2 of a VICReg encoder trained with those views
(small_cnn, expander 512-512, 256 subjects at 32^3, batch 32, AdamW) on 256 HELD-OUT
subjects of the same scanners (5-fold ridge), one row per training seed.

Usage (the commands behind the tables in docs/cohort.md)::

    .venv/bin/python benchmarks/bench_views.py --steps 300 --seeds 0 1
    .venv/bin/python benchmarks/bench_views.py --steps 0          # ratios only, seconds
    .venv/bin/python benchmarks/bench_views.py --crop 0.85 --intensity default \
        --view-seeds 0 1 2 --n 128 64                              # how much the ratio moves

With several ``--view-seeds`` (draws of the views and of the pairs of subjects) a ratio cell
reads ``mean (min-max)``; with several ``--n`` each count of subjects gets its own columns.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vicreg_lab.augment import BatchedAugment
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab import view_distance_ratio

INTENSITY = {
    "default": {},  # gamma (-0.15, 0.15), bias field 0.15
    "strong": {"gamma": 0.3, "bias_field": 0.3},  # the defaults before cohort v2
}


def ratios(crop_lows, presets, sizes=(32, 48), n=128, view_seeds=(0,)) -> dict:
    out = {}
    for size in sizes:
        volumes = SyntheticCohort(n, shape=(size,) * 3, seed=0).generate(range(n))
        for preset in presets:
            for low in crop_lows:
                augment = BatchedAugment(size, crop_scale=(low, 1.0), **INTENSITY[preset])
                out[(preset, low, size)] = [
                    view_distance_ratio(volumes, augment, seed=s).ratio for s in view_seeds
                ]
    return out


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def probe_after_training(low: float, preset: str, steps: int, seed: int) -> tuple[float, float]:
    from vicreg_lab import VICReg
    from vicreg_lab.probes import probe

    train = SyntheticCohort(256, shape=(32, 32, 32), seed=0)
    test = train.held_out(256)
    epochs = max(1, round(steps * 32 / len(train)))
    params = {"crop_scale": (low, 1.0), **INTENSITY[preset]}
    start = time.perf_counter()
    model = VICReg(
        batch_size=32, max_epochs=epochs, augment_params=params, seed=seed, progress=False
    ).fit(train)
    seconds = time.perf_counter() - start
    z = model.transform(test.generate(range(len(test))))
    rows = probe(z, test.participants.age.to_numpy(), cv=5, seed=0)
    r2 = next(r["mean"] for r in rows if r["probe"] == "linear" and r["metric"] == "r2")
    return r2, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=float, nargs="+", default=[0.4, 0.6, 0.8, 0.9, 1.0])
    parser.add_argument("--intensity", nargs="+", default=list(INTENSITY), choices=INTENSITY)
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: ratios only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--view-seeds", type=int, nargs="+", default=[0], help="seeds of the views")
    parser.add_argument(
        "--n", type=int, nargs="+", default=[128], help="subjects (first n of seed 0)"
    )
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    tables = {n: ratios(args.crop, args.intensity, n=n, view_seeds=args.view_seeds) for n in args.n}
    suffix = (lambda n: f", n {n}") if len(args.n) > 1 else (lambda n: "")
    header = "| intensity | crop_scale |"
    header += "".join(f" ratio {size}^3{suffix(n)} |" for n in args.n for size in (32, 48))
    if args.steps:
        header += f" age R^2 held-out ({args.steps} steps, seeds {args.seeds}) | train s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for preset in args.intensity:
        for low in args.crop:
            row = f"| {preset} | ({low}, 1.0) |"
            row += "".join(
                f" {cell(t[(preset, low, size)])} |" for t in tables.values() for size in (32, 48)
            )
            if args.steps:
                runs = [probe_after_training(low, preset, args.steps, s) for s in args.seeds]
                r2 = [r for r, _ in runs]
                row += f" {' / '.join(f'{r:.2f}' for r in r2)} (mean {np.mean(r2):.2f}) |"
                row += f" {np.mean([s for _, s in runs]):.0f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
