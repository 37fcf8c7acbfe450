"""A toy VICReg problem that trains in seconds: watch each loss term do its job.

Points come from a few Gaussian clusters; the two views of a point are the point plus
independent noise, so the views share only which point (and cluster) it was. A small
MLP embeds each view and is trained with the VICReg loss. With 25 / 25 / 1 the
embedding spreads out and keeps the clusters; with the variance weight at 0 the
invariance term pulls every embedding to one point within a few dozen steps.

Examples
--------
>>> run = train_toy(steps=5, seed=0)
>>> sorted(run["history"])
['covariance', 'invariance', 'loss', 'step', 'variance']
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
    """``n`` points (n, in_dim) from ``n_clusters`` Gaussian clusters, and their labels (n,)."""
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
    """Train the toy MLP with the VICReg loss (full batch, Adam) and record every term.

    Parameters
    ----------
    inv_coeff, var_coeff, cov_coeff : float
        Loss weights (see :class:`vicreg_lab.VICRegLoss`).
    steps, n, in_dim, embed_dim : int
        Optimisation steps, number of points, input and embedding dimensions.
    view_noise : float
        Std of the noise that makes the two views differ.
    lr, seed : float, int
        Adam learning rate; seed of data, initialisation and views.
    callback : callable, optional
        ``callback(step, terms)`` after each step; return ``False`` to stop early.
    num_threads : int or None, default=1
        Torch threads while training (tiny matrices: one is fastest); None: unchanged.

    Returns
    -------
    dict
        ``history`` (lists: step, loss, invariance, variance, covariance), ``embeddings``
        (numpy (n, embed_dim) of the clean points after training; diagnose them with
        ``collapse_report(embeddings, target_std=1.0)``), ``initial_embeddings``,
        ``labels`` (cluster ids) and ``weights`` (the three coefficients, by keyword).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    weights = {"inv_coeff": inv_coeff, "var_coeff": var_coeff, "cov_coeff": cov_coeff}
    with torch_threads(num_threads):
        x, labels = make_toy_data(n=n, in_dim=in_dim, seed=seed)
        torch.manual_seed(seed)
        model = toy_encoder(in_dim, embed_dim)
        with torch.no_grad():
            initial = model(x).numpy()
        history = _fit_toy(model, x, weights, steps, view_noise, lr, seed, callback)
        with torch.no_grad():
            final = model(x).numpy()
    return {
        "history": history,
        "embeddings": final,
        "initial_embeddings": initial,
        "labels": labels.numpy(),
        "weights": weights,
    }


def _fit_toy(model, x, weights, steps, view_noise, lr, seed, callback) -> dict:
    """The training loop of :func:`train_toy`; returns the per-step history."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    history = {key: [] for key in ("step", "loss", *TOY_TERMS)}
    for step in range(steps):
        view1 = x + view_noise * torch.randn(x.shape, generator=g)
        view2 = x + view_noise * torch.randn(x.shape, generator=g)
        terms = vicreg_loss(model(view1), model(view2), **weights)
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimiser.step()
        values = {key: float(value.detach()) for key, value in terms.items()}
        history["step"].append(step)
        for key, value in values.items():
            history[key].append(value)
        if callback is not None and callback(step, values) is False:
            break
    return history


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

    Returns
    -------
    coords : numpy.ndarray (N, min(N, D))
        Centred embeddings in the principal basis (largest spread first), **not**
        rescaled: collapsed embeddings stay a dot.
    spread : numpy.ndarray (min(N, D),)
        Std along each axis (singular value / sqrt(N - 1)); the variance term asks for 1.

    Examples
    --------
    >>> z = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> np.round(principal_axes(z)[1], 3)
    array([1.633, 0.816])
    """
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embeddings must have shape (N, D) with N >= 2, got {z.shape}")
    z = z - z.mean(axis=0)
    u, sigma, _ = np.linalg.svd(z, full_matrices=False)
    return u * sigma, sigma / np.sqrt(len(z) - 1)


def plot_toy_run(run: dict, title: str | None = None, limit: float = 3.0):
    """Show a :func:`train_toy` run: loss terms, embeddings, and spread per principal axis.

    ``limit`` is the half-width of the scatter plot, kept fixed (widened only if points
    fall outside) so that a collapsed embedding shows as a dot, not a zoomed-in cloud.
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
