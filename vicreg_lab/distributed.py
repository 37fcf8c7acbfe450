"""Several processes, one batch: the few pieces of ``torch.distributed`` that VICReg needs.

VICReg's variance and covariance are statistics over the batch. When ``torchrun`` starts
several processes, each holds a slice of the batch, so :func:`gather_with_grad` joins the
slices (with gradients flowing back to every process) before those statistics are taken,
as the official code does. :func:`init_distributed` joins the process group that
``torchrun`` describes; without it everything here is a no-op for one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["gather_with_grad", "init_distributed", "is_main", "rank", "world_size"]


def world_size() -> int:
    """Number of processes in the group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL when CUDA is available (and selects the GPU ``LOCAL_RANK``), else gloo.
    Without ``torchrun`` (no ``WORLD_SIZE`` > 1) it does nothing.

    Returns
    -------
    rank, world_size : int
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank(), size


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends every process the gradient of its own rows."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous()
        pieces = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, z)
        ctx.rows = slice(dist.get_rank() * z.shape[0], (dist.get_rank() + 1) * z.shape[0])
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows]


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    """Concatenate the ``(n, ...)`` tensors of all processes into ``(world_size * n, ...)``.

    Unlike ``dist.all_gather``, gradients flow back to every process: each process
    computes the loss on the full batch, so the gradient with respect to the rows of
    process ``r`` is the sum of every process's gradient for those rows. With one
    process, ``z`` is returned unchanged.
    """
    return _GatherWithGrad.apply(z) if world_size() > 1 else z
