"""Figures: loss terms, collapse diagnostics, brains (nilearn) and augmented views.

Every function returns a matplotlib Figure (it never calls ``plt.show()``), so
notebooks display it and scripts save it.
"""

from __future__ import annotations

import numpy as np

from vicreg_lab.data import image_of

# ---------------------------------------------------------------- loss & diagnostics

_LOSS_TERMS = ("loss", "invariance", "variance", "covariance")
_LOSS_TITLES = {
    "loss": "loss (weighted total)",
    "invariance": "invariance",
    "variance": "variance",
    "covariance": "covariance",
}
_VERDICT_COLORS = {
    "healthy": "tab:green",
    "dimensional collapse": "tab:orange",
    "complete collapse": "tab:red",
}


def plot_loss_terms(history, ax=None):
    """Plot the VICReg loss terms during training, one small axis per term.

    The terms have different scales (the total is weighted, the components are
    not), so each gets its own y-axis.

    Parameters
    ----------
    history : mapping, pandas.DataFrame or list of dict
        The recorded terms: a mapping ``{term: values}`` or a DataFrame with
        columns among ``"loss"``, ``"invariance"``, ``"variance"``,
        ``"covariance"`` and optionally ``"step"`` (the x-axis; the record index
        otherwise), or a list of per-step dicts with those keys. To compare
        runs, pass ``{run name: history}``: each run is one line per axis.
    ax : matplotlib Axes or sequence of Axes, optional
        A sequence with one Axes per term to draw into, or a single Axes to draw
        every term on a shared log-scale axis. By default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (closed in pyplot, so that a notebook shows it once, as the
        cell's value; save it with ``fig.savefig``).

    Examples
    --------
    >>> fig = plot_loss_terms({"loss": [30, 20, 12], "variance": [0.9, 0.5, 0.2]})
    >>> len(fig.axes)
    2
    """
    runs = _loss_histories(history)
    terms = [t for t in _LOSS_TERMS if any(t in columns for columns in runs.values())]
    if not terms:
        found = sorted({key for columns in runs.values() for key in columns})
        raise ValueError(
            f"history has none of the loss terms {list(_LOSS_TERMS)}; found keys {found}"
        )

    if ax is None:
        fig, axes = _diag_subplots(len(terms), width=3.2)
    elif hasattr(ax, "plot"):  # one Axes: all terms on a log scale
        fig, axes = ax.figure, [ax] * len(terms)
        ax.set_yscale("log")
    else:
        axes = list(ax)
        if len(axes) != len(terms):
            raise ValueError(f"ax must hold one Axes per term {terms}, got {len(axes)} Axes")
        fig = axes[0].figure

    shared = len(set(map(id, axes))) == 1
    for name, columns in runs.items():
        for term, axis in zip(terms, axes, strict=True):
            if term not in columns:
                continue
            values = columns[term]
            steps = columns.get("step", np.arange(len(values)))
            label = " ".join(part for part in (name, term if shared else None) if part)
            axis.plot(steps, values, lw=1.2, label=label or None)
    for term, axis in zip(terms, axes, strict=True):
        axis.set_xlabel("step")
        if not shared:
            axis.set_title(_LOSS_TITLES[term])
    if len(runs) > 1 or shared:
        axes[-1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_spectrum(embeddings, labels=None, ax=None):
    """Plot the normalised singular value spectrum of one or several embeddings.

    Each curve is ``sigma_k / sigma_1`` of the centred embeddings on a log
    scale: a flat curve means the embeddings use every direction, a curve that
    drops after ``k`` values means dimensional collapse onto ``k`` directions.

    Parameters
    ----------
    embeddings : array-like of shape (N, D), or a list of them
        Torch tensors or numpy arrays; a dict ``{label: embeddings}`` also works.
    labels : list of str, optional
        One label per embedding matrix (RankMe is appended to each).
    ax : matplotlib Axes, optional
        Where to draw; by default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
        The figure. Values below ``1e-10 * sigma_1`` are numerically zero and
        are not drawn; a constant embedding gives an empty curve.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_spectrum([rng.normal(size=(200, 16)), rng.normal(size=(200, 16))])
    >>> len(fig.axes[0].lines)
    2
    """
    from vicreg_lab.diagnostics import rankme, singular_values

    if isinstance(embeddings, dict):
        labels = list(embeddings) if labels is None else labels
        embeddings = list(embeddings.values())
    elif getattr(embeddings, "ndim", None) == 2:
        embeddings = [embeddings]
    embeddings = list(embeddings)
    if labels is None:
        labels = [f"embeddings {i + 1}" for i in range(len(embeddings))]
    if len(labels) != len(embeddings):
        raise ValueError(f"got {len(embeddings)} embeddings but {len(labels)} labels")

    if ax is None:
        fig, (ax,) = _diag_subplots(1, width=5.5, height=3.6)
    fig = ax.figure
    for z, label in zip(embeddings, labels, strict=True):
        sigma = singular_values(z)
        ratio = sigma / sigma[0] if sigma[0] > 0 else np.zeros_like(sigma)
        ratio[ratio < 1e-10] = np.nan
        k = np.arange(1, len(sigma) + 1)
        ax.plot(k, ratio, marker=".", lw=1.2, label=f"{label} (RankMe {rankme(z):.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("index k")
    ax.set_ylabel(r"$\sigma_k / \sigma_1$ (centred)")
    ax.set_title("singular value spectrum")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_collapse_reports(reports):
    """Compare collapse reports side by side: std, normalised std, RankMe, verdict.

    Parameters
    ----------
    reports : dict of str to CollapseReport or dict
        ``{name: collapse_report(z)}`` (or the reports' ``to_dict()``).

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: mean std per dimension (dotted: the complete-collapse line of
        the reports made with a ``target_std``); normalised std times ``sqrt(D)``
        (1 when spread evenly on the sphere, 0 for complete collapse); RankMe
        with its maximum ``min(N - 1, D)`` marked; the verdicts, each with the
        form it used (scale-free, or its target std). Bars are coloured by verdict.

    Examples
    --------
    >>> import numpy as np
    >>> from vicreg_lab.diagnostics import collapse_report
    >>> z = np.random.default_rng(0).normal(size=(200, 16))
    >>> fig = plot_collapse_reports({"random": collapse_report(z),
    ...                              "as expander": collapse_report(z, target_std=1.0)})
    >>> len(fig.axes)
    4
    """
    from vicreg_lab.diagnostics import COMPLETE_STD_FRACTION, target_std_of

    if not reports:
        raise ValueError("reports is empty; pass {name: collapse_report(z)}")
    rows = {name: dict(r.to_dict() if hasattr(r, "to_dict") else r) for name, r in reports.items()}
    needed = {"mean_std", "normalized_std", "rankme", "rankme_fraction", "n_dims", "verdict"}
    for name, row in rows.items():
        if not needed <= set(row):
            raise ValueError(f"report {name!r} lacks {sorted(needed - set(row))}")

    names = list(rows)
    x = np.arange(len(names))
    colors = [_VERDICT_COLORS.get(row["verdict"], "tab:gray") for row in rows.values()]
    panels = {
        "mean std per dimension": [row["mean_std"] for row in rows.values()],
        "normalised std x sqrt(D)": [
            row["normalized_std"] * np.sqrt(row["n_dims"]) for row in rows.values()
        ],
        "RankMe (x: maximum)": [row["rankme"] for row in rows.values()],
    }
    fig, axes = _diag_subplots(4, width=2.6 + 0.5 * len(names))
    for axis, (title, values) in zip(axes, panels.items(), strict=False):
        bars = axis.bar(x, values, color=colors)
        axis.bar_label(bars, fmt="%.3g", fontsize="small")
        axis.set_title(title)
        axis.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    targets = {target_std_of(row.get("scale", "free")) for row in rows.values()} - {None}
    for target in targets:  # the absolute rule holds only for reports with a target
        axes[0].axhline(COMPLETE_STD_FRACTION * target, color="tab:red", ls=":", lw=0.8)
    axes[1].axhline(1.0, color="k", ls="--", lw=0.8)
    maxima = [row["rankme"] / row["rankme_fraction"] for row in rows.values()]
    axes[2].plot(x, maxima, "kx", ls="none")

    axes[3].set_axis_off()
    axes[3].set_title("verdict")
    for i, (name, row) in enumerate(rows.items()):
        y = 1 - (i + 1) / (len(rows) + 1)
        form = row.get("scale", "free").replace("free", "scale-free")
        axes[3].text(0, y, f"{name}: {row['verdict']} ({form})", color=colors[i], va="center")
    fig.tight_layout()
    return fig


def _diag_subplots(n, width=3.0, height=2.8):
    """``n`` axes side by side in a figure closed in pyplot (shown once in notebooks)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    plt.close(fig)
    return fig, list(axes[0])


def _loss_histories(history) -> dict:
    """``{run name: {key: float array}}``; the name is "" for a single history."""
    runs = isinstance(history, dict) and history
    if runs and all(isinstance(v, dict) or hasattr(v, "columns") for v in history.values()):
        return {str(name): _loss_columns(h) for name, h in history.items()}
    return {"": _loss_columns(history)}


def _loss_columns(history) -> dict:
    if hasattr(history, "columns"):  # a pandas DataFrame
        return {str(c): history[c].to_numpy(dtype=float) for c in history.columns}
    if isinstance(history, (list, tuple)) and all(isinstance(r, dict) for r in history):
        keys = {key for record in history for key in record}
        history = {key: [record.get(key, np.nan) for record in history] for key in keys}
    if not isinstance(history, dict):
        raise ValueError(
            "history must be a dict {term: values}, a pandas DataFrame or a list of dicts, "
            f"got {type(history).__name__}"
        )
    return {str(k): np.array([float(v) for v in values]) for k, values in history.items()}


# ---------------------------------------------------------------- data (cohort, subjects)


def plot_subject(image, affine, title=None, display_mode="ortho", cut_coords=None, **kwargs):
    """Show one brain volume as orthogonal slices with nilearn's ``plot_anat``.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        Volume (D, H, W) or (1, D, H, W), e.g. ``cohort[0]["image"]``.
    affine : numpy.ndarray
        Its 4x4 voxel-to-world (mm) affine, e.g. ``cohort.affine`` or
        ``dataset.get_affine(i)``; nilearn uses it to place the slices in MNI space.
    title : str, optional
        Title drawn on the figure.
    display_mode : str
        nilearn display mode: ``"ortho"`` (three views), ``"z"``, ``"x"``, ...
    cut_coords : sequence of float, optional
        Where to cut (mm); nilearn chooses when None.
    **kwargs
        Passed to :func:`nilearn.plotting.plot_anat` (``vmin``, ``vmax``, ``cmap``...).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from vicreg_lab.data import SyntheticCohort
    >>> cohort = SyntheticCohort(2, shape=(32, 32, 32))
    >>> fig = plot_subject(cohort[0]["image"], cohort.affine, title="sub-0000")
    >>> type(fig).__name__
    'Figure'
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    volume = _as_volume(image, "plot_subject: image")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"plot_subject: affine must be 4x4, got shape {affine.shape}")
    fig = plt.figure(figsize=(7.5, 2.8) if display_mode == "ortho" else (3.5, 3.5))
    plt.close(fig)
    kwargs.setdefault("draw_cross", False)
    plotting.plot_anat(
        nib.Nifti1Image(volume, affine),
        figure=fig,
        title=title,
        display_mode=display_mode,
        cut_coords=cut_coords,
        **kwargs,
    )
    return fig


def plot_cohort_grid(dataset, by="age", n=8, modality=None):
    """A grid of subjects ordered by age or grouped by site, titled with their factors.

    All panels share one grey scale, so scanner differences in brightness and
    contrast show as they are.

    Parameters
    ----------
    dataset : SyntheticCohort, NiftiFolder or OpenBHB
        Needs ``participants`` with the column named by ``by``.
    by : {"age", "site"}
        ``"age"``: ``n`` subjects from youngest to oldest (evenly spaced in age
        rank), an axial row above a coronal row. ``"site"``: one row per site,
        ``n`` subjects each (youngest first), axial slices.
    n : int
        Subjects per row.
    modality : {"t1", "gm"}, optional
        For a :class:`SyntheticCohort`, the modality to draw (default: its own).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from vicreg_lab.data import SyntheticCohort
    >>> fig = plot_cohort_grid(SyntheticCohort(16, shape=(32, 32, 32)), by="site", n=2)
    >>> len(fig.axes)
    8
    """
    import matplotlib.pyplot as plt

    table = dataset.participants.reset_index(drop=True)
    if by not in ("age", "site"):
        raise ValueError(f"plot_cohort_grid: by must be 'age' or 'site', got {by!r}")
    if by not in table.columns:
        raise ValueError(f"plot_cohort_grid: the dataset's participants have no {by!r} column")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"plot_cohort_grid: n must be a positive int, got {n!r}")
    if by == "age":
        ranked = np.argsort(table["age"].to_numpy(), kind="stable")
        spots = np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int)
        picks = ranked[np.unique(spots)]
        rows = [("axial", picks), ("coronal", picks)]
    else:
        rows = []
        for site, group in table.groupby("site", sort=True):
            order = group.sort_values("age") if "age" in group else group
            rows.append((str(site), order.index.to_numpy()[:n]))
    volumes = _subject_volumes(dataset, [int(i) for _, idx in rows for i in idx], modality)
    vmax = float(np.percentile(np.concatenate([v.ravel() for v in volumes.values()]), 99.5))
    columns = max(len(idx) for _, idx in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.6 * columns, 1.9 * len(rows)), squeeze=False
    )
    plt.close(fig)
    for r, (label, idx) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c >= len(idx):
                continue
            i = int(idx[c])
            view = "coronal" if label == "coronal" else "axial"
            section = _section(volumes[i], dataset.get_affine(i), view)
            ax.imshow(section.T, origin="lower", cmap="gray", vmin=0, vmax=max(vmax, 1e-6))
            ax.set_title(_subject_label(table.iloc[i], by, first=c == 0), fontsize="x-small")
    fig.suptitle("subjects ordered by age" if by == "age" else "subjects grouped by site")
    fig.tight_layout()
    return fig


