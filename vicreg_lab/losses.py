r"""The VICReg loss (Bardes, Ponce & LeCun, ICLR 2022).

Given the embeddings of two augmented views of the same batch, ``z1`` and
``z2`` of shape ``(N, D)``, VICReg minimises

.. math::

    \ell = \lambda\, s(Z, Z') + \mu\, [v(Z) + v(Z')] / 2 + \nu\, [c(Z) + c(Z')]

with the three terms written below for the embeddings ``z`` of one view,
centred over the batch (``z <- z - mean(z)``)::

    invariance  s(Z, Z') = 1/(N D) sum_{n,d} (z_nd - z'_nd)^2          # F.mse_loss
    variance    v(Z)     = 1/D sum_d relu(gamma - sqrt(Var(z_d) + eps))
    covariance  c(Z)     = 1/D sum_{i != j} C(Z)_ij^2,    C(Z) = Z^T Z / (N - 1)

``Var`` is the unbiased variance (divided by ``N - 1``). The defaults
``lambda = mu = 25`` and ``nu = 1`` are those of the paper and of the official
implementation (facebookresearch/vicreg, ``main_vicreg.py``), whose semantics
this module follows: the variance terms of the two views are averaged, the
covariance terms are summed.

The ``D x D`` covariance matrix is never built when ``N < D`` (the usual case:
batch 256, expander 8192): the sum of its squared entries is computed from the
``N x N`` Gram matrix instead, accumulated in float64 so that the subtraction of the
diagonal cannot cancel, see :func:`_offdiag_sq_sum_gram`. Both forms are exact (to
the precision of the inputs) and never negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from vicreg_lab.distributed import gather_with_grad

__all__ = ["VICRegLoss", "center", "check_embeddings", "offdiag_sq_sum", "vicreg_loss"]


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

    Parameters
    ----------
    z1, z2 : torch.Tensor of shape (N, D)
        Embeddings of the two views; row ``n`` of ``z1`` and row ``n`` of ``z2``
        come from the same image. ``N >= 2``.
    inv_coeff : float, default=25.0
        Weight ``lambda`` of the invariance term.
    var_coeff : float, default=25.0
        Weight ``mu`` of the variance term.
    cov_coeff : float, default=1.0
        Weight ``nu`` of the covariance term.
    gamma : float, default=1.0
        Target standard deviation of every embedding dimension.
    eps : float, default=1e-4
        Added to the variance before the square root (keeps the gradient finite
        when a dimension has collapsed).
    gather_distributed : bool, default=False
        If True and ``torch.distributed`` is initialised with more than one
        process, the variance and covariance terms use the embeddings of all
        processes (gathered with gradients); the invariance term stays local.
        Every process must then call the loss with the same ``N``. Without an
        initialised process group this flag does nothing.
    check_finite : bool, default=True
        Raise a ValueError if an input holds NaN or infinity. The check
        synchronises a GPU with the host; switch it off in tight training loops.

    Returns
    -------
    dict of str to torch.Tensor
        ``"loss"``: the weighted total, a scalar to call ``.backward()`` on;
        ``"invariance"``, ``"variance"``, ``"covariance"``: the three terms,
        **unweighted** (so that they can be compared across settings).
        All are float32 (float64 if an input is float64), even under
        ``torch.autocast``.

    Raises
    ------
    ValueError
        If the inputs are not 2-D, have different shapes, have fewer than two
        rows, are not floating point, or (with ``check_finite``) are not finite.

    Notes
    -----
    The loss is computed in float32 even inside a bf16/fp16 autocast region:
    the variance term takes a square root of small numbers and the covariance
    term sums ``D^2`` squares, both of which lose too much in half precision.

    Examples
    --------
    >>> import torch
    >>> z1, z2 = torch.randn(32, 64), torch.randn(32, 64)
    >>> out = vicreg_loss(z1, z2)
    >>> sorted(out)
    ['covariance', 'invariance', 'loss', 'variance']
    >>> float(vicreg_loss(z1, z1)["invariance"])
    0.0
    """
    check_embeddings(z1, z2, check_finite=check_finite)
    # Disable autocast so that the matmuls below are not cast back to half precision.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = _to_loss_dtype(z1, z2)
        invariance, variance, covariance = _loss_terms(
            z1, z2, gamma=gamma, eps=eps, gather_distributed=gather_distributed
        )
        loss = inv_coeff * invariance + var_coeff * variance + cov_coeff * covariance
    return {
        "loss": loss,
        "invariance": invariance,
        "variance": variance,
        "covariance": covariance,
    }


