"""The peers ``default`` is measured against, each as its own source has it: the HPA's replica arithmetic and
behaviour (kubernetes pkg/controller/podautoscaler), WVA's saturation analyzer, Dynamo's throughput sizing, and
the best static fleet found with the simulator in the loop."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.best_static import find_best_static, find_best_static_fast, replay_fixed
from autoscaler.sim.dynamo import (
    Dynamo,
    PrefillFit,
    decode_engine_rps,
    fit_prefill,
    prefill_engine_rps,
    throughput_replicas,
)
from autoscaler.sim.hpa import (
    HpaBehavior,
    HpaPolicy,
    HpaRules,
    HpaState,
    PolicyKind,
    hpa_step,
    pod_metric_replicas,
)
from autoscaler.sim.policies import STANDARD, make_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.sizing import Sizing
from autoscaler.sim.theory import poisson_trace
from autoscaler.sim.wva import WvaThresholds, external_average_value_replicas, saturation_target
from autoscaler.traces import splice

PROFILE = default_profiles()["llama-3.1-8b/h100"]
FAST = {"node_delay_s": 30.0, "pod_delay_s": 15.0, "warmup_s": 120.0, "tail_s": 60.0}


# ---------------------------------------------------------------- HPA replica count (calcPlainMetricReplicas)

@pytest.mark.parametrize(("values", "current", "missing", "pending", "expected"), [
    pytest.param([2.1, 2.0], 2, 0, 0, 2, id="within-tolerance-keeps-current"),
    pytest.param([4.0, 4.0], 2, 0, 0, 4, id="scale-up-is-ceil-ratio-times-pods"),
    pytest.param([1.0, 0.5], 4, 0, 0, 1, id="scale-down-is-ceil-ratio-times-reporting-pods"),
    pytest.param([3.0, 3.0], 4, 0, 2, 4, id="pending-count-as-zero-on-a-scale-up"),
    pytest.param([1.0, 1.0], 4, 0, 2, 1, id="pending-ignored-on-a-scale-down"),
    pytest.param([1.0, 1.0], 4, 2, 0, 3, id="missing-use-the-target-on-a-scale-down"),
    pytest.param([4.0, 4.0], 4, 2, 0, 4, id="missing-use-zero-on-a-scale-up"),
    pytest.param([2.4], 2, 1, 0, 2, id="a-fill-that-flips-direction-keeps-current"),
    pytest.param([], 3, 1, 1, 3, id="no-metrics-no-change"),
])
def test_the_hpa_replica_count_follows_calc_plain_metric_replicas(values, current, missing, pending, expected):
    assert pod_metric_replicas(current=current, values=values, target=2.0, missing=missing,
                               pending=pending) == expected


UP_2_PER_30 = HpaRules(0.0, (HpaPolicy(PolicyKind.PODS, 2, 30.0),))
DOWN_1_PER_60 = HpaRules(0.0, (HpaPolicy(PolicyKind.PODS, 1, 60.0),))


def run_hpa(behavior: HpaBehavior, current: int, desired: list[int], *, every_s: float = 15.0) -> list[int]:
    """The HPA's output over successive syncs, each applied before the next."""
    state, out = HpaState(), []
    for i, want in enumerate(desired):
        current = hpa_step(state=state, desired=want, current=current, now=i * every_s, behavior=behavior,
                           min_replicas=1, max_replicas=64)
        out.append(current)
    return out


@pytest.mark.parametrize(("behavior", "current", "desired", "expected"), [
    pytest.param(HpaBehavior(up=UP_2_PER_30, down=DOWN_1_PER_60), 2, [10] * 5, [4, 4, 6, 6, 8],
                 id="scale-up-at-most-2-pods-per-30-s"),
    pytest.param(HpaBehavior(up=UP_2_PER_30, down=DOWN_1_PER_60), 6, [1] * 6, [5, 5, 5, 5, 4, 4],
                 id="scale-down-at-most-1-pod-per-60-s"),
    pytest.param(HpaBehavior(up=HpaRules(60.0, UP_2_PER_30.policies), down=DOWN_1_PER_60), 2, [2, 10, 10, 10, 10, 10],
                 [2, 2, 2, 2, 4, 4], id="scale-up-window-takes-the-lowest-recommendation-of-60-s"),
    pytest.param(HpaBehavior(up=UP_2_PER_30, down=HpaRules(600.0, DOWN_1_PER_60.policies)), 5, [5] + [1] * 5,
                 [5] * 6, id="scale-down-window-takes-the-highest-recommendation-of-600-s"),
    pytest.param(HpaBehavior(up=HpaRules(0.0, (HpaPolicy(PolicyKind.PODS, 2, 30.0),
                                               HpaPolicy(PolicyKind.PERCENT, 100, 30.0))), down=DOWN_1_PER_60),
                 4, [20], [8], id="select-policy-max-takes-the-largest-change"),
])
def test_the_hpa_behaviour_stabilises_and_rate_limits(behavior, current, desired, expected):
    assert run_hpa(behavior, current, desired) == expected


