# Thin wrapper over the project's commands; run `make help`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A serving-only install (no TensorFlow/Keras): enough for `make serve`.
SERVE_STAMP := $(VENV)/.installed-serve
# Real datasets: ../shared/data beside the checkout when present, else download + verify.
DATA_DIR ?= $(shell [ -d ../shared/data ] && echo ../shared/data)
DATA_ARG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
PYTEST_ARGS ?=
IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER_BUILD_ARGS = --build-arg VERSION=$(IMAGE_VERSION) \
	--build-arg VCS_REF=$(shell git rev-parse HEAD 2>/dev/null || echo unknown) \
	--build-arg BUILD_DATE=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# `make image`: Docker if its engine answers, else podman (CONTAINER_ENGINE=... to choose).
# PYTHON_IMAGE overrides the Dockerfile's base (empty: its python:3.11-slim-bookworm);
# IMAGE_BUILD_OPTS passes extra options to the build.
CONTAINER_ENGINE ?=
PYTHON_IMAGE ?=
IMAGE_BUILD_OPTS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-serve train serve test test-all docs bench chaos chaos-swap lint tensorboard image docker-serve docker-train clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# TensorFlow build: TF=auto (default) takes the CUDA one when `nvidia-smi` lists a GPU, else the
# CPU one; `make install TF=gpu` / `TF=cpu` forces it (scripts/tf_extra.sh decides, testably).
TF ?= auto
TF_EXTRA := $(shell TF=$(TF) sh scripts/tf_extra.sh)
ifeq ($(TF_EXTRA),)
$(error TF must be auto, gpu or cpu, not '$(TF)')
endif
# The stamp records the installed extra; a different one (or an old empty stamp) reinstalls.
ifneq ($(strip $(shell cat $(STAMP) 2>/dev/null)),$(TF_EXTRA))
.PHONY: $(STAMP)
endif
OTHER_TF := $(if $(filter gpu,$(TF_EXTRA)),tensorflow-cpu,tensorflow)

$(STAMP): pyproject.toml requirements/constraints.txt
	@echo "installing with TensorFlow extra '$(TF_EXTRA)' (TF=$(TF))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes $(OTHER_TF) 2>/dev/null || true
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[$(TF_EXTRA),train,dev]"
	touch $(SERVE_STAMP)
	echo $(TF_EXTRA) > $@

$(SERVE_STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e .
	touch $@

install: $(STAMP) ## create .venv: TensorFlow (CUDA build if nvidia-smi sees a GPU; TF=gpu|cpu forces), training, dev extras

install-serve: $(SERVE_STAMP) ## create .venv with the serving runtime only (ONNX Runtime, no TensorFlow)

train: $(STAMP) ## train all three models on the real data; each bundle is a new version artifacts/<model>/<version>/
	$(PY) -m training train all $(DATA_ARG)

serve: $(SERVE_STAMP) ## serve the committed bundles with Gunicorn on port 8000 (Ctrl-C stops)
	@# bytecode up to date even where PYTHONDONTWRITEBYTECODE is set: every worker start reads it
	$(PY) -m compileall -q dlqr serving
	exec $(VENV)/bin/gunicorn --config serving/gunicorn.conf.py serving.wsgi:app

test: $(STAMP) ## fast lane while developing: unit + in-process app tests (lanes by path: tests/conftest.py)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## what CI runs: the fast lane, then Gunicorn, reliability, e2e, deploy and training
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

docs: $(STAMP) ## serve the documentation site (docs/) on http://127.0.0.1:8001 with live reload
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

bench: $(STAMP) ## start Gunicorn like `make serve` and benchmark it against floor/naive servers (one table)
	$(PY) scripts/bench.py --install-size
	$(PY) scripts/bench_offline.py

chaos-swap: $(STAMP) ## hot swap under `hey -c 16` load: good, HUP, corrupt and bad-golden new versions, dlqr-models rollback
	$(PY) scripts/chaos_swap.py

chaos: $(STAMP) ## reliability scenarios against a real server (slow clients, CPU bomb, signals...); ~15 min
	$(PY) scripts/chaos.py $(CHAOS_ARGS)

lint: $(STAMP) ## ruff + hadolint + the docs site built strictly (broken links fail)
	$(VENV)/bin/ruff check dlqr training serving tests scripts deploy
	$(VENV)/bin/ruff format --check dlqr training serving tests scripts deploy
	$(VENV)/bin/hadolint --failure-threshold info Dockerfile.serve Dockerfile.gpu tests/deploy/containers/*.Containerfile
	$(VENV)/bin/mkdocs build --strict --quiet

tensorboard: $(STAMP) ## open TensorBoard on every training run in runs/
	$(VENV)/bin/tensorboard --logdir runs

image: ## build the serving image dlqr-serving:VERSION with Docker, or podman where there is no Docker engine
	@engine="$(CONTAINER_ENGINE)"; \
	if [ -z "$$engine" ]; then \
		if docker info >/dev/null 2>&1; then engine=docker; \
		elif command -v podman >/dev/null 2>&1; then engine=podman; \
		else echo "make image: needs a running Docker engine or podman" >&2; exit 1; fi; \
	fi; \
	format=""; if [ "$$(basename "$$engine")" = podman ]; then format="--format docker"; fi; \
	set -x; "$$engine" build $$format $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
		$(IMAGE_BUILD_OPTS) -f Dockerfile.serve $(DOCKER_BUILD_ARGS) -t dlqr-serving:$(IMAGE_VERSION) .

docker-serve: ## build the serving image dlqr-serving:VERSION (needs a Docker host)
	docker build -f Dockerfile.serve $(DOCKER_BUILD_ARGS) -t dlqr-serving:$(IMAGE_VERSION) .

docker-train: ## build the GPU image and train all three models into artifacts/ (needs Docker + NVIDIA GPU)
	docker build -f Dockerfile.gpu $(DOCKER_BUILD_ARGS) -t dlqr-train:$(IMAGE_VERSION)-gpu .
	mkdir -p artifacts runs "$(HOME)/.cache/dlqr"
	docker run --rm --gpus all --user "$$(id -u):$$(id -g)" \
		-v "$(CURDIR)/artifacts:/artifacts" -v "$(CURDIR)/runs:/runs" -v "$(HOME)/.cache/dlqr:/cache" \
		dlqr-train:$(IMAGE_VERSION)-gpu

clean: ## remove caches and the built docs site (keeps .venv and artifacts/)
	rm -rf .pytest_cache .ruff_cache .hypothesis runs site
