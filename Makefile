# The README's two commands: `make run` and `make test`. Everything they need is installed by `make setup` (and, for
# the real-vLLM tests `make test` runs too, `make setup-vllm`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ENGINE   ?= emulator
# Real engines start in a minute or two (a new replica too): the vLLM demo runs longer to show a scale-up served.
DURATION ?= $(if $(filter vllm,$(ENGINE)),420,150)
TRACE    ?= autoscaler/data/traces/mooncake_conversation_trace.jsonl
# Mooncake prompts average 12k tokens: TTFT within 10 s is the long-context target (1 s for short prompts).
SLO_TTFT ?= 10

.PHONY: setup setup-core setup-vllm run demo test test-vllm test-core bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Everything `make test` and `make demo` need: the venv, Prometheus, the Kubernetes binaries (setup-core) and the
# CPU vLLM with its tiny model (setup-vllm).
setup: setup-vllm

setup-core: $(VENV)/.installed
	@bash scripts/ensure-system-deps.sh
	$(BIN)/python -m autoscaler.localstack.assets

# The CPU vLLM (its own cached environment, 6.2 GB: 6.7 minutes cold on a busy 2-core machine with PyPI reachable,
# 0.1 s warm) with the tiny model the tests marked vllm and `make demo ENGINE=vllm` serve (scripts/setup-vllm.sh).
# VAS_VLLM_PYTHON=<python with vllm> uses an installed vLLM instead; VAS_SKIP_VLLM=1 skips it, and the tests marked
# vllm then skip (without it, a missing engine skips them locally and fails them with CI=true).
setup-vllm: setup-core
	@PYTHON=$(PYTHON) bash scripts/setup-vllm.sh

# Main job without a cluster: replay a shipped trace through the simulator under the default policy and every
# baseline (GPU-hours vs SLO attainment); plots go to out/.
run: $(VENV)/.installed
	$(BIN)/variant-autoscaler simulate --trace $(TRACE) --slo-ttft $(SLO_TTFT) --out out

# The live local stack: kube-apiserver/etcd, Prometheus and the vLLM emulator, autoscaled by the real loop.
# ENGINE=vllm: real CPU vLLM instances serving the tiny model instead of the emulator (at most 2 at once).
demo: setup
	$(BIN)/variant-autoscaler demo --duration $(DURATION) --engine $(ENGINE)

# Every test, the real-vLLM ones (marked vllm) included: setup-vllm installs the CPU engine once (cached), and with
# CI=true a missing engine fails them. VAS_SKIP_VLLM=1 opts out (they skip). The vllm part takes 11.5-15 minutes
# here (engines start in 1-4 minutes on this loaded 2-core machine; at most 2 instances at once, ~3.5 GB each);
# the whole run about 28 minutes.
test: setup
	$(BIN)/python -m pytest

# Only the tests marked vllm.
test-vllm: setup-vllm
	$(BIN)/python -m pytest -m vllm

test-core: $(VENV)/.installed
	$(BIN)/python -m pytest tests/core

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
