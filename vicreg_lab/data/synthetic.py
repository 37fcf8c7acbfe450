"""A synthetic multi-site cohort of 3D brain MRI with known age, sex, scanner site and anatomy.

Each subject is the MNI152 template (nilearn, offline) reshaped by known factors, each
of them a column of :attr:`SyntheticCohort.latents`:

- **regional grey-matter loss**: 16 parcels of the grey matter (8 per hemisphere);
  in each, the subject loses grey matter next to CSF by an age effect weighted per
  parcel plus its own independent amount (lost grey matter becomes CSF);
- **ventricles**: enlarged with age, plus an independent size and a left/right asymmetry;
- **white-matter lesions**: more of them with age, each with its own place, size and
  contrast; the lesion load is a latent;
- **sex** scales the head (about 9 % more volume in males), plus individual head size;
- a smooth deformation at two scales (in voxels of the grid) makes every brain its own;
- **site** is the scanner's look, in the head's appearance: intensity scale,
  contrast (gamma), a smooth multiplicative bias field, blur and Rician noise. The
  noise is applied everywhere in the same way, so empty background holds nothing
  about the site but its noise level.

Subject ``i`` depends only on ``(seed, i)``: the same whatever the cohort size, so
more subjects of the same seed (:meth:`SyntheticCohort.held_out`) are new people
scanned on the same scanners.
"""

from __future__ import annotations

import math
import string
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ._base import SubjectDataset, check_shape, resolve_target
from ._templates import PARCEL_AGE_WEIGHTS, grid_affine, mni_templates, parcel_labels
from .effects import Effects

MODALITIES = ("t1", "gm")
TISSUES = ("gm", "wm", "csf", "mask")
_SITE_PARAMS = ("scale", "gamma", "bias", "noise", "blur", "gm_gamma")
GM_LOSS_RANGE = (-0.25, 0.95)  # a parcel may also hold a little more grey matter than the template
BIDS_SUFFIX = {"t1": "T1w", "gm": "label-GM_probseg"}


