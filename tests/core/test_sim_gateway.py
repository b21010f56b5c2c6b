"""The simulated per-request gateway: it decides as the planner's ``assess_admission`` does, per request, on the
pools' state a router sees, books what it admits, and the ``default-gateway`` policy runs end to end."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.admission import (
    AdmissionConfig,
    DecodePool,
    LatencySLO,
    PrefillPool,
    RejectionPolicy,
    TrafficMix,
    assess_admission,
)
from autoscaler.core.types import Role
from autoscaler.perf.engine import Request
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.cluster import SimCluster
from autoscaler.sim.gateway import FIRST_MEAN_OUTPUT, SimGateway
from autoscaler.sim.policies import ABLATIONS, make_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.theory import poisson_trace
from autoscaler.traces import Trace, splice

PROFILE = default_profiles()["llama-3.1-8b/h100"]
SLO = LatencySLO(ttft_s=1.0, tbt_s=0.05)
PROBE = 4000  # prompt tokens of the request being decided


def cluster_with(*, prefill: int, decode: int, queued: int, at_door: int, door_prompt: int) -> SimCluster:
    """``queued`` requests of 8k tokens admitted ahead of the probe, ``at_door`` requests of ``door_prompt`` tokens
    routed to decode and not decoding yet; the probe is the last request of the trace."""
    n = queued + 1
    trace = Trace(arrival_s=np.zeros(n), input_tokens=np.asarray([8000] * queued + [PROBE], dtype=np.int64),
                  output_tokens=np.full(n, 100, dtype=np.int64))
    cluster = SimCluster(trace=trace, scenario=Scenario(), profile=PROFILE, kv_bytes_per_token=131072)
    cluster.warm_start(Role.PREFILL, prefill)
    cluster.warm_start(Role.DECODE, decode)
    for k in range(at_door):
        cluster.engines(Role.DECODE)[k % decode].submit(
            Request(id=10_000 + k, prompt_tokens=door_prompt, output_tokens=100, arrival_s=0.0))
    return cluster


def by_hand(*, prefill: int, decode: int, queued: int, at_door: int, door_prompt: int):
    """The planner's decision for the probe on the pools counted by hand: ``queued`` 8k-token requests spread over
    the prefill replicas (the free-soonest takes each), the door's requests as committed decode load."""
    backlog = [0.0] * prefill
    for _ in range(queued):
        backlog[backlog.index(min(backlog))] += PROFILE.prefill_time(8000)
    pools = PrefillPool(replicas=prefill, profile=PROFILE, queued_requests=float(queued),
                        queued_tokens=8000.0 * queued, queued_context_tokens=8000.0 * queued,
                        backlog_s=tuple(backlog))
    door = DecodePool(replicas=decode, profile=PROFILE, running=float(at_door),
                      mean_context_tokens=float(door_prompt) if at_door else 0.0)
    mix = TrafficMix(arrival_rate=0.0, mean_input_tokens=8000.0 if queued else PROBE,
                     mean_output_tokens=FIRST_MEAN_OUTPUT)
    return assess_admission(prefill=pools, decode=door, mix=mix, slo=SLO, config=AdmissionConfig(),
                            input_tokens=PROBE)


@pytest.mark.parametrize(("prefill", "decode", "queued", "at_door", "door_prompt", "admits"), [
    pytest.param(1, 1, 0, 0, 0, True, id="idle-pools-admit"),
    pytest.param(1, 1, 3, 0, 0, False, id="prefill-queue-past-the-ttft-slo-rejects"),
    pytest.param(4, 1, 3, 0, 0, True, id="the-same-queue-spread-over-four-replicas-admits"),
    pytest.param(1, 1, 0, 600, 2000, False, id="decode-door-over-the-seats-and-tbt-rejects"),
    pytest.param(1, 2, 0, 20, 1000, True, id="a-light-decode-door-admits"),
    pytest.param(1, 0, 0, 0, 0, False, id="no-ready-decode-pod-rejects"),
])
def test_the_hook_admits_as_the_planners_decision_does_on_the_pools_a_router_sees(prefill, decode, queued,
                                                                                   at_door, door_prompt, admits):
    cluster = cluster_with(prefill=prefill, decode=max(decode, 1), queued=queued, at_door=at_door,
                           door_prompt=door_prompt)
    if decode == 0:
        cluster.set_replicas(Role.DECODE, 0)
        cluster.settle()
    gateway = SimGateway(cluster=cluster, slo=SLO)
    for i in range(queued):  # the gateway books its own admissions ahead of the probe
        assert gateway(i, 0.0)
    expected = by_hand(prefill=prefill, decode=decode, queued=queued, at_door=at_door, door_prompt=door_prompt)
    assert gateway(queued, 0.0) is expected.admit is admits


