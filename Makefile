# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (CPU torch by default) and reuse it afterwards.
# GPU users: make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.vicreg-lab-installed
DOCS_STAMP := $(VENV)/.vicreg-lab-docs-installed
OUT ?= demo-report

.PHONY: demo test e2e lint format lab bench docs docs-ci clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/vicreg-lab demo --out $(OUT) --force  # rewrites its own report folder

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Everything under tests/ and notebooks/, the browser tests (tests/e2e) and the build of the
# course's pages in the ci profile (tests/test_docs_site.py) included.
test: lint $(DOCS_STAMP)
	VICREG_LAB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest

# The browser tests alone: the notebooks in a real JupyterLab driven by headless Chromium
# (Debian's /usr/bin/chromium; skipped, loudly, without it). See docs/testing.md.
e2e: $(STAMP)
	VICREG_LAB_PROFILE=ci $(BIN)/python -m pytest tests/e2e -m e2e

# The course as pages: every notebook executed, with its figures, into book/_build/html.
# Warnings (a missing reference, a failing cell) fail the build. `docs` is the published site
# (the cpu profile: see docs/teaching.md for its time); `docs-ci` is what `make test` builds.
BOOK = $(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml \
	--path-output book -n -W --keep-going --all
docs: $(DOCS_STAMP)
	VICREG_LAB_PROFILE=cpu $(BOOK)

docs-ci: $(DOCS_STAMP)
	VICREG_LAB_PROFILE=ci $(BOOK)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loss.py

clean-venv:
	rm -rf $(VENV)