def test_hpa_tuned_is_two_hpas_on_waiting_requests_and_kv_cache_with_the_pinned_behaviour():
    from autoscaler.core.types import Role

    policy = make_policy("hpa-tuned")
    metrics = policy.metrics  # type: ignore[attr-defined]
    assert metrics[Role.PREFILL][0] == "queue" and metrics[Role.DECODE][0] == "kv"
    assert policy.behavior.up.window_s < policy.behavior.down.window_s  # type: ignore[attr-defined]


# ---------------------------------------------------------------- WVA's saturation analyzer (V1)

@pytest.mark.parametrize(("kv", "queue", "current", "desired", "expected"), [
    pytest.param([0.75, 0.75], [0.0, 0.0], 2, 0, 3, id="low-spare-kv-adds-one-replica"),
    pytest.param([0.1, 0.1], [4.0, 3.0], 2, 0, 3, id="low-spare-queue-adds-one-replica"),
    pytest.param([0.9, 0.9], [9.0, 9.0], 2, 0, 3, id="all-saturated-adds-one-replica-not-more"),
    pytest.param([0.1, 0.1, 0.1], [0.0, 0.0, 0.0], 3, 0, 2, id="light-load-removes-one-replica"),
    pytest.param([0.1], [0.0], 1, 0, 1, id="one-replica-never-scales-down"),
    pytest.param([0.5, 0.5], [0.0, 0.0], 2, 0, 2, id="scale-down-unsafe-after-redistribution"),
    pytest.param([0.9, 0.9], [9.0, 9.0], 3, 0, 3, id="pending-replica-holds-the-count"),
    pytest.param([0.9, 0.9], [9.0, 9.0], 2, 4, 4, id="desired-not-yet-current-holds-the-desired"),
])
def test_wva_steps_one_replica_at_a_time_and_holds_while_in_transition(kv, queue, current, desired, expected):
    assert saturation_target(kv=kv, queue=queue, current=current, ready=len(kv), desired=desired,
                             thresholds=WvaThresholds()) == expected


def test_the_external_metric_hpa_passes_wva_desired_through_outside_its_tolerance():
    assert external_average_value_replicas(metric=5.0, target=1.0, current=4) == 5
    assert external_average_value_replicas(metric=10.0, target=1.0, current=11) == 11  # 0.91: within 10%


def test_wva_in_the_simulator_never_adds_more_than_one_replica_per_control_interval():
    surge = splice([poisson_trace(rate_rps=4.0, duration_s=150.0, prompt_tokens=3000, mean_output_tokens=120, seed=2),
                    poisson_trace(rate_rps=30.0, duration_s=600.0, prompt_tokens=3000, mean_output_tokens=120,
                                  seed=3)])
    result = simulate(surge, Scenario(**FAST), make_policy("wva"))
    for series in (result.timeline.prefill_replicas, result.timeline.decode_replicas):
        steps = [b - a for a, b in itertools.pairwise(series)]
        assert max(steps) <= 1
    assert max(result.timeline.prefill_replicas) > result.timeline.prefill_replicas[0]


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("kv_cache_threshold", 0.0, id="kv-threshold-zero"),
    pytest.param("kv_cache_threshold", 1.2, id="kv-threshold-above-one"),
    pytest.param("kv_cache_threshold", math.nan, id="kv-threshold-nan"),
    pytest.param("queue_length_threshold", 0.0, id="queue-threshold-zero"),
    pytest.param("kv_spare_trigger", -0.1, id="kv-spare-negative"),
    pytest.param("kv_spare_trigger", 1.5, id="kv-spare-above-one"),
    pytest.param("queue_spare_trigger", -1.0, id="queue-spare-negative"),
])
def test_wva_thresholds_outside_their_range_fail_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^WvaThresholds\.{field} must be"):
        WvaThresholds(**{field: value})


