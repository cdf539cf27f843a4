# ragserve: `make serve` runs the local API, `make test` runs every test.
# Both create the virtualenv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8080
BIN    := $(VENV)/bin
# The model build needs torch; it gets a venv of its own so the runtime one stays lean.
BUILD_VENV ?= .venv-model

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 20

.PHONY: help install serve test test-fast redis-server model model-check bench bench-embed bench-search bench-writes \
	bench-cache bench-coldstart bench-load lint openapi clean

help:
	@echo "make serve   - install what serving needs (first time) and serve the API on http://$(HOST):$(PORT)"
	@echo "make test    - install the rest: dev and infra extras (first time) and run every test"
	@echo "make model   - rebuild model artifacts from PyPI (torch), incl. the fp32 variant"
	@echo "make bench   - run the benchmarks and rewrite docs/BENCHMARKS.md"
	@echo "make openapi - regenerate docs/openapi.json from the routes table and the models"

# Two installs in the one venv. `make serve` needs only what serving uses: the runtime,
# serve (the HTTP server) and demo extras ($(BIN)/.installed-serve). Everything else
# (tests, lint, openapi, bench) needs the full set, with dev and infra ($(BIN)/.installed); after a
# `make serve` that installs only the rest, and `make serve` after it installs nothing.
SERVE_EXTRAS := runtime,serve,demo
ALL_EXTRAS   := runtime,serve,dev,demo,infra
# The venv carries no pip of its own (pip and setuptools are 26 MB of a 360 MB serving
# venv): the interpreter's pip installs into it (`pip --python`, pip >= 22.3).
PIP_INSTALL   = $(PYTHON) -m pip --python $(BIN)/python install --quiet --disable-pip-version-check

$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)

$(BIN)/.installed-serve: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e ".[$(SERVE_EXTRAS)]"
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e ".[$(ALL_EXTRAS)]"
	touch $@

install: $(BIN)/.installed

# The full install is a superset: when there is one, serving keeps it up to date
# rather than installing beside it.
SERVE_INSTALLED = $(if $(wildcard $(BIN)/.installed),$(BIN)/.installed,$(BIN)/.installed-serve)

serve: $(SERVE_INSTALLED)
	$(BIN)/ragserve serve --host $(HOST) --port $(PORT)

test: $(BIN)/.installed redis-server
	$(BIN)/ruff check layers functions tests bench model_artifacts infra events
	$(BIN)/python -m pytest

# The integration tests start a real redis-server (Debian package) on a free loopback port.
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "redis-server is missing: apt-get install redis-server (as root)" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -x -q tests/unit

$(BUILD_VENV)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --quiet --disable-pip-version-check ".[model-build]"
	touch $@

# Rebuilds model.onnx (int8), model_fp32.onnx, tokenizer.json, manifest.json and the
# golden vectors in place (a maintainer's step: review the diff, then commit).
model: $(BUILD_VENV)/bin/.installed
	$(BUILD_VENV)/bin/python model_artifacts/build.py --variant all --golden

# CI: rebuilds everything into a scratch directory and compares it with the committed
# files (ONNX, tokenizer, manifest byte for byte; PyTorch's vectors within the tolerance
# of model_artifacts/compare.py), then installs the fp32 model the tests use.
model-check: $(BUILD_VENV)/bin/.installed
	$(BUILD_VENV)/bin/python model_artifacts/build.py --check

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(PIP_INSTALL) -e ".[$(ALL_EXTRAS),bench]"
	touch $@

bench-embed: $(BIN)/.bench-installed
	$(BIN)/python bench/embed.py

# 10k, 100k and 1M vectors: the 1M point alone builds indexes for 15-30 minutes on 2 cores.
BENCH_SEARCH_SIZES ?= 10000,100000,1000000

bench-search: $(BIN)/.bench-installed
	$(BIN)/python bench/search.py --sizes $(BENCH_SEARCH_SIZES)

# 10k, 100k and 1M documents: over an hour on 2 cores, most of it HNSW builds (the 1M seeds,
# the 1/4/16-segment layouts and the full-rebuild peer's 1M write). Seeded collections are
# kept in /tmp/ragserve-bench-writes and reused; BENCH_WRITES_ARGS="--peer-max-size 100000"
# skips the peer at 1M.
BENCH_WRITES_SIZES ?= 10000,100000,1000000
BENCH_WRITES_ARGS ?=

bench-writes: $(BIN)/.bench-installed
	$(BIN)/python bench/writes.py --sizes $(BENCH_WRITES_SIZES) $(BENCH_WRITES_ARGS)

bench-cache: $(BIN)/.bench-installed redis-server
	$(BIN)/python bench/cache.py

bench-coldstart: $(BIN)/.bench-installed
	$(BIN)/python bench/coldstart.py

bench-load: $(BIN)/.bench-installed
	$(BIN)/python bench/load.py

# Every benchmark, one after the other (they must not share the CPUs), each rewriting its
# own section of docs/BENCHMARKS.md and its plots in docs/img/.
.NOTPARALLEL:
bench: bench-embed bench-search bench-writes bench-cache bench-coldstart bench-load
	$(BIN)/python bench/summary.py

openapi: $(BIN)/.installed
	$(BIN)/ragserve openapi --output docs/openapi.json

lint: $(BIN)/.installed
	$(BIN)/ruff check layers functions tests bench model_artifacts infra events

clean:
	rm -rf $(VENV) $(BUILD_VENV) .pytest_cache .ragserve cdk.out
