"""Fixtures for the browser tests: a real JupyterLab server and headless Chromium.

The tests here check what a learner sees: a notebook opened in JupyterLab, run top
to bottom, its widgets rendered (not "Error displaying widget"), a slider moved and
the figure or numbers redrawn by the kernel.

* ``jupyter_server`` (one for the folder): JupyterLab on 127.0.0.1, a free port, a token of
  our own, a temporary root folder and a fresh HOME / Jupyter / IPython /
  matplotlib configuration, kernels in the ``ci`` profile.
* ``lab`` (per test): a fresh headless Chromium (Debian's ``/usr/bin/chromium``,
  driven by Playwright; no browser download) with an empty profile, wrapped in a
  :class:`Lab` with the few actions the tests need.

Screenshots and the server log go to ``$VICREG_LAB_E2E_ARTIFACTS`` (default
``test-artifacts/e2e/`` in the repository); the path is printed at the end of the
run. Without Chromium the tests are skipped with a loud message; a missing
Playwright is an error (it is part of the ``test`` extra).

Environment variables: ``VICREG_LAB_CHROMIUM`` (the browser, default
``/usr/bin/chromium``), ``VICREG_LAB_E2E_ARTIFACTS``, ``VICREG_LAB_E2E_RUN_ALL_S``
(how long "Run All" may take, default 150 s), ``VICREG_LAB_E2E_NOTEBOOKS`` (the folder
the notebooks are copied from, default ``notebooks/``), ``VICREG_LAB_E2E_HEADED=1``
(show the browser window, for debugging on a desktop).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Lab settings of the throwaway user: start the notebook's kernel without the "Select
# Kernel" dialog (it blocks Run All) and no news / update notification (no network here).
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
SERVER_START_S = 90.0
PAGE_READY_S = 90.0  # the Lab page loaded and the notebook's kernel started
WIDGET_UPDATE_S = 45.0  # a slider moved -> the kernel redraws -> the browser shows it
RUN_ALL_S = float(os.environ.get("VICREG_LAB_E2E_RUN_ALL_S", "150"))
SERVER_LOG = "jupyterlab.log"
VIEWPORT = {"width": 1400, "height": 1600}  # tall: a whole panel fits on screen


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: drives the notebooks in a real JupyterLab with headless Chromium"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember whether the test itself failed: the ``lab`` fixture then takes a screenshot."""
    report = (yield).get_result()
    if report.when == "call":
        item.e2e_failed = report.failed


