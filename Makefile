# Developer entry points. `make test` works on a fresh Debian machine with only python3 (and
# make): it builds .venv, installs PostgreSQL and Chromium if it can, and runs the whole suite.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test demo lint bench postgres chromium

## venv: .venv with the project and its dev tools (re-installs when pyproject.toml changes)
venv: $(STAMP)

# Keyed on pip, not python: a `venv` that failed half-way (no ensurepip) leaves bin/python.
$(BIN)/pip:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: Python >= 3.11 is required; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." >&2; \
	  echo "       Install it (Debian 12: apt-get install python3 python3-venv) or run make PYTHON=python3.11" >&2; \
	  exit 1; }
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "python venv support missing; installing python3-venv"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null >/dev/null && \
	    $(PYTHON) -m venv $(VENV); \
	  else \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; \
	    exit 1; \
	  fi; }

$(STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

## postgres: PostgreSQL server binaries for the test cluster (installs them when it can)
postgres:
	@bash scripts/ensure-postgres.sh

## chromium: Debian's Chromium for the browser tests (installs it when it can; no browser download)
chromium:
	@bash scripts/ensure-chromium.sh

## test: the whole suite, on SQLite and a throwaway PostgreSQL cluster, browser tests included
test: venv postgres chromium
	$(BIN)/pytest -q $(PYTEST_ARGS)

## demo: the end-to-end demo against the local sandbox
demo: venv
	$(BIN)/integrations demo

## lint: ruff
lint: venv
	$(BIN)/ruff check .

## bench: every bench/bench_*.py script, one after another
bench: venv
	@shopt -s nullglob; files=(bench/bench_*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks (bench/bench_*.py) yet"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(BIN)/python "$$f" || exit 1; done
