"""The toy VICReg problem: standard weights stay healthy, no variance term collapses."""

import numpy as np
import pytest

from vicreg_lab.diagnostics import collapse_report
from vicreg_lab.toy import make_toy_data, train_toy


def test_toy_data_is_seeded():
    a, la = make_toy_data(n=64, seed=3)
    b, lb = make_toy_data(n=64, seed=3)
    assert a.shape == (64, 8) and (a == b).all() and (la == lb).all()
    with pytest.raises(ValueError, match="n >= 2"):
        make_toy_data(n=1)


def test_variance_term_prevents_collapse():
    healthy = train_toy(steps=150, seed=0, lr=1e-2)
    collapsed = train_toy(steps=150, seed=0, lr=1e-2, var_coeff=0.0)
    assert collapse_report(healthy["embeddings"]).verdict == "healthy"
    assert healthy["history"]["variance"][-1] < 0.5 * healthy["history"]["variance"][0]
    # VICReg asks for std 1 per dimension; without the variance term every dimension
    # shrinks towards a constant (judge collapse by the std first)
    assert np.std(healthy["embeddings"], axis=0).mean() > 0.5
    assert np.std(collapsed["embeddings"], axis=0).max() < 0.05


def test_callback_can_stop_early():
    seen = []
    run = train_toy(steps=50, callback=lambda step, terms: seen.append(terms) or step < 4)
    assert len(seen) == 5 and len(run["history"]["loss"]) == 5
    assert set(seen[0]) == {"loss", "invariance", "variance", "covariance"}