def plot_factors(cohort, n=128):
    """What the synthetic cohort's factors do: grey matter against age, intensities by site.

    Three panels: grey-matter volume (mL) against age, coloured by sex (head size
    separates the sexes); grey-matter fraction of intracranial volume against age
    (atrophy, with head size divided out); and T1 intensity histograms inside the
    brain, one per site (the scanner's look).

    Parameters
    ----------
    cohort : SyntheticCohort
        The cohort (its tissue maps are used, so no other dataset will do).
    n : int
        Number of subjects used (the first ``n``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from vicreg_lab.data import SyntheticCohort
    >>> fig = plot_factors(SyntheticCohort(24, shape=(24, 24, 24)))
    >>> len(fig.axes)
    3
    """
    import matplotlib.pyplot as plt

    if not hasattr(cohort, "tissue_maps"):
        raise TypeError(f"plot_factors needs a SyntheticCohort, got {type(cohort).__name__}")
    index = list(range(min(n, len(cohort))))
    table = cohort.participants.iloc[index]
    gm, icv, t1_inside = _factor_measures(cohort, index)

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    plt.close(fig)
    for sex, color in (("F", "tab:red"), ("M", "tab:blue")):
        chosen = (table["sex"] == sex).to_numpy()
        axes[0].scatter(table["age"][chosen], gm[chosen], s=10, color=color, label=sex)
        axes[1].scatter(table["age"][chosen], 100 * gm[chosen] / icv[chosen], s=10, color=color)
    axes[0].set(xlabel="age (years)", ylabel="grey matter (mL)", title="GM volume by sex")
    axes[0].legend(title="sex", fontsize="small")
    axes[1].set(xlabel="age (years)", ylabel="GM / intracranial volume (%)", title="atrophy")
    sites = table["site"].to_numpy()
    top = float(np.percentile(np.concatenate(t1_inside), 99.5))
    for site in sorted(set(sites)):
        values = np.concatenate([v for v, s in zip(t1_inside, sites, strict=True) if s == site])
        axes[2].hist(values, bins=80, range=(0, top), histtype="step", density=True, label=site)
    axes[2].set(xlabel="T1 intensity in the brain", ylabel="density", title="scanner look")
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _factor_measures(cohort, index, chunk=16):
    """Grey matter (mL), intracranial volume (mL) and T1 values inside the brain, per subject.

    Subjects are measured ``chunk`` at a time, so memory does not grow with
    their number (only the T1 values inside each brain are kept).
    """
    gm, icv, t1_inside = [], [], []
    for start in range(0, len(index), chunk):
        part = index[start : start + chunk]
        maps = cohort.tissue_maps(part)
        gm.append(maps["gm"].sum((1, 2, 3, 4)).numpy() * cohort.voxel_volume_ml)
        icv.append(maps["mask"].sum((1, 2, 3, 4)).numpy() * cohort.voxel_volume_ml)
        t1 = cohort.generate(part, modality="t1").numpy()
        inside = maps["mask"].numpy() > 0.5
        t1_inside += [volume[mask] for volume, mask in zip(t1, inside, strict=True)]
    return np.concatenate(gm), np.concatenate(icv), t1_inside


