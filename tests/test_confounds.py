"""ComBat and the unseen-scanner protocol (issue 19): what harmonization keeps and removes."""

import numpy as np
import pandas as pd
import pytest

from vicreg_lab.lab.confounds import combat, confound_table, read_confounds


def _cohort(n=240, confound=True, seed=0):
    """Four sites that shift every feature; ages banded by site when ``confound``."""
    rng = np.random.default_rng(seed)
    site = rng.integers(4, size=n)
    age = 20 + 15 * site + 15 * rng.random(n) if confound else 20 + 60 * rng.random(n)
    anatomy = 0.1 * (age - 50)[:, None] + 0.5 * rng.normal(size=(n, 6))
    scanner = 3.0 * site[:, None] * np.linspace(-1, 1, 6)  # a per-site offset on every feature
    participants = pd.DataFrame({"age": age, "site": [f"S{s}" for s in site]})
    return participants, anatomy + scanner


def test_combat_removes_each_sites_offset_and_keeps_constant_features():
    participants, X = _cohort(confound=False)
    X = np.column_stack([X, np.full(len(X), 7.0)])
    harmonized = combat(X, participants["site"])
    site_means = pd.DataFrame(harmonized).groupby(participants["site"].to_numpy()).mean()
    raw_means = pd.DataFrame(X).groupby(participants["site"].to_numpy()).mean()
    assert raw_means.iloc[:, 0].std() > 3  # the scanners differ a lot before
    assert site_means.iloc[:, :6].std().max() < 0.2  # and hardly at all after
    assert np.all(harmonized[:, 6] == 7.0)  # a constant column is left as it is


def test_under_a_confound_combat_removes_age_unless_told_the_ages():
    participants, X = _cohort(confound=True)
    table = confound_table({"anatomy": X}, participants)
    r2 = table.query("metric == 'r2' and protocol == 'shuffled folds'")
    r2 = r2.set_index("embedding")["value"]
    assert r2["anatomy"] > 0.6  # age is in the features (with the site's offsets)
    assert r2["anatomy + ComBat"] < r2["anatomy"] - 0.3  # site removed, age with it
    assert r2["anatomy + ComBat(age)"] > r2["anatomy + ComBat"] + 0.3  # kept by using the ages
    unseen = table.query("protocol == 'leave one site out' and metric == 'mae'")
    assert set(unseen["embedding"]) == set(r2.index)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one site per row"):
        combat(np.zeros((5, 3)), ["A", "B"])


def test_the_reading_follows_the_numbers():
    participants, X = _cohort(confound=True)
    site_only = np.eye(4)[participants["site"].str[1].astype(int)]  # the scanner, no anatomy
    table = confound_table({"anatomy": X - X.mean(0), "site code": site_only}, participants)
    said = {sentence.split(":")[0]: sentence for sentence in read_confounds(table)}
    assert len(said) == 6  # each embedding raw and with both ComBats
    assert said["anatomy"].endswith("the age read-out transfers.")
    assert said["site code"].endswith("does not transfer.")
    assert said["site code + ComBat"].endswith("does not transfer.")  # nothing left to read


def _invariance_rows(site, unseen, chance=16.0):
    """bench_invariance-like rows: site accuracy and unseen-site MAE per embedding and seed."""
    import pandas as pd

    rows = []
    for name, values in site.items():
        for seed, v in enumerate(values):
            rows.append((name, "shuffled folds", "site_bacc", v, 0.25, 0.0, seed))
    for name, values in unseen.items():
        for seed, v in enumerate(values):
            rows.append((name, "leave one site out", "mae", v, chance, 0.0, seed))
    columns = ["embedding", "protocol", "metric", "value", "chance", "confound", "seed"]
    return pd.DataFrame(rows, columns=columns)


def test_read_invariance_counts_seeds_and_names_the_lowest_error():
    from vicreg_lab.lab import read_invariance

    table = _invariance_rows(
        site={"cpu recipe": [1.0, 0.9, 0.95], "scanner-like views": [0.8, 0.95, 0.7]},
        unseen={
            "cpu recipe": [15.0, 16.0, 14.0],
            "scanner-like views": [14.0, 17.0, 13.0],
            "cpu recipe + ComBat": [11.0, 12.0, 12.0],
        },
    )
    site, mae = read_invariance(table)
    assert "lower in 2 of 3 seeds" in site and "0.82 against 0.95" in site
    assert "scanner-like views 14.7 (better in 2 of 3 seeds)" in mae
    assert "cpu recipe + ComBat 11.7 (better in 3 of 3 seeds)" in mae
    assert "Lowest: cpu recipe + ComBat, which transfers" in mae  # 11.7 < 0.8 x 16


def test_read_invariance_says_when_nothing_transfers_and_refuses_missing_rows():
    from vicreg_lab.lab import read_invariance

    table = _invariance_rows(
        site={"cpu recipe": [1.0], "scanner-like views": [1.0]},
        unseen={"cpu recipe": [15.0], "scanner-like views": [16.0], "cpu recipe + ComBat": [15.5]},
    )
    assert "Lowest: cpu recipe, which does not transfer" in read_invariance(table)[1]
    with pytest.raises(ValueError, match="ComBat"):
        read_invariance(table[table["embedding"] != "cpu recipe + ComBat"])
