"""``dynamo-load``: Dynamo's default (load-based, easy-mode) planner, its decision on hand-made per-worker numbers
and in the simulator."""

from __future__ import annotations

import pytest

from autoscaler.core.types import Role
from autoscaler.sim.dynamo_load import (
    LATENCY,
    DynamoLoad,
    decode_easy_decision,
    easy_disagg_decision,
    prefill_easy_decision,
)
from autoscaler.sim.policies import make_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.sizing import Sizing
from autoscaler.sim.theory import poisson_trace
from autoscaler.traces import splice

CTX = 100_000  # context length and KV capacity of the hand-made workers
ROLES = (Role.PREFILL, Role.DECODE)
FAST = {"node_delay_s": 30.0, "pod_delay_s": 15.0, "warmup_s": 120.0, "tail_s": 60.0}


@pytest.mark.parametrize(("queued", "expected"), [
    pytest.param([100_000, 0], 3, id="one-worker-at-the-context-length-adds-one"),
    pytest.param([250_000, 250_000], 3, id="far-above-still-adds-only-one"),
    pytest.param([99_999, 50_000], None, id="just-below-the-up-threshold-holds"),
    pytest.param([9_999, 0], 1, id="all-below-a-tenth-removes-one"),
    pytest.param([10_000, 0], None, id="one-at-a-tenth-holds"),
])
def test_prefill_steps_one_replica_on_queued_prompt_tokens_over_the_context_length(queued, expected):
    assert prefill_easy_decision(queued, context_length=CTX) == expected


def test_prefill_never_goes_below_one_worker():
    assert prefill_easy_decision([0.0], context_length=CTX) is None


def test_the_latency_target_scales_prefill_up_at_a_tenth_and_down_only_on_empty_queues():
    assert prefill_easy_decision([10_000, 0], context_length=CTX, thresholds=LATENCY) == 3
    assert prefill_easy_decision([1, 0], context_length=CTX, thresholds=LATENCY) is None
    assert prefill_easy_decision([0, 0], context_length=CTX, thresholds=LATENCY) == 1


@pytest.mark.parametrize(("kv", "expected"), [
    pytest.param([100_001, 10_000], 3, id="one-worker-over-full-adds-one"),
    pytest.param([100_000, 100_000], None, id="exactly-full-holds"),
    pytest.param([59_999, 10_000], 1, id="all-below-60-percent-removes-one"),
    pytest.param([60_000, 10_000], None, id="one-at-60-percent-holds"),
])
def test_decode_steps_one_replica_on_kv_utilisation(kv, expected):
    assert decode_easy_decision(kv, max_kv_tokens=CTX) == expected


def _decide(prefill, decode, **kw):
    return easy_disagg_decision(queued_prefill_tokens=prefill, decode_kv_tokens=decode, context_length=CTX,
                                max_kv_tokens=CTX, **kw)


def test_one_decision_sets_both_pools_the_quiet_one_at_its_ready_count():
    assert _decide([200_000, 0], [70_000, 70_000]) == Sizing(3, 2)
    assert _decide([0, 0, 0], [200_000]) == Sizing(2, 2)  # prefill down, decode up, in one decision


def test_between_the_thresholds_nothing_is_sent():
    assert _decide([50_000, 50_000], [80_000, 80_000]) is None


def test_no_step_while_the_deployment_is_scaling():
    assert _decide([200_000, 0], [200_000, 0], deployment_ready=False) is None


def test_the_budget_caps_a_step_up():
    assert _decide([200_000, 0], [200_000, 0], max_prefill=2, max_decode=2) is None


def test_an_unknown_optimization_target_fails_naming_the_field():
    with pytest.raises(ValueError, match="optimization_target"):
        DynamoLoad(optimization_target="sla")


def test_dynamo_load_scales_prefill_up_under_a_load_step_never_more_than_one_pod_beyond_the_ready_ones():
    # 4 req/s of 3000-token prompts, then 30 req/s: far beyond one prefill pod; the context length is set to 8000
    # tokens (a small model length) so the prefill queue crosses it within seconds.
    surge = splice([poisson_trace(rate_rps=4.0, duration_s=150.0, prompt_tokens=3000, mean_output_tokens=120, seed=2),
                    poisson_trace(rate_rps=30.0, duration_s=600.0, prompt_tokens=3000, mean_output_tokens=120,
                                  seed=3)])
    policy = DynamoLoad(context_length_tokens=8000)
    result = simulate(surge, Scenario(**FAST), policy)
    prefill, ready = result.timeline.prefill_replicas, result.timeline.prefill_ready
    assert max(prefill) > prefill[0]
    # Never more than one pod asked for beyond the ready ones: no step while the deployment is not ready.
    assert all(total - r <= 1 for total, r in zip(prefill, ready, strict=True))


def test_the_registered_dynamo_load_is_the_throughput_default_on_a_five_second_loop():
    policy = make_policy("dynamo-load")
    assert isinstance(policy, DynamoLoad)
    assert (policy.optimization_target, policy.cycle_s, policy.name) == ("throughput", 5.0, "dynamo-load")


class _Recording(DynamoLoad):
    """DynamoLoad that notes, per cycle, whether the deployment was ready and whether the cycle changed replicas."""

    def start(self, ctx):
        super().start(ctx)
        self.cycles = []
        self.times = []

    def cycle(self, now):
        self.times.append(now)
        cluster = self._ctx.cluster
        counts = [(cluster.replicas(r), cluster.replica_counts(r).ready) for r in ROLES]
        super().cycle(now)
        after = [cluster.replicas(r) for r in ROLES]
        self.cycles.append((all(total == ready for total, ready in counts), after != [c[0] for c in counts]))


def test_dynamo_load_runs_every_five_seconds_and_changes_no_pool_while_a_pod_of_either_is_not_ready():
    surge = splice([poisson_trace(rate_rps=4.0, duration_s=150.0, prompt_tokens=3000, mean_output_tokens=120, seed=2),
                    poisson_trace(rate_rps=30.0, duration_s=600.0, prompt_tokens=3000, mean_output_tokens=120,
                                  seed=3)])
    policy = _Recording(context_length_tokens=8000)
    simulate(surge, Scenario(**FAST), policy)
    assert any(changed for _, changed in policy.cycles)
    assert any(not ready for ready, _ in policy.cycles)
    assert all(ready for ready, changed in policy.cycles if changed)
    assert {round(b - a, 9) for a, b in zip(policy.times, policy.times[1:])} == {5.0}