def pytest_terminal_summary(terminalreporter):
    config = terminalreporter.config
    skipped = getattr(config, "_e2e_skipped", None)
    folder = getattr(config, "_e2e_artifacts", None)
    if skipped is not None:
        terminalreporter.write_sep("!", "e2e browser tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(skipped, red=True)
    elif folder is not None:
        terminalreporter.write_sep("-", "e2e browser tests")
        terminalreporter.write_line(f"screenshots and JupyterLab log: {folder}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def chromium(pytestconfig) -> str:
    """Path of the Chromium executable; the tests are skipped loudly without one."""
    path = os.environ.get("VICREG_LAB_CHROMIUM", "/usr/bin/chromium")
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        pytestconfig._e2e_skipped = (
            f"E2E BROWSER TESTS SKIPPED: no Chromium at {path}. Install Debian's browser "
            "(`sudo apt-get install -y chromium`) or set VICREG_LAB_CHROMIUM to a Chromium "
            "executable; see docs/testing.md."
        )
        pytest.skip(pytestconfig._e2e_skipped)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright for Python: `pip install -e '.[test]'` "
            "(or `pip install playwright`; never `playwright install`, we use the system "
            "Chromium)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def artifacts_dir(pytestconfig) -> Path:
    """Where screenshots and the server log are written (kept by CI)."""
    folder = os.environ.get("VICREG_LAB_E2E_ARTIFACTS") or REPO / "test-artifacts" / "e2e"
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("test_*.png"), *folder.glob("test_*.log"), folder / SERVER_LOG]:
        old.unlink(missing_ok=True)  # ours, from an earlier run: they would mislead
    pytestconfig._e2e_artifacts = folder
    return folder


@pytest.fixture(scope="package")
def jupyter_server(chromium, artifacts_dir, tmp_path_factory):
    """A JupyterLab server of our own, stopped once the browser tests are done."""
    base = tmp_path_factory.mktemp("jupyterlab")
    server = JupyterLabServer(base, log_path=artifacts_dir / SERVER_LOG)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def _playwright(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def lab(request, _playwright, chromium, jupyter_server, artifacts_dir, tmp_path):
    """A fresh headless Chromium on the JupyterLab server, as a :class:`Lab`.

    A screenshot is taken when the test fails; the notebook's kernel is shut down
    afterwards so the next test gets the CPU.
    """
    headed = os.environ.get("VICREG_LAB_E2E_HEADED") == "1"
    flags = [f for f in CHROMIUM_FLAGS if not (headed and f == "--headless")]
    # Playwright refuses --user-data-dir in args: a persistent context takes it instead.
    context = _playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=chromium,
        headless=not headed,
        args=flags,
        viewport=VIEWPORT,
    )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page = context.pages[0] if context.pages else context.new_page()
    session = Lab(page, jupyter_server, artifacts_dir, prefix=name)
    try:
        yield session
    finally:
        try:
            if getattr(request.node, "e2e_failed", True):
                session.screenshot("FAILED")
                (artifacts_dir / f"{name}-FAILED-console.log").write_text(
                    "\n".join(session.console), encoding="utf-8"
                )
            context.close()
        finally:
            jupyter_server.shutdown_kernels()


@pytest.fixture
def notebook_copy(jupyter_server):
    """Copy ``notebooks/<name>`` into the server's root (the repository stays untouched).

    ``$VICREG_LAB_E2E_NOTEBOOKS`` names another folder to take the notebooks from.
    """

    def copy(name: str) -> str:
        source = Path(os.environ.get("VICREG_LAB_E2E_NOTEBOOKS") or NOTEBOOKS) / name
        if not source.is_file():
            pytest.fail(f"notebook {source} not found (the browser tests open it)", pytrace=False)
        shutil.copy2(source, jupyter_server.root / name)
        return name

    return copy


# --------------------------------------------------------------------------- the server


class JupyterLabServer:
    """JupyterLab on 127.0.0.1 with a temporary root, HOME and configuration.

    Parameters
    ----------
    base : pathlib.Path
        An empty folder; ``base/root`` is the server's root, ``base/home`` the HOME
        of the server and its kernels.
    log_path : pathlib.Path
        The server's stdout and stderr.
    """

    def __init__(self, base: Path, log_path: Path):
        self.root = base / "root"
        self.home = base / "home"
        self.log_path = log_path
        self.token = secrets.token_hex(16)
        self.port = None
        self.process = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> None:
        """Start the server and wait until ``/api/status`` answers (a few tries)."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = self._environment()
        self._log = open(self.log_path, "w", encoding="utf-8")
        for _ in range(attempts):
            self.port = _free_port()
            self.process = subprocess.Popen(
                self._command(), env=env, cwd=self.root, stdout=self._log, stderr=self._log
            )
            if self._wait_until_ready():
                return
            self._kill()  # most likely the port was taken meanwhile: try another one
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"JupyterLab did not start; end of {self.log_path}:\n{tail}")

    def stop(self) -> None:
        """Shut the server down (``POST /api/shutdown``, which also ends kernels)."""
        if self.process is None:
            return
        try:
            self.api("POST", "/api/shutdown")
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()
        self._log.close()

    def api(self, method: str, path: str):
        """Call the server's REST API with our token; return the decoded JSON (or None)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "PUT") else None,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every running kernel (each notebook test starts its own)."""
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (OSError, ValueError):
            pass  # the server is gone already: nothing left to free

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--allow-root",
            "--expose-app-in-browser",  # window.jupyterapp: run commands, read the model
            "--LabApp.news_url=None",
        ]

    def _environment(self) -> dict:
        """The server's environment: a throwaway HOME and configuration, the ci profile."""
        dirs = {
            "HOME": self.home,
            "JUPYTER_CONFIG_DIR": self.home / ".jupyter",
            "JUPYTER_DATA_DIR": self.home / ".local" / "share" / "jupyter",
            "JUPYTER_RUNTIME_DIR": self.home / ".local" / "share" / "jupyter" / "runtime",
            "IPYTHONDIR": self.home / ".ipython",
            "MPLCONFIGDIR": self.home / ".config" / "matplotlib",
        }
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        settings = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings"
        for plugin, values in USER_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        env = dict(os.environ)
        env.update({key: str(value) for key, value in dirs.items()})
        # Results the notebooks cache are shared with the nbval run (same place as it uses).
        env["VICREG_LAB_CACHE"] = os.environ.get("VICREG_LAB_CACHE") or str(
            Path.home() / ".cache" / "vicreg-lab"
        )
        env["VICREG_LAB_PROFILE"] = "ci"
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("MPLBACKEND", None)  # `make test` sets Agg: the kernels need the inline one
        return env

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self.api("GET", "/api/status")
                return True
            except (OSError, ValueError):
                time.sleep(0.5)
        return False

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the page

