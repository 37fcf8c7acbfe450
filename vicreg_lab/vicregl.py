r"""VICRegL (Bardes, Ponce & LeCun, NeurIPS 2022) on 3D feature maps.

VICReg only sees the pooled embedding of each view. VICRegL adds a *local* VICReg term
between cells of the two views' feature maps that show the same part of the brain::

    loss   = alpha * global + (1 - alpha) * local               # alpha = 0.75
    global = VICReg(z1, z2)                                     # pooled embeddings (B, D)
    local  = sum over the matchings (features, location) of
             the mean over their 2 directions of VICReg(m1[matched], m2[matched])

A matching pairs each kept cell of one view with its nearest cell of the other, by
feature distance or by distance in the source volume (from the augmentation's geometry,
:func:`feature_locations`, so a flipped view is matched to its mirror image). On the
matched pairs ``(B, k, C)``, as in the official code, variance and covariance are batch
statistics *per match index*, averaged over the ``k`` indices. Differences from the
official ``main_vicregl.py`` (covariance summed over the two views, flips honoured,
receptive-field cell centres) are listed in ``docs/vicregl.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vicreg_lab.distributed import gather_with_grad, world_size
from vicreg_lab.losses import center, check_embeddings, offdiag_sq_sum, vicreg_loss
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
TERMS = ("loss", "invariance", "variance", "covariance", "global", "local")
TERMS += ("local_invariance", "local_variance", "local_covariance")

#: Fraction of the cells kept per direction when ``num_matches`` is None: the official
#: default keeps 20 of the 7 x 7 = 49 cells of a 224-pixel crop.
DEFAULT_MATCH_FRACTION = 20 / 49

#: The keyword arguments of :func:`vicregl_loss`: attributes of VICRegLLoss, the first
#: six of VICRegL too.
_SETTINGS = ("alpha", "num_matches", "l2_all_matches", "inv_coeff", "var_coeff", "cov_coeff")
_SETTINGS += ("gamma", "eps", "gather_distributed", "check_finite")


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
    z1, z2 : torch.Tensor (B, D)
        Global embeddings of the two views.
    maps1, maps2 : torch.Tensor (B, C, d, h, w)
        Local embeddings (dense expander of the feature maps); their sizes may differ.
    locations1, locations2 : torch.Tensor (B, d, h, w, 3)
        Source-volume coordinates of every cell (:func:`feature_locations`).
    alpha : float, default=0.75
        Weight of the global term; the local term gets ``1 - alpha``.
    num_matches : int, optional
        Pairs kept per sample and direction; default ``ceil(20 / 49 * cells)`` (official).
    l2_all_matches : bool, default=False
        Keep every feature-distance pair (the official default) instead of the nearest.
    inv_coeff, var_coeff, cov_coeff, gamma, eps, gather_distributed, check_finite
        As in :func:`vicreg_lab.vicreg_loss`, for both terms (invariances stay local).

    Returns
    -------
    dict of str to torch.Tensor
        Scalars keyed by :data:`TERMS`: ``"loss"``, the weighted ``"global"`` and ``"local"``,
        and the unweighted terms of each. float32 (float64 for float64 inputs).
    """
    check_embeddings(z1, z2, check_finite=check_finite)
    _check_maps(z1, maps1, maps2, locations1, locations2, check_finite)
    _check_settings(alpha, num_matches)
    coeffs = (inv_coeff, var_coeff, cov_coeff)
    glob = vicreg_loss(z1, z2, *coeffs, gamma, eps, gather_distributed, check_finite=False)
    with torch.autocast(device_type=maps1.device.type, enabled=False):
        wide = torch.float64 in (z1.dtype, z2.dtype, maps1.dtype, maps2.dtype)
        dtype = torch.float64 if wide else torch.float32
        local_inv, local_var, local_cov = _local_terms_of_matchings(
            (maps1, maps2), (locations1, locations2), dtype, num_matches, l2_all_matches,
            gamma=gamma, eps=eps, gather=gather_distributed and world_size() > 1,
        )  # fmt: skip
        local = inv_coeff * local_inv + var_coeff * local_var + cov_coeff * local_cov
        glob_loss = glob["loss"].to(dtype)
        loss = alpha * glob_loss + (1 - alpha) * local
    terms = (loss, glob["invariance"], glob["variance"], glob["covariance"], glob_loss, local)
    return dict(zip(TERMS, (*terms, local_inv, local_var, local_cov), strict=True))


