"""Figures: loss terms, collapse diagnostics, brains (nilearn) and augmented views.

Every function returns a matplotlib Figure (it never calls ``plt.show()``), so
notebooks display it and scripts save it.
"""

from __future__ import annotations

import numpy as np

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
        Four panels: mean std per dimension; normalised std times ``sqrt(D)``
        (1 when spread evenly on the sphere, 0 for complete collapse); RankMe
        with its maximum ``min(N - 1, D)`` marked; the verdicts. Bars are
        coloured by verdict.

    Examples
    --------
    >>> import numpy as np
    >>> from vicreg_lab.diagnostics import collapse_report
    >>> z = np.random.default_rng(0).normal(size=(200, 16))
    >>> fig = plot_collapse_reports({"random": collapse_report(z)})
    >>> len(fig.axes)
    4
    """
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
    axes[1].axhline(1.0, color="k", ls="--", lw=0.8)
    maxima = [row["rankme"] / row["rankme_fraction"] for row in rows.values()]
    axes[2].plot(x, maxima, "kx", ls="none")

    axes[3].set_axis_off()
    axes[3].set_title("verdict")
    for i, (name, row) in enumerate(rows.items()):
        y = 1 - (i + 1) / (len(rows) + 1)
        axes[3].text(0, y, f"{name}: {row['verdict']}", color=colors[i], va="center")
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
        volume = _as_3d(volume, name)
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


def _as_3d(volume, name: str) -> np.ndarray:
    """A (D, H, W) float numpy array from a tensor or array (D, H, W) or (1, D, H, W)."""
    if hasattr(volume, "detach"):
        volume = volume.detach().cpu().numpy()
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"plot_views: {name} must be (D, H, W) or (1, D, H, W), got {volume.shape}")
    return volume
