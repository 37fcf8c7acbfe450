r"""The VICReg loss (Bardes, Ponce & LeCun, ICLR 2022), as the official ``main_vicreg.py``.

For embeddings ``z1, z2`` (N, D) of two views of a batch, with the terms defined below::

    loss = lambda * s(Z, Z') + mu * [v(Z) + v(Z')] / 2 + nu * [c(Z) + c(Z')]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vicreg_lab.covariance_kernels import offdiag_sq_sum, offdiag_sq_sum_dxd, offdiag_sq_sum_gram
from vicreg_lab.distributed import gather_with_grad

__all__ = [
    "VICRegLoss",
    "center",
    "check_embeddings",
    "covariance",
    "invariance",
    "offdiag_sq_sum",
    "variance",
    "vicreg_loss",
]


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    inv_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """VICReg loss of two batches of embeddings, in float32 (float64 if an input is).

    Parameters
    ----------
    z1, z2 : torch.Tensor of shape (N, D)
        Embeddings of the two views, row ``n`` of each from the same image; ``N >= 2``.
    inv_coeff, var_coeff, cov_coeff : float
        Weights ``lambda``, ``mu``, ``nu`` of the three terms.
    gamma, eps : float
        Target standard deviation of each dimension; added to the variance under the root.
    gather_distributed : bool
        Variance and covariance over the embeddings of all processes (invariance stays local).
    check_finite : bool
        Raise on NaN or infinite inputs (costs a GPU-host sync).

    Returns
    -------
    dict of str to torch.Tensor
        ``"loss"`` (weighted) and the unweighted ``"invariance"``, ``"variance"``, ``"covariance"``.

    >>> float(vicreg_loss(torch.ones(4, 8), torch.ones(4, 8))["invariance"])
    0.0
    """
    check_embeddings(z1, z2, check_finite=check_finite)
    # Autocast off: a half-precision square root of small variances loses too much.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = _to_loss_dtype(z1, z2)
        invariance, variance, covariance = _loss_terms(
            z1, z2, gamma=gamma, eps=eps, gather_distributed=gather_distributed
        )
        loss = inv_coeff * invariance + var_coeff * variance + cov_coeff * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


class VICRegLoss(nn.Module):
    """VICReg loss as a module; arguments and returned dict as :func:`vicreg_loss`."""

    def __init__(
        self,
        inv_coeff: float = 25.0,
        var_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.inv_coeff, self.var_coeff, self.cov_coeff = inv_coeff, var_coeff, cov_coeff
        self.gamma, self.eps = gamma, eps
        self.gather_distributed, self.check_finite = gather_distributed, check_finite

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        hparams = (self.inv_coeff, self.var_coeff, self.cov_coeff, self.gamma, self.eps)
        return vicreg_loss(z1, z2, *hparams, self.gather_distributed, self.check_finite)

    def extra_repr(self) -> str:
        names = ("inv_coeff", "var_coeff", "cov_coeff", "gamma", "eps", "gather_distributed")
        return ", ".join(f"{name}={getattr(self, name)}" for name in names)


def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``s(Z, Z') = 1/(N D) sum_{n,d} (z_nd - z'_nd)^2``, the mean squared distance."""
    return F.mse_loss(z1, z2)


def variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z) = 1/D sum_d relu(gamma - sqrt(Var(z_d) + eps))``, ``Var`` unbiased."""
    return _variance(center(z), gamma, eps)


def covariance(z: torch.Tensor) -> torch.Tensor:
    """``c(Z) = 1/D sum_{i != j} C_ij^2``, ``C = Z^T Z / (N - 1)`` for centred ``Z``."""
    return offdiag_sq_sum(center(z)) / z.shape[1]


def _loss_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    gamma: float,
    eps: float,
    gather_distributed: bool = False,
    cov_form: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unweighted (invariance, variance, covariance); ``cov_form`` "gram"/"dxd" forces a form."""
    offdiag = {"auto": offdiag_sq_sum, "gram": offdiag_sq_sum_gram, "dxd": offdiag_sq_sum_dxd}
    if cov_form not in offdiag:
        raise ValueError(f"cov_form must be 'auto', 'gram' or 'dxd', got {cov_form!r}")
    inv = invariance(z1, z2)  # on the local batch only, as the official code
    if gather_distributed:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    z1, z2 = center(z1), center(z2)
    var = (_variance(z1, gamma, eps) + _variance(z2, gamma, eps)) / 2
    cov = (offdiag[cov_form](z1) + offdiag[cov_form](z2)) / z1.shape[1]
    return inv, var, cov


def _variance(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    var = z.pow(2).sum(dim=0) / (z.shape[0] - 1)  # z centred: unbiased variance, diag(C)
    return F.relu(gamma - torch.sqrt(var + eps)).mean()


def center(z: torch.Tensor) -> torch.Tensor:
    """Subtract the batch mean twice: the second pass removes the first one's rounding error."""
    z = z - z.mean(dim=0)
    return z - z.mean(dim=0)


def check_embeddings(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool) -> None:
    """Raise a ValueError unless ``z1, z2`` are same-shape float ``(N, D)`` tensors, ``N >= 2``."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not (isinstance(z, torch.Tensor) and z.ndim == 2 and z.is_floating_point()):
            got = f"{tuple(z.shape)} {z.dtype}" if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"{name} must be a float tensor (N, D) (flatten it first), got {got}")
        if check_finite and not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name} contains NaN or infinite values (too high a learning rate?)")
    if z1.shape != z2.shape or len(z1) < 2:
        raise ValueError(
            f"z1 and z2 must have the same shape (N, D) with N >= 2 (a variance needs two "
            f"samples), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )


def _to_loss_dtype(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.float64 if torch.float64 in (z1.dtype, z2.dtype) else torch.float32
    return z1.to(dtype), z2.to(dtype)
