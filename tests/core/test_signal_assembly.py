import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.behavior import Behavior
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.signals.assemble import assemble, assemble_models, parse_outcomes
from autoscaler.signals.parse import parse_vector
from autoscaler.signals.queries import POD_AGES, Combine, LabelMap, QueryPlan
from autoscaler.signals.warmup import PodCensus

PLAN = QueryPlan()
LABELS = LabelMap()
NOW = 1_000.0
KEY = ("ns", "m", "decode", "H100")


def spec(name: str = "d", role: Role = Role.DECODE, accelerator: str = "H100") -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", name), model="m", role=role, accelerator=accelerator,
                       target=ScaleTarget("apps/v1", "Deployment", name))


def series(value: str, role: str = "decode", accelerator: str = "H100", **extra: str) -> dict:
    metric = {"namespace": "ns", "model_name": "m", "role": role, "accelerator": accelerator, **extra}
    return {"metric": metric, "value": [NOW, value]}


def buckets(*pairs: tuple[str, str], role: str = "decode", accelerator: str = "H100") -> list[dict]:
    """Bucket-rate series ``(le, rate)`` of one variant, as ``sum by (..., le) (rate(x_bucket[w]))`` answers."""
    return [series(rate, role=role, accelerator=accelerator, le=le) for le, rate in pairs]


# 1 observation/s up to 0.1, 2 more up to 0.5, 1 more above: p50 = 0.1 + 0.4 * (2-1)/2 = 0.3; p90 and p99 fall in
# the +Inf bucket, which answers the highest finite bound, 0.5 (as histogram_quantile does).
LATENCY = (("0.1", "1"), ("0.5", "3"), ("+Inf", "4"))
BUCKET_SIGNALS = ("ttft_buckets", "itl_buckets", "prompt_len_buckets", "generation_len_buckets")


def full_outcomes(**values: object) -> dict:
    """Every query answered for the one decode/H100 variant; ``values`` override single answers."""
    base: dict[str, object] = {name: [series("1")] for name in PLAN.queries()}
    base.update({"sample_age_s": [series("2")], "kv_engines": [series("2")], "kv_usage_max": [series("0.7")],
                 "prompt_len_sum_per_s": [series("1000")], "prompt_len_count_per_s": [series("4")],
                 "prefix_hits_per_s": [series("250")], "prefix_queries_per_s": [series("1000")],
                 POD_AGES: [series("500", pod="p-1"), series("-1", pod="p-2")]})
    base.update({name: buckets(*LATENCY) for name in BUCKET_SIGNALS})
    for name, value in values.items():
        base[name] = [series(value)] if isinstance(value, str) else value
    return base


def one(outcomes: dict, census: dict | None = None, staleness_s: float = 30):
    return assemble(variants=[spec()], outcomes=outcomes, plan=PLAN, census=census, staleness_s=staleness_s)[spec()]


def test_fresh_signals_are_assembled_per_variant():
    sig = one(full_outcomes(waiting="7", kv_usage_sum="1.0", pods="2", running="6"))
    assert (sig.freshness, sig.waiting, sig.kv_usage_mean, sig.kv_usage_max) == (Freshness.FRESH, 7.0, 0.5, 0.7)
    assert (sig.pods, sig.waiting_per_replica, sig.running_per_replica) == (2, 3.5, 3.0)
    assert (sig.prompt_tokens_mean, sig.prefix_cache_hit_ratio) == (250.0, 0.25)
    assert [q for q, _ in sig.ttft_quantiles_s] == [0.5, 0.9, 0.99] and sig.itl_p90_s == 0.5
    assert math.isclose(sig.ttft_quantile_s(0.5), 0.3) and sig.ttft_quantile_s(0.99) == 0.5


def test_failed_query_is_unknown_not_zero():
    sig = one(full_outcomes(waiting=SignalError("connection refused")))
    assert sig.freshness is Freshness.MISSING and sig.waiting is None and "connection refused" in sig.note


