"""The few pieces of ``torch.distributed`` that VICReg needs.

VICReg's variance and covariance are batch statistics, but under ``torchrun`` each
process holds a slice of the batch: :func:`gather_with_grad` joins the slices, with
gradients, as the official code does. With one process everything here is a no-op.
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
    """Join the process group that ``torchrun`` describes, if any; returns ``(rank, world_size)``.

    NCCL on GPU ``LOCAL_RANK`` when CUDA is available, else gloo. Without ``torchrun``
    (``WORLD_SIZE`` unset or 1) it does nothing.
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

    Unlike ``dist.all_gather``, gradients flow back: every process computes the loss on
    the full batch, so the gradient of process ``r``'s rows is the sum over processes.
    """
    return _GatherWithGrad.apply(z) if world_size() > 1 else z
