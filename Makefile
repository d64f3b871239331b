# it-relay developer commands. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-unit demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

# The demo needs only the package and the embedded PostgreSQL, not the test and lint tools.
DEMO_STAMP := $(VENV)/.installed-demo

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $(DEMO_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check relay tests $(wildcard bench)
	$(BIN)/ruff format --check relay tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The unit tier: pure rules and the loops on the in-memory twin; no PostgreSQL, seconds.
test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/test_loops_twin.py -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	$(BIN)/python bench/relay_bench.py $(BENCH_ARGS)

demo: $(DEMO_STAMP)
	$(BIN)/it-relay demo
