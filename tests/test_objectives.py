"""Objectives side by side (notebook 08): the comparison and its computed reading."""

import math

import pandas as pd
import pytest

from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab.ablation import ablation_settings
from vicreg_lab.lab.objectives import OBJECTIVES, compare_objectives, rankme_against_probe


def test_the_reading_follows_the_orders():
    rows = pd.DataFrame({"objective": list("abcd"), "rep_rankme": [1, 2, 3, 4]})
    agree = rankme_against_probe(rows.assign(age_r2=[0.1, 0.2, 0.3, 0.4]))
    assert "Highest RankMe: d; best age probe: the same row" in agree
    assert "1.00 (a higher RankMe went with a better probe)" in agree
    disagree = rankme_against_probe(rows.assign(age_r2=[0.4, 0.3, 0.2, 0.1]))
    assert "not the same row (a)" in disagree and "-1.00 (RankMe did not order" in disagree
    with pytest.raises(ValueError, match="at least 3 rows"):
        rankme_against_probe(rows.head(2).assign(age_r2=[0.1, 0.2]))


def test_every_objective_trains_and_is_measured_the_same_way():
    settings = ablation_settings("ci").override(
        n_subjects=16, n_eval=20, shape=(16, 16, 16), batch_size=8, max_epochs=1
    )
    train = SyntheticCohort(16, shape=(16, 16, 16), seed=0)
    table = compare_objectives(train, train.held_out(20), settings)
    assert list(table["objective"]) == list(OBJECTIVES)
    assert (table["steps"] == 2).all()  # 16 // 8 steps, one epoch, for every objective
    assert table[["final_loss", "rep_rankme", "age_r2"]].map(math.isfinite).all().all()
    assert (table["rep_rankme"] <= table["rep_rankme_max"] + 1e-6).all()
