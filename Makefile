# The README's two commands: `make run` and `make test`. Everything they need is installed by `make setup`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DURATION ?= 150

.PHONY: setup run demo test test-core bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed
	@bash scripts/ensure-system-deps.sh
	$(BIN)/python -m autoscaler.localstack.assets

# Main job: without a cluster, run on the embedded default (the local stack).
run: setup
	$(BIN)/variant-autoscaler demo --duration $(DURATION)

demo: run

test: setup
	$(BIN)/python -m pytest

test-core: $(VENV)/.installed
	$(BIN)/python -m pytest tests/core

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