class VICRegLLoss(nn.Module):
    """VICRegL loss as a module: ``VICRegLLoss(...)(z1, z2, maps1, maps2, loc1, loc2)``.
    Same parameters and returned dict as :func:`vicregl_loss`.
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
        for name, value in locals().items():
            if name in _SETTINGS:
                setattr(self, name, value)

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
        settings = {name: getattr(self, name) for name in _SETTINGS}
        return vicregl_loss(z1, z2, maps1, maps2, locations1, locations2, **settings)

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

    Query ``i`` of sample ``b`` is matched to ``argmin_j distances[b, i, j]`` (distances
    ``(B, Lq, Lc)``); the ``num_matches`` closest pairs (``1 <= num_matches <= Lq``) are
    kept in increasing query order, as in the official code. Returns int64 ``(B,
    num_matches)`` tensors: query ``query_index[b, n]`` matches ``match_index[b, n]``.

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


def n_matches(num_matches: int | None, cells: int) -> int:
    """Cells kept per direction of a matching: ``num_matches`` (at most ``cells``) or 20/49."""
    if num_matches is None:
        return max(1, math.ceil(DEFAULT_MATCH_FRACTION * cells))
    return min(num_matches, cells)


def _local_terms_of_matchings(maps, locations, dtype, num_matches, l2_all_matches, **kwargs):
    """Local (invariance, variance, covariance) of the four matchings of two views' cells."""
    x1, x2 = (m.flatten(2).transpose(1, 2).to(dtype) for m in maps)  # (B, cells, C)
    p1, p2 = (p.reshape(p.shape[0], -1, 3).to(dtype) for p in locations)  # (B, cells, 3)
    k1, k2 = n_matches(num_matches, x1.shape[1]), n_matches(num_matches, x2.shape[1])
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
        q_idx, c_idx = nearest_neighbour_matches(distances, k)
        a = query.gather(1, q_idx[..., None].expand(-1, -1, query.shape[-1]))
        b = candidates.gather(1, c_idx[..., None].expand(-1, -1, query.shape[-1]))
        terms.append(torch.stack(_local_terms(a, b, **kwargs)))
    # each matching averaged over its two directions, the two matchings summed: the
    # official _local_loss since commit d14c226 ("Fix local loss")
    per_matching = torch.stack(terms).reshape(2, 2, 3).mean(dim=1)
    return tuple(per_matching.sum(dim=0).unbind())


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
        Cell ``j`` is centred on voxel ``offset + stride * j`` (the encoder's
        ``feature_grid``: its receptive-field centres). None splits the view evenly, as
        the official VICRegL does: off by a constant for padded strided convolutions.

    Returns
    -------
    torch.Tensor (d, h, w, 3), float32

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
    """Source-volume coordinates ``(B, d, h, w, 3)`` of every feature-map cell of a batch.

    ``geometry`` holds ``(B, 3, 4)`` view-index to source-index affine maps ``A``
    (:class:`vicreg_lab.augment.BatchedAugment`); a cell centre (:func:`cell_centres`,
    same other parameters) goes to ``A[:, :3] @ centre + A[:, 3]``, in ``geometry``'s dtype.

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


def _three_ints(shape, name: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be 3 positive ints (d, h, w), got {shape}")
    return shape


def _check_settings(alpha: float, num_matches) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if num_matches is not None and (not isinstance(num_matches, int) or num_matches < 1):
        raise ValueError(f"num_matches must be a positive int or None, got {num_matches!r}")


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

    Takes every parameter of :class:`vicreg_lab.VICReg` and the four below. One step::

        (view1, geometry1), (view2, geometry2) = augment(x), augment(x)
        maps = encoder.forward_features(view)                     # (B, F, d, h, w)
        z = expander(avg_pool(maps)); m = local_expander(maps)    # 1x1x1 convolutions
        locations = feature_locations(geometry, maps.shape[2:], view.shape[2:], grid)
        loss = VICRegLLoss(alpha, ...)(z1, z2, m1, m2, locations1, locations2)["loss"]

    It needs each view's geometry (``augmentation="batched"``, or a callable returning
    ``(views, geometry)``) and an encoder with ``forward_features`` (all built-in ones).

    Parameters
    ----------
    alpha : float, default=0.75
        Weight of the global term (the local term gets ``1 - alpha``).
    num_matches : int, optional
        Matched cells kept per view and matching (default: 20/49 of the cells).
    l2_all_matches : bool, default=False
        Keep every feature-distance match (the official code's default).
    local_expander : str, default="512-512"
        The dense expander: 1x1x1 convolutions laid out as the expander (official VICRegL:
        ``"512-512-512"``).

    Attributes
    ----------
    local_expander_ : nn.Module
        The trained dense expander (besides ``encoder_`` and ``expander_``).
    history_ : dict
        As VICReg's, with all the terms of :func:`vicregl_loss` (:data:`TERMS`).
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
        _check_settings(self.alpha, self.num_matches)
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
        settings = {name: getattr(self, name) for name in _SETTINGS[:6]}
        return VICRegLLoss(**settings, gather_distributed=distributed, check_finite=False)

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
