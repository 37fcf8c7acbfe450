"""Shared pytest set-up: a headless matplotlib backend and few threads per test process."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
