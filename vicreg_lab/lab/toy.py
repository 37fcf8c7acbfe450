"""A toy VICReg problem that trains in seconds: watch each loss term do its job.

Points are drawn from a few Gaussian clusters in a low-dimensional input space.
Two "views" of a point are the point plus independent noise, so the only
information shared by the views is which point (and which cluster) it was.
A small MLP maps each view to an embedding and is trained with the VICReg loss.

With the standard weights (25 / 25 / 1) the embedding spreads out and keeps the
cluster structure; with the variance weight at 0 the invariance term alone pulls
every embedding to one point: complete collapse, in a few dozen steps.

Examples
--------
>>> from vicreg_lab.lab.toy import train_toy
>>> run = train_toy(steps=5, seed=0)
>>> sorted(run["history"])
['covariance', 'invariance', 'loss', 'step', 'variance']
>>> fig = plot_toy_run(run)
>>> [ax.get_title() for ax in fig.axes]
['loss terms (unweighted)', 'embeddings (2 principal axes)', 'spread per principal axis']
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from vicreg_lab.losses import vicreg_loss

TOY_TERMS = ("invariance", "variance", "covariance")


def make_toy_data(
    n: int = 512, in_dim: int = 8, n_clusters: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` points from ``n_clusters`` Gaussian clusters.

    Parameters
    ----------
    n : int
        Number of points.
    in_dim : int
        Dimension of the input space.
    n_clusters : int
        Number of clusters.
    seed : int
        Random seed.

    Returns
    -------
    x : torch.Tensor
        Points, shape (n, in_dim).
    labels : torch.Tensor
        Cluster index of each point, shape (n,).
    """
    if n < 2 or in_dim < 1 or n_clusters < 1:
        raise ValueError(
            f"need n >= 2, in_dim >= 1, n_clusters >= 1; got n={n}, in_dim={in_dim}, "
            f"n_clusters={n_clusters}"
        )
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(n_clusters, in_dim, generator=g)
    labels = torch.randint(0, n_clusters, (n,), generator=g)
    x = centres[labels] + 0.5 * torch.randn(n, in_dim, generator=g)
    return x, labels


def toy_encoder(in_dim: int = 8, embed_dim: int = 16, hidden: int = 64) -> nn.Module:
    """A two-layer MLP: the toy problem's encoder + expander in one."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))


def train_toy(
    inv_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    steps: int = 200,
    n: int = 512,
    in_dim: int = 8,
    embed_dim: int = 16,
    view_noise: float = 0.3,
    lr: float = 3e-3,
    seed: int = 0,
    callback=None,
    num_threads: int | None = 1,
) -> dict:
    """Train the toy MLP with the VICReg loss and record every term.

    Parameters
    ----------
    inv_coeff, var_coeff, cov_coeff : float
        Loss weights (see :class:`vicreg_lab.VICRegLoss`).
    steps : int
        Optimisation steps (full batch, Adam).
    n, in_dim, embed_dim : int
        Number of points, input and embedding dimensions.
    view_noise : float
        Standard deviation of the noise that makes the two views differ.
    lr : float
        Adam learning rate.
    seed : int
        Seed for data, initialisation and views.
    callback : callable, optional
        Called as ``callback(step, terms)`` after each step (``terms``: floats), e.g. to
        update a live plot; return ``False`` to stop early.
    num_threads : int or None, default=1
        Torch threads while training (restored afterwards). The matrices are tiny, so
        one thread is fastest, and far faster than several on a busy machine (threads
        then wait for each other at every operation). ``None`` keeps the current setting.

    Returns
    -------
    dict
        ``history`` (lists: step, loss, invariance, variance, covariance),
        ``embeddings`` (numpy (n, embed_dim), the clean points embedded after training;
        their std is what the variance term sets, so diagnose them with
        ``collapse_report(embeddings, target_std=1.0)``),
        ``initial_embeddings`` (the same before training), ``labels`` (numpy cluster ids),
        ``weights`` (the three coefficients, by keyword).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    with torch_threads(num_threads):
        x, labels = make_toy_data(n=n, in_dim=in_dim, seed=seed)
        torch.manual_seed(seed)
        model = toy_encoder(in_dim, embed_dim)
        with torch.no_grad():
            initial = model(x).numpy()
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed + 1)
        history = {key: [] for key in ("step", "loss", "invariance", "variance", "covariance")}
        for step in range(steps):
            view1 = x + view_noise * torch.randn(x.shape, generator=g)
            view2 = x + view_noise * torch.randn(x.shape, generator=g)
            terms = vicreg_loss(
                model(view1),
                model(view2),
                inv_coeff=inv_coeff,
                var_coeff=var_coeff,
                cov_coeff=cov_coeff,
            )
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimiser.step()
            values = {key: float(value.detach()) for key, value in terms.items()}
            history["step"].append(step)
            for key, value in values.items():
                history[key].append(value)
            if callback is not None and callback(step, values) is False:
                break
        with torch.no_grad():
            final = model(x).numpy()
        return {
            "history": history,
            "embeddings": final,
            "initial_embeddings": initial,
            "labels": labels.numpy(),
            "weights": {"inv_coeff": inv_coeff, "var_coeff": var_coeff, "cov_coeff": cov_coeff},
        }


@contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with ``num_threads`` torch threads, then restore the previous number."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def principal_axes(embeddings) -> tuple[np.ndarray, np.ndarray]:
    """Centre the embeddings and express them along their principal axes.

    Parameters
    ----------
    embeddings : array-like of shape (N, D)
        Embeddings, ``N >= 2``.

    Returns
    -------
    coords : numpy.ndarray of shape (N, min(N, D))
        The centred embeddings in the basis of their principal axes (largest spread first).
        They are **not** rescaled: collapsed embeddings stay a dot.
    spread : numpy.ndarray of shape (min(N, D),)
        Standard deviation along each axis (singular value / sqrt(N - 1)); VICReg's
        variance term asks for 1 in every embedding dimension.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> coords, spread = principal_axes(z)
    >>> np.round(spread, 3)
    array([1.633, 0.816])
    """
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embeddings must have shape (N, D) with N >= 2, got {z.shape}")
    z = z - z.mean(axis=0)
    u, sigma, _ = np.linalg.svd(z, full_matrices=False)
    return u * sigma, sigma / np.sqrt(len(z) - 1)


def plot_toy_run(run: dict, title: str | None = None, limit: float = 3.0):
    """Show a toy run: its loss terms, its embeddings, and their spread.

    Parameters
    ----------
    run : dict
        What :func:`train_toy` returns.
    title : str, optional
        Figure title.
    limit : float, default=3.0
        Half-width of the scatter plot's axes, kept fixed (widened only if points fall
        outside) so that a collapsed embedding shows as a dot, not as a zoomed-in cloud.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels: the unweighted invariance, variance and covariance terms per step
        (log scale); the embeddings of the clean points on their first two principal
        axes, coloured by cluster; the standard deviation along each principal axis, with
        VICReg's target 1 dashed. The figure is closed in pyplot (a notebook shows it once).
    """
    import matplotlib.pyplot as plt

    missing = {"history", "embeddings", "labels"} - set(run)
    if missing:
        raise ValueError(f"run must be a dict returned by train_toy; it lacks {sorted(missing)}")
    fig, (ax_loss, ax_emb, ax_spread) = plt.subplots(1, 3, figsize=(11, 3.2))
    plt.close(fig)
    history = run["history"]
    for term in TOY_TERMS:
        values = np.maximum(np.asarray(history[term], dtype=float), 1e-6)  # log scale: no zeros
        ax_loss.plot(history["step"], values, lw=1.3, label=term)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.legend(fontsize="small")
    ax_loss.set_title("loss terms (unweighted)")

    coords, spread = principal_axes(run["embeddings"])
    coords = np.pad(coords, ((0, 0), (0, max(0, 2 - coords.shape[1]))))
    ax_emb.scatter(coords[:, 0], coords[:, 1], c=run["labels"], cmap="tab10", s=6, vmin=0, vmax=9)
    half = max(limit, 1.05 * float(np.abs(coords[:, :2]).max()))
    ax_emb.set(xlim=(-half, half), ylim=(-half, half), aspect="equal")
    ax_emb.set_title("embeddings (2 principal axes)")

    ax_spread.bar(np.arange(1, len(spread) + 1), spread, color="tab:blue")
    ax_spread.axhline(1.0, color="k", ls="--", lw=0.8)
    ax_spread.set(xlabel="principal axis", ylabel="std", ylim=(0, max(1.5, 1.1 * spread.max())))
    ax_spread.set_title("spread per principal axis")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
