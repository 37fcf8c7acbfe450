r"""The VICReg loss (Bardes, Ponce & LeCun, ICLR 2022).

For the embeddings ``z1, z2`` of shape ``(N, D)`` of two views of one batch::

    loss = lambda * s(Z, Z') + mu * [v(Z) + v(Z')] / 2 + nu * [c(Z) + c(Z')]

    invariance  s(Z, Z') = 1/(N D) sum_{n,d} (z_nd - z'_nd)^2          # F.mse_loss
    variance    v(Z)     = 1/D sum_d relu(gamma - sqrt(Var(z_d) + eps))
    covariance  c(Z)     = 1/D sum_{i != j} C(Z)_ij^2,    C(Z) = Z^T Z / (N - 1)

with ``z`` centred over the batch and ``Var`` unbiased. Defaults and semantics
(variances averaged over the views, covariances summed) follow the official
``main_vicreg.py``.

Fast path: when ``N < D`` (batch 256, expander 8192) the ``D x D`` matrix ``C`` is
never built; the sum of its squared entries comes from the ``N x N`` Gram matrix,
accumulated in float64, see :func:`_offdiag_sq_sum_gram`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

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
    """VICReg loss of two batches of embeddings (functional form of :class:`VICRegLoss`).

    Computed in float32 (float64 if an input is) even under ``torch.autocast``: the
    square root of small variances and the sum of ``D^2`` squares lose too much in
    half precision.

    Parameters
    ----------
    z1, z2 : torch.Tensor of shape (N, D)
        Embeddings of the two views, row ``n`` of each from the same image; ``N >= 2``.
    inv_coeff, var_coeff, cov_coeff : float
        Weights ``lambda``, ``mu``, ``nu`` of the three terms.
    gamma : float
        Target standard deviation of every embedding dimension.
    eps : float
        Added to the variance before the square root (finite gradient at collapse).
    gather_distributed : bool
        With an initialised multi-process group, take the variance and covariance over
        the embeddings of all processes (same ``N`` on each); invariance stays local.
    check_finite : bool
        Raise on NaN or infinite inputs (costs a GPU-host sync).

    Returns
    -------
    dict of str to torch.Tensor
        ``"loss"`` (weighted total) and the **unweighted** terms ``"invariance"``,
        ``"variance"``, ``"covariance"``.

    Examples
    --------
    >>> z1, z2 = torch.randn(32, 64), torch.randn(32, 64)
    >>> sorted(vicreg_loss(z1, z2))
    ['covariance', 'invariance', 'loss', 'variance']
    >>> float(vicreg_loss(z1, z1)["invariance"])
    0.0
    """
    check_embeddings(z1, z2, check_finite=check_finite)
    # Autocast off, or the matmuls below would run in half precision again.
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
        return (
            f"inv_coeff={self.inv_coeff}, var_coeff={self.var_coeff}, "
            f"cov_coeff={self.cov_coeff}, gamma={self.gamma}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )


# ----------------------------------------------------------------------------- the three terms


def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``s(Z, Z')``: mean squared distance between the two views' embeddings (N, D)."""
    return F.mse_loss(z1, z2)


def variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z)``: hinge ``relu(gamma - std)`` on every dimension of ``z`` (N, D), averaged.

    >>> float(variance(torch.zeros(8, 4)))  # collapsed: every std is 0, the hinge is ~gamma
    0.9900000095367432
    """
    return _variance(center(z), gamma, eps)


def covariance(z: torch.Tensor) -> torch.Tensor:
    """``c(Z)``: sum of the squared off-diagonal covariances of ``z`` (N, D), divided by D."""
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
    offdiag = {"auto": offdiag_sq_sum, "gram": _offdiag_sq_sum_gram, "dxd": _offdiag_sq_sum_dxd}
    if cov_form not in offdiag:
        raise ValueError(f"cov_form must be 'auto', 'gram' or 'dxd', got {cov_form!r}")
    inv = invariance(z1, z2)  # on the local batch only, as the official code
    if gather_distributed:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    z1, z2 = center(z1), center(z2)  # once, for both terms
    var = (_variance(z1, gamma, eps) + _variance(z2, gamma, eps)) / 2
    sq_sum = offdiag[cov_form]
    cov = (sq_sum(z1) + sq_sum(z2)) / z1.shape[1]
    return inv, var, cov


def _variance(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """Hinge on the standard deviation of each dimension of centred ``z``, averaged."""
    var = z.pow(2).sum(dim=0) / (z.shape[0] - 1)  # unbiased, (D,) = diag(C)
    return F.relu(gamma - torch.sqrt(var + eps)).mean()


def center(z: torch.Tensor) -> torch.Tensor:
    """Subtract the batch mean, in two passes.

    The second pass removes the rounding error of the first mean (``eps * |mean|``),
    which is not small next to the spread of a collapsed batch.
    """
    z = z - z.mean(dim=0)
    return z - z.mean(dim=0)


def offdiag_sq_sum(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of ``C = z^T z / (N - 1)`` for centred ``z``.

    The Gram form costs ``O(N^2 D)`` time and ``N^2`` memory, the ``D x D`` form
    ``O(N D^2)`` and ``D^2``: the Gram form is cheaper exactly when ``N < D``.
    """
    n, d = z.shape
    return _offdiag_sq_sum_gram(z) if n < d else _offdiag_sq_sum_dxd(z)