def test_a_wva_kv_spare_trigger_above_the_kv_threshold_fails_naming_both():
    with pytest.raises(ValueError, match=r"kv_spare_trigger \(0\.6\) must be at most kv_cache_threshold \(0\.5\)"):
        WvaThresholds(kv_cache_threshold=0.5, kv_spare_trigger=0.6)


# ---------------------------------------------------------------- Dynamo's throughput sizing

LINEAR = replace(PROFILE, prefill_a=0.01, prefill_b=1e-4, prefill_c=0.0, decode_alpha=0.01, decode_beta=1e-4,
                 decode_gamma=1e-6, max_num_batched_tokens=8192, max_num_seqs=256)


def test_dynamo_fits_the_line_a_linear_engine_has():
    fit = fit_prefill(LINEAR, [500, 1000, 3000, 9000, 20000])
    assert fit.intercept == pytest.approx(0.01, abs=1e-9) and fit.slope == pytest.approx(1e-4, rel=1e-9)


def test_dynamo_sizes_prefill_by_one_over_the_wall_time_of_the_mean_prompt():
    rps, wall = prefill_engine_rps(PrefillFit(0.01, 1e-4), 1000, max_num_batched_tokens=8192)
    assert wall == pytest.approx(0.11) and rps == pytest.approx(1 / 0.11)
    # Chunked: (chunks - 1) * wt(MBT) + wt(remainder).
    _, wall = prefill_engine_rps(PrefillFit(0.01, 1e-4), 20000, max_num_batched_tokens=8192)
    assert wall == pytest.approx(2 * (0.01 + 0.8192) + 0.01 + 3616 * 1e-4)


def test_dynamo_sizes_decode_by_the_largest_batch_within_the_itl_by_littles_law():
    isl, osl, itl = 2000.0, 200.0, 0.05
    context = isl + osl / 2
    best = max(b for b in range(1, 257) if LINEAR.decode_step_time(b, context) <= itl
               and b <= LINEAR.kv_capacity_tokens / context)
    rps, wall = decode_engine_rps(LINEAR, itl_s=itl, isl=isl, osl=osl)
    assert wall == pytest.approx(LINEAR.decode_step_time(best, context))
    assert rps == pytest.approx(best / (osl * wall))


def test_dynamo_replicas_are_demand_over_engine_rate_rounded_up_with_a_ttft_floor():
    fit = PrefillFit(0.01, 1e-4)
    sizing = throughput_replicas(LINEAR, fit, demand_rps=20.0, isl=1000.0, osl=200.0, ttft_s=1.0, itl_s=0.05)
    d_rps, _ = decode_engine_rps(LINEAR, itl_s=0.05, isl=1000.0, osl=200.0)
    assert sizing == Sizing(math.ceil(20.0 * 0.11), math.ceil(20.0 / d_rps))
    # A prompt whose prefill alone takes 2.1x the TTFT target: at least 3 replicas whatever the demand.
    slow = throughput_replicas(LINEAR, fit, demand_rps=0.01, isl=20900.0, osl=200.0, ttft_s=1.0, itl_s=0.05)
    assert slow is not None and slow.prefill == 3


def _dynamo_fleet(trace, scenario, **targets):
    result = simulate(trace, scenario, Dynamo(adjustment_interval_s=60.0, **targets))
    return result.timeline.prefill_replicas, result.timeline.decode_replicas


def test_a_tighter_ttft_target_gives_dynamo_at_least_as_many_prefill_replicas():
    # 8000-token prompts take about 0.5 s to prefill: inside a 10 s target, twice a 0.2 s one (factor 0.02).
    trace = poisson_trace(rate_rps=1.0, duration_s=600.0, prompt_tokens=8000, mean_output_tokens=100, seed=4)
    scenario = Scenario(**FAST, slo_ttft_s=10.0)
    loose, _ = _dynamo_fleet(trace, scenario)
    tight, _ = _dynamo_fleet(trace, scenario, ttft_target_factor=0.02)
    assert all(t >= lo for t, lo in zip(tight, loose, strict=True))
    assert max(tight) > max(loose)


