"""The course as pages (issue 19, item 5): book/ builds, lists every notebook, and fails loudly.

The full build executes every notebook (minutes, in the ci profile that `make test` sets), so
it runs once, into a temporary folder; the committed notebooks stay output-free.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def _jupyter_book() -> str:
    found = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("jupyter-book is not installed: `make test` installs the docs extra")
        pytest.skip("jupyter-book is not installed (pip install -e '.[docs]')")
    return found


def _build(source: Path, out: Path, config: Path, toc: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # figures inline
    command = [_jupyter_book(), "build", str(source), "--config", str(config)]
    command += ["--toc", str(toc), "--path-output", str(out), "-n", "-W", "--keep-going"]
    return subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)


def _toc_files() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_the_toc_lists_every_notebook_in_order():
    assert _toc_files() == [f"notebooks/{name}" for name in NOTEBOOKS]


def test_a_missing_reference_fails_the_build(tmp_path):
    """-n -W: a link to a page that is not in the book is an error, not a warning."""
    (tmp_path / "intro.md").write_text("# A page\n\nSee [the next one](missing.md).\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: 'off'\n")
    run = _build(tmp_path, tmp_path / "out", tmp_path / "_config.yml", tmp_path / "_toc.yml")
    assert run.returncode != 0
    assert "missing.md" in run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_course_builds_with_its_figures(tmp_path):
    run = _build(ROOT, tmp_path, BOOK / "_config.yml", BOOK / "_toc.yml")
    log = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, f"the book did not build:\n{log}"
    html = tmp_path / "_build" / "html"
    images = {}
    for name in NOTEBOOKS:
        page = (html / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        assert "cell_output" in page, f"{name}: no executed output on its page"
        images[name] = len(re.findall(r"<img [^>]*src=\"\.\./_images/", page))
    # every lesson shows brains, curves or tables as figures; only the appendix may have none
    assert all(images[name] > 0 for name in NOTEBOOKS if "appendix" not in name), images
    assert not list(html.glob("**/*answers*")), "the answer key must not be published"
