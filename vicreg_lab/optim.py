"""Optimisation as in the official VICReg code: parameter groups, LARS or AdamW, warm-up + cosine.

LARS itself (the trust-ratio update) lives in :mod:`vicreg_lab.lars`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vicreg_lab.lars import LARS, exclude_bias_and_norm

__all__ = ["LARS", "build_optimizer", "exclude_bias_and_norm", "lr_at_step", "param_groups"]


def param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: weights with ``weight_decay``, biases and norms (1-D) without."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(
    name: str,
    modules: Sequence[nn.Module],
    batch_size: int,
    lr: float | None = None,
    weight_decay: float | None = None,
) -> tuple[torch.optim.Optimizer, float]:
    """``"lars"`` or ``"adamw"`` on :func:`param_groups`; returns ``(optimizer, base_lr)``.

    Defaults: LARS lr ``0.2 * batch_size / 256``, weight decay 1e-6 (official VICReg);
    AdamW lr 1e-3, weight decay 1e-4.
    """
    lars = name == "lars"
    if lr is None:
        lr = 0.2 * batch_size / 256 if lars else 1e-3
    if weight_decay is None:
        weight_decay = 1e-6 if lars else 1e-4
    groups = param_groups(modules, weight_decay)
    if lars:
        return LARS(groups, lr=lr), lr
    return torch.optim.AdamW(groups, lr=lr), lr


def lr_at_step(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up to ``base_lr``, then cosine decay to ``base_lr / 1000``.

    Examples
    --------
    >>> lr_at_step(0, 100, 10, 1.0), lr_at_step(10, 100, 10, 1.0)
    (0.1, 1.0)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    end_lr = base_lr * 0.001
    return end_lr + (base_lr - end_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