def test_a_tighter_itl_target_gives_dynamo_at_least_as_many_decode_replicas():
    # At 50 ms a decode engine takes about 46 requests/s of this mix; at 10 ms (factor 0.2) about 19.
    trace = poisson_trace(rate_rps=30.0, duration_s=300.0, prompt_tokens=1000, mean_output_tokens=200, seed=4)
    _, loose = _dynamo_fleet(trace, Scenario(**FAST))
    _, tight = _dynamo_fleet(trace, Scenario(**FAST), itl_target_factor=0.2)
    assert all(t >= lo for t, lo in zip(tight, loose, strict=True))
    assert max(tight) > max(loose)


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("ttft_target_factor", 0.0, id="ttft-factor-zero"),
    pytest.param("ttft_target_factor", -0.5, id="ttft-factor-negative"),
    pytest.param("itl_target_factor", 0.0, id="itl-factor-zero"),
    pytest.param("itl_target_factor", math.nan, id="itl-factor-nan"),
    pytest.param("adjustment_interval_s", 0.0, id="interval-zero"),
])
def test_dynamo_refuses_a_target_factor_or_interval_that_is_not_positive_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^Dynamo\.{field} must be a finite number > 0"):
        Dynamo(**{field: value})


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.mark.parametrize(("tuned", "released", "sweep", "fields"), [
    pytest.param("wva", "wva-released", "sweep_wva.json",
                 ("kv_cache_threshold", "queue_length_threshold", "kv_spare_trigger", "queue_spare_trigger"),
                 id="wva"),
    pytest.param("dynamo", "dynamo-released", "sweep_dynamo.json",
                 ("ttft_target_factor", "itl_target_factor", "adjustment_interval_s"), id="dynamo"),
])
def test_the_tuned_peers_run_the_setting_their_sweep_chose_and_the_released_ones_the_shipped_one(
        tuned, released, sweep, fields):
    result = json.loads((RESULTS / sweep).read_text())

    def knobs(policy):
        source = getattr(policy, "thresholds", policy)
        return {f: getattr(source, f) for f in fields}

    assert knobs(make_policy(tuned)) == {f: result["chosen"][f] for f in fields}
    assert knobs(make_policy(released)) == {f: result["released"][f] for f in fields}
    assert make_policy(released).name == released


# ---------------------------------------------------------------- best-static

def test_best_static_reaches_its_target_and_one_replica_fewer_in_either_pool_does_not():
    trace = poisson_trace(rate_rps=12.0, duration_s=180.0, prompt_tokens=3000, mean_output_tokens=120, seed=5)
    scenario = Scenario(**FAST)
    search = find_best_static(trace, scenario, PROFILE, start=Sizing(1, 1))
    assert search.reached
    p, d = search.fleet.prefill, search.fleet.decode
    assert replay_fixed(trace, scenario, PROFILE, p, d).both_attainment >= search.target
    assert p > 1 or d > 1
    if p > 1:
        assert replay_fixed(trace, scenario, PROFILE, p - 1, d).both_attainment < search.target
    if d > 1:
        assert replay_fixed(trace, scenario, PROFILE, p, d - 1).both_attainment < search.target


def test_a_replay_with_a_miss_budget_stops_once_the_fleet_certainly_misses_and_its_bound_holds(monkeypatch):
    from autoscaler.sim import runner
    from autoscaler.sim.baselines import Fixed

    monkeypatch.setattr(runner, "GIVE_UP_CHECK_S", 30.0)
    trace = poisson_trace(rate_rps=12.0, duration_s=600.0, prompt_tokens=3000, mean_output_tokens=120, seed=5)
    scenario = Scenario(**FAST)
    full = simulate(trace, scenario, Fixed(prefill=1, decode=1))
    assert full.both_attainment < 0.5  # far too small a fleet
    budget = 0.05 * len(trace)
    quick = simulate(trace, scenario, Fixed(prefill=1, decode=1), miss_budget=budget)
    assert quick.extra["gave_up_at_s"] < 0.5 * trace.duration_s
    # an upper bound on the attainment, and below the target the budget stands for
    assert full.both_attainment <= quick.both_attainment < 1.0 - budget / len(trace)
    ample = simulate(trace, scenario, Fixed(prefill=6, decode=6))
    within = simulate(trace, scenario, Fixed(prefill=6, decode=6), miss_budget=budget)
    assert "gave_up_at_s" not in within.extra
    assert {k: v for k, v in within.summary().items() if k != "wall_s"} == \
        {k: v for k, v in ample.summary().items() if k != "wall_s"}