def _as_volume(volume, name: str) -> np.ndarray:
    """A (D, H, W) float32 array from a tensor or array (D, H, W) or (1, D, H, W)."""
    if hasattr(volume, "detach"):
        volume = volume.detach().cpu().numpy()
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"{name} must be (D, H, W) or (1, D, H, W), got shape {volume.shape}")
    return volume


def _subject_volumes(dataset, indices, modality=None) -> dict[int, np.ndarray]:
    """``{index: (D, H, W) volume}`` of a dataset, whatever its item convention.

    A :class:`SyntheticCohort` generates them all in one call (in batches,
    several times faster than one subject at a time).
    """
    indices = list(dict.fromkeys(indices))  # unique, in order
    if hasattr(dataset, "generate"):
        stack = dataset.generate(indices, modality=modality)
        return {i: volume[0].numpy() for i, volume in zip(indices, stack, strict=True)}
    volumes = {}
    for i in indices:
        volumes[i] = _as_volume(image_of(dataset[i]), "image")
    return volumes


def _section(volume: np.ndarray, affine: np.ndarray, view: str) -> np.ndarray:
    """Axial (z = 15 mm) or coronal (y = -15 mm) slice through the lateral ventricles."""
    ijk = np.linalg.inv(affine) @ np.array([0.0, -15.0, 15.0, 1.0])
    axis = 2 if view == "axial" else 1
    k = int(np.clip(round(ijk[axis]), 0, volume.shape[axis] - 1))
    return np.take(volume, k, axis=axis)


