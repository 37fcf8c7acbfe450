"""The plain-language reading of a probe table says what the numbers say."""

import pandas as pd
import pytest

from vicreg_lab.report import RAW, TRAINED, read_probes, summary_text


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
    from vicreg_lab.report import _read_variance

    good = _read_variance([{"variance": 0.67}, {"variance": 0.25}])
    assert "fell from 0.67 (first epoch) to 0.25 (last)" in good and good.endswith("reached.")
    bad = _read_variance([{"variance": 0.5}, {"variance": 0.55}])
    assert "did not fall from 0.50" in bad and bad.endswith("not reached.")
