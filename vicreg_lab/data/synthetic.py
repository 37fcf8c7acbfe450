"""A synthetic multi-site cohort of 3D brain MRI with known age, sex and scanner site.

Each subject is the MNI152 template (nilearn, offline) reshaped by known factors:

- **age** thins grey matter where it borders CSF (the lost grey matter becomes CSF,
  so sulci widen) and enlarges the ventricles (a smooth radial warp);
- **sex** scales the head (males larger);
- **site** is the scanner's look, in the head's appearance: intensity scale,
  contrast (gamma), a smooth multiplicative bias field, blur and Rician noise. The
  noise is applied everywhere in the same way, so empty background holds nothing
  about the site but its noise level;
- a smooth random deformation makes every brain its own.

Subject ``i`` depends only on ``(seed, i)``: the same whatever the cohort size.
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

from ._base import _SubjectDataset, check_shape, resolve_target
from ._templates import grid_affine, mni_templates
from .effects import Effects

MODALITIES = ("t1", "gm")
TISSUES = ("gm", "wm", "csf", "mask")
_SITE_PARAMS = ("scale", "gamma", "bias", "noise", "blur", "gm_gamma")
BIDS_SUFFIX = {"t1": "T1w", "gm": "label-GM_probseg"}


class SyntheticCohort(_SubjectDataset):
    """A synthetic cohort of 3D brain MRI with known age, sex and scanner site.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    shape : tuple of 3 int or "native"
        Volume shape (D, H, W), e.g. ``(48, 48, 48)``. Voxels are isotropic and the
        field of view is the template brain's bounding box plus 15 %. ``"native"``
        keeps the 2 mm MNI152 grid (99, 117, 95).
    modality : {"t1", "gm"}
        ``"t1"``: a T1-weighted intensity image (CSF dark, grey matter mid, white
        matter bright) with the scanner's look. ``"gm"``: a VBM-like grey-matter
        probability map in [0, 1] in the same (subject) space, with only a mild
        site effect.
    seed : int
        Seed; the cohort is a deterministic function of it.
    n_sites : int
        Number of scanners; subjects are assigned uniformly at random.
    effects : Effects, dict or None
        Effect sizes (see :class:`Effects`); a dict overrides some defaults.
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
        The known factors: ``participant_id`` ("sub-0000", ...), ``age``, ``sex``
        ("F"/"M"), ``site`` ("site-A", ...).
    latents : pandas.DataFrame
        Hidden per-subject variables the generator used: ``head_scale``,
        ``atrophy`` (fraction of grey matter removed next to CSF), ``ventricle``
        (radial enlargement), and the scanner parameters of the scan.
    sites : pandas.DataFrame
        Each site's scanner parameters (index: site name).
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
    """

    def __init__(
        self,
        n_subjects: int = 256,
        shape=(64, 64, 64),
        modality: str = "t1",
        seed: int = 0,
        n_sites: int = 4,
        effects: Effects | dict | None = None,
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
        self.transform = transform
        self.sites, self._site_bias = self._draw_sites()
        self.participants, self.latents = self._draw_subjects()
        self.target = resolve_target(target, self.participants, "SyntheticCohort.participants")
        self._volumes: dict[tuple[str, int], torch.Tensor] = {}
        self._stacks: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"SyntheticCohort(n_subjects={self.n_subjects}, shape={self.shape}, "
            f"modality={self.modality!r}, seed={self.seed}, n_sites={self.n_sites})"
        )

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
        rows, latents = [], []
        lo, hi = e.age_range
        for i in range(self.n_subjects):
            ss = np.random.SeedSequence(self.seed, spawn_key=(0, i))
            rng = np.random.default_rng(ss)
            age = lo + (hi - lo) * rng.random()
            sex = "M" if rng.random() < 0.5 else "F"
            site = int(rng.integers(self.n_sites))
            z_head, z_atrophy = rng.standard_normal(2)
            jitter = np.exp(e.site_jitter * rng.standard_normal(len(_SITE_PARAMS)))
            t = (age - lo) / (hi - lo)
            sign = 1.0 if sex == "M" else -1.0
            site_values = self.sites.iloc[site]
            latent = {
                "head_scale": (1 + sign * e.sex_scale) * (1 + e.head_jitter * z_head),
                "atrophy": min(0.95, e.atrophy * t * math.exp(e.atrophy_jitter * z_atrophy)),
                "ventricle": e.ventricle_growth * t,
                "site_index": site,
                "seed": int(ss.generate_state(1)[0]),
            }
            for k, name in enumerate(_SITE_PARAMS):
                latent[name] = float(site_values[name] * jitter[k])
            rows.append((f"sub-{i:04d}", round(age, 1), sex, self.sites.index[site]))
            latents.append(latent)
        participants = pd.DataFrame(rows, columns=["participant_id", "age", "sex", "site"])
        return participants, pd.DataFrame(latents)

    # --------------------------------------------------------------- generation
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
        ctrl = torch.stack([torch.randn(3, 5, 5, 5, generator=g) for g in gens])
        grid = self._sampling_grid(ctrl * e.deformation, lat)
        sampled = F.grid_sample(
            self._template_stack(what)[None],
            grid.reshape(1, b * shape[0], *shape[1:], 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        sampled = sampled.view(-1, b, *shape)
        atrophy = column("atrophy")
        if what == "tissues":
            gm, wm, csf, gm_near_csf, mask = sampled.unbind(0)
            lost = atrophy * gm_near_csf
            maps = {"gm": gm - lost, "wm": wm, "csf": csf + lost, "mask": mask}
            return {k: v[:, None] for k, v in maps.items()}
        if what == "gm":
            gm = sampled[0] - atrophy * sampled[1]
            return (gm.clamp(0, 1) ** column("gm_gamma"))[:, None].contiguous()

        # T1: tissue intensities (atrophy turns grey matter into CSF), then the scanner.
        image = sampled[0] + atrophy * sampled[1]
        voxel = float(abs(np.linalg.det(self.affine[:3, :3]))) ** (1 / 3)
        widest = e.site_blur[1] * math.exp(3 * e.site_jitter) / voxel  # for any subject
        image = _blur(image, lat["blur"].to_numpy() / voxel, radius=math.ceil(2.5 * widest))
        image = image.clamp_min(0) ** column("gamma")
        subject_bias = torch.stack([torch.randn(1, 4, 4, 4, generator=g) for g in gens])
        log_bias = self._site_bias[lat["site_index"].tolist()] + 0.5 * subject_bias
        image *= torch.exp(column("bias") * _upsample(log_bias, shape)[:, 0]) * column("scale")
        # Rician (magnitude) noise, the same everywhere: background is noise, not zeros.
        noise = torch.empty(b, 2, *shape)
        for k, g in enumerate(gens):
            torch.randn(2, *shape, generator=g, out=noise[k])
        noise *= column("noise")[:, None]
        real = image + noise[:, 0]
        image = torch.sqrt(real * real + noise[:, 1] * noise[:, 1])
        return image[:, None]

    def _sampling_grid(self, displacement: torch.Tensor, lat: pd.DataFrame) -> torch.Tensor:
        """Where each output voxel samples the template: grid coordinates (B, D, H, W, 3).

        Output voxel -> MNI mm, + smooth displacement, / head scale (about the brain
        centre), then a push into the ventricles near their walls (dilating them).
        All of it is smooth, so it is computed on a grid of at most 32^3 points and
        interpolated.
        """
        info = mni_templates()
        coarse = tuple(min(n, 32) for n in self.shape)
        b = len(lat)
        points = self._coarse_points(coarse) + _upsample(displacement, coarse).movedim(1, -1)

        def column(name):
            return torch.tensor(lat[name].to_numpy(), dtype=torch.float32).view(b, 1, 1, 1, 1)

        center = torch.as_tensor(info["brain_center"], dtype=torch.float32)
        points = center + (points - center) / column("head_scale")
        to_grid = partial(_mm_to_grid, affine=info["affine"], shape=info["stack"].shape[1:])
        push = F.grid_sample(
            info["ventricle_push"][None],
            to_grid(points).reshape(1, b * coarse[0], *coarse[1:], 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        push = push.view(3, b, *coarse).movedim(0, -1)
        grid = to_grid(points + column("ventricle") * push)
        return _upsample(grid.movedim(-1, 1), self.shape).movedim(1, -1)

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