@pytest.mark.parametrize("fleet", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2)])
def test_certain_misses_never_exceed_the_final_ones_and_end_as_every_request_outside_an_slo(fleet):
    """Counted each cycle of a replay whose tight ITL target makes some fleets miss on ITL alone."""
    import numpy as np

    from autoscaler.sim.baselines import Fixed
    from autoscaler.sim.runner import MissTally, certain_misses

    counted: list[int] = []
    tallied: list[int] = []

    class Counting(Fixed):
        def start(self, ctx):
            self.ctx = ctx

        def cycle(self, now):
            ctx = self.ctx
            first = int(np.searchsorted(ctx.trace.arrival_s, ctx.measured_from_s))
            self.tally = getattr(self, "tally", None) or MissTally(first=first)
            counted.append(certain_misses(ctx.cluster, ctx.trace.arrival_s, first=first, now=now,
                                          scenario=ctx.scenario))
            # the running tally passes over the requests done for good and counts the same
            assert self.tally.count(ctx.cluster, ctx.trace.arrival_s, now=now, scenario=ctx.scenario) == counted[-1]
            tallied.append(self.tally.first)

    trace = poisson_trace(rate_rps=8.0, duration_s=300.0, prompt_tokens=3000, mean_output_tokens=400, seed=5)
    scenario = Scenario(**FAST, slo_itl_s=0.01)
    run = simulate(trace, scenario, Counting(*fleet), keep_cluster=True)
    assert run.cluster is not None and run.measured is not None
    final = round((1.0 - run.both_attainment) * run.requests)
    assert counted == sorted(counted) and max(counted) <= final
    assert tallied[-1] > tallied[0]  # the tally did pass over finished requests
    end = certain_misses(run.cluster, run.cluster.trace.arrival_s, first=int(run.measured.argmax()),
                         now=run.cluster.now, scenario=scenario)
    assert end == final


def test_best_static_runs_as_the_replay_its_search_made_of_the_fleet_it_chose():
    from autoscaler.sim import best_static
    from autoscaler.sim.baselines import Fixed

    trace = poisson_trace(rate_rps=12.0, duration_s=180.0, prompt_tokens=3000, mean_output_tokens=120, seed=7)
    scenario = Scenario(**FAST)
    policy = best_static.BestStatic()
    run = simulate(trace, scenario, policy)
    assert policy.search is not None and run.policy == "best-static"
    made = best_static._CACHE[policy._replay_key]
    assert run.timeline is made.timeline  # not replayed again
    fleet = policy.search.fleet
    fresh = simulate(trace, scenario, Fixed(prefill=fleet.prefill, decode=fleet.decode))
    searched = run.summary()
    assert searched.pop("search_replays") == policy.search.replays >= len(policy.search.tried) >= 2
    assert searched.pop("search_replays_stopped_early") == policy.search.stopped_early
    assert {k: v for k, v in searched.items() if k != "wall_s"} == \
        {k: v for k, v in fresh.summary().items() if k != "wall_s"}
    assert fresh.timeline.gpus == run.timeline.gpus and fresh.timeline.attainment == run.timeline.attainment


def test_best_static_searched_on_the_coarse_engine_is_settled_minimal_on_the_per_step_engine():
    trace = poisson_trace(rate_rps=12.0, duration_s=180.0, prompt_tokens=3000, mean_output_tokens=120, seed=5)
    scenario = Scenario(**FAST)
    assert scenario.engine_mode == "step"
    search = find_best_static_fast(trace, scenario, PROFILE, start=Sizing(1, 1))
    assert search.reached
    p, d = search.fleet.prefill, search.fleet.decode
    assert replay_fixed(trace, scenario, PROFILE, p, d).both_attainment >= search.target
    if p > 1:
        assert replay_fixed(trace, scenario, PROFILE, p - 1, d).both_attainment < search.target
    if d > 1:
        assert replay_fixed(trace, scenario, PROFILE, p, d - 1).both_attainment < search.target
    run = simulate(trace, scenario, make_policy("best-static"))
    assert (run.timeline.prefill_replicas[0], run.timeline.decode_replicas[0]) == (p, d)
    assert run.both_attainment >= search.target and run.scale_actions == 0


