r"""VICRegL (Bardes, Ponce & LeCun, NeurIPS 2022) on 3D feature maps.

VICReg only sees the pooled embedding of each view: nothing asks the encoder's feature
map to be meaningful cell by cell. VICRegL adds a *local* VICReg term on the feature
maps, between cells of the two views that show the same part of the brain::

    loss  = alpha * global + (1 - alpha) * local             # alpha = 0.75
    global = VICReg(z1, z2)                                  # pooled embeddings (B, D)
    local  = sum over the 2 matchings (features, location) of
             the mean over their 2 directions of VICReg(m1[matched], m2[matched])

``m1, m2`` are the feature maps after a dense (1x1x1) expander, ``(B, C, d, h, w)``.
The four matchings pair every kept cell with one cell of the other view:

- **by features**: view-1 cell ``i`` with its nearest neighbour (L2) among the view-2
  cells, and the same from view 2 to view 1 (each direction keeps the ``num_matches``
  pairs with the smallest distances, or all of them with ``l2_all_matches``);
- **by location**: view-1 cell ``i`` with the view-2 cell whose centre lies nearest to
  it *in the source volume*, and back; each direction keeps the ``num_matches`` closest
  pairs. Locations come from the augmentation's geometry (crop, flips, rotation; see
  :func:`feature_locations`), so a flipped view is matched to its mirror image.

On the ``k`` matched pairs ``(B, k, C)`` the local VICReg term is computed as the
official code does: invariance is the MSE over all pairs; variance and covariance are
statistics over the batch, *separately for every match index* (the ``k`` kept cells of
each sample, in raster order), then averaged over the ``k`` indices. The two directions
of a matching are averaged and the two matchings summed, as in the official code since
its commit d14c226 ("Fix local loss"); before it, the local term was half as large.

Efficiency: distances are one batched ``torch.cdist`` per matching (no grad: only
their ranks are used), the selection one ``min`` + ``topk`` over the whole batch; no
Python loop touches a location. The ``k`` covariance terms reuse
:func:`vicreg_lab.losses.offdiag_sq_sum` (the ``N x N`` Gram form whenever the batch is
smaller than the channels) through ``torch.vmap``.

Compared with facebookresearch/VICRegL (``main_vicregl.py``), see ``docs/vicregl.md``:
same ``alpha``, the same matching rules, statistics and combination of the matchings
(``tests/test_vicregl.py`` checks the numbers against a rewrite of the official
functions); our covariance is *summed* over the two views, as in VICReg and
:func:`vicreg_lab.losses.vicreg_loss` (the official VICRegL averages it:
``cov_coeff=0.5`` reproduces its weighting); flips are honoured in the locations (the
official default, ``--no-flip-grid 1``, ignores them); cell centres are receptive-field
centres when the encoder declares ``feature_grid``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vicreg_lab.distributed import gather_with_grad, world_size
from vicreg_lab.losses import (
    center,
    check_embeddings,
    offdiag_sq_sum,
    vicreg_loss,
)
from vicreg_lab.models import build_local_expander
from vicreg_lab.train import VICReg, channels_last

__all__ = [
    "TERMS",
    "VICRegL",
    "VICRegLLoss",
    "cell_centres",
    "feature_locations",
    "nearest_neighbour_matches",
    "vicregl_loss",
]

#: Keys of the dict returned by :func:`vicregl_loss`.
TERMS = (
    "loss",
    "invariance",
    "variance",
    "covariance",
    "global",
    "local",
    "local_invariance",
    "local_variance",
    "local_covariance",
)

#: Fraction of the cells kept per direction when ``num_matches`` is None: the official
#: default keeps 20 of the 7 x 7 = 49 cells of a 224-pixel crop.
DEFAULT_MATCH_FRACTION = 20 / 49


def vicregl_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    maps1: torch.Tensor,
    maps2: torch.Tensor,
    locations1: torch.Tensor,
    locations2: torch.Tensor,
    alpha: float = 0.75,
    num_matches: int | None = None,
    l2_all_matches: bool = False,
    inv_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """VICRegL loss: global VICReg on embeddings plus local VICReg on matched map cells.

    Parameters
    ----------
    z1, z2 : torch.Tensor of shape (B, D)
        Global embeddings of the two views (expander of the pooled representation).
    maps1, maps2 : torch.Tensor of shape (B, C, d1, h1, w1) and (B, C, d2, h2, w2)
        Local embeddings of the two views (dense expander of the feature maps). The two
        maps may have different sizes (views of different sizes).
    locations1, locations2 : torch.Tensor of shape (B, d, h, w, 3)
        Where each cell of ``maps1`` / ``maps2`` lies in the source volume (voxel index
        coordinates, see :func:`feature_locations`).
    alpha : float, default=0.75
        Weight of the global term; the local term gets ``1 - alpha``.
    num_matches : int, optional
        Pairs kept per sample and direction (at most the number of cells of the
        querying map). Default: ``ceil(20 / 49 * cells)``, the official ratio.
    l2_all_matches : bool, default=False
        Keep all the feature-distance pairs (the official code's default,
        ``--l2_all_matches 1``) instead of the ``num_matches`` nearest.
    inv_coeff, var_coeff, cov_coeff : float, default=25, 25, 1
        Weights of the VICReg terms, in both the global and the local term.
    gamma, eps : float, default=1.0, 1e-4
        Target standard deviation, and the constant added under the square root.
    gather_distributed : bool, default=False
        Variance and covariance on the embeddings and matched cells of all processes
        (with gradients); invariances stay local. See :func:`vicreg_lab.vicreg_loss`.
    check_finite : bool, default=True
        Raise a ValueError on NaN or infinite inputs.

    Returns
    -------
    dict of str to torch.Tensor
        ``"loss"`` (``alpha * global + (1 - alpha) * local``), ``"global"`` and
        ``"local"`` (weighted sums of their three terms), ``"invariance"``,
        ``"variance"``, ``"covariance"`` (the global terms, unweighted, as in
        :func:`vicreg_lab.vicreg_loss`) and ``"local_invariance"``,
        ``"local_variance"``, ``"local_covariance"`` (unweighted; each matching
        averaged over its two directions, the two matchings summed). Scalars,
        float32 (float64 for float64 inputs).

    Raises
    ------
    ValueError
        For inputs of the wrong shape, batch sizes that disagree, fewer than two
        samples, ``alpha`` outside [0, 1], ``num_matches < 1``, or non-finite values.

    Examples
    --------
    >>> import torch
    >>> z1, z2 = torch.randn(8, 32), torch.randn(8, 32)
    >>> m1, m2 = torch.randn(8, 16, 2, 2, 2), torch.randn(8, 16, 2, 2, 2)
    >>> grid = cell_centres((2, 2, 2), grid=(8, 3.5))  # cells of a 16^3 view
    >>> loc = grid.expand(8, 2, 2, 2, 3)  # the same crop for both views
    >>> out = vicregl_loss(z1, z2, m1, m2, loc, loc)
    >>> out["loss"].shape, "local_covariance" in out
    (torch.Size([]), True)
    """
    check_embeddings(z1, z2, check_finite=check_finite)
    _check_maps(z1, maps1, maps2, locations1, locations2, check_finite)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if num_matches is not None and (not isinstance(num_matches, int) or num_matches < 1):
        raise ValueError(f"num_matches must be a positive int or None, got {num_matches!r}")

    coeffs = dict(inv_coeff=inv_coeff, var_coeff=var_coeff, cov_coeff=cov_coeff)
    glob = vicreg_loss(
        z1, z2, gamma=gamma, eps=eps, gather_distributed=gather_distributed,
        check_finite=False, **coeffs,
    )  # fmt: skip
    gather = gather_distributed and world_size() > 1
    with torch.autocast(device_type=maps1.device.type, enabled=False):
        wide = torch.float64 in (z1.dtype, z2.dtype, maps1.dtype, maps2.dtype)
        dtype = torch.float64 if wide else torch.float32
        x1, x2 = _cells(maps1, dtype), _cells(maps2, dtype)
        p1, p2 = _cells_xyz(locations1, dtype), _cells_xyz(locations2, dtype)
        k1 = n_matches(num_matches, x1.shape[1])
        k2 = n_matches(num_matches, x2.shape[1])
        with torch.no_grad():  # only the ranks of the distances are used
            feature_distances = torch.cdist(x1, x2)
            location_distances = torch.cdist(p1, p2)
        kf1, kf2 = (x1.shape[1], x2.shape[1]) if l2_all_matches else (k1, k2)
        matchings = [
            (x1, x2, feature_distances, kf1),
            (x2, x1, feature_distances.transpose(1, 2), kf2),
            (x1, x2, location_distances, k1),
            (x2, x1, location_distances.transpose(1, 2), k2),
        ]
        terms = []
        for query, candidates, distances, k in matchings:
            a, b = _matched_pairs(query, candidates, distances, k)
            terms.append(_local_terms(a, b, gamma=gamma, eps=eps, gather=gather))
        local_inv, local_var, local_cov = _combine_matchings(terms)
        local = inv_coeff * local_inv + var_coeff * local_var + cov_coeff * local_cov
        glob_loss = glob["loss"].to(dtype)
        loss = alpha * glob_loss + (1 - alpha) * local
    return {
        "loss": loss,
        "invariance": glob["invariance"],
        "variance": glob["variance"],
        "covariance": glob["covariance"],
        "global": glob_loss,
        "local": local,
        "local_invariance": local_inv,
        "local_variance": local_var,
        "local_covariance": local_cov,
    }


class VICRegLLoss(nn.Module):
    """VICRegL loss as a module: ``VICRegLLoss(...)(z1, z2, maps1, maps2, loc1, loc2)``.

    Returns the same dict as :func:`vicregl_loss`; the parameters are described there.

    Parameters
    ----------
    alpha : float, default=0.75
    num_matches : int, optional
    l2_all_matches : bool, default=False
    inv_coeff, var_coeff, cov_coeff : float, default=25, 25, 1
    gamma, eps : float, default=1.0, 1e-4
    gather_distributed : bool, default=False
    check_finite : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from vicreg_lab.vicregl import VICRegLLoss, cell_centres
    >>> maps = torch.randn(4, 8, 2, 2, 2, requires_grad=True)
    >>> loc = cell_centres((2, 2, 2), grid=(16, 1.5)).expand(4, 2, 2, 2, 3)
    >>> out = VICRegLLoss(alpha=0.0)(torch.randn(4, 8), torch.randn(4, 8), maps,
    ...                              torch.randn(4, 8, 2, 2, 2), loc, loc)
    >>> out["loss"].backward()
    >>> bool(maps.grad.abs().sum() > 0)
    True
    """

    def __init__(
        self,
        alpha: float = 0.75,
        num_matches: int | None = None,
        l2_all_matches: bool = False,
        inv_coeff: float = 25.0,
        var_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.num_matches = num_matches
        self.l2_all_matches = l2_all_matches
        self.inv_coeff = inv_coeff
        self.var_coeff = var_coeff
        self.cov_coeff = cov_coeff
        self.gamma = gamma
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.check_finite = check_finite

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        maps1: torch.Tensor,
        maps2: torch.Tensor,
        locations1: torch.Tensor,
        locations2: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss; see :func:`vicregl_loss` for the returned dict."""
        return vicregl_loss(
            z1,
            z2,
            maps1,
            maps2,
            locations1,
            locations2,
            alpha=self.alpha,
            num_matches=self.num_matches,
            l2_all_matches=self.l2_all_matches,
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
            f"alpha={self.alpha}, num_matches={self.num_matches}, "
            f"l2_all_matches={self.l2_all_matches}, inv_coeff={self.inv_coeff}, "
            f"var_coeff={self.var_coeff}, cov_coeff={self.cov_coeff}"
        )