@pytest.mark.parametrize(("prefill", "queued", "at_door"), [
    pytest.param(1, 0, 0, id="idle"),
    pytest.param(1, 3, 0, id="queued-prefill"),
    pytest.param(1, 0, 600, id="crowded-decode-door"),
])
def test_the_verdict_reports_the_loads_the_planners_decision_computes(prefill, queued, at_door):
    cluster = cluster_with(prefill=prefill, decode=1, queued=queued, at_door=at_door, door_prompt=2000)
    gateway = SimGateway(cluster=cluster, slo=SLO)
    for i in range(queued):
        gateway(i, 0.0)
    verdict = gateway.judge(queued, 0.0)
    expected = by_hand(prefill=prefill, decode=1, queued=queued, at_door=at_door, door_prompt=2000)
    assert (verdict.prefill_load, verdict.decode_load_at_horizon) == pytest.approx(
        (expected.prefill_load, expected.decode_load_at_horizon))


@pytest.mark.parametrize("policy", [
    pytest.param(RejectionPolicy.PREDICTIVE, id="predictive"),
    pytest.param(RejectionPolicy.EARLY, id="early"),
])
def test_an_overloaded_run_is_decided_at_every_arrival_and_both_answers_are_given(policy):
    trace = poisson_trace(rate_rps=40.0, duration_s=60.0, prompt_tokens=3000, mean_output_tokens=300, seed=5)
    cluster = SimCluster(trace=trace, scenario=Scenario(), profile=PROFILE, kv_bytes_per_token=131072)
    cluster.warm_start(Role.PREFILL, 2)
    cluster.warm_start(Role.DECODE, 1)
    gateway = SimGateway(cluster=cluster, slo=SLO, policy=policy)
    cluster.admission = gateway
    while cluster.now < 60.0:
        cluster.step(cluster.now + cluster.scenario.tick_s)
    counts = gateway.counts
    assert counts.admitted + counts.rejected_for_ttft + counts.rejected_for_decode == len(trace)
    assert 0 < counts.admitted < len(trace)


def test_rejections_are_counted_by_the_limit_that_turned_them_away():
    cluster = cluster_with(prefill=1, decode=1, queued=3, at_door=0, door_prompt=0)
    gateway = SimGateway(cluster=cluster, slo=SLO)
    for i in range(4):
        gateway(i, 0.0)
    assert (gateway.counts.admitted, gateway.counts.rejected_for_ttft, gateway.counts.rejected_for_decode) == (3, 1, 0)


def test_the_gateway_policy_runs_end_to_end_and_rejects_only_under_a_surge():
    calm = poisson_trace(rate_rps=4.0, duration_s=150.0, prompt_tokens=3000, mean_output_tokens=120, seed=2)
    burst = poisson_trace(rate_rps=30.0, duration_s=150.0, prompt_tokens=3000, mean_output_tokens=120, seed=3)
    slow = Scenario(node_delay_s=600.0, pod_delay_s=90.0, warmup_s=120.0, tail_s=60.0)
    assert "default-gateway" in ABLATIONS
    on_calm = simulate(calm, slow, make_policy("default-gateway"))
    on_surge = simulate(splice([calm, burst]), slow, make_policy("default-gateway"))
    assert on_calm.rejected == 0 and on_calm.unfinished == 0
    assert on_surge.rejected > 0
    assert on_surge.both_attainment > 0