def test_best_static_started_from_a_far_fleet_settles_on_the_full_searchs_fleet():
    from autoscaler.sim.best_static import BestStatic
    from autoscaler.sim.report import WarmStarts

    trace = poisson_trace(rate_rps=12.0, duration_s=180.0, prompt_tokens=3000, mean_output_tokens=120, seed=5)
    scenario = Scenario(**FAST)
    full = simulate(trace, scenario, make_policy("best-static"))
    fleet = (full.timeline.prefill_replicas[0], full.timeline.decode_replicas[0])
    start = (fleet[0] + 2, max(1, fleet[1] - 1))
    near = BestStatic(near=Sizing(*start))
    run = simulate(trace, scenario, near)
    assert near.search is not None and start in near.search.tried and len(near.search.tried) < 12
    assert (run.timeline.prefill_replicas[0], run.timeline.decode_replicas[0]) == fleet
    starts = WarmStarts()  # the first best-static searches in full; the next starts where it ended
    first, second = starts("best-static"), starts("best-static")
    assert isinstance(first, BestStatic) and first.near is None
    assert isinstance(second, BestStatic) and second.near is None  # the first has not run yet: nothing to start from
    simulate(trace, scenario, second)
    third = starts("best-static")
    assert isinstance(third, BestStatic) and third.near == Sizing(*fleet)


def test_the_standard_set_is_default_and_the_peers_with_the_clairvoyant_model_last():
    assert STANDARD == ("default", "hpa-tuned", "wva", "dynamo", "best-static", "static-peak", "saturation",
                        "clairvoyant-model")


# ---------------------------------------------------------------- static-peak's mixes

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_mixes_are_mix_of_each_window_to_the_last_bit(seed):
    import numpy as np

    from autoscaler.sim.sizing import mix_of, window_mixes

    rng = np.random.default_rng(seed)
    n = 5000
    prompts = rng.lognormal(7.0, 1.2, n).astype(np.int64) + 1
    prompts[rng.random(n) < 0.3] = 1024  # ties, as real traces have
    outputs = rng.integers(0, 900, n)
    lo = np.sort(rng.integers(0, n, 300))
    hi = np.maximum(lo, np.sort(rng.integers(0, n + 1, 300)))
    hi[:5] = lo[:5]  # empty windows
    lo[-3:] = hi[-3:] = n
    rates = rng.random(300) * 10
    fast = window_mixes(prompts, np.maximum(outputs, 1), lo=lo, hi=hi, rates_rps=rates)
    for a, b, rate, got in zip(lo, hi, rates, fast, strict=True):
        assert got == mix_of(prompts[a:b], np.maximum(outputs[a:b], 1), rate_rps=float(rate)), (a, b)
    with pytest.raises(ValueError, match="forward"):
        window_mixes(prompts, outputs, lo=lo[::-1].copy(), hi=hi[::-1].copy(), rates_rps=rates)


def test_static_peak_sizes_every_minute_as_size_window_does():
    from autoscaler.sim.baselines import StaticPeak, size_window
    from autoscaler.sim.runner import SimContext
    from autoscaler.traces import load_scale, read_trace

    trace = load_scale(read_trace(Path(__file__).resolve().parents[2] / "autoscaler/data/traces/azure_llm_2023_conv.csv"),
                       8, seed=0)
    scenario = Scenario(profile="llama-3.1-70b/h100-tp4")
    ctx = SimContext(cluster=None, scenario=scenario, profile=default_profiles()["llama-3.1-70b/h100-tp4"],  # type: ignore[arg-type]
                     trace=trace, clock=None, variants=None, signals=None, scaler=None)  # type: ignore[arg-type]
    whole = trace.duration_s
    starts = [60.0 * k for k in range(int(whole // 60) + 1)]
    slow = [size_window(ctx, t, t + 60.0, mix_window_s=whole) for t in starts]
    expected = (max(z.prefill for z in slow), max(z.decode for z in slow))
    got = StaticPeak().initial(ctx)
    assert (got.prefill, got.decode) == expected and expected[0] > 1