# ----------------------------------------------------------------------------- matching


def nearest_neighbour_matches(
    distances: torch.Tensor, num_matches: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair each query cell with its nearest candidate; keep the closest pairs.

    For every sample ``b`` and query ``i``, the match is ``argmin_j distances[b, i, j]``;
    of the ``Lq`` pairs, the ``num_matches`` with the smallest distance are kept and
    returned in increasing query order (as the official code orders them).

    Parameters
    ----------
    distances : torch.Tensor of shape (B, Lq, Lc)
        Distances from every query cell to every candidate cell.
    num_matches : int
        Pairs kept per sample, ``1 <= num_matches <= Lq``.

    Returns
    -------
    query_index, match_index : torch.Tensor of shape (B, num_matches), int64
        Query cell ``query_index[b, n]`` is matched to candidate ``match_index[b, n]``.

    Examples
    --------
    >>> d = torch.tensor([[[0.0, 5.0], [4.0, 3.0], [9.0, 0.5]]])
    >>> nearest_neighbour_matches(d, 2)
    (tensor([[0, 2]]), tensor([[0, 1]]))
    """
    if distances.ndim != 3:
        raise ValueError(f"distances must be (B, Lq, Lc), got shape {tuple(distances.shape)}")
    if not 1 <= num_matches <= distances.shape[1]:
        raise ValueError(
            f"num_matches must lie in [1, {distances.shape[1]}] (the query cells), "
            f"got {num_matches}"
        )
    nearest, match = distances.min(dim=2)
    query = nearest.topk(num_matches, dim=1, largest=False).indices.sort(dim=1).values
    return query, match.gather(1, query)


def _matched_pairs(query, candidates, distances, k):
    """Rows of the matched pairs: (B, k, C) from the query map and from the other map."""
    q_idx, c_idx = nearest_neighbour_matches(distances, k)
    channels = query.shape[-1]
    a = query.gather(1, q_idx[..., None].expand(-1, -1, channels))
    b = candidates.gather(1, c_idx[..., None].expand(-1, -1, channels))
    return a, b


def _combine_matchings(terms: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The local (invariance, variance, covariance) from those of the four matchings.

    ``terms`` holds the features 1 -> 2 and 2 -> 1, then the location 1 -> 2 and
    2 -> 1 matchings. Each matching is averaged over its two directions and the two
    matchings are *summed*, as ``_local_loss`` in the official main_vicregl.py does
    since commit d14c226 ("Fix local loss"). Before that commit ``local_loss`` kept
    only its last ``_local_loss`` call but still divided by the two calls, which
    halved the sum: the mean of the four.
    """
    per_direction = torch.stack([torch.stack(t) for t in terms])  # (4, 3)
    per_matching = per_direction.reshape(2, 2, 3).mean(dim=1)  # (features | location, 3)
    return tuple(per_matching.sum(dim=0).unbind())


def n_matches(num_matches: int | None, cells: int) -> int:
    """Cells kept per direction of a matching: ``num_matches`` (at most ``cells``) or 20/49."""
    if num_matches is None:
        return max(1, math.ceil(DEFAULT_MATCH_FRACTION * cells))
    return min(num_matches, cells)


# ----------------------------------------------------------------------------- local terms


def _local_terms(a: torch.Tensor, b: torch.Tensor, *, gamma: float, eps: float, gather: bool):
    """Unweighted VICReg terms of matched cells ``a``, ``b`` of shape (B, k, C).

    Invariance over all pairs; variance and covariance over the batch for each of the
    ``k`` match indices, averaged over them. Covariance summed over the two sides.
    """
    invariance = F.mse_loss(a, b)
    if gather:
        a, b = gather_with_grad(a), gather_with_grad(b)
    n, _, channels = a.shape
    variance = a.new_zeros(())
    covariance = a.new_zeros(())
    for z in (a, b):
        z = center(z)  # over the batch, for each (match index, channel)
        var = z.pow(2).sum(dim=0) / (n - 1)  # (k, C)
        variance = variance + F.relu(gamma - torch.sqrt(var + eps)).mean() / 2
        offdiag = torch.vmap(offdiag_sq_sum)(z.transpose(0, 1))  # (k,)
        covariance = covariance + offdiag.mean() / channels
    return invariance, variance, covariance


# ----------------------------------------------------------------------------- locations


def cell_centres(
    map_shape: Sequence[int],
    view_shape: Sequence[int] | None = None,
    grid: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Voxel index coordinates, in the view, of the centre of every feature-map cell.

    Parameters
    ----------
    map_shape : sequence of 3 int
        Spatial shape ``(d, h, w)`` of the feature map.
    view_shape : sequence of 3 int, optional
        Spatial shape ``(D, H, W)`` of the view; needed when ``grid`` is None.
    grid : (stride, offset), optional
        Cell ``j`` is centred on voxel ``offset + stride * j`` along every axis (the
        encoder's ``feature_grid``: its receptive-field centres). None splits the view
        evenly into the cells, as the official VICRegL does (``(j + 1/2) D / d - 1/2``):
        right for pooling-like maps, off by a constant for padded strided convolutions.

    Returns
    -------
    torch.Tensor of shape (d, h, w, 3), float32
        ``(d, h, w)`` index coordinates of every cell centre.

    Examples
    --------
    >>> cell_centres((2, 1, 1), grid=(16, 1.5))[:, 0, 0]
    tensor([[ 1.5000,  1.5000,  1.5000],
            [17.5000,  1.5000,  1.5000]])
    >>> cell_centres((2, 1, 1), view_shape=(32, 32, 32))[:, 0, 0, 0]
    tensor([ 7.5000, 23.5000])
    """
    map_shape = _three_ints(map_shape, "map_shape")
    if grid is None:
        if view_shape is None:
            raise ValueError("cell_centres needs view_shape when grid is None")
        view_shape = _three_ints(view_shape, "view_shape")
        axes = [
            (torch.arange(m, dtype=torch.float32) + 0.5) * (n / m) - 0.5
            for m, n in zip(map_shape, view_shape, strict=True)
        ]
    else:
        stride, offset = grid
        axes = [offset + stride * torch.arange(m, dtype=torch.float32) for m in map_shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def feature_locations(
    geometry: torch.Tensor,
    map_shape: Sequence[int],
    view_shape: Sequence[int] | None = None,
    grid: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Source-volume coordinates of every feature-map cell of a batch of views.

    The cell centres in the view (:func:`cell_centres`) go through each view's affine
    map to the source: ``src = A[:, :3] @ centre + A[:, 3]``.

    Parameters
    ----------
    geometry : torch.Tensor of shape (B, 3, 4)
        View-index to source-index affine maps, as returned by
        :class:`vicreg_lab.augment.BatchedAugment` (crop, flips, rotation).
    map_shape, view_shape, grid
        See :func:`cell_centres`.

    Returns
    -------
    torch.Tensor of shape (B, d, h, w, 3)
        Source voxel index coordinates, on ``geometry``'s device and dtype.

    Examples
    --------
    >>> flip_w = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 31]]])
    >>> feature_locations(flip_w, (1, 1, 2), grid=(16, 1.5))[0, 0, 0, :, 2]
    tensor([29.5000, 13.5000])
    """
    if geometry.ndim != 3 or tuple(geometry.shape[1:]) != (3, 4):
        raise ValueError(
            f"geometry must be (B, 3, 4) affine maps (view index -> source index), "
            f"got shape {tuple(geometry.shape)}"
        )
    centres = cell_centres(map_shape, view_shape, grid).to(geometry)
    linear, shift = geometry[:, :, :3], geometry[:, :, 3]
    return torch.einsum("bij,dhwj->bdhwi", linear, centres) + shift[:, None, None, None]


# ----------------------------------------------------------------------------- input checks


def _cells(maps: torch.Tensor, dtype) -> torch.Tensor:
    """(B, C, d, h, w) -> (B, d * h * w, C)."""
    return maps.flatten(2).transpose(1, 2).to(dtype)


def _cells_xyz(locations: torch.Tensor, dtype) -> torch.Tensor:
    """(B, d, h, w, 3) -> (B, d * h * w, 3)."""
    return locations.reshape(locations.shape[0], -1, 3).to(dtype)


def _three_ints(shape, name: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be 3 positive ints (d, h, w), got {shape}")
    return shape


def _check_maps(z1, maps1, maps2, loc1, loc2, check_finite: bool) -> None:
    batch = z1.shape[0]
    for name, m in (("maps1", maps1), ("maps2", maps2)):
        if not isinstance(m, torch.Tensor) or m.ndim != 5 or not m.is_floating_point():
            got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(
                f"{name} must be a floating point feature map (B, C, d, h, w), got {got}"
            )
        if m.shape[0] != batch:
            raise ValueError(
                f"{name} has batch size {m.shape[0]}, the embeddings {batch}: "
                "maps and embeddings must come from the same views"
            )
    if maps1.shape[1] != maps2.shape[1]:
        raise ValueError(
            f"maps1 and maps2 must have the same channels, got {maps1.shape[1]} and "
            f"{maps2.shape[1]}"
        )
    for name, loc, m in (("locations1", loc1, maps1), ("locations2", loc2, maps2)):
        expected = (batch, *m.shape[2:], 3)
        if not isinstance(loc, torch.Tensor) or tuple(loc.shape) != expected:
            got = tuple(loc.shape) if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise ValueError(
                f"{name} must hold the source coordinates of every cell, shape "
                f"(B, d, h, w, 3) = {expected}, got {got}; see feature_locations()"
            )
    if check_finite:
        named = (("maps1", maps1), ("maps2", maps2), ("locations1", loc1), ("locations2", loc2))
        for name, t in named:
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or infinite values")


# ----------------------------------------------------------------------------- the estimator


class _FeatureMaps(nn.Module):
    """``encoder.forward_features`` as a module's forward (so that DDP can wrap it)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(x)


class VICRegL(VICReg):
    """VICRegL training: :class:`vicreg_lab.VICReg` plus a local term on the feature maps.

    Every parameter of :class:`vicreg_lab.VICReg`, and the four below. One step::

        (view1, geometry1), (view2, geometry2) = augment(x), augment(x)
        maps = encoder.forward_features(view)                     # (B, F, d, h, w)
        z = expander(avg_pool(maps)); m = local_expander(maps)    # 1x1x1 convolutions
        locations = feature_locations(geometry, maps.shape[2:], view.shape[2:], grid)
        loss = VICRegLLoss(alpha, ...)(z1, z2, m1, m2, locations1, locations2)["loss"]

    It needs the geometry of every view: ``augmentation="batched"``, or a callable
    returning ``(views, geometry)``; and an encoder with ``forward_features`` (all
    built-in encoders).

    Parameters
    ----------
    alpha : float, default=0.75
        Weight of the global term (the local term gets ``1 - alpha``).
    num_matches : int, optional
        Matched cells kept per view and matching (default: 20/49 of the cells, the
        official ratio).
    l2_all_matches : bool, default=False
        Keep every feature-distance match (the official code's default).
    local_expander : str, default="512-512"
        The dense expander on the feature maps, 1x1x1 convolutions laid out as the
        expander (official VICRegL: ``"512-512-512"``).

    Attributes
    ----------
    local_expander_ : nn.Module
        The trained dense expander (besides ``encoder_`` and ``expander_``).
    history_ : dict
        As VICReg's, with the terms of :func:`vicregl_loss` (:data:`TERMS`): ``"global"``,
        ``"local"``, ``"local_invariance"``, ``"local_variance"``, ``"local_covariance"``.
    """

    TERMS = TERMS
    network_names = ("encoder_", "expander_", "local_expander_")

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
        alpha: float = 0.75,
        num_matches: int | None = None,
        l2_all_matches: bool = False,
        local_expander: str = "512-512",
    ):
        params = {k: v for k, v in locals().items() if k in VICReg._get_param_names()}
        super().__init__(**params)
        self.alpha = alpha
        self.num_matches = num_matches
        self.l2_all_matches = l2_all_matches
        self.local_expander = local_expander

    def _check_params(self) -> None:
        super()._check_params()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        n = self.num_matches
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"num_matches must be a positive int or None, got {n!r}")
        if self.augmentation == "torchio":
            raise ValueError(
                "VICRegL needs the geometry of every view (where each cell of the "
                "feature map comes from): use augmentation='batched' or a callable "
                "returning (views, geometry); TorchIO views do not record it"
            )

    def _build_networks(self) -> None:
        super()._build_networks()
        if not callable(getattr(self.encoder_, "forward_features", None)):
            raise ValueError(
                "VICRegL needs an encoder with forward_features(x) returning its "
                f"feature map (B, F, d, h, w); {type(self.encoder_).__name__} has none"
            )
        self.local_expander_ = build_local_expander(self.representation_size_, self.local_expander)

    def _training_modules(self) -> dict[str, nn.Module]:
        # DDP only synchronises what runs through its forward: wrap forward_features too
        features = {"features": _FeatureMaps(self.encoder_), "local_expander": self.local_expander_}
        return {**super()._training_modules(), **features}

    def _criterion(self, distributed: bool) -> nn.Module:
        return VICRegLLoss(
            alpha=self.alpha,
            num_matches=self.num_matches,
            l2_all_matches=self.l2_all_matches,
            inv_coeff=self.inv_coeff,
            var_coeff=self.var_coeff,
            cov_coeff=self.cov_coeff,
            gather_distributed=distributed,
            check_finite=False,
        )

    def _loss_terms(self, criterion, views, geometries) -> dict:
        if geometries[0] is None or geometries[1] is None:
            raise ValueError(
                "VICRegL needs the geometry of every view: the augmentation callable "
                "must return (views, geometry) with geometry (B, 3, 4) view-index -> "
                "source-index maps (as BatchedAugment does), and a DataLoader may not yield "
                "ready-made (view1, view2, targets)"
            )
        grid = getattr(self.encoder_, "feature_grid", None)
        modules = self._modules
        outputs = []
        for view, geometry in zip(views, geometries, strict=True):
            maps = modules["features"](channels_last(view))
            z = modules["expander"](torch.flatten(F.adaptive_avg_pool3d(maps, 1), 1))
            geometry = geometry.to(device=maps.device, dtype=torch.float32)
            where = feature_locations(geometry, maps.shape[2:], view.shape[2:], grid)
            outputs.append((z, modules["local_expander"](maps), where))
        (z1, m1, where1), (z2, m2, where2) = outputs
        return criterion(z1, z2, m1, m2, where1, where2)
