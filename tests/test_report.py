"""The plain-language reading of a probe table says what the numbers say."""

import pandas as pd
import pytest

from vicreg_lab.lab.report import RAW, TRAINED, read_probes, summary_text


def _table(trained_r2, raw_r2):
    rows = [
        (TRAINED, "age", "r2", trained_r2, 0.0),
        (RAW, "age", "r2", raw_r2, 0.0),
        (TRAINED, "site", "balanced_accuracy", 0.9, 0.25),
        (RAW, "site", "balanced_accuracy", 0.95, 0.25),
    ]
    table = pd.DataFrame(rows, columns=["embedding", "target", "metric", "mean", "chance"])
    return table.assign(probe="linear", sd=0.01, n_splits=5)


def test_a_win_is_reported_without_the_short_run_caution():
    text = " ".join(read_probes(_table(0.73, 0.47)))
    assert "R^2 = 0.73; it beats the best baseline (raw voxels 16^3, R^2 = 0.47)" in text
    assert "balanced accuracy 0.90 against a chance level of 0.25" in text
    assert "short CPU run" not in text


def test_a_loss_is_reported_with_the_reason():
    text = " ".join(read_probes(_table(0.22, 0.44)))
    assert "it does not beat the best baseline (raw voxels 16^3, R^2 = 0.44)" in text
    assert "short CPU run does not converge VICReg" in text


def test_summary_text_is_the_page_without_title_and_figures(tmp_path):
    page = "# vicreg-lab training report\n\nfacts\n\n| a | b |\n\nreading\n![x.png](x.png)\n"
    (tmp_path / "index.md").write_text(page)
    expected = "facts\n\n| a | b |\n\nreading\n"
    assert summary_text(tmp_path) == expected
    assert summary_text(tmp_path / "index.html") == expected
    with pytest.raises(FileNotFoundError, match=r"no report summary at .*index\.md"):
        summary_text(tmp_path / "missing")


def test_the_spread_sentence_follows_the_variance_term():
    from vicreg_lab.lab.report import read_variance

    good = read_variance([{"variance": 0.67}, {"variance": 0.25}])
    assert "fell from 0.67 (first epoch) to 0.25 (last)" in good and good.endswith("reached.")
    bad = read_variance([{"variance": 0.5}, {"variance": 0.55}])
    assert "did not fall from 0.50" in bad and bad.endswith("not reached.")


def _seed_runs(first, second):
    rows = [{"arm": "a", "seed": s, "m": v} for s, v in enumerate(first)]
    return pd.DataFrame(rows + [{"arm": "b", "seed": s, "m": v} for s, v in enumerate(second)])


def test_compare_seeds_separates_clear_paired_and_inconsistent_differences():
    from vicreg_lab.lab.report import compare_seeds

    clear = compare_seeds(_seed_runs([0.6, 0.7, 0.8], [0.1, 0.2, 0.3]), "m", "a", "b")
    assert "a is higher at every seed, and the ranges do not overlap" in clear
    assert "+0.500" in clear and "0.700 (0.600 to 0.800)" in clear
    paired = compare_seeds(_seed_runs([0.3, 0.5, 0.7], [0.2, 0.4, 0.6]), "m", "a", "b")
    assert "a is higher at every seed, but the ranges overlap" in paired
    lower = compare_seeds(_seed_runs([0.1, 0.2], [0.3, 0.4]), "m", "a", "b")
    assert "b is higher at every seed" in lower and "-0.200" in lower
    mixed = compare_seeds(_seed_runs([0.5, 0.1, 0.5], [0.4, 0.4, 0.4]), "m", "a", "b")
    assert "no consistent difference (a is higher at 2 of 3 seeds)" in mixed


def test_compare_seeds_pairs_by_seed_and_refuses_missing_arms():
    from vicreg_lab.lab.report import compare_seeds

    runs = _seed_runs([0.9, 0.1, 0.9], [0.5, 0.5])  # arm a has a seed 2 that b lacks
    assert "over 2 seeds" in compare_seeds(runs, "m", "a", "b")
    with pytest.raises(ValueError, match="no rows with arm == 'c'"):
        compare_seeds(runs, "m", "a", "c")
    runs.loc[runs.arm == "b", "seed"] += 10
    with pytest.raises(ValueError, match="share no seed"):
        compare_seeds(runs, "m", "a", "b")


def test_seed_summary_counts_seeds_per_group():
    from vicreg_lab.lab.report import seed_summary

    table = seed_summary(_seed_runs([0.2, 0.4, 0.9], [0.5]), ["m"])
    assert table.loc["a", ("m", "max")] == 0.9 and table.loc["a", ("seeds", "n")] == 3
    assert table.loc["b", ("seeds", "n")] == 1 and abs(table.loc["a", ("m", "mean")] - 0.5) < 1e-12
