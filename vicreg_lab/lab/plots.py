"""Figures: loss terms, collapse diagnostics, brains (nilearn) and augmented views.

Every function returns a matplotlib Figure closed in pyplot (it never calls
``plt.show()``), so a notebook shows it once, as the cell's value, and a script saves it.
"""

from __future__ import annotations

import numpy as np

from vicreg_lab.data import image_of
from vicreg_lab.lab.ablation import AblationResult
from vicreg_lab.train import TERMS

# ---------------------------------------------------------------- loss & diagnostics

_LOSS_TITLES = {"loss": "loss (weighted total)"}
#: Bar colour of each collapse verdict (grey for any other).
VERDICT_COLORS = {
    "healthy": "#2e7d32",
    "dimensional collapse": "#ef6c00",
    "complete collapse": "#c62828",
}


def plot_loss_terms(history, ax=None):
    """Plot the VICReg loss terms during training, one small axis per term.

    The terms have different scales (the total is weighted, the components are not), so
    each gets its own y-axis.

    Parameters
    ----------
    history : mapping, pandas.DataFrame or list of dict
        ``{term: values}``, a DataFrame with columns among ``loss``, ``invariance``,
        ``variance``, ``covariance`` and optionally ``step`` (the x-axis), or per-step
        dicts. ``{run name: history}`` draws one line per run on each axis.
    ax : Axes or sequence of Axes, optional
        One Axes per term, or a single Axes for every term on a shared log scale.

    Examples
    --------
    >>> fig = plot_loss_terms({"loss": [30, 20, 12], "variance": [0.9, 0.5, 0.2]})
    >>> len(fig.axes)
    2
    """
    runs = _loss_histories(history)
    terms = [t for t in TERMS if any(t in columns for columns in runs.values())]
    if not terms:
        found = sorted({key for columns in runs.values() for key in columns})
        raise ValueError(f"history has none of the loss terms {list(TERMS)}; found keys {found}")
    fig, axes = _loss_axes(ax, terms)
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
            axis.set_title(_LOSS_TITLES.get(term, term))
    if len(runs) > 1 or shared:
        axes[-1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _loss_axes(ax, terms):
    """The figure and one Axes per term: new, the given ones, or one shared log-scale Axes."""
    if ax is None:
        return _diag_subplots(len(terms), width=3.2)
    if hasattr(ax, "plot"):
        ax.set_yscale("log")
        return ax.figure, [ax] * len(terms)
    axes = list(ax)
    if len(axes) != len(terms):
        raise ValueError(f"ax must hold one Axes per term {terms}, got {len(axes)} Axes")
    return axes[0].figure, axes


def plot_spectrum(embeddings, labels=None, ax=None):
    """Plot the normalised singular value spectrum of one or several embeddings.

    Each curve is ``sigma_k / sigma_1`` of the centred embeddings on a log scale: a flat
    curve uses every direction, a curve that drops after ``k`` values has collapsed onto
    ``k`` directions. Values below ``1e-10 * sigma_1`` are not drawn.

    ``embeddings`` is one array-like (N, D), a list of them, or ``{label: embeddings}``;
    ``labels`` name them (RankMe is appended to each).

    Examples
    --------
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

    ``reports`` is ``{name: collapse_report(z)}`` (or the reports' ``to_dict()``). Panels:
    the mean std per dimension (dotted: the complete-collapse line of reports made with a
    ``target_std``); the normalised std x sqrt(D) (1 when spread evenly on the sphere, 0
    for complete collapse); RankMe (x: its maximum ``min(N - 1, D)``); the verdicts, each
    with the form it used. Bars are coloured by verdict.

    Examples
    --------
    >>> from vicreg_lab.diagnostics import collapse_report
    >>> z = np.random.default_rng(0).normal(size=(200, 16))
    >>> fig = plot_collapse_reports({"random": collapse_report(z),
    ...                              "as expander": collapse_report(z, target_std=1.0)})
    >>> len(fig.axes)
    4
    """
    from vicreg_lab.diagnostics import COMPLETE_STD_FRACTION, target_std_of

    rows = _report_rows(reports)
    names = list(rows)
    colors = [VERDICT_COLORS.get(row["verdict"], "tab:gray") for row in rows.values()]
    panels = {
        "mean std per dimension": [row["mean_std"] for row in rows.values()],
        "normalised std x sqrt(D)": [
            row["normalized_std"] * np.sqrt(row["n_dims"]) for row in rows.values()
        ],
        "RankMe (x: maximum)": [row["rankme"] for row in rows.values()],
    }
    fig, axes = _diag_subplots(4, width=2.6 + 0.5 * len(names))
    for axis, (title, values) in zip(axes, panels.items(), strict=False):
        x = bar_panel(axis, names, values, colors, title)
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


def _report_rows(reports) -> dict[str, dict]:
    """``{name: report as dict}``, checked to hold what :func:`plot_collapse_reports` draws."""
    if not reports:
        raise ValueError("reports is empty; pass {name: collapse_report(z)}")
    rows = {name: dict(r.to_dict() if hasattr(r, "to_dict") else r) for name, r in reports.items()}
    needed = {"mean_std", "normalized_std", "rankme", "rankme_fraction", "n_dims", "verdict"}
    for name, row in rows.items():
        if not needed <= set(row):
            raise ValueError(f"report {name!r} lacks {sorted(needed - set(row))}")
    return rows


def bar_panel(ax, names, values, colors, title, errors=None):
    """One labelled bar per name on ``ax`` (optional error bars); returns the bars' x."""
    x = np.arange(len(names))
    bars = ax.bar(x, values, yerr=errors, color=colors, capsize=3)
    ax.bar_label(bars, fmt="%.3g", fontsize="small")
    ax.set_title(title)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    return x


def _diag_subplots(n, width=3.0, height=2.8):
    """``n`` axes side by side in a figure closed in pyplot."""
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

    ``image`` is (D, H, W) or (1, D, H, W); ``affine`` its 4x4 voxel-to-world (mm) matrix
    (e.g. ``cohort.affine``), which places the slices in MNI space. ``display_mode``
    (``"ortho"``, ``"z"``, ...), ``cut_coords`` (mm) and ``kwargs`` go to
    :func:`nilearn.plotting.plot_anat`.
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

    All panels share one grey scale, so scanner differences in brightness and contrast
    show as they are.

    Parameters
    ----------
    dataset : SyntheticCohort, NiftiFolder or OpenBHB
        Needs ``participants`` with the column named by ``by``.
    by : {"age", "site"}
        ``"age"``: ``n`` subjects evenly spaced in age rank, an axial row above a coronal
        row. ``"site"``: one row of axial slices per site, its ``n`` youngest subjects.
    modality : {"t1", "gm"}, optional
        For a :class:`SyntheticCohort`, the modality to draw (default: its own).
    """
    import matplotlib.pyplot as plt

    table = dataset.participants.reset_index(drop=True)
    rows = _cohort_rows(table, by, n)
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


def _cohort_rows(table, by, n) -> list[tuple[str, np.ndarray]]:
    """The rows of :func:`plot_cohort_grid`: (label, subject indices)."""
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
        return [("axial", picks), ("coronal", picks)]
    rows = []
    for site, group in table.groupby("site", sort=True):
        order = group.sort_values("age") if "age" in group else group
        rows.append((str(site), order.index.to_numpy()[:n]))
    return rows


def plot_factors(cohort, n=128):
    """What the synthetic cohort's factors do, over its first ``n`` subjects.

    Three panels: grey-matter volume (mL) against age by sex (head size separates the
    sexes); grey-matter fraction of intracranial volume against age (atrophy, head size
    divided out); T1 intensity histograms inside the brain, one per site (the scanner's
    look). Needs a :class:`SyntheticCohort` (its tissue maps).
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
    """GM and intracranial volumes (mL) and in-brain T1 values, ``chunk`` subjects at a time."""
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
    """``{index: (D, H, W) volume}``; a SyntheticCohort generates them in one (faster) call."""
    indices = list(dict.fromkeys(indices))  # unique, in order
    if hasattr(dataset, "generate"):
        stack = dataset.generate(indices, modality=modality)
        return {i: volume[0].numpy() for i, volume in zip(indices, stack, strict=True)}
    return {i: _as_volume(image_of(dataset[i]), "image") for i in indices}


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
    """Show a volume and two augmented views as orthogonal mid-slices (a 3 x 3 grid).

    One row per volume, one column per axis (D, H, W). Slices are drawn transposed with
    the origin at the bottom, so RAS-oriented arrays appear as sagittal, coronal and axial
    views. Each row has its own grey scale (0.5th to 99.5th percentile). The volumes are
    (D, H, W) or (1, D, H, W) tensors or arrays; their shapes may differ.
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

    Each column is a view of :class:`~vicreg_lab.augment.SimCLRTransform` with every knob
    off but the ones named for it; "original" has every knob off (the volume rescaled to
    [0, 1] and resized, as every view is before it is augmented). All panels share the
    grey scale [0, 1], so intensity changes (gamma, bias field) show as they are.

    Parameters
    ----------
    volume : torch.Tensor or numpy.ndarray
        Volume (D, H, W) or (1, D, H, W).
    augmentations : dict of str to dict, optional
        ``{column title: {AugmentParams knob: value}}``; default :data:`GALLERY`. A bad
        knob or value raises ValueError naming the column.
    input_size : int or tuple of int, optional
        Size of the views; by default the volume's shape.
    seed : int
        Seed of every column's transform (the same for each).
    axis : {0, 1, 2}
        Axis of the middle slice drawn (2: axial slices of RAS-oriented volumes).

    Examples
    --------
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
        view = _gallery_transform(name, knobs, size, seed)(volume)[0].numpy()
        section = np.take(view, view.shape[axis] // 2, axis=axis)
        ax.imshow(section.T, origin="lower", cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize="small")
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _gallery_transform(name, knobs, size, seed):
    """A SimCLRTransform with every knob off but ``knobs`` (errors name the column)."""
    from vicreg_lab.augment import AugmentParams
    from vicreg_lab.data.torchio_views import SimCLRTransform

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

    Three panels over epochs (mean std per dimension, normalised std x sqrt(D), RankMe),
    for the representation (``collapse``) and the expander (``collapse_expander``, if
    recorded).
    """
    import matplotlib.pyplot as plt

    if not epochs:
        raise ValueError("no epochs recorded: train first (history_['epoch'] is empty)")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    plt.close(fig)
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
    """UMAP of embeddings (N, F), one panel per factor column (continuous: a colour bar).

    ``factors`` has one row per embedding; ``seed`` is UMAP's random state and
    ``n_neighbors`` is capped at N - 1.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import umap

    X = np.asarray(embeddings, dtype=np.float32)
    if len(X) != len(factors):
        raise ValueError(f"{len(X)} embeddings but {len(factors)} rows of factors")
    # a seeded UMAP runs on one thread anyway; saying so spares learners its warning
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(X) - 1), random_state=seed, n_jobs=1)
    xy = reducer.fit_transform(X)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), squeeze=False)
    plt.close(fig)
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


# ---------------------------------------------------------------- confounds and peers (07, 08)


def plot_age_by_site(participants, ax=None):
    """Each subject's age by site (jittered dots), with the cohort's mean age as a line.

    Under a site-age confound each site occupies its own band: knowing the scanner is
    then knowing roughly the age, which is the shortcut notebook 07 catches.
    """
    fig, ax = _figure(ax, (5.5, 3.2))
    sites = sorted(participants["site"].unique())
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(participants))
    x = participants["site"].map({s: i for i, s in enumerate(sites)}).to_numpy() + jitter
    ax.scatter(x, participants["age"], s=10, alpha=0.7)
    ax.axhline(participants["age"].mean(), color="gray", ls=":", label="mean age")
    ax.set_xticks(range(len(sites)), sites)
    ax.set_ylabel("age (years)")
    ax.set_title("age by scanner site")
    ax.legend(fontsize="small")
    return fig


def plot_probe_errors(table, ax=None):
    """Age-probe MAE per embedding and protocol, each beside its chance level.

    ``table`` is :func:`vicreg_lab.lab.confounds.confound_table`'s (columns ``embedding``,
    ``protocol``, ``metric``, ``value``, ``chance``); one bar per (embedding, protocol),
    a black tick at that protocol's chance MAE (guessing the training subjects' mean).
    """
    mae = table[table["metric"] == "mae"]
    if mae.empty:
        raise ValueError("table has no 'mae' rows: pass the output of confound_table")
    embeddings = list(dict.fromkeys(mae["embedding"]))
    protocols = list(dict.fromkeys(mae["protocol"]))
    fig, ax = _figure(ax, (7.0, 0.45 * len(embeddings) * len(protocols) + 1.2))
    height = 0.8 / len(protocols)
    for k, protocol in enumerate(protocols):
        rows = mae[mae["protocol"] == protocol].set_index("embedding").reindex(embeddings)
        y = np.arange(len(embeddings)) + k * height
        ax.barh(y, rows["value"], height=height * 0.9, label=protocol)
        chance = ax.scatter(rows["chance"], y, marker="|", s=200, color="black", zorder=3)
    chance.set_label("chance (training mean)")
    ax.set_yticks(np.arange(len(embeddings)) + height * (len(protocols) - 1) / 2, embeddings)
    ax.invert_yaxis()
    ax.set_xlabel("age MAE (years): lower is better")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def plot_rankme_against_probe(table, rankme="rep_rankme", probe="age_r2", ax=None):
    """RankMe against the probe score, one labelled point per row of ``table``.

    The rows' label is the first column (as in :func:`vicreg_lab.lab.rankme_against_probe`):
    if a higher RankMe meant a better representation, the points would rise to the right.
    """
    fig, ax = _figure(ax, (6.0, 4.0))
    label = table.columns[0]
    ax.scatter(table[rankme], table[probe])
    for row in table.itertuples(index=False):
        row = row._asdict()
        ax.annotate(
            str(row[label]),
            (row[rankme], row[probe]),
            fontsize="x-small",
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xlabel(f"RankMe ({rankme})")
    ax.set_ylabel(f"linear probe ({probe})")
    ax.set_title("more directions is not more information")
    fig.tight_layout()
    return fig


def _figure(ax, size):
    """``(figure, axes)``: ``ax``'s figure, or a new one closed in pyplot."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size)
    plt.close(fig)
    return fig, ax


