"""The tuning harness every tunable peer goes through (:mod:`autoscaler.sim.sweep`): the cheapest setting within
0.5 point of the best on every tuning trace is chosen, the held-out trace is replayed and reported but never
chooses, and the JSON a sweep script writes carries all of it."""

from __future__ import annotations

import json

import pytest

from autoscaler.sim import sweep
from autoscaler.sim.baselines import Fixed
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.theory import poisson_trace

FAST = Scenario(node_delay_s=30.0, pod_delay_s=15.0, warmup_s=60.0, tail_s=30.0)


def _row(**per_trace: tuple[float, float]) -> dict:
    return {"results": {t: {"gpu_hours": g, "attainment": a} for t, (g, a) in per_trace.items()}}


@pytest.mark.parametrize(("rows", "expected"), [
    pytest.param([_row(a=(4.0, 0.99), b=(4.0, 0.99)), _row(a=(2.0, 0.986), b=(2.0, 0.99)),
                  _row(a=(1.0, 0.984), b=(1.0, 0.99))], 1, id="cheapest-within-half-a-point-on-every-trace"),
    pytest.param([_row(a=(4.0, 0.99), b=(4.0, 0.99)), _row(a=(1.0, 0.99), b=(1.0, 0.98))], 0,
                 id="outside-the-band-on-one-trace-is-out"),
    pytest.param([_row(a=(3.0, 0.99), b=(1.0, 0.99)), _row(a=(1.0, 0.99), b=(2.0, 0.99))], 1,
                 id="gpu-hours-summed-over-the-tuning-traces"),
    pytest.param([_row(a=(2.0, 0.99), b=(2.0, 0.99)), _row(a=(2.0, 0.99), b=(2.0, 0.99))], 0,
                 id="a-tie-goes-to-the-first-listed"),
    pytest.param([_row(a=(4.0, 0.99), b=(4.0, 0.99), held=(9.0, 0.99)),
                  _row(a=(4.0, 0.99), b=(4.0, 0.99), held=(1.0, 0.99))], 0, id="the-held-out-trace-never-chooses"),
])
def test_the_rule_picks_the_cheapest_setting_within_the_band_of_the_best_on_every_tuning_trace(rows, expected):
    assert sweep.choose(rows, ["a", "b"]) == expected


def _tiny(seed: int):
    return poisson_trace(rate_rps=2.0, duration_s=120.0, prompt_tokens=1000, mean_output_tokens=50, seed=seed)


def test_a_sweep_replays_every_setting_on_every_trace_and_reports_the_chosen_one_on_the_held_out_trace():
    traces = {"a": (_tiny(1), FAST), "b": (_tiny(2), FAST), "held": (_tiny(3), FAST)}
    settings = [{"prefill": 3, "decode": 3}, {"prefill": 1, "decode": 1}]
    rows = sweep.sweep(settings, lambda s: Fixed(prefill=s["prefill"], decode=s["decode"]), traces)
    out = sweep.report(about="tiny", rows=rows, tuning=["a", "b"], held_out=["held"], duration_s=None, wall_s=0.0,
                       released=0)
    assert [r["prefill"] for r in out["settings"]] == [3, 1]
    assert all(set(r["results"]) == {"a", "b", "held"} for r in out["settings"])
    # One replica per pool serves 2 requests/s within the SLOs on these traces, on a third of the GPU-hours.
    big, small = out["settings"]
    assert small["results"]["a"]["gpu_hours"] < big["results"]["a"]["gpu_hours"]
    assert out["chosen"]["index"] == 1 and out["chosen"]["prefill"] == 1
    assert out["chosen"]["results"]["held"] == small["results"]["held"]
    assert out["released"]["index"] == 0 and out["released"]["prefill"] == 3
    assert out["tuning_traces"] == ["a", "b"] and out["held_out"] == ["held"]


def test_a_sweep_script_writes_its_json_with_the_tuning_and_held_out_traces(tmp_path, monkeypatch):
    names = [t.name for t in (*sweep.TUNING, *sweep.HELD_OUT)]
    monkeypatch.setattr(sweep, "load", lambda traces, duration_s=None: {
        t.name: (_tiny(i), FAST) for i, t in enumerate(traces)})
    path = tmp_path / "sweep.json"
    sweep.main(doc="A tiny sweep.\n\nMore.", settings=[{"prefill": 1, "decode": 1}],
               make=lambda s: Fixed(prefill=s["prefill"], decode=s["decode"]), out=path, argv=[])
    written = json.loads(path.read_text())
    assert written["about"] == "A tiny sweep."
    assert written["tuning_traces"] == ["azure-conv", "mooncake-conversation"]
    assert written["held_out"] == ["mooncake-synthetic"]
    assert set(written["chosen"]["results"]) == set(names)
    assert "0.5 point" in written["rule"]