# The current notebook as the learner's browser holds it: kernel state and, per code
# cell, its execution count, running state and error outputs (read from the cell models,
# so cells scrolled out of view count too).
_NOTEBOOK_STATE_JS = """
() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) {
    return null;
  }
  const session = panel.sessionContext.session;
  const kernel = session ? session.kernel : null;
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') continue;
    const outputs = cell.outputs.toJSON();
    cells.push({
      index: i,
      empty: cell.sharedModel.getSource().trim() === '',
      count: cell.executionCount,
      running: cell.executionState === 'running',
      errors: outputs.filter(o => o.output_type === 'error')
                     .map(o => `${o.ename}: ${o.evalue}`),
    });
  }
  return {
    kernel: kernel ? kernel.status : null,
    connection: kernel ? kernel.connectionStatus : null,
    kernelName: panel.sessionContext.kernelDisplayName,
    runAll: window.__e2eRunAll || null,
    cells: cells,
  };
}
"""

# Widget views still loading, and those that failed, among the notebook's outputs (the
# error's text from "Error displaying widget" on). Outputs nested in an Output widget are
# seen twice: inside it and inside the output that holds it.
_WIDGET_VIEWS_JS = """
() => {
  const texts = Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
    .map(node => node.textContent);
  return {
    loading: texts.filter(t => t.includes('Loading widget...')).length,
    errors: texts.filter(t => t.includes('Error displaying widget'))
      .map(t => t.slice(t.indexOf('Error displaying widget')).trim().slice(0, 300)),
  };
}
"""

_RUN_ALL_JS = """
() => {
  window.__e2eRunAll = {done: false};
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.__e2eRunAll = {done: true, ok: ok}; },
    err => { window.__e2eRunAll = {done: true, ok: false, error: String(err)}; });
}
"""

# A digest of what an <img> shows (its bytes, whether a data: or a blob: URL).
_IMAGE_DIGEST_JS = """
async (img) => {
  if (!img.src || !img.complete || img.naturalWidth === 0) return null;
  const bytes = await (await fetch(img.src)).arrayBuffer();
  const hash = await crypto.subtle.digest('SHA-256', bytes);
  const hex = Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, '0'));
  return hex.join('') + ':' + img.naturalWidth + 'x' + img.naturalHeight;
}
"""


