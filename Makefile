# The README's two commands: `make run` and `make test`. Everything they need is installed by `make setup`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DURATION ?= 150
TRACE    ?= autoscaler/data/traces/mooncake_conversation_trace.jsonl
# Mooncake prompts average 12k tokens: TTFT within 10 s is the long-context target (1 s for short prompts).
SLO_TTFT ?= 10

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

# Main job without a cluster: replay a shipped trace through the simulator under the default policy and every
# baseline (GPU-hours vs SLO attainment); plots go to out/.
run: $(VENV)/.installed
	$(BIN)/variant-autoscaler simulate --trace $(TRACE) --slo-ttft $(SLO_TTFT) --out out

# The live local stack: kube-apiserver/etcd, Prometheus and the vLLM emulator, autoscaled by the real loop.
demo: setup
	$(BIN)/variant-autoscaler demo --duration $(DURATION)

test: setup
	$(BIN)/python -m pytest

test-core: $(VENV)/.installed
	$(BIN)/python -m pytest tests/core

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