def _subject_label(row, by: str, first: bool) -> str:
    parts = []
    if "age" in row.index:
        parts.append(f"{row['age']:.0f} y")
    if "sex" in row.index:
        parts.append(str(row["sex"]))
    if "site" in row.index and (by == "age" or first):
        parts.append(str(row["site"]))
    return " ".join(parts)


# ---------------------------------------------------------------- augmented views


def plot_views(original, view1, view2, title=None):
    """Show a volume and two augmented views as orthogonal mid-slices.

    One row per volume (original, view 1, view 2), one column per axis: the
    middle slice across D, H and W. Each slice is drawn transposed with the
    origin at the bottom, so RAS-oriented arrays (such as nilearn's) appear as
    sagittal, coronal and axial views. Each row has its own grey scale
    (0.5th to 99.5th percentile of its volume).

    Parameters
    ----------
    original, view1, view2 : torch.Tensor or numpy.ndarray
        Volumes (D, H, W) or (1, D, H, W); their shapes may differ.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        A 3 x 3 grid of images (closed in pyplot: a notebook shows it once).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_views(rng.random((20, 20, 20)), rng.random((16,) * 3), rng.random((16,) * 3))
    >>> len(fig.axes)
    9
    """
    import matplotlib.pyplot as plt

    rows = {"original": original, "view 1": view1, "view 2": view2}
    fig, axes = plt.subplots(3, 3, figsize=(7.2, 7.2), squeeze=False)
    plt.close(fig)
    for row, (name, volume) in zip(axes, rows.items(), strict=True):
        volume = _as_volume(volume, f"plot_views: {name}")
        vmin, vmax = np.percentile(volume, [0.5, 99.5])
        for axis, ax in enumerate(row):
            mid = volume.shape[axis] // 2
            ax.imshow(
                np.take(volume, mid, axis=axis).T,
                origin="lower",
                cmap="gray",
                vmin=vmin,
                vmax=max(vmax, vmin + 1e-6),
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{'DHW'[axis]} = {mid} / {volume.shape[axis]}", fontsize="small")
        row[0].set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# One augmentation at a time, at a visible strength: AugmentParams knobs set on _NO_AUGMENTATION.
GALLERY = {
    "crop": {"crop_scale": (0.3, 0.3)},
    "flip": {"flip_prob": 1.0},
    "rotation": {"rotation_degrees": 20.0},
    "blur": {"blur_sigma": (1.5, 1.5), "p_blur": 1.0},
    "noise": {"noise_std": (0.1, 0.1), "p_noise": 1.0},
    "gamma": {"gamma": (0.7, 0.7), "p_intensity": 1.0},
    "bias field": {"bias_field": 0.8, "p_intensity": 1.0},
}
# Every knob off: the view is the volume rescaled to [0, 1] and resized to the output size.
_NO_AUGMENTATION = {
    "crop_scale": (1.0, 1.0),
    "flip_prob": 0.0,
    "rotation_degrees": 0.0,
    "blur_sigma": 0.0,
    "noise_std": 0.0,
    "gamma": 0.0,
    "bias_field": 0.0,
    "p_blur": 0.0,
    "p_noise": 0.0,
    "p_intensity": 0.0,
}


def plot_augmentation_gallery(volume, augmentations=None, input_size=None, seed=0, axis=2):
    """Each augmentation alone on the same brain: the original, then one column each.

    Every column is a view drawn by :class:`~vicreg_lab.augment.SimCLRTransform`
    (TorchIO) with all knobs off except the ones named for that column, so each
    augmentation is seen on its own. The first column, "original", has every
    knob off: the volume min-max rescaled to [0, 1] and resized to the view
    size, as every view is before it is augmented. All panels share the grey
    scale [0, 1], so intensity changes (gamma, bias field) show as they are.

    Parameters
    ----------
    volume : torch.Tensor or numpy.ndarray
        Volume (D, H, W) or (1, D, H, W), e.g. ``cohort[0]["image"]``.
    augmentations : dict of str to dict, optional
        ``{column title: {knob: value}}`` with knobs of
        :class:`~vicreg_lab.augment.AugmentParams`. Default: :data:`GALLERY`
        (crop, flip, rotation, blur, noise, gamma, bias field).
    input_size : int or tuple of int, optional
        Size of the views; by default the volume's own shape.
    seed : int
        Seed of every column's transform (the same seed for each).
    axis : {0, 1, 2}
        The axis across which the middle slice is drawn (2: axial slices of
        RAS-oriented volumes such as the synthetic cohort's).

    Returns
    -------
    matplotlib.figure.Figure
        One row of ``1 + len(augmentations)`` images.

    Raises
    ------
    ValueError
        For a knob that is not an ``AugmentParams`` field, or a value outside
        its range (the message names the column).

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).random((16, 16, 16))
    >>> fig = plot_augmentation_gallery(volume, {"blur": {"blur_sigma": 1.0, "p_blur": 1.0}})
    >>> [ax.get_title() for ax in fig.axes]
    ['original', 'blur']
    """
    import matplotlib.pyplot as plt
    import torch

    volume = torch.from_numpy(_as_volume(volume, "plot_augmentation_gallery: volume"))[None]
    if axis not in (0, 1, 2):
        raise ValueError(f"plot_augmentation_gallery: axis must be 0, 1 or 2, got {axis!r}")
    augmentations = GALLERY if augmentations is None else dict(augmentations)
    size = tuple(volume.shape[1:]) if input_size is None else input_size
    columns = {"original": {}, **augmentations}
    fig, axes = plt.subplots(1, len(columns), figsize=(1.9 * len(columns), 2.3), squeeze=False)
    plt.close(fig)
    for ax, (name, knobs) in zip(axes[0], columns.items(), strict=True):
        transform = _gallery_transform(name, knobs, size, seed)
        view = transform(volume)[0].numpy()
        section = np.take(view, view.shape[axis] // 2, axis=axis)
        ax.imshow(section.T, origin="lower", cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize="small")
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _gallery_transform(name, knobs, size, seed):
    """A SimCLRTransform with every knob off but ``knobs`` (errors name the column)."""
    from vicreg_lab.augment import AugmentParams, SimCLRTransform

    if not isinstance(knobs, dict):
        raise ValueError(
            f"plot_augmentation_gallery: augmentation {name!r} must be a dict of "
            f"AugmentParams knobs, got {knobs!r}"
        )
    unknown = sorted(set(knobs) - set(_NO_AUGMENTATION))
    if unknown:
        raise ValueError(
            f"plot_augmentation_gallery: augmentation {name!r} has unknown knob(s) {unknown}; "
            f"expected AugmentParams fields {sorted(_NO_AUGMENTATION)}"
        )
    try:
        params = AugmentParams(**{**_NO_AUGMENTATION, **knobs})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"plot_augmentation_gallery: augmentation {name!r}: {exc}") from None
    return SimCLRTransform(input_size=size, seed=seed, **params.as_dict())


# ---------------------------------------------------------------- training runs


def plot_collapse_history(epochs):
    """Collapse diagnostics over training, from ``VICReg.history_["epoch"]``.

    Parameters
    ----------
    epochs : list of dict
        Per-epoch records holding ``collapse`` (the representation's report) and
        optionally ``collapse_expander`` (the expander's).

    Returns
    -------
    matplotlib.figure.Figure
        Three panels over epochs: mean std per dimension, normalised std x sqrt(D)
        and RankMe, for the representation and the expander output.
    """
    import matplotlib.pyplot as plt

    if not epochs:
        raise ValueError("no epochs recorded: train first (history_['epoch'] is empty)")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    plt.close(fig)  # returned, so shown once in notebooks
    x = [r["epoch"] + 1 for r in epochs]
    for key, label in (("collapse", "representation"), ("collapse_expander", "expander")):
        if key not in epochs[0]:
            continue
        reports = [r[key] for r in epochs]
        axes[0].plot(x, [c["mean_std"] for c in reports], marker="o", label=label)
        scaled = [c["normalized_std"] * c["n_dims"] ** 0.5 for c in reports]
        axes[1].plot(x, scaled, marker="o", label=label)
        axes[2].plot(x, [c["rankme"] for c in reports], marker="o", label=label)
    titles = ("mean std per dimension", "normalised std x sqrt(D)", "RankMe")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_umap(embeddings, factors, columns=("age", "site"), seed=0, n_neighbors=15):
    """UMAP of embeddings, one panel per factor (continuous factors get a colour bar).

    Parameters
    ----------
    embeddings : array-like (N, F)
    factors : pandas.DataFrame
        One row per embedding, holding ``columns``.
    columns : sequence of str
        Factors to colour by.
    seed : int
        UMAP random state.
    n_neighbors : int
        UMAP neighbourhood size (capped at N - 1).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import umap

    X = np.asarray(embeddings, dtype=np.float32)
    if len(X) != len(factors):
        raise ValueError(f"{len(X)} embeddings but {len(factors)} rows of factors")
    # a seeded UMAP runs on one thread anyway; saying so spares learners its warning
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(X) - 1), random_state=seed, n_jobs=1)
    xy = reducer.fit_transform(X)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), squeeze=False)
    plt.close(fig)  # returned, so shown once in notebooks
    for ax, column in zip(axes[0], columns, strict=True):
        values = factors[column]
        if pd.api.types.is_numeric_dtype(values):
            points = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=12, cmap="viridis")
            fig.colorbar(points, ax=ax, label=column)
        else:
            for level in sorted(values.unique()):
                keep = (values == level).to_numpy()
                ax.scatter(xy[keep, 0], xy[keep, 1], s=12, label=str(level))
            ax.legend(fontsize=7, markerscale=1.5)
        ax.set_title(f"UMAP coloured by {column}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