def test_failed_read_of_demand_is_unknown_never_zero_demand():
    """Dynamo #14765: a failed read fabricated a confirmed idle window and the planner sized for no traffic."""
    failure = SignalError("read timed out")
    sig = one(full_outcomes(completions_per_s=failure, prompt_len_count_per_s=failure, prompt_len_sum_per_s=failure,
                            waiting="0", running="0"))
    assert sig.completions_per_s is None and sig.prompt_tokens_mean is None and sig.prompt_tokens_p90 == 0.5
    assert not sig.idle and "completions_per_s" in sig.note


def test_failed_optional_query_leaves_the_variant_fresh_with_that_value_unknown():
    sig = one(full_outcomes(ttft_buckets=SignalError("422 execution error")))
    assert sig.freshness is Freshness.FRESH and sig.ttft_p90_s is None and sig.ttft_quantiles_s == ()
    assert "ttft_buckets" in sig.note and sig.itl_p90_s == 0.5


def test_zero_traffic_is_zero_demand_and_stays_fresh():
    """Dynamo #6985: rate(_sum)/rate(_count) is 0/0 with no requests; that is zero demand, not NaN or no data."""
    idle = {name: "0" for name in ("waiting", "running", "completions_per_s", "prompt_tokens_per_s",
                                   "prompt_len_sum_per_s", "prompt_len_count_per_s", "generation_len_sum_per_s",
                                   "generation_len_count_per_s", "prefix_hits_per_s", "prefix_queries_per_s",
                                   "kv_usage_sum")}
    idle.update({name: buckets(("0.1", "0"), ("+Inf", "0")) for name in BUCKET_SIGNALS})  # no observations
    sig = one(full_outcomes(**idle))
    assert sig.freshness is Freshness.FRESH and sig.idle
    assert (sig.completions_per_s, sig.prompt_tokens_mean, sig.prompt_tokens_p90) == (0.0, 0.0, 0.0)
    assert (sig.generation_tokens_mean, sig.generation_tokens_p90, sig.prefix_cache_hit_ratio) == (0.0, 0.0, 0.0)
    assert sig.ttft_p90_s is None  # no latency was observed: unknown, and not needed to decide


def test_a_scrape_gap_longer_than_the_rate_window_leaves_rates_unknown_not_zero():
    """rate() needs two samples in its window; after a longer gap the series is absent for that query."""
    gap = {name: [] for name in ("completions_per_s", "prompt_len_sum_per_s", "prompt_len_count_per_s",
                                 "prompt_tokens_per_s")}
    sig = one(full_outcomes(waiting="0", running="0", **gap))
    assert sig.freshness is Freshness.FRESH and sig.completions_per_s is None and sig.prompt_tokens_mean is None
    assert not sig.idle and "completions_per_s" in sig.missing


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"prompt_len_sum_per_s": "500", "prompt_len_count_per_s": "0"}, "prompt_tokens_mean",
                     id="tokens-without-requests"),
        pytest.param({"prefix_hits_per_s": "5", "prefix_queries_per_s": "0"}, "prefix_cache_hit_ratio",
                     id="hits-without-queries"),
        pytest.param({"prefix_hits_per_s": "50", "prefix_queries_per_s": "10"}, "prefix_cache_hit_ratio",
                     id="more-hits-than-queries"),
    ],
)
def test_inconsistent_ratios_are_unknown(overrides, field):
    assert getattr(one(full_outcomes(**overrides)), field) is None


def test_variant_without_series_is_missing():
    out = assemble(variants=[spec(role=Role.PREFILL)], outcomes=full_outcomes(), plan=PLAN, staleness_s=30)
    sig = out[spec(role=Role.PREFILL)]
    assert sig.freshness is Freshness.MISSING and "no series" in sig.note


