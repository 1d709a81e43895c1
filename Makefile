# The platform's entry points. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export FEAST_USAGE := False
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: help install demo test test-slow test-services lint serve tracking-server retrain bench lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock 2>&1 | { grep -v "is ignored" || true; }
	@# lifetimes only ships the CDNOW data files the CLV tests check against; never imported.
	$(BIN)/pip install --quiet --no-deps lifetimes==0.11.3 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/pip install --quiet --no-deps -e . 2>&1 | { grep -v "is ignored" || true; }
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies and the project

demo: $(STAMP) ## Run the main job on the embedded default (SQLite, local files under ./var)
	$(BIN)/clv demo

test: $(STAMP) ## Run the test suite (slow quality checks excluded; see test-slow)
	$(BIN)/pytest -q -m "not slow"

test-slow: $(STAMP) ## Train every model at half size and check quality against the oracle
	$(BIN)/pytest -q -m slow -s

test-services: $(STAMP) ## Run only the tests that need PostgreSQL and Redis
	$(BIN)/pytest -q -m services

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy clv simulator features training registry serving

serve: $(STAMP) ## Start the scoring service on port 3000
	$(BIN)/clv serve

tracking-server: $(STAMP) ## Start an MLflow tracking server (backend CLV_MLFLOW_BACKEND_STORE)
	$(BIN)/clv tracking-server

retrain: $(STAMP) ## The scheduled job: validate, rebuild features, retrain, gate
	$(BIN)/clv retrain

bench: $(STAMP) ## Run the benchmarks in bench/ (prints tables, writes bench/results/*.json)
	$(BIN)/python -m bench

lock: ## Re-resolve the pinned dependency set into requirements.lock
	rm -rf /tmp/clv-lock && $(PYTHON) -m venv /tmp/clv-lock
	/tmp/clv-lock/bin/pip install --quiet ".[scale,dev]"
	( echo "# Exact pins for Python 3.11 (pip freeze of a clean install of pyproject.toml + dev tools)."; \
	  echo "# Regenerate: make lock"; /tmp/clv-lock/bin/pip freeze --exclude clv-platform --exclude lifetimes ) > requirements.lock

clean: ## Remove ./var (all local state) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
