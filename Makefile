# cnnlab — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cnnlab-installed
DEVSTAMP := $(VENV)/.cnnlab-dev-installed
DOCSTAMP := $(VENV)/.cnnlab-docs-installed
DEMO_EPOCHS ?= 12

.PHONY: demo test lint format docs bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11 ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(DEVSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(STAMP)

## demo: set up .venv, train SimpleCNN on the embedded digits, evaluate it, print where everything is
demo: $(STAMP)
	@rm -rf runs/demo-simplecnn-digits
	$(PY) -m cnnlab train --model simplecnn --data digits --epochs $(DEMO_EPOCHS) --name demo-simplecnn-digits
	$(PY) -m cnnlab eval --run runs/demo-simplecnn-digits
	@echo "checkpoint: runs/demo-simplecnn-digits/model.safetensors (+ config.json)"
	@echo "plots:      runs/demo-simplecnn-digits/curves.png runs/demo-simplecnn-digits/confusion.png"

## test: set up .venv with dev extras, run ruff, the import-layer contracts and the test suite
test: $(DEVSTAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 -q

$(DOCSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	@touch $@ $(DEVSTAMP) $(STAMP)

## docs: build the documentation site offline into site/ (warnings are errors)
docs: $(DOCSTAMP)
	$(PY) docs/gen_pages.py
	$(VENV)/bin/mkdocs build --strict

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: $(DEVSTAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
