# Thin wrapper over the project's commands; run `make help`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Real datasets: ../shared/data beside the checkout when present, else download + verify.
DATA_DIR ?= $(shell [ -d ../shared/data ] && echo ../shared/data)
DATA_ARG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
PYTEST_ARGS ?=
IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER_BUILD_ARGS = --build-arg VERSION=$(IMAGE_VERSION) \
	--build-arg VCS_REF=$(shell git rev-parse HEAD 2>/dev/null || echo unknown) \
	--build-arg BUILD_DATE=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

.DEFAULT_GOAL := help
.PHONY: help install train serve test test-fast bench lint tensorboard docker-serve docker-train clean

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
	echo $(TF_EXTRA) > $@

install: $(STAMP) ## create .venv: TensorFlow (CUDA build if nvidia-smi sees a GPU; TF=gpu|cpu forces), training, dev extras

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
	$(VENV)/bin/ruff check training serving tests scripts deploy
	$(VENV)/bin/ruff format --check training serving tests scripts deploy
	$(VENV)/bin/hadolint --failure-threshold info Dockerfile.serve Dockerfile.gpu

tensorboard: $(STAMP) ## open TensorBoard on every training run in runs/
	$(VENV)/bin/tensorboard --logdir runs

docker-serve: ## build the serving image dlqr-serving:VERSION (needs a Docker host)
	docker build -f Dockerfile.serve $(DOCKER_BUILD_ARGS) -t dlqr-serving:$(IMAGE_VERSION) .

docker-train: ## build the GPU image and train all three models into artifacts/ (needs Docker + NVIDIA GPU)
	docker build -f Dockerfile.gpu $(DOCKER_BUILD_ARGS) -t dlqr-train:$(IMAGE_VERSION)-gpu .
	mkdir -p artifacts runs "$(HOME)/.cache/dlqr"
	docker run --rm --gpus all --user "$$(id -u):$$(id -g)" \
		-v "$(CURDIR)/artifacts:/artifacts" -v "$(CURDIR)/runs:/runs" -v "$(HOME)/.cache/dlqr:/cache" \
		dlqr-train:$(IMAGE_VERSION)-gpu

clean: ## remove caches (keeps .venv and artifacts/)
	rm -rf .pytest_cache .ruff_cache .hypothesis runs
