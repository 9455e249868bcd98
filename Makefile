# Two entry points (see README): `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINT_DIRS := src tests $(wildcard benchmarks)

.PHONY: setup test lint format clean

setup: $(STAMP)

# The virtual environment is created once and reused; it is refreshed when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

test: setup
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/python -m pytest -q

format: setup
	$(BIN)/ruff format $(LINT_DIRS)
	$(BIN)/ruff check --fix $(LINT_DIRS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
