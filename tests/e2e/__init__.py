"""Browser tests: the notebooks run in a real JupyterLab, driven by headless Chromium.

This folder is a package on purpose: its ``conftest.py`` is then imported as
``e2e.conftest`` and does not replace ``tests/conftest.py`` (imported as plain
``conftest`` by the other test files).
"""
