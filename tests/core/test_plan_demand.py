"""The planner's demand, lead time and admission inputs: arrivals behind early rejection, ready replicas,
GPU node start-up, and the outlook's horizon and forecast error."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autoscaler.core.plan import PlannerConfig, PlannerState, VariantObservation, plan_cycle
from autoscaler.core.types import ReplicaCounts, Role
from autoscaler.forecast import ForecastConfig
from tests.core.test_plan import MODEL, POLICY, PROFILES, signals, spec

PROFILE = PROFILES["llama-3.1-8b/h100"]
INTERVAL = 15.0
LONG_REACH = PlannerConfig(forecast=ForecastConfig(interval_s=INTERVAL, lead_time_s=3600, history_s=7200),
                           admission_enforced=True)  # a gateway applies the ratio (not the default)


FRESH = PlannerState()


def plan(observations, *, state=FRESH, config=LONG_REACH, now=1000.0):
    return plan_cycle(observations=observations, state=state, profiles=PROFILES, policy=POLICY, config=config,
                      now=now)


def pools(*, rps=10.0, prompt=1000.0, output=200.0, current=2, counts=None, waiting=0.0, running=0.0,
          decode_running=0.0, kv=0.3):
    return [
        VariantObservation(spec(Role.PREFILL), signals(rps=rps, prompt=prompt, output=output, waiting=waiting,
                                                       running=running), current, counts),
        VariantObservation(spec(Role.DECODE), signals(rps=rps, prompt=prompt, output=output, running=decode_running,
                                                      kv=kv), current, counts),
    ]


@pytest.mark.parametrize(
    ("ratios", "expected_rps"),
    [
        pytest.param({}, 10.0, id="nothing-rejected-last-cycle"),
        pytest.param({MODEL: 1.0}, 10.0, id="ratio-one"),
        pytest.param({MODEL: 0.5}, 20.0, id="half-admitted-doubles-the-demand"),
        pytest.param({MODEL: 0.25}, 40.0, id="quarter-admitted"),
        pytest.param({MODEL: 0.01}, 100.0, id="near-zero-ratio-bounded-by-the-minimum"),
        pytest.param({"other/model": 0.5}, 10.0, id="another-models-ratio-does-not-apply"),
    ],
)
def test_demand_is_sized_from_arrivals_when_early_rejection_admitted_a_share(ratios, expected_rps):
    result, _ = plan(pools(rps=10.0), state=PlannerState(admission_ratios=ratios))
    outlook = result.outlooks[MODEL]
    assert outlook.observed_rps == pytest.approx(expected_rps)
    assert outlook.demand_rps == pytest.approx(expected_rps, rel=0.01)


def test_without_a_gateway_enforcing_it_the_admission_ratio_does_not_scale_the_demand():
    config = replace(LONG_REACH, admission_enforced=PlannerConfig().admission_enforced)  # the default: no gateway
    result, _ = plan(pools(rps=10.0), state=PlannerState(admission_ratios={MODEL: 0.5}), config=config)
    assert result.outlooks[MODEL].demand_rps == pytest.approx(10.0, rel=0.01)


@pytest.mark.parametrize(
    ("load", "remembered"),
    [
        pytest.param({"rps": 2, "current": 2}, False, id="light-load-admits-everything-nothing-remembered"),
        pytest.param({"rps": 40, "prompt": 4000, "output": 300, "current": 1, "waiting": 400, "running": 8,
                      "decode_running": 200, "kv": 0.95}, True, id="overload-rejects-and-the-ratio-is-remembered"),
    ],
)
def test_the_admission_ratio_set_this_cycle_is_kept_for_the_next(load, remembered):
    obs = pools(**load)
    result, state = plan(obs)
    ratio = result.outlooks[MODEL].admission_ratio
    assert (MODEL in state.admission_ratios) is remembered
    if remembered:
        assert ratio < 1.0
        assert state.admission_ratios[MODEL] == pytest.approx(ratio)


@pytest.mark.parametrize(
    ("ready", "starting"),
    [
        pytest.param(1, 4, id="one-ready-four-loading"),
        pytest.param(2, 3, id="two-ready-three-loading"),
        pytest.param(3, 2, id="three-ready-two-loading"),
    ],
)
def test_admission_counts_ready_replicas_not_those_still_loading(ready, starting):
    overload = {"rps": 40, "prompt": 4000, "output": 300, "current": ready + starting, "waiting": 400,
                "running": 8, "decode_running": 200, "kv": 0.95}
    loading, _ = plan(pools(**overload, counts=ReplicaCounts(ready=ready, starting=starting)))
    all_ready, _ = plan(pools(**overload, counts=ReplicaCounts(ready=ready + starting)))
    same_as_ready, _ = plan(pools(**{**overload, "current": ready}))
    assert loading.outlooks[MODEL].admission_ratio < all_ready.outlooks[MODEL].admission_ratio
    assert loading.outlooks[MODEL].admission_ratio == pytest.approx(same_as_ready.outlooks[MODEL].admission_ratio)


@pytest.mark.parametrize(
    ("counts", "on_demand", "reach", "expected"),
    [
        pytest.param(None, False, 3600, PROFILE.startup_s + INTERVAL, id="pods-only"),
        pytest.param(ReplicaCounts(ready=2, starting=1), False, 3600, PROFILE.startup_s + INTERVAL,
                     id="starting-pods-need-no-node"),
        pytest.param(ReplicaCounts(ready=2, unschedulable=1), False, 3600,
                     PROFILE.startup_s + PROFILE.node_startup_s + INTERVAL, id="pending-pods-add-the-node-start"),
        pytest.param(None, True, 3600, PROFILE.startup_s + PROFILE.node_startup_s + INTERVAL,
                     id="nodes-on-demand-add-the-node-start"),
        pytest.param(ReplicaCounts(ready=2, unschedulable=1), False, 300, 300.0, id="capped-at-the-forecast-reach"),
    ],
)
def test_the_lead_time_includes_node_start_up_when_nodes_must_be_added(counts, on_demand, reach, expected):
    config = PlannerConfig(forecast=ForecastConfig(interval_s=INTERVAL, lead_time_s=reach, history_s=7200),
                           nodes_on_demand=on_demand)
    result, _ = plan(pools(counts=counts), config=config)
    assert result.outlooks[MODEL].horizon_s == pytest.approx(expected)


def test_forecast_error_is_unknown_until_the_back_test_scores_the_method_in_use():
    config = PlannerConfig(forecast=ForecastConfig(interval_s=INTERVAL, lead_time_s=60, history_s=3600,
                                                   min_scored=5))
    first, state = plan(pools(rps=10.0), config=config)
    assert first.outlooks[MODEL].forecast_error is None
    errors = []
    for i in range(1, 40):
        rate = 10.0 + 3.0 * math.sin(i / 3.0)  # the rate moves, so no method is exact
        result, state = plan(pools(rps=rate), state=state, config=config, now=1000.0 + INTERVAL * i)
        errors.append(result.outlooks[MODEL].forecast_error)
    scored = [e for e in errors if e is not None]
    assert scored, "the back-test never scored the method in use"
    assert all(0.0 < e < 1.0 for e in scored)
    assert errors[-1] is not None


WINDOW = 0.5 * (PROFILE.startup_s + INTERVAL)  # rise_confirm_share of the pod-only lead time


@pytest.mark.parametrize(
    ("history", "expected_rps"),
    [
        pytest.param((), 10.0, id="first-cycle-sizes-for-what-it-sees"),
        pytest.param(((1000.0 - 15, 6.0),), 6.0, id="a-rise-not-yet-held-for-the-window-waits"),
        pytest.param(((1000.0 - 45, 4.0), (1000.0 - 15, 12.0)), 4.0, id="the-lowest-in-the-window-counts"),
        pytest.param(((1000.0 - WINDOW - 15, 6.0),), 10.0, id="a-rise-held-past-the-window-is-sized-for"),
        pytest.param(((1000.0 - 15, 30.0),), 10.0, id="a-fall-counts-at-once"),
    ],
)
def test_a_rise_in_demand_is_sized_for_once_it_has_held_for_part_of_the_lead_time(history, expected_rps):
    result, state = plan(pools(rps=10.0), state=PlannerState(demand_history={MODEL: history}))
    assert result.outlooks[MODEL].demand_rps == pytest.approx(expected_rps, rel=0.01)
    assert state.demand_history[MODEL][-1][0] == 1000.0
    assert all(1000.0 - t <= WINDOW + 1e-9 for t, _ in state.demand_history[MODEL])


@pytest.mark.parametrize(
    ("history", "mean_ratio"),
    [
        pytest.param(((940.0, 1.0), (985.0, 0.25)), (45 * 1.0 + 15 * 0.25) / 60, id="cut-to-a-quarter-15s-ago"),
        pytest.param(((900.0, 0.25), (985.0, 1.0)), (45 * 0.25 + 15 * 1.0) / 60, id="lifted-15s-ago"),
        pytest.param(((985.0, 0.5),), (45 * 1.0 + 15 * 0.5) / 60, id="nothing-known-before-is-admitted-in-full"),
        pytest.param(((700.0, 0.5), (800.0, 0.4)), 0.4, id="one-ratio-over-the-whole-window"),
    ],
)
def test_arrivals_are_recovered_with_the_ratios_the_rate_window_was_admitted_at(history, mean_ratio):
    # The rate is a one-minute window; the ratio changes every 15 s cycle. Dividing by the last ratio alone read
    # a quarter cut 15 s ago as a fourfold surge (and the ratio set from it swung with the queue).
    state = PlannerState(admission_ratios={MODEL: history[-1][1]}, admission_history={MODEL: history})
    result, _ = plan(pools(rps=10.0), state=state, config=replace(LONG_REACH, rate_window_s=60.0), now=1000.0)
    assert result.outlooks[MODEL].observed_rps == pytest.approx(10.0 / mean_ratio)


def test_each_cycle_remembers_its_ratio_and_forgets_what_left_the_window():
    state = PlannerState(admission_history={MODEL: ((700.0, 0.3), (800.0, 0.5), (950.0, 0.7))})
    _, after = plan(pools(rps=2, current=2), state=state, config=replace(LONG_REACH, rate_window_s=60.0),
                    now=1000.0)
    # The ratio in force at the window's start (940: the one set at 800) stays, older ones go; this cycle's
    # (admit all) is added.
    assert after.admission_history[MODEL] == ((800.0, 0.5), (950.0, 0.7), (1000.0, 1.0))


def _overloaded_entry(ttft_p90: float):
    # Two prefill replicas taking 60 req/s of 2000-token prompts on the 8B H100 profile, decode roomy.
    obs = pools(rps=60.0, prompt=2000.0, output=100.0, current=2, decode_running=4, kv=0.05)
    prefill = replace(obs[0].signals, ttft_quantiles_s=((0.5, ttft_p90 / 2), (0.9, ttft_p90), (0.99, ttft_p90)))
    return [replace(obs[0], signals=prefill), obs[1]]


def test_early_rejection_admits_what_the_ready_entry_serves_within_the_slo_once_its_ttft_nears_the_target():
    config = replace(LONG_REACH, rate_window_s=60.0)
    breaching, _ = plan(_overloaded_entry(ttft_p90=1.5), config=config)
    slack, _ = plan(_overloaded_entry(ttft_p90=0.1), config=config)
    outlook = breaching.outlooks[MODEL]
    assert outlook.admission is not None and "ready within the SLO" in outlook.admission.reason
    # The modelled capacity of the two ready replicas over the arrivals: below what the bare budget admits.
    assert outlook.admission_ratio < slack.outlooks[MODEL].admission_ratio
    # A pool meeting its TTFT at that load (an engine faster than the profile) is not held to the model.
    assert "ready within the SLO" not in slack.outlooks[MODEL].admission.reason


@pytest.mark.parametrize(
    ("sized", "held"),
    [
        pytest.param(((400.0, 20.0), (700.0, 20.0)), True, id="demand-down-from-its-high-within-the-lead-time"),
        pytest.param(((400.0, 10.0), (700.0, 10.0)), False, id="steady-demand-fewer-replicas-for-the-mix"),
        pytest.param(((100.0, 20.0), (200.0, 20.0)), False, id="the-high-is-older-than-the-lead-time"),
    ],
)
def test_ready_replicas_are_held_for_the_lead_time_after_a_dip_in_demand(sized, held):
    from autoscaler.core.behavior import Recommendation

    # Nodes on demand: a new replica waits 600 s for a node and 90 s for its pod (lead 705 s, beyond the 300 s
    # window). 8 prefill replicas, all ready, were recommended 600 s ago; 10 req/s now need fewer.
    config = replace(LONG_REACH, nodes_on_demand=True)
    policy = replace(POLICY, behavior=replace(POLICY.behavior, scale_down_window_s=300.0))
    prefill = spec(Role.PREFILL).ref
    state = PlannerState(histories={prefill: (Recommendation(400.0, 8),)}, sized_history={MODEL: sized})
    obs = pools(rps=10.0, current=8, counts=ReplicaCounts(ready=8, starting=0, unschedulable=0))
    result, after = plan_cycle(observations=obs, state=state, profiles=PROFILES, policy=policy, config=config,
                               now=1000.0)
    assert result.outlooks[MODEL].horizon_s == pytest.approx(705.0)
    assert (result.decision(prefill).desired == 8) is held
    assert after.sized_history[MODEL][-1][0] == 1000.0
