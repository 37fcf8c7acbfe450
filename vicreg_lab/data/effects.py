"""Effect sizes of the synthetic cohort: how strongly age, sex and site change a brain."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Effects:
    """How strongly each known factor changes the synthetic brains.

    The defaults make every factor visible in a figure and measurable by a linear
    probe, while the volumes still look like T1-weighted MRI. Set a strength to 0
    (or a range to a single value, e.g. ``(1.0, 1.0)``) to switch an effect off.

    Parameters
    ----------
    age_range : (float, float)
        Ages are drawn uniformly in this range (years).
    atrophy : float
        Grey matter lost at the oldest age where grey matter borders CSF (sulci,
        ventricles, outer surface), in a parcel of age weight 1; each of the 16
        parcels has its own weight (prefrontal and medial temporal most, occipital
        least). Grows linearly with age from 0 at ``age_range[0]``; lost grey
        matter becomes CSF.
    atrophy_jitter : float
        Standard deviation of each subject's own loss in each parcel, added to the
        age effect (independently per parcel): two people of the same age do not
        have the same brain, nor the same pattern of ageing.
    ventricle_growth : float
        Outward shift (mm) of the ventricle walls at the oldest age, linear in age.
    ventricle_jitter : float
        Standard deviation (mm) of the subject's own ventricle size, independent of age.
    ventricle_asymmetry : float
        Standard deviation (mm) of the difference between the right and the left
        ventricle's shift (the right grows by half of it more, the left by half less).
    sex_scale : float
        Head size: males are scaled by ``1 + sex_scale``, females by
        ``1 - sex_scale`` along each axis (the default gives about 9 % more head
        volume in males, close to the real difference).
    head_jitter : float
        Per-subject standard deviation of the head scale around its sex mean.
    deformation_coarse, deformation_fine : float
        Standard deviation, in voxels of the cohort's own grid, of a smooth random
        displacement at control points 4x4x4 (the head's overall shape) and 8x8x8
        (local folds), trilinearly interpolated: the subject's own anatomy. Stated
        in voxels so that it is visible at every grid size.
    lesion_rate : (float, float)
        Mean number of white-matter lesions at the youngest and the oldest age
        (Poisson, linear in age in between).
    lesion_sigma : (float, float)
        Range of a lesion's size (standard deviation of its Gaussian profile, mm).
    lesion_contrast : (float, float)
        Range of a lesion's depth: the fraction of the way from white towards grey
        matter intensity that its centre goes (T1 hypointense lesions).
    tissue_intensity : (float, float, float)
        T1 intensities of CSF, grey matter and white matter before scanner effects.
    site_scale : (float, float)
        Range of the global intensity scale of a scanner.
    site_gamma : (float, float)
        Range of the scanner's contrast, a gamma applied to the intensities.
    site_bias : (float, float)
        Range of the amplitude (log scale) of the scanner's smooth multiplicative
        bias field (a pattern per site plus a weaker one per subject).
    site_noise : (float, float)
        Range of the scanner's noise level (standard deviation of Rician noise,
        applied everywhere, background included).
    site_blur : (float, float)
        Range of the scanner's blur (Gaussian sigma, mm).
    site_jitter : float
        Per-subject relative variation of every scanner parameter (two scans on the
        same scanner are not identical).
    gm_site_gamma : (float, float)
        Range of a mild per-site gamma on the grey-matter map (``modality="gm"``):
        segmentation differs slightly between scanners.

    Examples
    --------
    >>> from vicreg_lab.data import Effects
    >>> Effects().atrophy
    0.5
    >>> no_site = Effects.without_site()
    >>> no_site.site_noise
    (0.0325, 0.0325)
    """

    age_range: tuple[float, float] = (20.0, 85.0)
    atrophy: float = 0.5
    atrophy_jitter: float = 0.1
    ventricle_growth: float = 5.0
    ventricle_jitter: float = 1.5
    ventricle_asymmetry: float = 1.0
    sex_scale: float = 0.015
    head_jitter: float = 0.02
    deformation_coarse: float = 1.0
    deformation_fine: float = 0.5
    lesion_rate: tuple[float, float] = (0.5, 8.0)
    lesion_sigma: tuple[float, float] = (1.5, 4.0)
    lesion_contrast: tuple[float, float] = (0.3, 0.8)
    tissue_intensity: tuple[float, float, float] = (0.2, 0.55, 0.9)
    site_scale: tuple[float, float] = (0.75, 1.25)
    site_gamma: tuple[float, float] = (0.75, 1.35)
    site_bias: tuple[float, float] = (0.05, 0.3)
    site_noise: tuple[float, float] = (0.025, 0.04)
    site_blur: tuple[float, float] = (0.0, 2.0)
    site_jitter: float = 0.05
    gm_site_gamma: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(not isinstance(v, (int, float)) or v < 0 for v in values):
                raise ValueError(f"Effects.{f.name} must be non-negative numbers, got {value!r}")
            if f.name != "tissue_intensity" and isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"Effects.{f.name} must be a range (low, high), got {value!r}")
        if self.age_range[1] <= self.age_range[0]:
            raise ValueError(f"Effects.age_range must have low < high, got {self.age_range!r}")
        if self.lesion_contrast[1] > 1:
            raise ValueError(
                f"Effects.lesion_contrast must lie in [0, 1], got {self.lesion_contrast!r}"
            )
        for name in ("site_scale", "site_gamma", "gm_site_gamma"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"Effects.{name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def without_site(cls, **changes) -> Effects:
        """Effects in which every scanner looks the same (middle of the default ranges)."""
        out = cls(**changes)
        flat = {}
        for f in fields(out):
            if f.name.startswith(("site_", "gm_site_")) and isinstance(getattr(out, f.name), tuple):
                mid = sum(getattr(out, f.name)) / 2
                flat[f.name] = (round(mid, 6), round(mid, 6))
        return replace(out, site_jitter=0.0, **flat)
