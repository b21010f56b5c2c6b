"""The simulator report's clairvoyant-with-start-up bound (autoscaler.sim.report): from the clairvoyant model's
run (``clairvoyant-model``, "the oracle" here), in the JSON and the table."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.policies import make_policy
from autoscaler.sim.report import oracle_with_startup, print_table, report_json
from autoscaler.sim.runner import RunResult, simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.theory import poisson_trace
from autoscaler.traces import Trace, splice

PROFILE = default_profiles()["llama-3.1-8b/h100"]
SCENARIO = Scenario(node_delay_s=30.0, pod_delay_s=15.0, warmup_s=120.0, tail_s=60.0)


def surge() -> Trace:
    """Two minutes at 3 req/s, two at 25 req/s, two at 3 req/s: the oracle adds replicas and drops them."""
    def part(rate: float, seed: int) -> Trace:
        return poisson_trace(rate_rps=rate, duration_s=120.0, prompt_tokens=3000, mean_output_tokens=120, seed=seed)
    return splice([part(3.0, 1), part(25.0, 2), part(3.0, 3)])


@pytest.fixture(scope="module")
def runs() -> tuple[Trace, Scenario, list[RunResult]]:
    trace, scenario = surge(), SCENARIO
    return trace, scenario, [simulate(trace, scenario, make_policy(name)) for name in ("clairvoyant-model", "static-peak")]


def test_the_report_adds_the_bound_without_changing_the_existing_keys(runs):
    trace, scenario, results = runs
    report = report_json(trace_name="surge", trace=trace, scenario=scenario, profile=PROFILE, results=results)
    json.dumps(report)
    bound = report["oracle_with_startup"]
    assert bound["startup_s"] == 45.0
    assert bound["gpu_hours"] > bound["gpu_hours_without_startup"] > 0
    oracle = report["policies"]["clairvoyant-model"]
    assert {"gpu_hours", "cost", "ttft_attainment", "itl_attainment", "rejected", "scale_actions",
            "gpu_hours_vs_oracle", "interval_s"} <= set(oracle)
    for entry in report["policies"].values():
        assert entry["gpu_hours_vs_oracle_with_startup"] == pytest.approx(
            entry["gpu_hours"] / bound["gpu_hours"], abs=1e-3)


def test_the_bound_without_start_up_is_the_oracles_replica_hours(runs):
    _, scenario, results = runs
    bound = oracle_with_startup(results, scenario=scenario, profile=PROFILE)
    assert bound is not None
    oracle = results[0]
    # The oracle's measured GPU-hours add only the drains of the replicas it removed to the replica-hours.
    assert oracle.gpu_hours * 0.9 <= bound.gpu_hours_without_startup <= oracle.gpu_hours + 1e-9


def test_the_bound_pays_the_scenarios_start_up_for_each_replica_the_surge_adds(runs):
    _, scenario, results = runs
    bound = oracle_with_startup(results, scenario=scenario, profile=PROFILE)
    assert bound is not None
    timeline = results[0].timeline
    base = min(timeline.prefill_replicas) + min(timeline.decode_replicas)
    peak = max(timeline.prefill_replicas) + max(timeline.decode_replicas)
    extra_s = (bound.gpu_hours - bound.gpu_hours_without_startup) * 3600 / PROFILE.gpus_per_replica
    # At least each replica above the base pays the start-up once; no more than every interval re-adds it.
    assert extra_s >= (peak - base) * 45.0 - 1e-6
    assert extra_s <= (peak - base) * 45.0 * len(timeline.t)


def test_zero_delays_make_the_bound_the_oracles_replica_hours(runs):
    _, scenario, results = runs
    bound = oracle_with_startup(results, scenario=scenario.without_delays(), profile=PROFILE)
    assert bound is not None and bound.startup_s == 0.0
    assert bound.gpu_hours == pytest.approx(bound.gpu_hours_without_startup)


def test_no_oracle_means_no_bound(runs):
    trace, scenario, results = runs
    others = [r for r in results if r.policy != "clairvoyant-model"]
    assert oracle_with_startup(others, scenario=scenario, profile=PROFILE) is None
    report = report_json(trace_name="surge", trace=trace, scenario=scenario, profile=PROFILE, results=others)
    assert "oracle_with_startup" not in report
    assert "gpu_hours_vs_oracle_with_startup" not in report["policies"]["static-peak"]


def test_the_table_prices_the_bound_when_given_the_profile_but_divides_by_nothing(runs):
    _, scenario, results = runs
    console = Console(width=200, record=True)
    print_table(results, scenario=scenario, console=console, title="t", profile=PROFILE)
    text = console.export_text()
    assert "clairvoyant-model+start-up:" in text
    assert "vs " not in text and "oracle" not in text
    bare = Console(width=200, record=True)
    print_table(results, scenario=scenario, console=bare, title="t")
    assert "start-up" not in bare.export_text()
