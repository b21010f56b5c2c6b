"""The emulator exports what a real vLLM exports: names, types, label names, label vocabularies, bucket bounds.

The reference is tests/fixtures/vllm-metrics.json, captured from the real engine by
scripts/capture-vllm-metrics.py (re-run it against a newer vLLM: the diff it prints is the upgrade checklist,
and this test then names every place the emulator no longer matches).
"""

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from autoscaler.emulator import vllm_metrics as vm
from autoscaler.emulator.collector import PodMetrics, VllmCollector
from autoscaler.perf.engine import EngineStats
from autoscaler.signals.queries import MetricNames, QueryPlan

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm-metrics.json"
REAL = json.loads(FIXTURE.read_text())
MAX_MODEL_LEN = 2048  # what the fixture's engine was started with (the token histograms' buckets follow it)



def _describe():
    """scripts/capture-vllm-metrics.py's ``describe``: the same reading of an exposition for both sides."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "scripts" / "capture-vllm-metrics.py"
    spec = importlib.util.spec_from_file_location("capture_vllm_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.describe


def emulated(*, legacy: bool = False) -> dict:
    stats = EngineStats(**{f: 0 for f in EngineStats.__dataclass_fields__})  # type: ignore[arg-type]
    metrics = PodMetrics(model="m", max_model_len=MAX_MODEL_LEN, cache_info={"block_size": "16"}, stats=stats)
    registry = CollectorRegistry()
    registry.register(VllmCollector(metrics, legacy_names=legacy))
    return _describe()(generate_latest(registry).decode())


EMULATED = emulated()


@pytest.mark.parametrize("name", sorted(EMULATED))
def test_every_family_the_emulator_exports_is_one_the_engine_exports_with_the_same_shape(name):
    assert name in REAL["families"], f"{name}: the engine (vLLM {REAL['vllm_version']}) exports no such family"
    real, mine = REAL["families"][name], EMULATED[name]
    assert mine["type"] == real["type"]
    if name == vm.CACHE_CONFIG_INFO:  # an info gauge: the emulator carries a subset of the config's labels
        assert set(mine["labels"]) <= set(real["labels"])
        return
    assert mine["labels"] == real["labels"]
    assert mine.get("label_values") == real.get("label_values")
    assert mine.get("buckets") == real.get("buckets")


def test_every_family_the_queries_read_is_exported_by_the_engine_and_by_the_emulator():
    read = set()
    for query in QueryPlan(names=MetricNames.V1).queries().values():
        read |= {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in re.findall(r"vllm:[a-z0-9_]+", query)}
    assert read - set(REAL["families"]) == set(), "read, but the engine does not export it"
    assert read - set(EMULATED) == set(), "read, but the emulator does not export it"


def test_the_legacy_names_are_served_only_when_asked_and_the_engine_no_longer_exports_them():
    legacy = set(emulated(legacy=True)) - set(EMULATED)
    assert legacy == {vm.GPU_CACHE_USAGE_PERC, vm.TIME_PER_OUTPUT_TOKEN}
    assert legacy.isdisjoint(REAL["families"])
