# Thin wrapper over the project's commands; run `make help`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Real datasets: ../shared/data beside the checkout when present, else download + verify.
DATA_DIR ?= $(shell [ -d ../shared/data ] && echo ../shared/data)
DATA_ARG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train serve test test-fast bench lint tensorboard docker-serve docker-train clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[cpu,train,dev]"
	touch $@

install: $(STAMP) ## create .venv and install the package with CPU TensorFlow, training and dev extras

train: $(STAMP) ## train all three models on the real data and export bundles to artifacts/
	$(PY) -m training train all $(DATA_ARG)

serve: $(STAMP) ## serve the committed bundles with Gunicorn on port 8000 (Ctrl-C stops)
	exec $(VENV)/bin/gunicorn --config serving/gunicorn.conf.py serving.wsgi:app

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## tests without the slow/integration ones
	$(PY) -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

bench: $(STAMP) ## start Gunicorn like `make serve` and benchmark it (prints one table)
	$(PY) scripts/bench.py

lint: $(STAMP) ## ruff + hadolint
	$(VENV)/bin/ruff check training serving tests scripts
	$(VENV)/bin/ruff format --check training serving tests scripts

tensorboard: $(STAMP) ## open TensorBoard on every training run in runs/
	$(VENV)/bin/tensorboard --logdir runs

clean: ## remove caches (keeps .venv and artifacts/)
	rm -rf .pytest_cache .ruff_cache .hypothesis runs
