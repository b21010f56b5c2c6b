"""Policies in the simulator: the real controller drives ``default`` and ``saturation`` through the ports, the
clairvoyant model gets capacity at once, static provisioning never moves, runs are deterministic, the report has
its shape. Short synthetic traces keep each test to a few seconds of CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoscaler.core.types import Freshness, Role
from autoscaler.errors import ConfigError
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim import policies
from autoscaler.sim.adapters import SimSignalSource
from autoscaler.sim.baselines import Fixed
from autoscaler.sim.cluster import SimCluster
from autoscaler.sim.controlled import ControllerPolicy, product_planner
from autoscaler.sim.policies import STANDARD, make_policy, policy_names, register
from autoscaler.sim.report import report_json
from autoscaler.sim.runner import simulate, with_warmup
from autoscaler.sim.scenario import Scenario, resolve_profile
from autoscaler.sim.theory import poisson_trace
from autoscaler.traces import Trace, splice

PROFILE = default_profiles()["llama-3.1-8b/h100"]
FAST = {"node_delay_s": 30.0, "pod_delay_s": 15.0, "warmup_s": 120.0, "tail_s": 60.0}


def steady(rate: float = 6.0, duration: float = 240.0, seed: int = 1) -> Trace:
    return poisson_trace(rate_rps=rate, duration_s=duration, prompt_tokens=3000, mean_output_tokens=120, seed=seed)


def surge() -> Trace:
    """Two and a half minutes at 4 req/s, then as long at 30 req/s."""
    return splice([steady(4.0, 150.0, seed=2), steady(30.0, 150.0, seed=3)])


def test_every_standard_policy_is_known_and_fresh_objects_are_made_per_run():
    assert set(STANDARD) <= set(policy_names())
    assert make_policy("default") is not make_policy("default")
    with pytest.raises(ConfigError, match="unknown policy 'nope'.*clairvoyant-model"):
        make_policy("nope")


def test_default_can_be_replaced(monkeypatch):
    # The registry is restored as it was, factory and all: later tests get fresh policies, not this one's.
    monkeypatch.setattr(policies, "_FACTORIES", dict(policies._FACTORIES))
    register("default", lambda: Fixed(prefill=2, decode=2, name="default"))
    assert isinstance(make_policy("default"), Fixed)


def test_a_run_is_deterministic_for_a_seed():
    trace, scenario = surge(), Scenario(seed=7, **FAST)
    first = simulate(trace, scenario, make_policy("default"))
    second = simulate(trace, scenario, make_policy("default"))
    assert (first.gpu_hours, first.both_attainment, first.rejected, first.scale_actions) == \
           (second.gpu_hours, second.both_attainment, second.rejected, second.scale_actions)
    assert first.timeline.prefill_replicas == second.timeline.prefill_replicas


@pytest.mark.parametrize("name", ["default", "saturation"])
def test_the_controller_scales_up_through_the_ports_under_a_surge(name):
    policy = make_policy(name)
    assert isinstance(policy, ControllerPolicy)
    result = simulate(surge(), Scenario(**FAST), policy)
    assert policy.reports, "the controller's run_cycle drove the policy"
    decided = {o.spec.role for report in policy.reports for o in report.outcomes if o.decision is not None}
    assert decided == {Role.PREFILL, Role.DECODE}
    assert max(result.timeline.prefill_replicas[10:]) > result.timeline.prefill_replicas[0]
    assert result.scale_actions > 0


def test_the_default_policy_is_configured_as_the_product_is_with_the_scenarios_slo():
    planner, scaling = product_planner(scenario=Scenario(slo_ttft_s=2.0, slo_itl_s=0.04), profile=PROFILE)
    assert (planner.default_slo.ttft_s, planner.default_slo.itl_s) == (2.0, 0.04)
    assert planner.predictive and planner.forecast.interval_s == 15.0
    assert planner.forecast.lead_time_s == PROFILE.node_startup_s + PROFILE.startup_s
    tuned, tuned_scaling = product_planner(scenario=Scenario(), profile=PROFILE, overrides={
        "planner": {"backlog_drain_s": 30.0}, "behavior": {"scale_down": {"stabilization_window_s": 60.0}}})
    assert tuned.backlog_drain_s == 30.0 and tuned_scaling.behavior.scale_down_window_s == 60.0
    assert scaling.behavior.scale_down_window_s != 60.0


def test_the_controller_observes_in_dry_run_until_it_goes_live():
    policy = make_policy("default")
    assert isinstance(policy, ControllerPolicy)
    simulate(surge(), Scenario(**FAST), policy)  # control from 60 s, warm-up copy until 120 s
    scaled_at = [r.started_at for r in policy.reports if any(o.applied for o in r.outcomes)]
    assert min(r.started_at for r in policy.reports) == 60.0
    assert scaled_at and min(scaled_at) >= 120.0


def test_the_clairvoyant_model_gets_capacity_at_once_and_uses_no_more_gpu_hours_than_static_peak():
    trace, scenario = surge(), Scenario(**FAST)
    oracle = simulate(trace, scenario, make_policy("clairvoyant-model"))
    static = simulate(trace, scenario, make_policy("static-peak"))
    assert oracle.timeline.prefill_ready == oracle.timeline.prefill_replicas
    assert oracle.gpu_hours < static.gpu_hours
    assert static.scale_actions == 0
    assert len(set(static.timeline.prefill_replicas)) == 1


def test_static_peak_meets_the_slo_on_the_surge_it_was_sized_for():
    result = simulate(surge(), Scenario(**FAST), make_policy("static-peak"))
    assert result.both_attainment > 0.98


@pytest.mark.parametrize("name", ["hpa-tuned", "hpa-queue-naive", "hpa-kv-naive", "wva", "dynamo"])
def test_baselines_run_to_the_end_and_account_for_every_request(name):
    result = simulate(surge(), Scenario(**FAST), make_policy(name))
    assert result.requests == len(surge())
    assert 0.0 <= result.both_attainment <= min(result.ttft_attainment, result.itl_attainment) <= 1.0
    assert result.gpu_hours > 0


def test_early_rejection_turns_requests_away_when_capacity_cannot_arrive_in_time():
    slow = Scenario(node_delay_s=600.0, pod_delay_s=90.0, warmup_s=120.0, tail_s=60.0)
    with_rejection = simulate(surge(), slow, make_policy("default"))
    without = simulate(surge(), slow, make_policy("default-no-rejection"))
    assert with_rejection.rejected > 0 and without.rejected == 0


def test_only_the_trace_proper_is_measured_after_the_warm_up_copy():
    trace = steady(duration=200.0)
    extended, skipped, offset = with_warmup(trace, 120.0, grid_s=15.0)
    assert offset == 120.0 and skipped == int(np.searchsorted(trace.arrival_s, 120.0))
    assert len(extended) == len(trace) + skipped
    result = simulate(trace, Scenario(warmup_s=120.0, tail_s=30.0), Fixed(prefill=2, decode=1))
    assert result.requests == len(trace)
    assert result.timeline.t[0] == 0.0


def test_the_signal_source_gives_what_prometheus_would():
    trace = steady(rate=8.0, duration=120.0)
    cluster = SimCluster(trace=trace, scenario=Scenario(), profile=PROFILE, kv_bytes_per_token=131072)
    source = SimSignalSource(cluster, window_s=60.0)
    assert source.signals(Role.PREFILL, now=0.0).freshness is Freshness.MISSING
    cluster.warm_start(Role.PREFILL, 1)
    cluster.warm_start(Role.DECODE, 1)
    source.signals(Role.DECODE, now=0.0)
    while cluster.now < 90.0:
        cluster.step(cluster.now + 0.5)
    sig = source.signals(Role.DECODE, now=cluster.now)
    assert sig.freshness is Freshness.FRESH and sig.pods == 1
    assert sig.completions_per_s == pytest.approx(8.0, rel=0.3)
    assert sig.generation_tokens_per_s == pytest.approx(8.0 * 120, rel=0.3)
    assert sig.prompt_tokens_mean == pytest.approx(3000)
    assert 0 < sig.kv_usage_mean <= sig.kv_usage_max <= 1
    assert sig.itl_p90_s is not None and 0 < sig.itl_p90_s < 0.05
    assert [q for q, _ in sig.ttft_quantiles_s] == [0.5, 0.9, 0.99]
    assert sig.waiting is not None and sig.running is not None


def test_the_report_has_the_documented_shape():
    trace, scenario = steady(duration=120.0), Scenario(warmup_s=60.0, tail_s=30.0)
    results = [simulate(trace, scenario, make_policy(name)) for name in ("clairvoyant-model", "static-peak")]
    report = report_json(trace_name="t.jsonl", trace=trace, scenario=scenario, profile=PROFILE, results=results)
    json.dumps(report)  # serialisable
    assert report["trace"] == "t.jsonl"
    assert {"profile", "slo_ttft_s", "slo_itl_s", "interval_s", "node_delay_s", "pod_delay_s"} <= set(
        report["scenario"])
    assert report["scenario"]["node_delay_s"] == PROFILE.node_startup_s
    assert set(report["policies"]) == {"clairvoyant-model", "static-peak"}
    for entry in report["policies"].values():
        assert {"gpu_hours", "cost", "ttft_attainment", "itl_attainment", "rejected", "scale_actions"} <= set(entry)
    assert report["policies"]["clairvoyant-model"]["interval_s"] == 15.0


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"interval_s": 10.0, "tick_s": 3.0}, "multiple of tick_s", id="interval-off-grid"),
    pytest.param({"slo_ttft_s": 0.0}, "slo_ttft_s", id="zero-ttft"),
    pytest.param({"min_replicas": 5, "max_replicas": 2}, "min_replicas", id="min-above-max"),
    pytest.param({"slo_percentile": 1.0}, "slo_percentile", id="percentile-one"),
])
def test_a_bad_scenario_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        Scenario(**changes)


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'gpt-9/tpu'.*llama-3.1-8b/h100"):
        resolve_profile("gpt-9/tpu")
