# Two entry points (see README): `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINT_DIRS := src tests $(wildcard benchmarks) hubconf.py

FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN    ?= runs/fashion_mnist

.PHONY: setup data demo test lint format clean

setup: $(STAMP)

# Offline Fashion-MNIST from Debian's package (installed once; needs root or sudo).
data:
	@# --reinstall: the package may be registered while its files are gone (an image that strips /usr/share,
	@# a cleaned volume), where a plain install answers "already the newest version" and installs nothing
	@test -e $(FMNIST)/train-images-idx3-ubyte.gz -a -e $(FMNIST)/t10k-images-idx3-ubyte.gz \
	  || $(SUDO) apt-get install -y --reinstall dataset-fashion-mnist \
	  || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --reinstall dataset-fashion-mnist)

# The main job: train the compact SKNet on Fashion-MNIST, evaluate the saved weights, show the summary.
# A second `make demo` continues the run in $(RUN) (or says it is finished) instead of replacing it.
demo: setup data
	if [ -e $(RUN)/checkpoint.pt ]; then $(BIN)/sknet train --resume $(RUN); \
	else $(BIN)/sknet train --config configs/fashion_mnist.yaml --output $(RUN); fi
	$(BIN)/sknet eval --weights $(RUN)/model.safetensors
	@echo "checkpoint: $(RUN)/checkpoint.pt  weights: $(RUN)/model.safetensors  curves: $(RUN)/curves.png"

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
