"""Optimisation as in the official VICReg code: LARS, parameter groups, warm-up + cosine."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["LARS", "build_optimizer", "exclude_bias_and_norm", "lr_at_step", "param_groups"]


def exclude_bias_and_norm(p: torch.Tensor) -> bool:
    """True for one-dimensional parameters: biases and normalisation weights (official filter)."""
    return p.ndim == 1


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the official VICReg ``main_vicreg.py``.

    Each step adds ``weight_decay * p`` to the gradient, rescales it by the trust ratio
    ``eta * ||p|| / ||update||``, then takes an SGD step with momentum.

    Parameters
    ----------
    weight_decay_filter, lars_adaptation_filter : callable or None
        ``f(p) -> bool``; True exempts ``p`` from the weight decay / the trust ratio
        (default: biases and norms, as the official code). Kept as attributes, not in
        the parameter groups, so that ``state_dict()`` loads with ``weights_only=True``.
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        eta: float = 0.001,
        weight_decay_filter: Callable[[torch.Tensor], bool] | None = exclude_bias_and_norm,
        lars_adaptation_filter: Callable[[torch.Tensor], bool] | None = exclude_bias_and_norm,
    ):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))
        self.weight_decay_filter = weight_decay_filter
        self.lars_adaptation_filter = lars_adaptation_filter

    @staticmethod
    def _exempt(rule, p: torch.Tensor) -> bool:
        return rule is not None and bool(rule(p))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not self._exempt(self.weight_decay_filter, p):
                    dp = dp.add(p, alpha=group["weight_decay"])
                if not self._exempt(self.lars_adaptation_filter, p):
                    p_norm, dp_norm = torch.norm(p), torch.norm(dp)
                    trust = group["eta"] * p_norm / dp_norm
                    dp = dp.mul(torch.where((p_norm > 0) & (dp_norm > 0), trust, 1.0))
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"]).add_(dp)
                p.add_(mu, alpha=-group["lr"])


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