class VICRegLoss(nn.Module):
    """VICReg loss as a module: ``VICRegLoss(...)(z1, z2)`` returns the same dict as
    :func:`vicreg_loss`.

    Parameters
    ----------
    inv_coeff : float, default=25.0
        Weight of the invariance term (``lambda`` in the paper).
    var_coeff : float, default=25.0
        Weight of the variance term (``mu``).
    cov_coeff : float, default=1.0
        Weight of the covariance term (``nu``).
    gamma : float, default=1.0
        Target standard deviation of every embedding dimension.
    eps : float, default=1e-4
        Added to the variance before the square root.
    gather_distributed : bool, default=False
        Compute the variance and covariance terms on the embeddings of all
        processes, see :func:`vicreg_loss`.
    check_finite : bool, default=True
        Raise a ValueError on NaN or infinite inputs, see :func:`vicreg_loss`.

    Examples
    --------
    >>> import torch
    >>> criterion = VICRegLoss(cov_coeff=0.0)
    >>> z1 = torch.randn(16, 32, requires_grad=True)
    >>> out = criterion(z1, torch.randn(16, 32))
    >>> out["loss"].backward()
    >>> z1.grad.shape
    torch.Size([16, 32])
    """

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
        self.inv_coeff = inv_coeff
        self.var_coeff = var_coeff
        self.cov_coeff = cov_coeff
        self.gamma = gamma
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.check_finite = check_finite

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss; see :func:`vicreg_loss` for the returned dict."""
        return vicreg_loss(
            z1,
            z2,
            inv_coeff=self.inv_coeff,
            var_coeff=self.var_coeff,
            cov_coeff=self.cov_coeff,
            gamma=self.gamma,
            eps=self.eps,
            gather_distributed=self.gather_distributed,
            check_finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"inv_coeff={self.inv_coeff}, var_coeff={self.var_coeff}, "
            f"cov_coeff={self.cov_coeff}, gamma={self.gamma}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )


# ----------------------------------------------------------------------------- the three terms


def _loss_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    gamma: float,
    eps: float,
    gather_distributed: bool = False,
    cov_form: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unweighted (invariance, variance, covariance) of checked, float32/64 inputs.

    ``cov_form`` is ``"auto"`` (cheaper form by shape), ``"gram"`` or ``"dxd"``;
    the benchmark forces ``"dxd"`` to time the textbook computation.
    """
    offdiag = {"auto": offdiag_sq_sum, "gram": _offdiag_sq_sum_gram, "dxd": _offdiag_sq_sum_dxd}
    if cov_form not in offdiag:
        raise ValueError(f"cov_form must be 'auto', 'gram' or 'dxd', got {cov_form!r}")

    # Invariance: on the local batch only, as in the official implementation.
    invariance = F.mse_loss(z1, z2)

    if gather_distributed:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)

    n, d = z1.shape
    z1 = center(z1)
    z2 = center(z2)
    var1 = z1.pow(2).sum(dim=0) / (n - 1)  # unbiased per-dimension variance = diag(C)
    var2 = z2.pow(2).sum(dim=0) / (n - 1)

    # Variance: hinge on the standard deviation, averaged over dims, then over the views.
    std1 = torch.sqrt(var1 + eps)
    std2 = torch.sqrt(var2 + eps)
    variance = (F.relu(gamma - std1).mean() + F.relu(gamma - std2).mean()) / 2

    # Covariance: squared off-diagonal entries of C, divided by D, summed over the views.
    sq_sum = offdiag[cov_form]
    covariance = (sq_sum(z1) + sq_sum(z2)) / d
    return invariance, variance, covariance


def center(z: torch.Tensor) -> torch.Tensor:
    """Subtract the batch mean, in two passes.

    The second pass removes the rounding error of the first mean. That error is
    about ``eps * |mean|``, which is not small next to the spread of a collapsed
    batch (all embeddings near one point): with one pass, a float32 batch of
    spread 1e-6 around a point of norm 1 gets a covariance term off by ~1e-3
    relative, with two passes by ~1e-6.
    """
    z = z - z.mean(dim=0)
    return z - z.mean(dim=0)


