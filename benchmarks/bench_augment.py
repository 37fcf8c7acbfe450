"""Volumes per second: TorchIO per-sample views (SimCLRTransform) vs BatchedAugment.

Both pipelines use the default strengths. The TorchIO pipeline always runs on
the CPU, one volume at a time (as in a DataLoader worker); the batched one runs
on ``--device`` in batches of ``--batch-size``. Each timing is the best of
``--repeats`` runs, the two pipelines taking turns. Prints a markdown table.

Examples
--------
    python benchmarks/bench_augment.py --device cpu --n 32 --threads 2
    python benchmarks/bench_augment.py --device cuda --n 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from vicreg_lab import BatchedAugment, SimCLRTransform

CASES = [(128, 64), (64, 48)]  # source side -> view side


def brains(n: int, side: int) -> torch.Tensor:
    """``n`` copies of the MNI152 template (nilearn, offline) at side^3, lightly jittered."""
    from nilearn.datasets import load_mni152_template

    data = load_mni152_template(resolution=2).get_fdata()
    volume = torch.from_numpy(np.asarray(data, dtype=np.float32))[None, None]
    volume = F.interpolate(volume, size=(side,) * 3, mode="trilinear", align_corners=False)
    noise = 0.01 * torch.randn(n, 1, side, side, side, generator=torch.Generator().manual_seed(0))
    return volume + noise


def best_rates(runs, n: int, repeats: int, sync) -> list[float]:
    """Volumes per second of each run's fastest repeat; the runs take turns, so that
    a busy machine slows them alike."""
    best = [float("inf")] * len(runs)
    for repeat in range(repeats + 1):  # the first round warms up
        for i, run in enumerate(runs):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if repeat:
                best[i] = min(best[i], time.perf_counter() - start)
    return [n / t for t in best]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=32, help="volumes per timed run")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of BatchedAugment")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}")
    print(f"{args.n} volumes per run, batches of {args.batch_size}, best of {args.repeats}\n")
    print(f"| source -> view | TorchIO (cpu) vol/s | batched ({device.type}) vol/s | ratio |")
    print("|---|---:|---:|---:|")
    for side, out in CASES:
        x = brains(args.n, side)
        torchio = SimCLRTransform(input_size=out, seed=0)
        batched = BatchedAugment(input_size=out, seed=0)
        xd = x.to(device)

        def run_torchio(x=x, torchio=torchio):
            for volume in x:
                torchio(volume)

        def run_batched(xd=xd, batched=batched):
            for batch in xd.split(args.batch_size):
                batched(batch)

        rate_tio, rate_batched = best_rates([run_torchio, run_batched], args.n, args.repeats, sync)
        ratio = rate_batched / rate_tio
        print(f"| {side}³ -> {out}³ | {rate_tio:.1f} | {rate_batched:.1f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