@pytest.mark.parametrize(
    ("age", "freshness"),
    [
        pytest.param("120", Freshness.STALE, id="old-is-stale"),
        pytest.param("29", Freshness.FRESH, id="young-is-fresh"),
        pytest.param("-3", Freshness.FRESH, id="clock-skew-reads-as-now"),
    ],
)
def test_sample_age_decides_staleness(age, freshness):
    assert one(full_outcomes(sample_age_s=age)).freshness is freshness


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf", "not-a-number", "-1"])
def test_non_finite_or_negative_samples_are_unknown(raw):
    sig = one(full_outcomes(kv_usage_sum=raw))
    assert sig.kv_usage_mean is None and sig.freshness is Freshness.MISSING


def test_kv_usage_reported_in_percent_is_refused_rather_than_read_as_saturated():
    sig = one(full_outcomes(kv_usage_sum="90", kv_engines="2", kv_usage_max="45"))
    assert (sig.kv_usage_mean, sig.kv_usage_max, sig.freshness) == (None, None, Freshness.MISSING)


@pytest.mark.parametrize(
    ("combine", "values", "expected"),
    [
        pytest.param(Combine.SUM, ["3", "4"], 7.0, id="totals-add"),
        pytest.param(Combine.MAX, ["0.2", "0.6"], 0.6, id="maxima"),
        pytest.param(Combine.MIN, ["5", "2"], 2.0, id="ages-keep-youngest"),
    ],
)
def test_duplicate_series_for_one_key_are_combined_not_overwritten(combine, values, expected):
    parsed = parse_vector([series(v, pod=str(i)) for i, v in enumerate(values)], key_of=LABELS.key_of,
                          combine=combine)
    assert math.isclose(parsed[KEY], expected)


def test_one_malformed_series_does_not_hide_the_others():
    parsed = parse_vector([{"metric": None}, {"value": [1, "2"]}, series("x"), series("3", pod="a"),
                           {"metric": {"role": ["decode"]}, "value": [1, "1"]},  # unhashable label value
                           {"metric": {**series("1")["metric"], "accelerator": 7}, "value": [1, "1"]}],
                          key_of=LABELS.key_of)
    assert parsed[KEY] == 3.0 and set(parsed) == {KEY, ("ns", "m", "decode", 7)}  # 7 matches no variant


def test_warm_and_warming_pods_are_carried_into_the_signals():
    census = {KEY: PodCensus(warm=("p-1",), warming=("p-2",))}
    sig = one(full_outcomes(), census=census)
    assert (sig.warm_pods, sig.warming_pods, sig.calibration_ready) == (("p-1",), ("p-2",), False)
    ready = one(full_outcomes(), census={KEY: PodCensus(warm=("p-1", "p-2"))})
    assert ready.calibration_ready


def test_a_failed_pod_census_is_not_calibration_ready():
    sig = one(full_outcomes(**{POD_AGES: SignalError("boom")}), census={KEY: PodCensus(warm=("p-1",))})
    assert sig.freshness is Freshness.FRESH and "pod_ages" in sig.missing and not sig.calibration_ready


def models(outcomes: dict, variants=None):
    parsed = parse_outcomes(outcomes, plan=PLAN)
    return assemble_models(variants=variants or [spec()], parsed=parsed, plan=PLAN, staleness_s=30)


def two(h100: str, a100: str, prefill: str = "1") -> list[dict]:
    """decode/H100, decode/A100 (no VariantAutoscaling of its own), and prefill/H100 of the same model."""
    return [series(h100), series(a100, accelerator="A100"), series(prefill, role="prefill")]


