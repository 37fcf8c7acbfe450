"""The ``vicreg-lab`` command line and the demo report it writes."""

import json
import subprocess
import sys

import pytest

from vicreg_lab.cli import main


def test_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_console_script_is_installed():
    done = subprocess.run(
        [sys.executable, "-m", "vicreg_lab.cli", "--help"], capture_output=True, text=True
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


@pytest.mark.slow
def test_demo_writes_report_and_shows_collapse(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--profile", "ci", "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    for name in ["index.html", "index.md", "loss_terms.png", "spectrum.png", "diagnostics.png"]:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "diagnostics.json").read_text())
    runs = summary["runs"]
    assert runs["standard (25/25/1)"]["collapse_report"]["verdict"] == "healthy"
    assert runs["no variance (25/0/1)"]["collapse_report"]["verdict"] == "complete collapse"
    assert "loss_terms.png" in (out / "index.html").read_text()
    assert not list(out.glob(".*.tmp*")), "temporary files left behind"