def _offdiag_sq_sum_gram(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C`` from the ``N x N`` Gram matrix ``z z^T``.

    As ``||z^T z||_F^2 = tr(z^T z z^T z) = ||z z^T||_F^2``::

        sum_{i != j} C_ij^2 = (||z z^T||_F^2 - sum_d (sum_n z_nd^2)^2) / (N - 1)^2

    That difference cancels when the off-diagonal part is small next to the
    variances (decorrelated dimensions, or one dominant dimension), so it is
    accumulated in float64, where products of float32 numbers are exact. A tiny
    negative left by float64 rounding is clamped to 0, the true minimum.
    """
    return _GramOffdiagSqSum.apply(z)[0]


class _GramOffdiagSqSum(torch.autograd.Function):
    """The Gram form in float64 by column blocks (no float64 copy of ``z``), gradient by hand.

    Only ``z`` and the ``N x N`` Gram matrix are kept for the backward pass::

        d/dz [||z z^T||_F^2 - sum_d s_d^2] = 4 (z z^T z - z * s),   s_d = sum_n z_nd^2
    """

    generate_vmap_rule = True  # vicreg_lab.vicregl maps the loss over match indices

    @staticmethod
    def forward(z):
        gram = diagonal_sq = 0.0
        for block in _float64_blocks(z):
            gram = gram + block @ block.T
            diagonal_sq = diagonal_sq + block.pow(2).sum(dim=0).pow(2).sum()
        offdiag = (gram.pow(2).sum() - diagonal_sq) / (z.shape[0] - 1) ** 2
        return offdiag.clamp(min=0).to(z.dtype), gram

    @staticmethod
    def setup_context(ctx, inputs, output):
        value, gram = output
        ctx.mark_non_differentiable(gram)
        ctx.save_for_backward(inputs[0], gram, value)

    @staticmethod
    @once_differentiable  # gram is saved as a constant: a second derivative would be wrong
    def backward(ctx, grad_value, _grad_gram):
        z, gram, value = ctx.saved_tensors
        scale = 4 * grad_value.to(gram.dtype) / (z.shape[0] - 1) ** 2
        scale = torch.where(value > 0, scale, 0.0)  # clamped to 0: the minimum, flat
        grads = [
            (scale * (gram @ block - block * block.pow(2).sum(dim=0))).to(z.dtype)
            for block in _float64_blocks(z)
        ]
        return torch.cat(grads, dim=1)


#: Columns of ``z`` taken to float64 at a time (Gram form), rows of ``C`` squared at a time (D x D).
_BLOCK = 1024


def _float64_blocks(z: torch.Tensor):
    """The columns of ``z`` in float64 (float32 on MPS, which has no float64), by blocks."""
    dtype = torch.float32 if z.device.type == "mps" else torch.float64
    for start in range(0, z.shape[1], _BLOCK):
        yield z[:, start : start + _BLOCK].to(dtype)


def _offdiag_sq_sum_dxd(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C``, building the ``D x D`` matrix (the textbook form).

    The diagonal is zeroed (in place: one ``D x D`` tensor) before squaring, so no
    difference cancels; ``torch.sum`` by row blocks adds the ``D^2`` squares accurately.
    """
    cov = (z.T @ z) / (z.shape[0] - 1)
    cov.diagonal().zero_()
    return sum(rows.pow(2).sum() for rows in cov.split(_BLOCK))


# ----------------------------------------------------------------------------- input checks


def check_embeddings(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool) -> None:
    """Raise a ValueError unless ``z1, z2`` are same-shape float ``(N, D)`` tensors, ``N >= 2``."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor):
            raise ValueError(
                f"{name} must be a torch.Tensor of shape (N, D), got {type(z).__name__}"
            )
        if z.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D with shape (N, D) = (batch, embedding dim), "
                f"got shape {tuple(z.shape)}; flatten the embeddings first"
            )
        if not z.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {z.dtype}")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (N, D), got {tuple(z1.shape)} "
            f"and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(
            f"need at least N = 2 embeddings per view to estimate a variance, got N = "
            f"{z1.shape[0]} (shape {tuple(z1.shape)})"
        )
    if check_finite:
        for name, z in (("z1", z1), ("z2", z2)):
            if not bool(torch.isfinite(z).all()):
                raise ValueError(
                    f"{name} contains NaN or infinite values; the encoder or the "
                    "learning rate is the usual culprit"
                )


def _to_loss_dtype(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs in float64 if either is, otherwise in float32."""
    dtype = torch.float64 if torch.float64 in (z1.dtype, z2.dtype) else torch.float32
    return z1.to(dtype), z2.to(dtype)
