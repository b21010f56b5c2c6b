"""--resample's arithmetic and plumbing (autoscaler.sim.report): every policy runs on the same K block-bootstrap
draws, the seed picks the draws, and each policy's mean and 90% interval reach the JSON and the table."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console

from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.report import (
    percentile_interval,
    print_table,
    report_json,
    resample_summary,
    run_policies,
    run_resamples,
)
from autoscaler.sim.runner import RunResult, Timeline
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.theory import poisson_trace
from autoscaler.traces import Trace, splice

PROFILE = default_profiles()["llama-3.1-8b/h100"]
SCENARIO = Scenario(node_delay_s=0.0, pod_delay_s=0.0, warmup_s=60.0, tail_s=60.0, slo_ttft_s=0.3, resample=3)


def bursty() -> Trace:
    """Three minutes of different load: a resample that draws the busy minute twice differs from one that does not."""
    return splice([poisson_trace(rate_rps=rate, duration_s=60.0, prompt_tokens=2000, mean_output_tokens=50, seed=s)
                   for s, rate in enumerate((2.0, 30.0, 5.0))])


def result(gpu_hours: float, attainment: float) -> RunResult:
    return RunResult(policy="p", gpu_hours=gpu_hours, cost=0.0, ttft_attainment=attainment, itl_attainment=1.0,
                     both_attainment=attainment, rejected=0, scale_actions=0, requests=1, retries=0, unfinished=0,
                     simulated_s=1.0, wall_s=0.0, timeline=Timeline())


def test_the_interval_is_the_mean_and_the_5th_and_95th_percentiles() -> None:
    assert percentile_interval([1.0, 2.0, 4.0], digits=4) == {"mean": 2.3333, "p5": 1.1, "p95": 3.8}


def test_the_summary_covers_gpu_hours_and_each_attainment() -> None:
    summary = resample_summary([result(1.0, 0.9), result(3.0, 0.7)])
    assert summary["gpu_hours"] == {"mean": 2.0, "p5": 1.1, "p95": 2.9}
    assert summary["attainment"] == {"mean": 0.8, "p5": 0.71, "p95": 0.89}
    assert summary["itl_attainment"] == {"mean": 1.0, "p5": 1.0, "p95": 1.0}


@pytest.fixture(scope="module")
def resampled() -> dict[int, dict[str, list[RunResult]]]:
    return {seed: run_resamples(bursty(), SCENARIO, ["static-peak", "saturation"], profile=PROFILE, count=3,
                                seed=seed) for seed in (0, 1)}


def test_every_policy_runs_on_each_draw_and_the_same_draws(resampled) -> None:
    runs = resampled[0]
    assert [len(v) for v in runs.values()] == [3, 3]
    # The same draw for both policies (same requests), different draws from one resample to the next.
    assert [r.requests for r in runs["static-peak"]] == [r.requests for r in runs["saturation"]]
    assert len({r.requests for r in runs["static-peak"]}) > 1


def test_the_seed_changes_the_draws(resampled) -> None:
    assert [r.requests for r in resampled[0]["static-peak"]] != [r.requests for r in resampled[1]["static-peak"]]


def test_the_json_and_the_table_carry_each_policys_interval(resampled) -> None:
    trace, runs = bursty(), resampled[0]
    results = run_policies(trace, SCENARIO, ["static-peak", "saturation"], profile=PROFILE)
    report = report_json(trace_name="bursty", trace=trace, scenario=SCENARIO, profile=PROFILE, results=results,
                         resamples=runs)
    json.dumps(report)
    assert report["scenario"]["resample"] == 3
    for name in ("static-peak", "saturation"):
        assert report["policies"][name]["resample"] == resample_summary(runs[name])
    console = Console(record=True, width=200)
    print_table(results, scenario=SCENARIO, console=console, title="t", resamples=runs)
    text = console.export_text()
    gpu = resample_summary(runs["saturation"])["gpu_hours"]
    assert "3 block-bootstrap resamples" in text
    assert f"{gpu['p5']:.2f}-{gpu['p95']:.2f}" in text


def test_without_resamples_the_report_is_unchanged(resampled) -> None:
    trace = bursty()
    results = run_policies(trace, dataclasses.replace(SCENARIO, resample=0), ["static-peak"], profile=PROFILE)
    report = report_json(trace_name="bursty", trace=trace, scenario=SCENARIO, profile=PROFILE, results=results)
    assert "resample" not in report["policies"]["static-peak"]