class SyntheticCohort(SubjectDataset):
    """A synthetic cohort of 3D brain MRI with known age, sex, scanner site and anatomy.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    shape : tuple of 3 int or "native"
        Volume shape (D, H, W), e.g. ``(48, 48, 48)``. Voxels are isotropic and the
        field of view is the template brain's bounding box plus 15 %. ``"native"``
        keeps the 2 mm MNI152 grid (99, 117, 95). Axis 0 runs from left to right.
    modality : {"t1", "gm"}
        ``"t1"``: a T1-weighted intensity image (CSF dark, grey matter mid, white
        matter bright) with the scanner's look. ``"gm"``: a VBM-like grey-matter
        probability map in [0, 1] in the same (subject) space, with only a mild
        site effect (no lesions).
    seed : int
        Seed; the cohort is a deterministic function of it.
    n_sites : int
        Number of scanners; subjects are assigned uniformly at random.
    effects : Effects, dict or None
        Effect sizes (see :class:`Effects`); a dict overrides some defaults.
    site_age_confound : float in [0, 1], default=0
        0: age and site are independent. Above 0, each site scans its own part of
        the age range (site ``j`` of ``n`` is drawn towards the ``j``-th ``n``-quantile
        band): at 1 the sites' age ranges do not overlap. Everything else about a
        subject stays as drawn.
    first_subject : int, default=0
        Index of the first subject: the cohort holds subjects ``first_subject ..
        first_subject + n_subjects - 1`` of this seed (see :meth:`held_out`).
    target : str, list of str or None
        Labels returned with each image (columns of :attr:`participants`); see
        "Returns" below.
    cache : bool
        Keep generated volumes in memory (``n_subjects * prod(shape) * 4`` bytes at
        most). A missed item is then generated with its block of 16 neighbours,
        which is much faster per subject than one at a time.
    transform : callable or None
        Applied to each image tensor before it is returned.

    Attributes
    ----------
    participants : pandas.DataFrame
        The known factors: ``participant_id`` ("sub-0000", ...), ``age`` (uniform
        in ``effects.age_range``), ``sex`` ("F"/"M", probability 1/2), ``site``
        ("site-A", ..., uniform).
    latents : pandas.DataFrame
        Every hidden per-subject variable the generator used, one row per subject
        (``t`` is the age rescaled to [0, 1] over ``effects.age_range``, ``z`` a
        standard normal draw of the subject's own):

        - ``head_scale``: ``(1 +/- sex_scale) * exp(head_jitter * z)`` (+ for males);
        - ``gm_loss_<parcel>`` (16 columns, :func:`parcel_labels`): grey matter lost
          next to CSF in that parcel, ``atrophy * w * t + atrophy_jitter * z``
          clipped to [-0.25, 0.95], with the parcel's age weight ``w``;
        - ``atrophy``: the mean of the 16 parcel losses (a summary, not a factor of
          its own);
        - ``ventricle_size``: outward shift of the ventricle walls (mm),
          ``ventricle_growth * t + ventricle_jitter * z``;
        - ``ventricle_asymmetry``: right minus left shift (mm), ``ventricle_asymmetry * z``;
        - ``lesion_count``: white-matter lesions, Poisson with mean ``lesion_rate``
          interpolated linearly in age; each lesion is a Gaussian blob at a random
          deep white-matter point with sigma and contrast uniform in
          ``lesion_sigma`` and ``lesion_contrast``;
        - ``lesion_load``: the lesions' contrast-weighted volume (ml),
          ``sum(contrast * (2 pi)^1.5 sigma^3) / 1000``;
        - ``scanner_scale``, ``scanner_gamma``, ``scanner_bias``, ``scanner_noise``,
          ``scanner_blur``, ``scanner_gm_gamma``: the scan's scanner parameters, the
          site's value (:attr:`sites`) times ``exp(site_jitter * z)``;
        - ``site_index`` and ``seed`` (of the subject's noise and deformation).
    sites : pandas.DataFrame
        Each site's scanner parameters (index: site name), spread evenly over the
        ranges of :class:`Effects` in random order.
    affine : numpy.ndarray
        4x4 voxel-to-MNI (mm) affine of every volume.

    Returns
    -------
    ``cohort[i]`` is a dict ``{"image", "participant_id", "age", "sex", "site",
    "index"}`` when ``target`` is None, else ``(image, target_value)``: a float32
    scalar tensor for a numeric column, a ``str`` otherwise, or a dict of those
    for a list of columns. ``image`` is float32 of shape (1, D, H, W).

    Examples
    --------
    >>> from vicreg_lab.data import SyntheticCohort
    >>> cohort = SyntheticCohort(n_subjects=8, shape=(32, 32, 32), seed=0)
    >>> item = cohort[0]
    >>> item["image"].shape, item["participant_id"]
    (torch.Size([1, 32, 32, 32]), 'sub-0000')
    >>> image, age = SyntheticCohort(8, shape=(32, 32, 32), target="age")[3]
    >>> age.dtype
    torch.float32
    >>> cohort.held_out(4).participants.participant_id.tolist()
    ['sub-0008', 'sub-0009', 'sub-0010', 'sub-0011']
    """

    def __init__(
        self,
        n_subjects: int = 256,
        shape=(64, 64, 64),
        modality: str = "t1",
        seed: int = 0,
        n_sites: int = 4,
        effects: Effects | dict | None = None,
        site_age_confound: float = 0.0,
        first_subject: int = 0,
        target: str | list[str] | None = None,
        cache: bool = True,
        transform=None,
    ):
        if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
            raise ValueError(f"n_subjects must be a positive int, got {n_subjects!r}")
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not isinstance(n_sites, (int, np.integer)) or n_sites < 1:
            raise ValueError(f"n_sites must be a positive int, got {n_sites!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not isinstance(first_subject, (int, np.integer)) or first_subject < 0:
            raise ValueError(f"first_subject must be a non-negative int, got {first_subject!r}")
        if not isinstance(site_age_confound, (int, float)) or not 0 <= site_age_confound <= 1:
            raise ValueError(
                f"site_age_confound must be a number in [0, 1], got {site_age_confound!r}"
            )
        if effects is None:
            effects = Effects()
        elif isinstance(effects, dict):
            effects = Effects(**effects)
        elif not isinstance(effects, Effects):
            raise TypeError(f"effects must be an Effects, a dict or None, got {type(effects)}")

        info = mni_templates()
        if shape == "native":
            self.shape = tuple(info["stack"].shape[1:])
            self.affine = info["affine"].copy()
        else:
            self.shape = check_shape(shape, allow_none=False)
            self.affine = grid_affine(self.shape)
        self.n_subjects, self.modality, self.seed = int(n_subjects), modality, int(seed)
        self.n_sites, self.effects, self.cache = int(n_sites), effects, cache
        self.site_age_confound, self.first_subject = float(site_age_confound), int(first_subject)
        self.transform = transform
        self.sites, self._site_bias = self._draw_sites()
        self.participants, self.latents, self._lesions = self._draw_subjects()
        self.target = resolve_target(target, self.participants, "SyntheticCohort.participants")
        self._volumes: dict[tuple[str, int], torch.Tensor] = {}
        self._stacks: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={getattr(self, name)}"
            for name, default in (("site_age_confound", 0.0), ("first_subject", 0))
            if getattr(self, name) != default
        )
        return (
            f"SyntheticCohort(n_subjects={self.n_subjects}, shape={self.shape}, "
            f"modality={self.modality!r}, seed={self.seed}, n_sites={self.n_sites}{extra})"
        )

    def held_out(self, n_subjects: int) -> SyntheticCohort:
        """New subjects of the same scanners: the next ``n_subjects`` of this seed.

        The held-out cohort shares the seed (hence the sites, their scanners and the
        effects) and starts where this one ends, so none of its people is in this
        cohort: the fair test of what an encoder trained here generalises to.

        Examples
        --------
        >>> train = SyntheticCohort(16, shape=(16, 16, 16), seed=0)
        >>> test = train.held_out(8)
        >>> test.sites.equals(train.sites), test.participants.participant_id[0]
        (True, 'sub-0016')
        """
        return SyntheticCohort(
            n_subjects,
            shape=self.shape,
            modality=self.modality,
            seed=self.seed,
            n_sites=self.n_sites,
            effects=self.effects,
            site_age_confound=self.site_age_confound,
            first_subject=self.first_subject + self.n_subjects,
            target=self.target,
            cache=self.cache,
            transform=self.transform,
        )

    @staticmethod
    def anatomical_latents() -> list[str]:
        """The :attr:`latents` columns that describe anatomy (not the scanner)."""
        parcels = [f"gm_loss_{name}" for name in parcel_labels()]
        return [
            "head_scale",
            "atrophy",
            *parcels,
            "ventricle_size",
            "ventricle_asymmetry",
            "lesion_load",
        ]

    # ------------------------------------------------------------------ factors
    def _draw_sites(self):
        e, n = self.effects, self.n_sites
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        ranges = [e.site_scale, e.site_gamma, e.site_bias, e.site_noise, e.site_blur]
        ranges.append(e.gm_site_gamma)
        values = {}
        for name, (lo, hi) in zip(_SITE_PARAMS, ranges, strict=True):
            # stratified: the sites spread over the whole range, in random order
            u = (rng.permutation(n) + rng.random(n)) / n
            values[name] = lo + u * (hi - lo)
        names = [_site_name(j, n) for j in range(n)]
        sites = pd.DataFrame(values, index=pd.Index(names, name="site"))
        bias = torch.stack(
            [
                torch.randn(1, 4, 4, 4, generator=_generator(self.seed, 2, j))
                for j in range(self.n_sites)
            ]
        )
        return sites, bias

    def _draw_subjects(self):
        e = self.effects
        deep_wm = mni_templates()["deep_wm_mm"]
        weights = np.tile(PARCEL_AGE_WEIGHTS, 2)  # left and right share a weight
        parcels = [f"gm_loss_{name}" for name in parcel_labels()]
        rows, latents, lesions = [], [], []
        lo, hi = e.age_range
        for i in range(self.first_subject, self.first_subject + self.n_subjects):
            ss = np.random.SeedSequence(self.seed, spawn_key=(0, i))
            rng = np.random.default_rng(ss)
            site = int(rng.integers(self.n_sites))
            u, u_site = rng.random(2)
            t = (1 - self.site_age_confound) * u + self.site_age_confound * (
                site + u_site
            ) / self.n_sites
            age = lo + (hi - lo) * t
            sex = "M" if rng.random() < 0.5 else "F"
            z_head, z_ventricle, z_asymmetry = rng.standard_normal(3)
            z_parcels = rng.standard_normal(len(weights))
            jitter = np.exp(e.site_jitter * rng.standard_normal(len(_SITE_PARAMS)))
            loss = np.clip(e.atrophy * weights * t + e.atrophy_jitter * z_parcels, *GM_LOSS_RANGE)
            lesions.append(self._draw_lesions(rng, t, deep_wm))
            sign = 1.0 if sex == "M" else -1.0
            latent = {
                "head_scale": (1 + sign * e.sex_scale) * math.exp(e.head_jitter * z_head),
                **dict(zip(parcels, loss.tolist(), strict=True)),
                "atrophy": float(loss.mean()),
                "ventricle_size": e.ventricle_growth * t + e.ventricle_jitter * z_ventricle,
                "ventricle_asymmetry": e.ventricle_asymmetry * z_asymmetry,
                "lesion_count": len(lesions[-1]),
                "lesion_load": _lesion_load(lesions[-1]),
                "site_index": site,
                "seed": int(ss.generate_state(1)[0]),
            }
            site_values = self.sites.iloc[site]
            for k, name in enumerate(_SITE_PARAMS):
                latent[f"scanner_{name}"] = float(site_values[name] * jitter[k])
            rows.append((f"sub-{i:04d}", round(age, 1), sex, self.sites.index[site]))
            latents.append(latent)
        participants = pd.DataFrame(rows, columns=["participant_id", "age", "sex", "site"])
        return participants, pd.DataFrame(latents), lesions

    def _draw_lesions(self, rng: np.random.Generator, t: float, deep_wm: np.ndarray) -> np.ndarray:
        """(n, 5) lesions of one subject: centre (mm), sigma (mm), contrast."""
        e = self.effects
        count = rng.poisson(e.lesion_rate[0] + (e.lesion_rate[1] - e.lesion_rate[0]) * t)
        centres = deep_wm[rng.integers(len(deep_wm), size=count)]
        sigma = rng.uniform(*e.lesion_sigma, size=count)
        contrast = rng.uniform(*e.lesion_contrast, size=count)
        return np.column_stack([centres, sigma, contrast]).astype(np.float32).reshape(-1, 5)

    # --------------------------------------------------------------- generation
    def clear_cache(self) -> None:
        """Forget the volumes rendered so far (asked for again, they are rendered again, identical).

        With ``cache=True`` every volume is kept once rendered: 1024 subjects at 48^3
        take 450 MB. Drop them when they are no longer needed (``make demo`` does, after
        training, before it probes the held-out subjects).
        """
        self._volumes.clear()

    def _load(self, index: int) -> torch.Tensor:
        if self.cache and (self.modality, index) not in self._volumes:
            start = index - index % 16
            self.generate(range(start, min(start + 16, self.n_subjects)))
        return self.generate([index])[0]

    def generate(self, indices, modality: str | None = None) -> torch.Tensor:
        """Generate (or fetch from the cache) several subjects at once.

        Parameters
        ----------
        indices : sequence of int
            Subject indices.
        modality : {"t1", "gm"} or None
            Defaults to the cohort's modality.

        Returns
        -------
        torch.Tensor
            float32, shape (len(indices), 1, D, H, W), without ``transform``.
        """
        modality = modality or self.modality
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        indices = [self._check_subject(i) for i in indices]
        todo = sorted({i for i in indices if (modality, i) not in self._volumes})
        out = {}
        for chunk in _chunks(todo, self._batch_size()):
            for i, volume in zip(chunk, self._render(chunk, modality), strict=True):
                out[i] = volume
                if self.cache:
                    self._volumes[(modality, i)] = volume
        volumes = [out[i] if i in out else self._volumes[(modality, i)] for i in indices]
        if not volumes:
            return torch.empty(0, 1, *self.shape)
        return torch.stack(volumes)

    def tissue_maps(self, indices, tissues=TISSUES) -> dict[str, torch.Tensor]:
        """Grey matter, white matter, CSF and brain mask of some subjects (no scanner look).

        Parameters
        ----------
        indices : iterable of int
            Subjects.
        tissues : sequence of str, default=("gm", "wm", "csf", "mask")
            Which maps to return; ask only for those you need when memory is short
            (each map of 256 subjects at 48^3 takes 113 MB).

        Returns
        -------
        dict of str to torch.Tensor
            One entry per tissue asked for, each (len(indices), 1, D, H, W).
            Multiply a sum by ``voxel_volume_ml`` to get millilitres.
        """
        tissues = tuple(tissues)
        unknown = [t for t in tissues if t not in TISSUES]
        if unknown or not tissues:
            raise ValueError(f"tissues must be some of {TISSUES}, got {tissues!r}")
        indices = [self._check_subject(i) for i in indices]
        out = {t: torch.empty(len(indices), 1, *self.shape) for t in tissues}
        start = 0
        for chunk in _chunks(indices, self._batch_size()):  # filled in place: no second copy
            maps = self._render(chunk, "tissues")
            for t in tissues:
                out[t][start : start + len(chunk)] = maps[t]
            start += len(chunk)
        return out

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def _check_subject(self, i) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_subjects:
            raise IndexError(f"subject index must be an int in [0, {self.n_subjects}), got {i!r}")
        return int(i)

    def _batch_size(self) -> int:
        return int(max(1, min(16, 2**22 // math.prod(self.shape))))

    def _render(self, indices: list[int], what: str):
        e = self.effects
        lat = self.latents.iloc[indices]
        gens = [torch.Generator().manual_seed(s) for s in lat["seed"]]
        b, shape = len(indices), self.shape

        def column(name):
            return torch.tensor(lat[name].to_numpy(), dtype=torch.float32).view(b, 1, 1, 1)

        # One grid_sample for the whole batch (subjects stacked along depth).
        coarse = torch.stack([torch.randn(3, 4, 4, 4, generator=g) for g in gens])
        fine = torch.stack([torch.randn(3, 8, 8, 8, generator=g) for g in gens])
        small = self._sampling_grid(coarse, fine, lat)  # (B, d, h, w, 3), d <= 32
        grid = _upsample(small.movedim(-1, 1), shape).movedim(1, -1)
        grid = grid.reshape(1, b * shape[0], *shape[1:], 3)
        sampled = F.grid_sample(
            self._template_stack(what)[None],
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        sampled = sampled.view(-1, b, *shape)
        loss = self._gm_loss_map(lat, small)
        if what == "tissues":
            gm, wm, csf, gm_near_csf, mask = sampled.unbind(0)
            lost = torch.maximum(loss * gm_near_csf, -csf)  # a gain of grey matter takes CSF
            maps = {"gm": gm - lost, "wm": wm, "csf": csf + lost, "mask": mask}
            return {k: v[:, None] for k, v in maps.items()}
        if what == "gm":
            gm = sampled[0] - loss * sampled[1]
            return (gm.clamp(0, 1) ** column("scanner_gm_gamma"))[:, None].contiguous()

        # T1: tissue intensities (atrophy turns grey matter into CSF), lesions, then the scanner.
        image = sampled[0] + loss * sampled[1]
        i_gm = e.tissue_intensity[1]
        lesions = self._lesion_map(indices, grid.view(b, -1, 3))
        image -= lesions * (image - i_gm).clamp_min(0)  # white matter darkens towards grey
        voxel = self._voxel_mm()
        widest = e.site_blur[1] * math.exp(3 * e.site_jitter) / voxel  # for any subject
        radius = math.ceil(2.5 * widest)
        image = _blur(image, lat["scanner_blur"].to_numpy() / voxel, radius=radius)
        image = image.clamp_min(0) ** column("scanner_gamma")
        subject_bias = torch.stack([torch.randn(1, 4, 4, 4, generator=g) for g in gens])
        log_bias = self._site_bias[lat["site_index"].tolist()] + 0.5 * subject_bias
        bias = torch.exp(column("scanner_bias") * _upsample(log_bias, shape)[:, 0])
        image *= bias * column("scanner_scale")
        # Rician (magnitude) noise, the same everywhere: background is noise, not zeros.
        noise = torch.empty(b, 2, *shape)
        for k, g in enumerate(gens):
            torch.randn(2, *shape, generator=g, out=noise[k])
        noise *= column("scanner_noise")[:, None]
        real = image + noise[:, 0]
        image = torch.sqrt(real * real + noise[:, 1] * noise[:, 1])
        return image[:, None]

    def _voxel_mm(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) ** (1 / 3)

    def _gm_loss_map(self, lat: pd.DataFrame, small: torch.Tensor) -> torch.Tensor:
        """Each output voxel's grey-matter loss: that of the parcel it samples (B, D, H, W).

        Parcels are large, so their labels are read on the small grid of
        :meth:`_sampling_grid` and the loss is interpolated (soft parcel borders).
        """
        b = len(lat)
        parcels = F.grid_sample(
            mni_templates()["parcels"][None, None],
            small.reshape(1, b * small.shape[1], *small.shape[2:]),
            mode="nearest",
            padding_mode="border",
            align_corners=True,
        )
        columns = [f"gm_loss_{name}" for name in parcel_labels()]
        losses = torch.tensor(lat[columns].to_numpy(), dtype=torch.float32)
        loss = torch.gather(losses, 1, parcels.view(b, -1).long()).view(b, 1, *small.shape[1:4])
        return _upsample(loss, self.shape)[:, 0]

    def _lesion_map(self, indices: list[int], grid: torch.Tensor) -> torch.Tensor:
        """Lesion depth in [0, 1] at each output voxel (B, D, H, W).

        Lesions live in template space (they move with the subject's anatomy): each
        output voxel is compared with the template point it samples.
        """
        info = mni_templates()
        to_mm = _grid_to_mm(info["affine"], info["stack"].shape[1:])
        out = torch.zeros(len(indices), math.prod(self.shape))
        for k, i in enumerate(indices):
            lesions = torch.from_numpy(self._lesions[i])
            if len(lesions) == 0:
                continue
            d2 = torch.cdist(to_mm(grid[k]), lesions[:, :3]).square_()  # (V, n lesions)
            sigma, contrast = lesions[:, 3], lesions[:, 4]
            voxel, lesion = (d2 < (3 * sigma) ** 2).nonzero(as_tuple=True)  # the rest is ~0
            depth = contrast[lesion] * torch.exp(-d2[voxel, lesion] / (2 * sigma[lesion] ** 2))
            out[k].index_add_(0, voxel, depth).clamp_max_(1.0)
        return out.view(len(indices), *self.shape)

    def _sampling_grid(self, coarse: torch.Tensor, fine: torch.Tensor, lat: pd.DataFrame):
        """Where the output grid samples the template: grid coordinates (B, d, h, w, 3).

        Output voxel -> MNI mm, + smooth displacement at two scales (``coarse``,
        ``fine``: standard normal control points, scaled to voxels of this grid),
        / head scale (about the brain centre), then a push into each ventricle near
        its walls (dilating it). All of it is smooth, so it is computed on a grid of
        at most 32^3 points (``d, h, w``), which the caller interpolates.
        """
        e, info = self.effects, mni_templates()
        small = tuple(min(n, 32) for n in self.shape)
        b = len(lat)
        voxel = self._voxel_mm()
        displacement = _upsample(coarse, small) * e.deformation_coarse
        displacement += _upsample(fine, small) * e.deformation_fine
        points = self._coarse_points(small) + (voxel * displacement).movedim(1, -1)

        def column(name):
            return torch.tensor(lat[name].to_numpy(), dtype=torch.float32).view(b, 1, 1, 1, 1)

        center = torch.as_tensor(info["brain_center"], dtype=torch.float32)
        points = center + (points - center) / column("head_scale")
        to_grid = partial(_mm_to_grid, affine=info["affine"], shape=info["stack"].shape[1:])
        push = F.grid_sample(
            info["ventricle_push"][None],
            to_grid(points).reshape(1, b * small[0], *small[1:], 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        push = push.view(3, b, *small).movedim(0, -1)
        # Each side's ventricle has its own shift: left (x < 0) and right, blended
        # over a few mm across the midline (the third ventricle).
        left = torch.sigmoid(-points[..., :1] / 4.0)
        shift = column("ventricle_size") + column("ventricle_asymmetry") * (0.5 - left)
        points = points + shift * push
        return to_grid(points)

    def _coarse_points(self, coarse) -> torch.Tensor:
        """MNI mm of a ``coarse`` grid spanning the output grid's corners (align_corners)."""
        axes = [
            torch.linspace(0, n - 1, m, dtype=torch.float64)
            for n, m in zip(self.shape, coarse, strict=True)
        ]
        ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        a = torch.as_tensor(self.affine)
        return (ijk @ a[:3, :3].T + a[:3, 3]).float()

    def _template_stack(self, what: str) -> torch.Tensor:
        """Template channels to sample: all tissues, or just what ``what`` needs (faster)."""
        stack = mni_templates()["stack"]
        if what == "tissues":
            return stack
        if what not in self._stacks:
            gm, wm, csf, gm_near_csf, _ = stack
            if what == "gm":
                self._stacks[what] = torch.stack([gm, gm_near_csf])
            else:
                i_csf, i_gm, i_wm = self.effects.tissue_intensity
                t1 = i_csf * csf + i_gm * gm + i_wm * wm
                self._stacks[what] = torch.stack([t1, (i_csf - i_gm) * gm_near_csf])
        return self._stacks[what]

    # -------------------------------------------------------------------- export
    def to_bids(self, folder, modality: str | None = None, indices=None) -> Path:
        """Write the cohort as a BIDS-like folder that :class:`NiftiFolder` reads.

        Files: ``participants.tsv`` and ``sub-XXXX/anat/sub-XXXX_T1w.nii.gz``
        (``modality="t1"``) or ``sub-XXXX/anat/sub-XXXX_label-GM_probseg.nii.gz``
        (``modality="gm"``; read it with
        ``NiftiFolder(folder, pattern="sub-*/anat/sub-*_label-GM_probseg.nii*")``).
        Every file is written to a temporary name and renamed into place.

        Parameters
        ----------
        folder : str or path-like
            Output folder (created if needed).
        modality : {"t1", "gm"} or None
            Defaults to the cohort's modality.
        indices : sequence of int or None
            Subjects to write (default: all).

        Returns
        -------
        pathlib.Path
            The folder.
        """
        import gzip

        import nibabel as nib

        from .._io import atomic_path, write_text

        modality = modality or self.modality
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        folder = Path(folder)
        indices = range(self.n_subjects) if indices is None else list(indices)
        for chunk in _chunks(list(indices), self._batch_size()):
            for i, volume in zip(chunk, self.generate(chunk, modality), strict=True):
                pid = self.participants.participant_id[i]
                path = folder / pid / "anat" / f"{pid}_{BIDS_SUFFIX[modality]}.nii.gz"
                image = nib.Nifti1Image(volume[0].numpy(), self.affine)
                image.header.set_xyzt_units("mm")
                with atomic_path(path) as tmp:
                    tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=4, mtime=0))
        table = self.participants.iloc[list(indices)]
        write_text(folder / "participants.tsv", table.to_csv(sep="\t", index=False))
        return folder


def _site_name(j: int, n: int) -> str:
    return f"site-{string.ascii_uppercase[j]}" if n <= 26 else f"site-{j:02d}"


def _generator(seed: int, *key: int) -> torch.Generator:
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upsample(control: torch.Tensor, shape) -> torch.Tensor:
    """Smooth field over the grid from a coarse grid of control values (B, C, n, n, n)."""
    return F.interpolate(control, size=tuple(shape), mode="trilinear", align_corners=True)


def _mm_to_grid(points: torch.Tensor, affine: np.ndarray, shape) -> torch.Tensor:
    """MNI mm -> ``grid_sample`` coordinates of a volume (last axis ordered W, H, D)."""
    to_voxel = np.linalg.inv(affine)
    scale = 2.0 / (np.asarray(shape, dtype=float) - 1)
    linear = (scale[:, None] * to_voxel[:3, :3])[::-1]
    shift = (scale * to_voxel[:3, 3] - 1)[::-1]
    linear = torch.as_tensor(linear.copy(), dtype=torch.float32)
    shift = torch.as_tensor(shift.copy(), dtype=torch.float32)
    return points @ linear.T + shift


def _grid_to_mm(affine: np.ndarray, shape):
    """The inverse of :func:`_mm_to_grid`: a function from grid coordinates to MNI mm."""
    origin = _mm_to_grid(torch.zeros(3), affine, shape)
    linear = torch.stack([_mm_to_grid(torch.eye(3)[k], affine, shape) - origin for k in range(3)])
    inverse = torch.linalg.inv(linear)  # rows of `linear`: images of the mm unit vectors
    return lambda grid: (grid - origin) @ inverse


def _lesion_load(lesions: np.ndarray) -> float:
    """Contrast-weighted volume (ml) of a subject's Gaussian lesions."""
    sigma, contrast = lesions[:, 3].astype(float), lesions[:, 4].astype(float)
    return float((contrast * (2 * math.pi) ** 1.5 * sigma**3).sum() / 1000)


def _blur(volumes: torch.Tensor, sigmas: np.ndarray, radius: int) -> torch.Tensor:
    """Gaussian blur of each volume (B, D, H, W) with its own sigma (voxels).

    Separable, as weighted sums of shifted copies: each subject's result depends only
    on its own volume and sigma (not on the batch, unlike a grouped convolution).
    """
    if radius == 0:
        return volumes
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    sigma = torch.as_tensor(np.maximum(sigmas, 1e-3), dtype=torch.float32)[:, None]
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).view(-1, 2 * radius + 1, 1, 1, 1)
    for axis in (1, 2, 3):
        padding = [0] * 6
        padding[2 * (3 - axis)] = padding[2 * (3 - axis) + 1] = radius
        padded = F.pad(volumes, padding)
        size = volumes.shape[axis]
        out = padded.narrow(axis, 0, size) * kernel[:, 0]
        for k in range(1, 2 * radius + 1):
            out.addcmul_(padded.narrow(axis, k, size), kernel[:, k])
        volumes = out
    return volumes
