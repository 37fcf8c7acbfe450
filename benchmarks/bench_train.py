"""Training throughput (volumes/s, two views per volume) and peak memory of VICReg.

Runs a few training steps of :class:`vicreg_lab.VICReg` on random volumes and reports
the median step throughput, with the batched (on-device) augmentation and with the
TorchIO per-sample augmentation, and their ratio. Peak memory: ``ru_maxrss`` of this
process on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

Examples
--------
CPU, the ``cpu`` profile (small CNN, 48^3, batch 32)::

    .venv/bin/python benchmarks/bench_train.py

GPU, ResNet-18 at 128^3 with bf16 autocast and GPU augmentation::

    python benchmarks/bench_train.py --device cuda --encoder resnet18_3d --shape 128 \\
        --batch-size 32 --expander 2048-2048-2048 --precision bf16 --steps 30
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics

import torch

from vicreg_lab.train import VICReg


class _Volumes(torch.utils.data.Dataset):
    def __init__(self, n: int, shape: tuple[int, int, int]):
        self.volumes = torch.rand(n, 1, *shape)

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        return self.volumes[i]


def measure(args, augmentation: str) -> dict:
    """Median volumes/s over the steps after the warm-up, and peak memory."""
    shape = (args.shape,) * 3
    data = _Volumes(args.batch_size * (args.steps + args.warmup), shape)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = VICReg(
        encoder=args.encoder,
        expander=args.expander,
        batch_size=args.batch_size,
        max_epochs=1,
        augmentation=augmentation,
        device=args.device,
        precision=args.precision,
        num_workers=args.workers if augmentation == "torchio" else 0,
        progress=False,
        warmup_epochs=0.0,
    ).fit(data)
    rates = [r["volumes_per_s"] for r in model.history_["step"][args.warmup :]]
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"volumes_per_s": statistics.median(rates), "peak_mib": peak}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="small_cnn")
    parser.add_argument("--expander", default="512-512")
    parser.add_argument("--shape", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (torchio)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-torchio", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = ["batched"] + ([] if args.skip_torchio else ["torchio"])
    results = {mode: measure(args, mode) for mode in modes}
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {device or 'cpu'}, {torch.get_num_threads()} threads")
    print(f"{args.encoder}, {args.shape}^3, batch {args.batch_size}, expander {args.expander}\n")
    print("| augmentation | volumes/s (2 views each) | peak memory (MiB) |")
    print("|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['volumes_per_s']:.1f} | {r['peak_mib']:.0f} |")
    if "torchio" in results:
        ratio = results["batched"]["volumes_per_s"] / results["torchio"]["volumes_per_s"]
        print(f"\nbatched / torchio throughput: {ratio:.1f}x")


if __name__ == "__main__":
    main()
