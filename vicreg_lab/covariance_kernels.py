r"""Exact, fast kernels for the covariance term of :mod:`vicreg_lab.losses`.

They compute ``sum_{i != j} C_ij^2`` for ``C = z^T z / (N - 1)`` and centred ``z`` (N, D).
A reader of the VICReg math can skip this module: when ``N < D`` (batch 256, expander
8192) the ``D x D`` matrix ``C`` is never built; the sum comes from the ``N x N`` Gram
matrix, accumulated in float64, see :func:`offdiag_sq_sum_gram`.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["offdiag_sq_sum", "offdiag_sq_sum_dxd", "offdiag_sq_sum_gram"]

#: Columns of ``z`` taken to float64 at a time (Gram form), rows of ``C`` squared at a time (D x D).
_BLOCK = 1024


def offdiag_sq_sum(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of ``C = z^T z / (N - 1)`` for centred ``z``.

    The Gram form costs ``O(N^2 D)`` time and ``N^2`` memory, the ``D x D`` form
    ``O(N D^2)`` and ``D^2``: the Gram form is cheaper exactly when ``N < D``.
    """
    n, d = z.shape
    return offdiag_sq_sum_gram(z) if n < d else offdiag_sq_sum_dxd(z)


def offdiag_sq_sum_gram(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C`` from the ``N x N`` Gram matrix ``z z^T``.

    As ``||z^T z||_F^2 = tr(z^T z z^T z) = ||z z^T||_F^2``::

        sum_{i != j} C_ij^2 = (||z z^T||_F^2 - sum_d (sum_n z_nd^2)^2) / (N - 1)^2

    That difference cancels when the off-diagonal part is small next to the
    variances (decorrelated dimensions, or one dominant dimension), so it is
    accumulated in float64, where products of float32 numbers are exact. A tiny
    negative left by float64 rounding is clamped to 0, the true minimum.
    """
    return _GramOffdiagSqSum.apply(z)[0]


def offdiag_sq_sum_dxd(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C``, building the ``D x D`` matrix (the textbook form).

    The diagonal is zeroed (in place: one ``D x D`` tensor) before squaring, so no
    difference cancels; ``torch.sum`` by row blocks adds the ``D^2`` squares accurately.
    """
    cov = (z.T @ z) / (z.shape[0] - 1)
    cov.diagonal().zero_()
    return sum(rows.pow(2).sum() for rows in cov.split(_BLOCK))


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


def _float64_blocks(z: torch.Tensor):
    """The columns of ``z`` in float64 (float32 on MPS, which has no float64), by blocks."""
    dtype = torch.float32 if z.device.type == "mps" else torch.float64
    for start in range(0, z.shape[1], _BLOCK):
        yield z[:, start : start + _BLOCK].to(dtype)
