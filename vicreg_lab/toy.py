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
>>> from vicreg_lab.toy import train_toy
>>> run = train_toy(steps=5, seed=0)
>>> sorted(run["history"])
['covariance', 'invariance', 'loss', 'step', 'variance']
"""

from __future__ import annotations

import torch
from torch import nn

from vicreg_lab.losses import vicreg_loss


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

    Returns
    -------
    dict
        ``history`` (lists: step, loss, invariance, variance, covariance),
        ``embeddings`` (numpy (n, embed_dim), the clean points embedded after training),
        ``initial_embeddings`` (the same before training), ``labels`` (numpy cluster ids).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
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
    }