def test_model_signals_add_up_accelerators_but_not_roles():
    outcomes = full_outcomes(waiting=two("3", "4", "100"), kv_usage_sum=two("1.5", "0.2"),
                             kv_engines=two("2", "2"), completions_per_s=two("1", "3", "50"),
                             prompt_len_sum_per_s=two("100", "900"), prompt_len_count_per_s=two("1", "3"),
                             kv_usage_max=two("0.9", "0.1"), sample_age_s=two("20", "3"))
    # H100 observes everything below 0.1 s, A100 between 0.1 and 0.5 s; prefill is slow but another pool.
    outcomes["ttft_buckets"] = (buckets(("0.1", "2"), ("0.5", "2"), ("+Inf", "2"))
                                + buckets(("0.1", "0"), ("0.5", "2"), ("+Inf", "2"), accelerator="A100")
                                + buckets(("0.1", "0"), ("0.5", "0"), ("+Inf", "9"), role="prefill"))
    sig = models(outcomes)[("ns", "m", "decode")]
    assert (sig.waiting, sig.completions_per_s, sig.kv_usage_max) == (7.0, 4.0, 0.9)
    assert math.isclose(sig.kv_usage_mean, 1.7 / 4) and sig.prompt_tokens_mean == 250.0  # ratio of sums
    assert sig.ttft_quantile_s(0.5) == 0.1 and math.isclose(sig.ttft_p90_s, 0.1 + 0.4 * 0.8)
    assert sig.freshness is Freshness.FRESH


def test_a_failed_query_leaves_the_same_value_unknown_for_the_model():
    sig = models(full_outcomes(itl_buckets=SignalError("timeout")))[("ns", "m", "decode")]
    assert sig.itl_p90_s is None and sig.ttft_p90_s == 0.5 and sig.freshness is Freshness.FRESH


hostile_value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                          st.sampled_from(["NaN", "+Inf", "-Inf", "1e309", "-0", "0x10", ""]))
hostile_item = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries({
        "metric": st.one_of(st.none(), st.just({"namespace": "ns", "model_name": "m", "role": "decode",
                                                "accelerator": "H100"}),
                            st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), st.integers()))),
        "value": st.one_of(st.none(), st.lists(hostile_value, max_size=3), st.tuples(st.floats(), hostile_value)),
    }),
)
hostile_result = st.one_of(st.lists(hostile_item, max_size=6), st.none(), st.text(max_size=5),
                           st.dictionaries(st.text(max_size=3), st.integers()),
                           st.builds(SignalError, st.text(max_size=10)))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(PLAN.queries())), hostile_result, max_size=8))
def test_hostile_responses_never_crash_and_never_yield_fresh_without_the_required_values(overrides):
    outcomes = full_outcomes()
    outcomes.update(overrides)
    sig = one(outcomes)
    for name in ("waiting", "running", "kv_usage_mean", "kv_usage_max", "completions_per_s", "prompt_tokens_mean",
                 "prompt_tokens_p90", "prefix_cache_hit_ratio", "ttft_p90_s"):
        value = getattr(sig, name)
        assert value is None or (math.isfinite(value) and value >= 0), name
    assert sig.prefix_cache_hit_ratio is None or sig.prefix_cache_hit_ratio <= 1
    if sig.freshness is Freshness.FRESH:
        assert sig.waiting is not None and sig.kv_usage_mean is not None
    assert models(outcomes)[("ns", "m", "decode")] is not None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["waiting", "kv_usage_sum", "kv_engines", "sample_age_s"]),
                       hostile_result, min_size=1, max_size=4),
       st.integers(min_value=2, max_value=8))
def test_hostile_responses_never_scale_a_variant_down(overrides, current):
    """Garbage where the decision's inputs should be: the variant may stay or grow, never shrink."""
    outcomes = full_outcomes(waiting="0", running="0", kv_usage_sum="0")  # would be idle if read correctly
    outcomes.update(overrides)
    sig = one(outcomes)
    policy = ScalingPolicy(behavior=Behavior(scale_down_window_s=0, max_step_down=0))
    target = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                         target=ScaleTarget("apps/v1", "Deployment", "d"), min_replicas=1, max_replicas=10)
    decision, _ = decide(spec=target, signals=sig, current=current, history=(), policy=policy, now=NOW)
    if sig.freshness is not Freshness.FRESH:
        assert decision.desired >= current
