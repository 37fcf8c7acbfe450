"""VICReg's peers (Barlow Twins, InfoNCE) and the expander-free VICReg, on the same harness."""

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone

from vicreg_lab.models import build_expander
from vicreg_lab.peers import BarlowTwins, SimCLR, barlow_twins_loss, info_nce_loss
from vicreg_lab.train import VICReg


def test_barlow_twins_is_the_correlation_matrix_pushed_to_the_identity():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(64, 6))
    z2 = z1 + 0.5 * rng.normal(size=(64, 6))
    # an independent computation: Pearson correlations between z1's and z2's dimensions
    c = np.corrcoef(z1.T, z2.T)[:6, 6:]
    on = ((np.diag(c) - 1) ** 2).sum()
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    got = barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), lambd=0.1)
    assert float(got["on_diagonal"]) == pytest.approx(on, rel=1e-3)
    assert float(got["off_diagonal"]) == pytest.approx(off, rel=1e-3)
    assert float(got["loss"]) == pytest.approx(on + 0.1 * off, rel=1e-3)
    collapsed = torch.ones(64, 6)  # no spread: every correlation 0, the diagonal pays D
    assert float(barlow_twins_loss(collapsed, collapsed)["on_diagonal"]) == pytest.approx(6.0)


def test_info_nce_is_each_view_picking_its_partner():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / 0.5
    losses = []
    for i in range(10):  # an independent loop over the 2N anchors
        partner = (i + 5) % 10
        others = [k for k in range(10) if k != i]
        losses.append(-s[i, partner] + math.log(sum(math.exp(s[i, k]) for k in others)))
    got = info_nce_loss(torch.tensor(z1), torch.tensor(z2), temperature=0.5)
    assert float(got["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
    same = torch.ones(5, 3)  # collapse: every other embedding is as close as the partner
    assert float(info_nce_loss(same, same)["loss"]) == pytest.approx(math.log(9), rel=1e-5)


@pytest.mark.parametrize("function", [barlow_twins_loss, info_nce_loss])
def test_a_batch_of_one_is_refused(function):
    with pytest.raises(ValueError, match="N >= 2"):
        function(torch.ones(1, 4), torch.ones(1, 4))


@pytest.mark.parametrize(
    "estimator, setting, terms",
    [
        (BarlowTwins, {"lambd": 0.01}, {"on_diagonal", "off_diagonal"}),
        (SimCLR, {"temperature": 0.2}, {"alignment"}),
    ],
)
def test_the_peers_train_on_the_same_harness(estimator, setting, terms):
    params = dict(encoder="small_cnn", expander="32-32", batch_size=8, max_epochs=2, seed=0)
    model = estimator(**params, **setting, progress=False)
    assert clone(model).get_params() == model.get_params()  # scikit-learn's contract
    assert model.get_params()[next(iter(setting))] == next(iter(setting.values()))
    volumes = torch.rand(16, 1, 16, 16, 16)
    model.fit(volumes)
    record = model.history_["step"][-1]
    assert terms <= set(record) and math.isfinite(record["loss"])
    assert "invariance" not in record  # its own terms, not VICReg's
    assert len(model.history_["epoch"]) == 2 and "collapse" in model.history_["epoch"][-1]
    first = model.history_["step"][0]["loss"]
    assert model.transform(volumes).shape == (16, model.representation_size_)
    assert np.isfinite(first)


@pytest.mark.parametrize(
    "estimator, bad", [(BarlowTwins, {"lambd": -1.0}), (SimCLR, {"temperature": 0.0})]
)
def test_bad_peer_settings_are_refused_before_training(estimator, bad):
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive"):
        estimator(**bad, progress=False).fit(torch.rand(8, 1, 16, 16, 16))


def test_vicreg_without_an_expander_puts_the_loss_on_the_representation():
    assert len(build_expander(64, "none")) == 0
    model = VICReg(expander="none", batch_size=8, max_epochs=1, progress=False)
    model.fit(torch.rand(16, 1, 16, 16, 16))
    x = model.prepare(torch.rand(4, 1, 16, 16, 16))
    with torch.no_grad():
        rep = model.encoder_.eval()(x)
        assert torch.equal(model.expander_(rep), rep)  # the identity
    assert math.isfinite(model.history_["step"][-1]["covariance"])
