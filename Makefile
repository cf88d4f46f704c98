# EM²Q — two entry points for a fresh machine: `make run` and `make test`.
# Every target sets up what it needs first (virtual environment from the lock file,
# Elasticsearch distribution from Maven Central); nothing is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.9.8
STAMP  := $(VENV)/.installed

.PHONY: run test venv elasticsearch lint bench lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## Fetch (mvn) and unpack the Elasticsearch distribution into the project cache.
elasticsearch: $(STAMP)
	$(BIN)/python -m em2q_resources.elasticsearch_server fetch

## Run the platform locally on its embedded defaults with the example data.
run: elasticsearch
	$(BIN)/em2q dev

## Set up and run the whole test suite (starts its own Elasticsearch and S3 API server).
test: elasticsearch
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: elasticsearch
	$(BIN)/python -m benchmarks

## Re-resolve the lock file after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .cache