def offdiag_sq_sum(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of ``C = z^T z / (N - 1)``, cheaper form.

    Both forms give the same number (up to rounding). The Gram form costs
    ``O(N^2 D)`` time and ``N^2`` memory, the ``D x D`` form ``O(N D^2)`` and
    ``D^2``: pick the Gram form exactly when ``N < D``. At N = 256, D = 8192 this
    is a 256 x 256 matrix instead of a 8192 x 8192 one (0.25 MB instead of 268 MB).
    ``z`` must be centred.
    """
    n, d = z.shape
    if n < d:
        return _offdiag_sq_sum_gram(z)
    return _offdiag_sq_sum_dxd(z)


def _offdiag_sq_sum_gram(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C`` from the ``N x N`` Gram matrix ``z z^T``.

    By the cyclic property of the trace,
    ``||z^T z||_F^2 = tr(z^T z z^T z) = tr(z z^T z z^T) = ||z z^T||_F^2``, so::

        sum_{i != j} C_ij^2 = (||z z^T||_F^2 - sum_d (sum_n z_nd^2)^2) / (N - 1)^2

    ``z`` must be centred. The result has ``z``'s dtype.

    Notes
    -----
    The Gram matrix mixes the diagonal of ``C`` into every entry, so the
    off-diagonal part can only be had as a difference of two sums, which cancels
    when it is small next to the variances: decorrelated dimensions, or one
    dimension far wider than the others (a collapse along one axis). In float32
    that difference is then dominated by rounding, even negative. Hence the
    float64 accumulation, in :class:`_GramOffdiagSqSum`: it keeps the result exact
    to float32 precision unless the off-diagonal part is some 1e7 times smaller
    than ``||C||_F^2`` (products of float32 numbers are exact in float64; only the
    sums round). Far past that, float64 rounding could still leave a tiny negative
    number: the clamp, a last resort, maps it to 0, the nearest possible value (and
    gives the gradient of a sum of squares at its minimum, zero).
    """
    return _GramOffdiagSqSum.apply(z)[0]


class _GramOffdiagSqSum(torch.autograd.Function):
    """The Gram form of :func:`_offdiag_sq_sum_gram` in float64, with its gradient by hand.

    Autograd would run three ``N^2 D`` float64 matmuls (``z z^T`` and the two
    factors of its backward) and keep a float64 copy of ``z``. Here the columns of
    ``z`` go through float64 in blocks of :data:`_BLOCK` (so no float64 copy of
    the whole ``z`` ever exists), one matmul each way, and only ``z`` and the
    ``N x N`` Gram matrix are kept for the backward pass::

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


#: Block size of both forms: columns of ``z`` taken to float64 at a time by the Gram form
#: (N x 1024 x 8 bytes), rows of ``C`` squared at a time by the D x D form.
_BLOCK = 1024


def _float64_blocks(z: torch.Tensor):
    """The columns of ``z`` in float64 (float32 on MPS, which has no float64), by blocks."""
    dtype = torch.float32 if z.device.type == "mps" else torch.float64
    for start in range(0, z.shape[1], _BLOCK):
        yield z[:, start : start + _BLOCK].to(dtype)


def _offdiag_sq_sum_dxd(z: torch.Tensor) -> torch.Tensor:
    """Off-diagonal sum of squares of ``C``, building the ``D x D`` matrix ``z^T z / (N - 1)``.

    ``z`` must be centred. The diagonal is zeroed before squaring, so the sum has
    only non-negative terms and cannot cancel (``||C||_F^2 - sum_d var_d^2`` loses
    every digit when the dimensions are decorrelated). Zeroing in place keeps a
    single ``D x D`` tensor alive for the backward pass (the matmul saves ``z``, not
    ``C``). The squares are added by ``torch.sum``, whose cascade summation stays
    accurate over ``D^2`` terms (a BLAS dot product of ``C`` with itself loses up to
    1e-3, relative, in float32 at D = 2048), by blocks of rows so that the squares
    never take a second ``D x D`` tensor.
    """
    n = z.shape[0]
    cov = (z.T @ z) / (n - 1)
    cov.diagonal().zero_()
    return sum(rows.pow(2).sum() for rows in cov.split(_BLOCK))


# ----------------------------------------------------------------------------- input checks


def check_embeddings(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool) -> None:
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
    """Cast both inputs to float64 if either is float64, otherwise to float32."""
    dtype = torch.float64 if torch.float64 in (z1.dtype, z2.dtype) else torch.float32
    return z1.to(dtype), z2.to(dtype)
