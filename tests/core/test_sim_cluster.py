"""The simulated cluster: nodes and pods come up after their delays, GPU-seconds accrue from request to release,
removed pods drain, KV moves between pools after its transfer time, the gateway can reject."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.core.types import ReplicaCounts, Role
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.cluster import SimCluster, ttft_and_itl
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace

PROFILE = default_profiles()["llama-3.1-8b/h100"]
KV_BYTES = 131072


def trace_of(arrivals: list[float], *, prompt: int = 512, output: int = 32) -> Trace:
    n = len(arrivals)
    return Trace(arrival_s=np.asarray(arrivals, dtype=float), input_tokens=np.full(n, prompt, dtype=np.int64),
                 output_tokens=np.full(n, output, dtype=np.int64))


def cluster_for(trace: Trace, **scenario: object) -> SimCluster:
    return SimCluster(trace=trace, scenario=Scenario(**scenario), profile=PROFILE,  # type: ignore[arg-type]
                      kv_bytes_per_token=KV_BYTES)


def run_until(cluster: SimCluster, end: float) -> None:
    while cluster.now < end - 1e-9:
        cluster.step(cluster.now + cluster.scenario.tick_s)


# --- nodes, pods, cost -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("node_delay", "pod_delay", "at", "expected"), [
    pytest.param(60.0, 30.0, 30.0, ReplicaCounts(ready=0, starting=0, unschedulable=1), id="pending-for-a-node"),
    pytest.param(60.0, 30.0, 70.0, ReplicaCounts(ready=0, starting=1, unschedulable=0), id="loading-weights"),
    pytest.param(60.0, 30.0, 90.0, ReplicaCounts(ready=1, starting=0, unschedulable=0), id="ready-after-both"),
    pytest.param(0.0, 0.0, 0.5, ReplicaCounts(ready=1, starting=0, unschedulable=0), id="instant-capacity"),
])
def test_a_new_replica_waits_for_its_node_then_for_its_pod(node_delay, pod_delay, at, expected):
    cluster = cluster_for(trace_of([1000.0]), node_delay_s=node_delay, pod_delay_s=pod_delay)
    cluster.set_replicas(Role.PREFILL, 1)
    run_until(cluster, at)
    assert cluster.replica_counts(Role.PREFILL) == expected
    assert cluster.replicas(Role.PREFILL) == 1


def test_gpu_seconds_accrue_from_node_request_to_release_booting_included():
    cluster = cluster_for(trace_of([1000.0]), node_delay_s=60.0, pod_delay_s=30.0)
    cluster.set_replicas(Role.DECODE, 2)
    run_until(cluster, 100.0)
    assert cluster.gpus_allocated() == 2
    cluster.set_replicas(Role.DECODE, 0)  # both ready and idle: they drain at once and their nodes go
    run_until(cluster, 101.0)
    assert cluster.gpus_allocated() == 0
    assert cluster.gpu_seconds() == pytest.approx(2 * 100.0, abs=1.0)


def test_a_scale_down_before_the_node_is_ready_cancels_it_and_stops_its_cost():
    cluster = cluster_for(trace_of([1000.0]), node_delay_s=600.0, pod_delay_s=90.0)
    cluster.set_replicas(Role.PREFILL, 1)
    run_until(cluster, 30.0)
    cluster.set_replicas(Role.PREFILL, 0)
    run_until(cluster, 60.0)
    assert cluster.gpus_allocated() == 0
    assert cluster.gpu_seconds() == pytest.approx(30.0, abs=0.6)


def test_a_pending_pod_takes_a_gpu_freed_on_a_ready_node():
    cluster = cluster_for(trace_of([1000.0]), node_delay_s=600.0, pod_delay_s=10.0, gpus_per_node=2)
    cluster.warm_start(Role.PREFILL, 2)  # one ready 2-GPU node, full
    cluster.set_replicas(Role.DECODE, 1)  # no room: a new node is requested
    run_until(cluster, 5.0)
    assert cluster.replica_counts(Role.DECODE).unschedulable == 1
    cluster.set_replicas(Role.PREFILL, 1)  # frees a GPU on the ready node
    run_until(cluster, 20.0)
    assert cluster.replica_counts(Role.DECODE).ready == 1
    assert cluster.gpus_allocated() == 2  # the booting node was cancelled


def test_warm_started_replicas_serve_at_once():
    cluster = cluster_for(trace_of([0.0]))
    cluster.warm_start(Role.PREFILL, 3)
    assert cluster.replica_counts(Role.PREFILL) == ReplicaCounts(ready=3)


# --- serving ---------------------------------------------------------------------------------------------


def test_every_request_finishes_within_the_slo_on_an_idle_cluster():
    trace = trace_of([float(t) for t in range(20)], prompt=1000, output=50)
    cluster = cluster_for(trace)
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    run_until(cluster, 40.0)
    ttft, itl = ttft_and_itl(cluster.outcomes, trace.arrival_s)
    assert np.all(np.isfinite(ttft)) and np.all(cluster.outcomes.generated == 50)
    assert np.all(ttft < 0.2) and np.all(itl < 0.02)
    assert cluster.idle()


def test_the_kv_transfer_delays_decode_by_the_prompts_bytes_over_the_bandwidth():
    prompt = 20_000
    slow = cluster_for(trace_of([0.0], prompt=prompt, output=2), kv_bandwidth_bytes_per_s=1e9, kv_latency_s=0.0)
    fast = cluster_for(trace_of([0.0], prompt=prompt, output=2), kv_bandwidth_bytes_per_s=1e12, kv_latency_s=0.0)
    for cluster in (slow, fast):
        cluster.warm_start(Role.PREFILL, 1)
        cluster.warm_start(Role.DECODE, 1)
        run_until(cluster, 10.0)
    expected = prompt * KV_BYTES / 1e9 - prompt * KV_BYTES / 1e12
    gap = slow.outcomes.first_token_s[0] - fast.outcomes.first_token_s[0]
    assert gap == pytest.approx(expected, abs=0.05)  # within one decode step


def test_requests_arriving_without_a_ready_pod_wait_at_the_gateway_and_are_served_later():
    cluster = cluster_for(trace_of([1.0, 2.0]), node_delay_s=0.0, pod_delay_s=10.0)
    cluster.set_replicas(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    run_until(cluster, 30.0)
    ttft, _ = ttft_and_itl(cluster.outcomes, cluster.trace.arrival_s)
    assert np.all(ttft > 8.0) and np.all(np.isfinite(ttft))


def test_a_removed_pod_finishes_its_requests_before_it_goes():
    trace = trace_of([0.0, 0.1, 0.2], prompt=500, output=400)
    cluster = cluster_for(trace, drain_grace_s=120.0)
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 2)
    run_until(cluster, 1.0)
    cluster.set_replicas(Role.DECODE, 0)
    assert cluster.replicas(Role.DECODE) == 0 and cluster.gpus_allocated() == 3  # draining, still paid for
    run_until(cluster, 20.0)
    assert np.all(cluster.outcomes.generated == 400)
    assert cluster.outcomes.retries.sum() == 0
    assert cluster.gpus_allocated() == 1


def test_requests_left_after_the_grace_period_are_retried_from_the_start():
    trace = trace_of([0.0], prompt=500, output=2000)
    cluster = cluster_for(trace, drain_grace_s=2.0)
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    run_until(cluster, 1.0)
    cluster.set_replicas(Role.DECODE, 0)
    run_until(cluster, 4.0)
    cluster.warm_start(Role.DECODE, 1)  # somewhere for the retried request to go
    run_until(cluster, 100.0)
    assert cluster.outcomes.retries[0] == 1
    assert cluster.outcomes.generated[0] == 2000


@pytest.mark.parametrize(("admit", "rejected"), [
    pytest.param(lambda i, _at: True, 0, id="admit-all"),
    pytest.param(lambda i, _at: i % 2 == 0, 2, id="every-second"),
    pytest.param(lambda i, _at: False, 4, id="reject-all"),
])
def test_the_gateway_admission_hook_decides_per_request(admit, rejected):
    cluster = cluster_for(trace_of([0.0, 0.5, 1.0, 1.5]))
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    cluster.admission = admit
    run_until(cluster, 10.0)
    assert int(cluster.outcomes.rejected.sum()) == rejected
    assert int(np.isfinite(cluster.outcomes.finish_s).sum()) == 4 - rejected


def test_a_request_that_can_never_fit_one_replicas_kv_cache_is_refused():
    too_long = PROFILE.kv_capacity_tokens + 16
    cluster = cluster_for(trace_of([0.0], prompt=too_long, output=1))
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    run_until(cluster, 5.0)
    assert cluster.outcomes.rejected[0] and cluster.rejected_too_long == 1


def test_predicted_ttft_grows_with_the_prompt_work_queued_on_the_least_loaded_pod():
    cluster = cluster_for(trace_of([0.0] * 8, prompt=8000, output=10))
    cluster.warm_start(Role.PREFILL, 2)
    cluster.warm_start(Role.DECODE, 1)
    before = cluster.predicted_ttft_s(8000)
    cluster.step(0.5)  # eight 8k prompts routed, four to each pod, some still queued after half a second
    after = cluster.predicted_ttft_s(8000)
    assert before == pytest.approx(PROFILE.prefill_time(8000) + cluster.transfer_s(8000)
                                   + PROFILE.decode_step_time(1, 8000))
    assert after > before + PROFILE.prefill_time(8000)


def test_predicted_ttft_is_infinite_without_a_ready_prefill_pod():
    cluster = cluster_for(trace_of([0.0]))
    assert math.isinf(cluster.predicted_ttft_s(100))