# ---------------------------------------------------------------- the ablation


def plot_ablation(result, title: str | None = None):
    """The runs of an ablation side by side: collapse diagnostics and the age probe.

    Top row, one bar per run coloured by its verdict: the expander output's mean std (red
    line: the complete-collapse threshold 0.1), the representation's RankMe (x: its
    maximum), the linear age probe R^2 (mean +- sd over folds). Bottom row: the expander
    std and representation RankMe after every epoch (``RunResult.dynamics``; dashed: models
    not trained by ``run_ablation``), and the held-out representation spectra.
    """
    import matplotlib.pyplot as plt

    if not isinstance(result, AblationResult) or len(result) == 0:
        raise ValueError("plot_ablation needs an AblationResult with at least one run")
    table = result.table
    names = [f"{n}\n({v})" for n, v in zip(table["name"], table["verdict"], strict=True)]
    colors = [VERDICT_COLORS.get(v, "tab:gray") for v in table["verdict"]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    plt.close(fig)
    bar_panel(axes[0, 0], names, table["exp_std"], colors, "expander output: mean std")
    axes[0, 0].axhline(0.1, color="tab:red", ls=":", lw=1)
    x = bar_panel(axes[0, 1], names, table["rep_rankme"], colors, "representation: RankMe")
    axes[0, 1].plot(x, table["rep_rankme_max"], "kx", ls="none")
    bar_panel(
        axes[0, 2], names, table["age_r2"], colors, "age probe: linear R²", table["age_r2_sd"]
    )
    axes[0, 2].axhline(0.0, color="k", lw=0.8)
    _plot_dynamics(axes[1, 0], result, "exp_std", "expander std during training")
    _plot_dynamics(axes[1, 1], result, "rep_rankme", "representation RankMe during training")
    axes[1, 0].axhline(0.1, color="tab:red", ls=":", lw=1)
    axes[1, 0].legend(fontsize="x-small")
    plot_spectrum(result.embeddings("representation"), ax=axes[1, 2])
    axes[1, 2].set_title("held-out representation spectra", fontsize="medium")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _plot_dynamics(ax, result, key: str, title: str) -> None:
    """One line per run of ``key`` over the training steps (log scale)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for i, (name, run) in enumerate(result.runs.items()):
        steps = [r["step"] for r in run.dynamics]
        values = [r[key] for r in run.dynamics]
        style = "-" if run.kind == "short run" else "--"
        ax.plot(steps, values, style, marker=".", lw=1.2, label=name, color=f"C{i % 10}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training step (log)")
    ax.set_title(title, fontsize="medium")