class Lab:
    """One browser tab on the JupyterLab server, with the actions the tests use.

    Parameters
    ----------
    page : playwright.sync_api.Page
        The tab.
    server : JupyterLabServer
        The server it talks to.
    artifacts : pathlib.Path
        Where screenshots go.
    prefix : str
        Start of the screenshot names (the test's name).
    """

    def __init__(self, page, server: JupyterLabServer, artifacts: Path, prefix: str):
        self.page = page
        self.server = server
        self.artifacts = artifacts
        self.prefix = prefix
        self.console: list[str] = []
        self._shots = 0
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def open(self, name: str) -> None:
        """Open notebook ``name`` (relative to the server root) and wait for its kernel."""
        # A workspace of this test's own, reset: no tab (and kernel) of an earlier test
        # comes back with it.
        workspace = f"{self.server.url}/lab/workspaces/{self.prefix}"
        self.page.goto(
            f"{workspace}/tree/{name}?reset&token={self.server.token}",
            timeout=PAGE_READY_S * 1000,
        )
        # Not the status bar's "Idle" alone: it reads idle before any kernel exists, and
        # "Run All" then does nothing. Wait for a connected, idle kernel of this notebook.
        self._wait_for_state(
            lambda s: s["kernel"] == "idle" and s["connection"] == "connected",
            PAGE_READY_S,
            "the notebook's kernel to start",
        )

    def run_all(self, timeout: float = RUN_ALL_S) -> dict:
        """Run all cells (the learner's Run > Run All Cells) and wait until they finish.

        Returns the notebook state (see ``_NOTEBOOK_STATE_JS``); a cell that raised stops
        the run, as in JupyterLab, and the test then sees its error.
        """
        self.page.evaluate(_RUN_ALL_JS)
        return self._wait_for_state(_run_all_finished, timeout, "Run All to finish")

    def state(self) -> dict | None:
        """The notebook's kernel and cell states (see ``_NOTEBOOK_STATE_JS``)."""
        return self.page.evaluate(_NOTEBOOK_STATE_JS)

    def cell_errors(self) -> list[str]:
        """Errors shown by code cells, as ``"cell <i>: <Name>: <message>"``."""
        state = self.state() or {"cells": []}
        return [f"cell {c['index']}: {e}" for c in state["cells"] for e in c["errors"]]

    def widget_errors(self, timeout: float = WIDGET_UPDATE_S) -> list[str]:
        """Texts of widget views that failed to render ("Error displaying widget ...").

        Waits first until no view reads "Loading widget..." (a view that cannot render
        shows that for a few seconds before its error).
        """
        deadline = time.monotonic() + timeout
        while True:
            views = self.page.evaluate(_WIDGET_VIEWS_JS)
            if not views["loading"]:
                return views["errors"]
            if time.monotonic() > deadline:
                raise AssertionError(f"widgets still loading after {timeout:.0f} s: {views}")
            self.page.wait_for_timeout(250)

    def slider(self, label: str, container=None):
        """The first ipywidgets slider described ``label`` (in ``container``, a locator)."""
        container = container if container is not None else self.page.locator(".jp-Notebook")
        exact = re.compile(f"^{re.escape(label)}$")
        description = self.page.locator(".widget-label", has_text=exact)
        return container.locator(".widget-slider").filter(has=description).first

    def move_slider(self, slider, key: str = "PageUp", presses: int = 1) -> None:
        """Move ``slider`` with the keyboard, as a learner can: focus its handle, press keys.

        ``ArrowRight`` / ``ArrowLeft`` move one step, ``PageUp`` / ``PageDown`` five.
        """
        handle = slider.locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(presses):
            handle.press(key)

    def readout(self, slider) -> str:
        """The number a slider shows beside it."""
        return slider.locator(".widget-readout").inner_text().strip()

    def image_digest(self, image) -> str | None:
        """A digest of the picture an ``<img>`` locator shows (None until it has loaded)."""
        return image.evaluate(_IMAGE_DIGEST_JS)

    def wait_for_change(self, read, before, what: str, timeout: float = WIDGET_UPDATE_S):
        """Poll ``read()`` until it returns something other than ``before``; return it."""
        deadline = time.monotonic() + timeout
        value = read()
        while value == before or value is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not change within {timeout:.0f} s: {value!r}")
            self.page.wait_for_timeout(250)
            value = read()
        return value

    def screenshot(self, label: str, locator=None) -> Path | None:
        """Save a PNG of the page (or of ``locator``) into the artifacts folder."""
        self._shots += 1
        path = self.artifacts / f"{self.prefix}-{self._shots:02d}-{label}.png"
        try:
            target = locator if locator is not None else self.page
            target.screenshot(path=str(path), timeout=15_000)
        except Exception as error:  # a screenshot must never hide the result
            self.console.append(f"screenshot {path.name} failed: {error}")
            return None
        return path

    def _wait_for_state(self, condition, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and condition(state):
                return state
            self.page.wait_for_timeout(500)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {state}")


def _run_all_finished(state: dict) -> bool:
    """True once "Run All" returned and no cell runs any more."""
    returned = bool((state["runAll"] or {}).get("done"))
    running = any(cell["running"] for cell in state["cells"])
    return returned and not running and state["kernel"] == "idle"
