"""LARS (You et al. 2017), the optimizer of the official VICReg code (see :mod:`vicreg_lab.optim`).

A reader of the VICReg math can skip this module: it is SGD with momentum on a gradient
rescaled, layer by layer, by the trust ratio ``eta * ||p|| / ||update||``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LARS", "exclude_bias_and_norm"]


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
