"""Benchmark the VICReg covariance term: N x N Gram form against the D x D matrix.

For every shape (N, D) the script times forward + backward of

* ``gram``: :func:`vicreg_lab.vicreg_loss`, which picks the cheaper form by shape
  (the N x N Gram matrix when N < D, the D x D matrix otherwise);
* ``dxd``: the same loss with the D x D covariance matrix forced (the textbook
  computation, as in the official implementation),

and prints a markdown table: median time, peak memory, and their ratios
(``dxd / gram``: above 1 means the Gram path is faster or smaller). When
N >= D both rows run the same D x D code, so the ratios should be about 1.

How memory is measured
----------------------
Every (shape, form) runs in a fresh Python subprocess, so that one case cannot
inherit the memory high-water mark of another.

* CPU: the peak resident set size (``ru_maxrss``) reached during one forward +
  backward, minus the peak reached before it (after importing torch, running a
  tiny warm-up of the same code path and allocating the inputs). PyTorch's CPU
  allocator returns large blocks to the OS, so this is the extra memory the
  step really needs, including the gradients of the inputs; it is rounded to
  pages and includes some allocator slack, so small values are noisy.
* CUDA: ``torch.cuda.max_memory_allocated()`` during the step minus the memory
  allocated before it (tensor memory only, no allocator cache).

Times are the median over ``--repeats`` runs after two warm-ups, synchronising
the GPU around each run on CUDA. On a shared machine, re-run before quoting.
The default ``--threads 1`` is deliberate: on a busy machine with few cores,
several OpenMP threads wait for each other at every barrier, and a 1 ms
operation can take 30 ms, which drowns the small (Gram) cases in noise.

Examples
--------
::

    python benchmarks/bench_loss.py --repeats 5
    python benchmarks/bench_loss.py --device cuda --shapes 256x8192,512x16384
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = "256x2048,64x8192,256x8192,2048x512"
FORMS = ("gram", "dxd")
WARMUP = 2  # untimed runs before the timed ones (after the memory run)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.worker:
        result = _measure(args.n, args.d, args.form, args.repeats, args.threads, args.device)
        print(json.dumps(result))
        return 0

    print(
        f"device={args.device} threads={args.threads} repeats={args.repeats} "
        "(forward + backward of the full VICReg loss, float32)\n"
    )
    print(
        "| N | D | Gram path: time (ms) | D x D: time (ms) | time ratio "
        "| Gram path: peak memory (MB) | D x D: peak memory (MB) | memory ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, d in _shapes(args.shapes):
        gram, dxd = (_run_worker(n, d, form, args) for form in FORMS)
        print(
            f"| {n} | {d} | {gram['time_ms']:.1f} | {dxd['time_ms']:.1f} "
            f"| {dxd['time_ms'] / gram['time_ms']:.1f}x "
            f"| {gram['peak_mb']:.1f} | {dxd['peak_mb']:.1f} "
            f"| {_ratio(dxd['peak_mb'], gram['peak_mb'])} |",
            flush=True,
        )
    return 0


# ----------------------------------------------------------------------------- parent


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, see the docstring)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help=f"NxD,NxD,... (default {DEFAULT_SHAPES})"
    )
    # one case in this process (used by the parent through a subprocess)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--form", choices=FORMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error(f"--repeats and --threads must be >= 1, got {args.repeats}, {args.threads}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but torch.cuda.is_available() is False")
    return args


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in item.split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 2 for s in shapes):
        raise SystemExit(f"--shapes must look like 256x2048,64x8192 (N, D >= 2), got {text!r}")
    return shapes


def _run_worker(n: int, d: int, form: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", f"--n={n}", f"--d={d}", f"--form={form}"]
    command += [f"--repeats={args.repeats}", f"--threads={args.threads}", f"--device={args.device}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case N={n} D={d} {form} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(reference: float, ours: float) -> str:
    return f"{reference / ours:.1f}x" if ours > 0 else "n/a"


# ----------------------------------------------------------------------------- worker


def _measure(n: int, d: int, form: str, repeats: int, threads: int, device: str) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    step = _step_function(form)

    # warm-up on a tiny problem: loads kernels and libraries before the baseline
    tiny = [torch.randn(8, 16, device=device, requires_grad=True) for _ in range(2)]
    for _ in range(10):
        step(*tiny)

    gen = torch.Generator(device=device).manual_seed(0)
    z1 = torch.randn(n, d, device=device, generator=gen, requires_grad=True)
    z2 = (z1.detach() + 0.1 * torch.randn(n, d, device=device, generator=gen)).requires_grad_()

    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(z1, z2)
        torch.cuda.synchronize()
        peak_bytes = torch.cuda.max_memory_allocated() - before
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        step(z1, z2)
        peak_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024

    times = []
    for _ in range(WARMUP + repeats):
        z1.grad = z2.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(z1, z2)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"time_ms": 1e3 * statistics.median(times[WARMUP:]), "peak_mb": peak_bytes / 2**20}


def _step_function(form: str):
    """Forward + backward of the VICReg loss with the given covariance form."""
    from vicreg_lab.losses import _loss_terms, _to_loss_dtype, check_embeddings, vicreg_loss

    def gram_step(z1, z2):
        vicreg_loss(z1, z2)["loss"].backward()

    def dxd_step(z1, z2):  # vicreg_loss, with the D x D form forced
        check_embeddings(z1, z2, check_finite=True)
        z1, z2 = _to_loss_dtype(z1, z2)
        invariance, variance, covariance = _loss_terms(z1, z2, gamma=1.0, eps=1e-4, cov_form="dxd")
        (25.0 * invariance + 25.0 * variance + 1.0 * covariance).backward()

    return gram_step if form == "gram" else dxd_step


if __name__ == "__main__":
    sys.exit(main())
