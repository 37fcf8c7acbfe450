"""The ``vicreg-lab`` command line and the demo report it writes."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from vicreg_lab.lab.cli import main


def test_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_console_script_is_installed():
    done = subprocess.run(
        [sys.executable, "-m", "vicreg_lab.lab.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "usage: vicreg-lab" in done.stdout


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_profile_in_environment_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VICREG_LAB_PROFILE", "laptop")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "laptop" in err and "VICREG_LAB_PROFILE" in err


def test_out_that_is_a_file_exits_2_and_keeps_the_file(tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--profile", "ci", "--out", str(target)])
    assert exit_info.value.code == 2
    assert "not a folder" in capsys.readouterr().err
    assert target.read_text() == "precious"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "expected a positive integer"),
        (["train", "--shape", "4"], "expected a shape like 48"),
        (["train", "--var", "-1"], "expected a finite number >= 0"),
        (["train", "--optimizer", "sgd"], "invalid choice"),
    ],
)
def test_train_rejects_bad_values_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_on_a_missing_nifti_folder_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--profile", "ci", "--nifti", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_trains_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--profile", "ci", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed
    # the terminal gets the summary: facts, the probe table and its plain-language reading
    assert "## Linear probes" in printed and "| VICReg |" in printed
    assert "Age: a linear probe on the VICReg embedding reaches R^2" in printed
    assert "Scanner site: balanced accuracy" in printed and "![" not in printed
    figures = ["cohort.png", "loss_terms.png", "collapse.png", "spectrum.png", "umap.png"]
    for name in ["index.html", "index.md", "probes.csv", "model.ckpt", *figures]:
        assert (out / name).stat().st_size > 0, name
    page = (out / "index.html").read_text()
    assert all(name in page for name in figures)
    probes = pd.read_csv(out / "probes.csv")
    expected = {"VICReg", "random init (eval BN)", "random init (recalibrated BN)"}
    expected |= {"raw voxels 16^3", "intensity histogram (16 bins)"}
    assert expected == set(probes["embedding"])
    assert {"age", "site", "sex"} == set(probes["target"])
    # probed on held-out subjects of the same scanners, with the per-latent table
    assert "held-out subjects the model never saw" in printed
    latents = pd.read_csv(out / "latents.csv", index_col=0)
    assert {"lesion_load", "ventricle_size", "mean"} <= set(latents.index)
    assert set(latents.columns) == expected
    assert "## Anatomical latents" in printed and "Anatomy: over" in printed
    history = json.loads((out / "history.json").read_text())
    assert history and "collapse" in history[-1]
    # the history and the summary say which form each verdict used
    assert history[-1]["collapse"]["scale"] == "free"
    assert history[-1]["collapse_expander"]["scale"] == "target_std=1"
    assert "representation: " in printed and "(scale-free; RankMe" in printed
    assert "of the expander output: " in printed and "(target std 1; mean std" in printed
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert not list(out.glob(".*.tmp*")), "temporary files left behind"
