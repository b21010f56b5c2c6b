"""The emulator's queue-time and prefill-time histograms (vLLM's request_queue_time / request_prefill_time)."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.types import Role
from autoscaler.emulator.collector import PodMetrics, RequestPhases, VllmCollector
from autoscaler.emulator.pod import SchedulingEngine
from autoscaler.perf.engine import Request
from autoscaler.perf.profile import PerformanceProfile

PROFILE = PerformanceProfile(name="p", model="m", accelerator="H100", gpus_per_replica=1, prefill_a=0.01,
                             prefill_b=1e-4, prefill_c=0.0, decode_alpha=0.01, decode_beta=1e-4,
                             decode_gamma=0.0, kv_capacity_tokens=100_000)


@pytest.mark.parametrize(("arrivals", "queue", "prefill"), [
    pytest.param([0.0], [0.0], [0.01 + 0.1], id="alone-no-queue"),
    pytest.param([0.0, 0.05], [0.0, 0.06], [0.11, 0.11], id="arrives-mid-pass-waits-for-its-end"),
    pytest.param([0.0, 0.0], [0.0, 0.0], [0.21, 0.21], id="batched-each-reports-the-whole-pass"),
])
def test_prefill_pods_report_queue_and_prefill_time_per_request(arrivals, queue, prefill):
    engine = SchedulingEngine(profile=PROFILE, role=Role.PREFILL)
    for i, t in enumerate(arrivals):
        engine.submit(Request(id=i, prompt_tokens=1000, output_tokens=1, arrival_s=t))
    done = sorted(engine.advance(5.0), key=lambda c: c.request.id)
    phases = engine.phases(done)
    assert phases.queue_s.tolist() == pytest.approx(queue)
    assert phases.prefill_s.tolist() == pytest.approx(prefill)
    assert (phases.queue_s + phases.prefill_s).tolist() == pytest.approx([c.ttft_s for c in done])
    assert engine.scheduled_s == {}  # forgotten once reported


def test_decode_pods_report_no_prefill_phase():
    engine = SchedulingEngine(profile=PROFILE, role=Role.DECODE)
    engine.submit(Request(id=1, prompt_tokens=100, output_tokens=4, arrival_s=0.0))
    assert engine.phases(engine.advance(5.0)).prefill_s.size == 0


def test_the_collector_serves_both_histograms_under_vllms_names():
    engine = SchedulingEngine(profile=PROFILE, role=Role.PREFILL)
    metrics = PodMetrics(model="m", max_model_len=4096, cache_info={}, stats=engine.snapshot())
    metrics.record(stats=engine.snapshot(), completions=[], latencies=engine.drain_latencies(),
                   phases=RequestPhases(queue_s=np.array([0.2]), prefill_s=np.array([0.4, 0.6])))
    families = {f.name: f for f in VllmCollector(metrics).collect()}
    for name, count, total in [("vllm:request_queue_time_seconds", 1, 0.2),
                               ("vllm:request_prefill_time_seconds", 2, 1.0)]:
        samples = {s.name: s.value for s in families[name].samples if not s.name.endswith("_bucket")}
        assert (samples[f"{name}_count"], samples[f"{name}_sum"]) == pytest.approx((count, total))
