"""The simulator's warm-up (long enough for capacity to arrive, repeating the trace's opening) and what the
scenario tells the product's planner (node start-up on demand, the scenario's delays)."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.controlled import product_planner, scenario_profile
from autoscaler.sim.runner import with_warmup
from autoscaler.sim.scenario import OBSERVE_S, WARMUP_HEAD_S, Scenario
from autoscaler.sim.theory import poisson_trace

PROFILE = default_profiles()["llama-3.1-8b/h100"]
BIG = default_profiles()["llama-3.1-70b/h100-tp4"]


def opening_then_surge():
    """Ten minutes at 2 req/s, then ten at 20 req/s."""
    low = poisson_trace(rate_rps=2.0, duration_s=600.0, prompt_tokens=500, mean_output_tokens=50, seed=1)
    high = poisson_trace(rate_rps=20.0, duration_s=600.0, prompt_tokens=500, mean_output_tokens=50, seed=2)
    arrivals = np.concatenate([low.arrival_s, high.arrival_s + 600.0])
    return type(low)(arrival_s=arrivals, input_tokens=np.concatenate([low.input_tokens, high.input_tokens]),
                     output_tokens=np.concatenate([low.output_tokens, high.output_tokens]))


@pytest.mark.parametrize(
    ("scenario", "profile", "expected"),
    [
        pytest.param(Scenario(warmup_s=120.0), PROFILE, 120.0, id="explicit-value-kept"),
        pytest.param(Scenario(warmup_s=0.0), PROFILE, 0.0, id="zero-means-none"),
        pytest.param(Scenario(), PROFILE, 60.0 + 2 * OBSERVE_S + PROFILE.node_startup_s + PROFILE.startup_s,
                     id="auto-covers-node-and-pod-start"),
        pytest.param(Scenario(profile=BIG.name), BIG, 60.0 + 2 * OBSERVE_S + BIG.node_startup_s + BIG.startup_s,
                     id="auto-on-a-slow-70b"),
        pytest.param(Scenario(node_delay_s=0.0, pod_delay_s=0.0), PROFILE, 60.0 + 2 * OBSERVE_S,
                     id="auto-without-delays-still-observes-and-settles"),
    ],
)
def test_the_warm_up_lasts_long_enough_for_capacity_asked_for_live_to_arrive(scenario, profile, expected):
    assert scenario.warmup(profile, observe_s=OBSERVE_S) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("warmup_s", "copies"),
    [
        pytest.param(300.0, 1, id="shorter-than-the-head-one-partial-copy"),
        pytest.param(600.0, 1, id="one-head"),
        pytest.param(1500.0, 3, id="two-heads-and-a-half"),
    ],
)
def test_the_warm_up_repeats_the_opening_and_never_reaches_a_later_surge(warmup_s, copies):
    trace = opening_then_surge()
    extended, skipped, offset = with_warmup(trace, warmup_s, grid_s=15.0)
    assert offset == pytest.approx(warmup_s)
    assert skipped == len(extended) - len(trace)
    warm = extended.arrival_s[:skipped]
    assert np.all(np.diff(extended.arrival_s) >= 0)
    # Only the 2 req/s opening is replayed: the warm-up's rate stays near 2, far from the surge's 20.
    assert len(warm) / warmup_s == pytest.approx(2.0, rel=0.25)
    head = int(np.searchsorted(trace.arrival_s, min(warmup_s, WARMUP_HEAD_S)))
    assert skipped == pytest.approx(head * warmup_s / min(warmup_s, WARMUP_HEAD_S), rel=0.1)
    assert np.array_equal(extended.input_tokens[skipped:], trace.input_tokens)
    assert copies == int(np.ceil(warmup_s / WARMUP_HEAD_S))


@pytest.mark.parametrize(
    ("scenario", "on_demand"),
    [
        pytest.param(Scenario(), True, id="profile-node-delay-nodes-on-demand"),
        pytest.param(Scenario(node_delay_s=0.0), False, id="no-node-delay-no-node-lead"),
    ],
)
def test_the_scenario_tells_the_planner_whether_nodes_come_on_demand(scenario, on_demand):
    config, _ = product_planner(scenario=scenario, profile=PROFILE)
    assert config.nodes_on_demand is on_demand


def test_the_planner_sees_the_scenarios_delays_not_the_profiles():
    resolved = scenario_profile(Scenario(node_delay_s=1234.0, pod_delay_s=56.0), PROFILE)
    assert (resolved.node_startup_s, resolved.startup_s) == (1234.0, 56.0)
    assert scenario_profile(Scenario(), PROFILE) == PROFILE
