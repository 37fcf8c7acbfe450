"""Where a run executes: the device, the precision, and the pieces of ``torch.distributed``.

VICReg's variance and covariance are batch statistics, but under ``torchrun`` each
process holds a slice of the batch: :func:`gather_with_grad` joins the slices, with
gradients, as the official code does. With one process everything here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "autocast_dtype",
    "convert_sync_batchnorm",
    "gather_with_grad",
    "init_distributed",
    "is_main",
    "rank",
    "resolve_device",
    "use_sync_batchnorm",
    "world_size",
    "wrap_ddp",
]


def resolve_device(device: str) -> torch.device:
    """``"auto"``: this rank's CUDA device when there is one (set by torchrun), else the CPU."""
    if device != "auto":
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, or None for float32. ``"auto"``: bf16 on GPUs with native bfloat16
    only (Ampere and later; on a T4 emulated bf16 is slower than float32)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else None
    return None


def use_sync_batchnorm(sync_batchnorm: bool | None, device: torch.device) -> bool:
    """Whether BatchNorm becomes SyncBatchNorm under torch.distributed (None: on GPUs only,
    as the official code; SyncBatchNorm does not run on CPU)."""
    if sync_batchnorm is None:
        return device.type == "cuda"
    if sync_batchnorm and device.type == "cpu":
        raise ValueError(
            "sync_batchnorm=True needs GPUs: PyTorch's SyncBatchNorm does not run on "
            "CPU; leave sync_batchnorm=None (per-process BatchNorm on CPU) or False"
        )
    return bool(sync_batchnorm)


def convert_sync_batchnorm(model, names) -> None:
    """BatchNorm -> SyncBatchNorm in ``model``'s networks ``names``; the converted layers take
    over the same parameter tensors, so the optimizer built on them keeps training them."""
    for name in names:
        setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))


def wrap_ddp(modules: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """Each module in DistributedDataParallel (gradients averaged across processes)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return {name: DDP(module, device_ids=ids) for name, module in modules.items()}


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
