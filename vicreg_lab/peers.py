"""VICReg's peers on the same harness: Barlow Twins and SimCLR's InfoNCE.

Each loss takes the two views' embeddings ``z1, z2`` (N, D), like :func:`vicreg_lab.vicreg_loss`,
and returns a dict with ``"loss"``; each estimator is :class:`vicreg_lab.VICReg` (same encoder,
expander, augmentations, optimizer, checkpoints, per-epoch collapse diagnostics) with only the
criterion changed, so that runs differ by the loss and nothing else.

- **Barlow Twins** (Zbontar et al. 2021): standardise each dimension over the batch, form the
  cross-correlation matrix ``C = z1^T z2 / N`` (D x D), and push it to the identity:
  ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``. Like VICReg, no negatives; the
  standardisation does what VICReg's variance term does, the off-diagonal term what its
  covariance term does, across the two views instead of within each.
- **InfoNCE** (SimCLR, Chen et al. 2020): cosine similarities of all 2N embeddings; each view
  must pick its partner out of the 2N - 2 others (cross-entropy at ``temperature``).
  Contrastive: the other images of the batch are the negatives that prevent collapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vicreg_lab.train import VICReg

__all__ = ["BarlowTwins", "SimCLR", "barlow_twins_loss", "info_nce_loss"]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> dict:
    """Barlow Twins: the cross-correlation of the standardised views pushed to the identity.

    Returns ``{"loss", "on_diagonal", "off_diagonal"}`` (the two sums, unweighted).

    >>> z = torch.randn(256, 8)
    >>> round(float(barlow_twins_loss(z, z)["on_diagonal"]), 4)  # identical views: C_ii = 1
    0.0
    """
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"Barlow Twins needs N >= 2 embeddings to standardise, got {n}")
    z1, z2 = _standardise(z1.float()), _standardise(z2.float())
    c = z1.T @ z2 / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return {"loss": on + lambd * off, "on_diagonal": on, "off_diagonal": off}


def _standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each dimension to mean 0 and variance 1 over the batch (BatchNorm without affine)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> dict:
    """SimCLR's NT-Xent: each view must find its partner among the batch's 2N - 1 others.

    Returns ``{"loss", "alignment"}``; ``alignment`` is the mean squared distance between
    the two views' unit-norm embeddings (0 when they coincide).

    >>> z = torch.eye(4)  # four orthogonal images, each view equal to its partner
    >>> float(info_nce_loss(z, z, temperature=0.1)["alignment"])
    0.0
    """
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"InfoNCE needs N >= 2 images (the others are the negatives), got {n}")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = F.cross_entropy(logits, partner)
    alignment = (z[:n] - z[n:]).pow(2).sum(1).mean()
    return {"loss": loss, "alignment": alignment}


class _Criterion(nn.Module):
    def __init__(self, function, **settings):
        super().__init__()
        self.function, self.settings = function, settings

    def forward(self, z1, z2):
        return self.function(z1, z2, **self.settings)


def _vicreg_params(local: dict) -> dict:
    return {k: v for k, v in local.items() if k in VICReg._get_param_names()}


class BarlowTwins(VICReg):
    """:class:`vicreg_lab.VICReg` trained with :func:`barlow_twins_loss` (``lambd``).

    Takes every parameter of VICReg (its three loss weights are not used) and ``lambd``,
    the weight of the off-diagonal sum (0.0051 in the paper, for D = 8192).
    """

    TERMS = ("loss", "on_diagonal", "off_diagonal")

    def __init__(
        self,
        encoder="small_cnn",
        expander="512-512",
        inv_coeff=25.0,
        var_coeff=25.0,
        cov_coeff=1.0,
        optimizer="adamw",
        lr=None,
        weight_decay=None,
        warmup_epochs=1.0,
        batch_size=32,
        max_epochs=10,
        input_size=None,
        augmentation="batched",
        augment_params=None,
        device="auto",
        precision="auto",
        num_workers=0,
        checkpoint_dir=None,
        seed=0,
        progress=True,
        callbacks=(),
        sync_batchnorm=None,
        encoder_kwargs=None,
        lambd: float = 0.0051,
    ):
        super().__init__(**_vicreg_params(locals()))
        self.lambd = lambd

    def _check_params(self) -> None:
        super()._check_params()
        _check_positive("lambd", self.lambd)

    def _criterion(self, distributed: bool) -> nn.Module:
        _single_process(distributed, type(self).__name__)
        return _Criterion(barlow_twins_loss, lambd=self.lambd)


class SimCLR(VICReg):
    """:class:`vicreg_lab.VICReg` trained with :func:`info_nce_loss` (``temperature``)."""

    TERMS = ("loss", "alignment")

    def __init__(
        self,
        encoder="small_cnn",
        expander="512-512",
        inv_coeff=25.0,
        var_coeff=25.0,
        cov_coeff=1.0,
        optimizer="adamw",
        lr=None,
        weight_decay=None,
        warmup_epochs=1.0,
        batch_size=32,
        max_epochs=10,
        input_size=None,
        augmentation="batched",
        augment_params=None,
        device="auto",
        precision="auto",
        num_workers=0,
        checkpoint_dir=None,
        seed=0,
        progress=True,
        callbacks=(),
        sync_batchnorm=None,
        encoder_kwargs=None,
        temperature: float = 0.1,
    ):
        super().__init__(**_vicreg_params(locals()))
        self.temperature = temperature

    def _check_params(self) -> None:
        super()._check_params()
        _check_positive("temperature", self.temperature)

    def _criterion(self, distributed: bool) -> nn.Module:
        _single_process(distributed, type(self).__name__)
        return _Criterion(info_nce_loss, temperature=self.temperature)


def _check_positive(name: str, value) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _single_process(distributed: bool, name: str) -> None:
    if distributed:
        raise ValueError(
            f"{name} computes its loss on each process's batch only; train it in one process "
            "(the comparison with VICReg is made at the same batch size)"
        )
