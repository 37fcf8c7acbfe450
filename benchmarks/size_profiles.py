"""How long would each profile's runs take on a GPU? Sized by counting FLOPs (issue 15, §7).

No GPU was lent to the session that wrote this, so the ``gpu`` profile is sized by
arithmetic, not by a measurement: the forward FLOPs of the encoder on one volume
(``torch.utils.flop_counter``), times 2 views x 3 (forward + backward) per training volume,
times the volumes a run sees, divided by an assumed sustained throughput. The assumption is
printed with the table: a T4 (8.1 TFLOP/s fp32 peak, no native bfloat16) sustaining a
third of its fp32 peak on 3D convolutions. Expanders, the loss and augmentation are left
out (small beside a 3D encoder). Replace the estimate with ``benchmarks/bench_train.py``
on a real GPU when one is available.

Usage (the command behind the table in docs/benchmarks.md)::

    .venv/bin/python benchmarks/size_profiles.py
"""

from __future__ import annotations

import argparse

import torch

from vicreg_lab.lab.ablation import DEFAULT_CONFIGS, ablation_settings
from vicreg_lab.profiles import PROFILES, training_flops

T4_SUSTAINED = 8.1e12 / 3  # FLOP/s: a third of the T4's fp32 peak (the assumption)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"assumed sustained throughput: {T4_SUSTAINED / 1e12:.1f} TFLOP/s (T4, fp32 / 3)\n")
    print(
        "| profile | encoder @ shape | fwd GFLOP / volume | notebook 03 fit: steps "
        "| est. T4 min | notebook 04 sweep: runs x steps | est. T4 min |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.profiles:
        p = PROFILES[name]
        steps = p.n_subjects // p.batch_size * max(2, p.max_epochs)
        fit = training_flops(p.encoder, p.shape, steps * p.batch_size)
        try:
            a = ablation_settings(p)
            a_steps = a.n_subjects // a.batch_size * a.max_epochs
            sweep = len(DEFAULT_CONFIGS) * training_flops(
                a.encoder, a.shape, a_steps * a.batch_size
            )
            minutes = sweep / T4_SUSTAINED / 60
            sweep_cells = (f"{len(DEFAULT_CONFIGS)} x {a_steps}", f"{minutes:.1f}")
        except ValueError:
            sweep_cells = ("-", "-")
        print(
            f"| {name} | {p.encoder} @ {p.shape[0]}^3 "
            f"| {training_flops(p.encoder, p.shape, 1) / 6e9:.2f} | {steps} "
            f"| {fit / T4_SUSTAINED / 60:.1f} | {sweep_cells[0]} | {sweep_cells[1]} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
