# winback: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck bench system-deps venv clean docs-screenshots

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the test suite needs: a PostgreSQL server (tests start a throwaway
# cluster on a loopback port) and Chromium for the browser tests; wrk for bench_service.
system-deps:
	bash scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/python -m winback.cli.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest

# The inner loop: every test but those marked slow (CI runs them all with `make test`).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

# The dashboard's pictures in docs/img/, taken by its browser test at 1280 px wide.
docs-screenshots: $(STAMP) system-deps
	WINBACK_DOCS_IMG=docs/img $(BIN)/python -m pytest tests/test_dashboard_browser.py -q -k desktop

bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
