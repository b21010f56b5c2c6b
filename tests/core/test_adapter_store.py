"""The decision store: what the adapter serves after each cycle, and when it refuses to."""

from __future__ import annotations

import pytest

from autoscaler.adapter.catalog import label_value
from autoscaler.adapter.selectors import parse_selector
from autoscaler.adapter.store import DecisionStore, NoMatchingVariant, UnknownMetric, ValueUnavailable
from autoscaler.controller.loop import CycleReport, VariantOutcome
from autoscaler.core.types import (
    Decision,
    DecisionStep,
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def spec(name: str, *, role: Role = Role.DECODE, namespace: str = "llm", model: str = "meta-llama/Llama-3.1-8B",
         accelerator: str = "H100") -> VariantSpec:
    return VariantSpec(ref=VariantRef(namespace, name), model=model, role=role, accelerator=accelerator,
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=1, max_replicas=10)


FRESH = VariantSignals(freshness=Freshness.FRESH, pods=2, waiting=1.0, running=4.0, kv_usage_mean=0.5,
                       completions_per_s=7.5, prompt_tokens_per_s=1500.0, generation_tokens_per_s=300.0)


def outcome(s: VariantSpec, *, desired: int | None, current: int = 2, signals: VariantSignals | None = FRESH,
            applied: bool = False, error: str = "", reason: Reason = Reason.SATURATED) -> VariantOutcome:
    decision = None
    if desired is not None:
        decision = Decision(variant=s.ref, current=current, desired=desired,
                            steps=(DecisionStep("saturation", desired, reason, "test"),))
    return VariantOutcome(spec=s, signals=signals, decision=decision, applied=applied, error=error)


def report(*outcomes: VariantOutcome, at: float = T0, errors: tuple[str, ...] = (), cycle: int = 1) -> CycleReport:
    return CycleReport(cycle=cycle, started_at=at, duration_s=0.05, outcomes=tuple(outcomes),
                       errors=errors + tuple(o.error for o in outcomes if o.error))


DECODE, PREFILL = spec("llama-decode"), spec("llama-prefill", role=Role.PREFILL)


def store_with(*outcomes: VariantOutcome, clock: FakeClock | None = None, max_age_s: float = 45.0) -> DecisionStore:
    store = DecisionStore(max_age_s=max_age_s, clock=clock or FakeClock())
    store.record(report(*outcomes))
    return store


def lookup(store: DecisionStore, selector: str, metric: str = "variant_desired_replicas", namespace: str = "llm"):
    return store.lookup(namespace=namespace, metric=metric, selector=parse_selector(selector))


def test_a_selector_matching_one_variant_returns_exactly_one_item():
    store = store_with(outcome(DECODE, desired=4), outcome(PREFILL, desired=3))
    items = lookup(store, "variant=llama-decode")
    assert [(i.value, dict(i.labels)) for i in items] == [
        (4.0, {"variant": "llama-decode", "model": "meta-llama_Llama-3.1-8B", "role": "decode",
               "accelerator": "H100", "variant_name": "llama-decode", "accelerator_type": "H100"})]
    assert items[0].timestamp == T0


def test_a_selector_matching_several_variants_returns_one_item_each():
    store = store_with(outcome(DECODE, desired=4), outcome(PREFILL, desired=3))
    assert sorted(i.value for i in lookup(store, "model=meta-llama_Llama-3.1-8B")) == [3.0, 4.0]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        pytest.param("variant_desired_replicas", 5.0, id="desired"),
        pytest.param("variant_current_replicas", 2.0, id="current"),
        pytest.param("variant_completion_rate", 7.5, id="completion-rate"),
        pytest.param("variant_prompt_token_rate", 1500.0, id="prompt-tokens"),
        pytest.param("variant_generation_token_rate", 300.0, id="generation-tokens"),
    ],
)
def test_serves_each_metric_from_the_decision_and_its_signals(metric, expected):
    store = store_with(outcome(DECODE, desired=5))
    assert [i.value for i in lookup(store, "variant=llama-decode", metric)] == [expected]


def test_unknown_metric_is_not_found():
    store = store_with(outcome(DECODE, desired=5))
    with pytest.raises(UnknownMetric, match="'no_such_metric' is not served") as info:
        lookup(store, "", "no_such_metric")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("selector", "namespace"),
    [pytest.param("variant=other", "llm", id="other-variant"),
     pytest.param("variant=llama-decode", "elsewhere", id="other-namespace")],
)
def test_no_matching_variant_is_not_found_never_an_empty_list(selector, namespace):
    store = store_with(outcome(DECODE, desired=5))
    with pytest.raises(NoMatchingVariant) as info:
        lookup(store, selector, namespace=namespace)
    assert info.value.status == 404


def test_before_the_first_cycle_values_are_unavailable():
    store = DecisionStore(max_age_s=45, clock=FakeClock())
    with pytest.raises(ValueUnavailable, match="no decision yet") as info:
        lookup(store, "")
    assert info.value.status == 503


def test_a_stale_decision_is_unavailable_not_served():
    clock = FakeClock()
    store = store_with(outcome(DECODE, desired=5), clock=clock, max_age_s=45)
    clock.t = T0 + 45
    assert [i.value for i in lookup(store, "")] == [5.0]  # at the limit: still served
    clock.t = T0 + 46
    with pytest.raises(ValueUnavailable, match="46s old"):
        lookup(store, "")


def test_a_variant_whose_decision_failed_keeps_its_last_value_until_it_goes_stale():
    clock = FakeClock()
    store = store_with(outcome(DECODE, desired=5), clock=clock, max_age_s=45)
    clock.t = T0 + 30
    store.record(report(outcome(DECODE, desired=None, error="HTTP 500"), at=T0 + 30))
    assert [(i.value, i.timestamp) for i in lookup(store, "")] == [(5.0, T0)]
    clock.t = T0 + 50
    with pytest.raises(ValueUnavailable):
        lookup(store, "")


def test_one_stale_variant_fails_the_whole_answer_rather_than_a_partial_sum():
    clock = FakeClock()
    store = store_with(outcome(DECODE, desired=5), outcome(PREFILL, desired=3), clock=clock, max_age_s=45)
    clock.t = T0 + 40
    store.record(report(outcome(DECODE, desired=6), outcome(PREFILL, desired=None, error="x"), at=T0 + 40))
    assert [i.value for i in lookup(store, "variant=llama-decode")] == [6.0]
    clock.t = T0 + 50
    with pytest.raises(ValueUnavailable, match="llama-prefill"):
        lookup(store, "")


def test_a_variant_no_longer_listed_is_forgotten():
    store = store_with(outcome(DECODE, desired=5), outcome(PREFILL, desired=3))
    store.record(report(outcome(DECODE, desired=5), at=T0 + 1))
    with pytest.raises(NoMatchingVariant):
        lookup(store, "variant=llama-prefill")


def test_a_failed_listing_forgets_nothing():
    store = store_with(outcome(DECODE, desired=5))
    store.record(report(at=T0 + 1, errors=("listing VariantAutoscalings: HTTP 503",)))
    assert [i.value for i in lookup(store, "")] == [5.0]


@pytest.mark.parametrize(
    ("metric", "signals"),
    [
        pytest.param("variant_completion_rate", VariantSignals.unknown("prometheus down"), id="load-missing-signals"),
        pytest.param("variant_completion_rate", VariantSignals(freshness=Freshness.STALE, completions_per_s=9.0),
                     id="load-from-stale-signals"),
        pytest.param("variant_admission_ratio", FRESH, id="admission-ratio-not-computed"),
        pytest.param("variant_predicted_load", FRESH, id="prediction-not-computed"),
        pytest.param("variant_rejection_threshold", FRESH, id="threshold-not-computed"),
    ],
)
def test_a_value_the_decision_does_not_carry_is_unavailable(metric, signals):
    store = store_with(outcome(DECODE, desired=5, signals=signals))
    with pytest.raises(ValueUnavailable, match="no value"):
        lookup(store, "", metric)


def test_the_decision_is_served_even_when_signals_were_missing():
    store = store_with(outcome(DECODE, desired=2, signals=VariantSignals.unknown("prometheus down")))
    assert [i.value for i in lookup(store, "")] == [2.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("llama", "llama", id="plain"),
        pytest.param("meta-llama/Llama-3.1-8B", "meta-llama_Llama-3.1-8B", id="slash"),
        pytest.param("/weird:model/", "weird_model", id="edges-stripped"),
        pytest.param("x" * 80, "x" * 63, id="truncated-to-63"),
    ],
)
def test_label_values_are_valid_kubernetes_label_values(text, expected):
    assert label_value(text) == expected


def test_max_age_must_be_positive():
    with pytest.raises(ValueError, match="max_age_s"):
        DecisionStore(max_age_s=0, clock=FakeClock())


def _outlook(model: str, *, unserved: float = 0.0):
    from autoscaler.core.admission import AdmissionDecision, RejectionPolicy
    from autoscaler.core.plan import ModelOutlook

    admission = AdmissionDecision(
        policy=RejectionPolicy.PREDICTIVE, prefill_load=0.4, decode_load_now=0.7, decode_load_at_horizon=1.3,
        horizon_s=0.5, predicted_running=120.0, decode_capacity=100.0, reject_threshold=0.9, admit=False,
        admission_ratio=0.6, prescale_decode=True, decode_replicas_needed=3, reason="test")
    return ModelOutlook(model=model, observed_rps=10.0, demand_rps=12.0, forecast_method="holt",
                        mean_input_tokens=1000.0, mean_output_tokens=200.0, unserved_rps=unserved,
                        admission=admission)


@pytest.mark.parametrize(
    ("metric", "ref", "expected"),
    [
        pytest.param("variant_admission_ratio", "llama-decode", 0.6, id="admission-ratio"),
        pytest.param("variant_predicted_load", "llama-prefill", 0.4, id="prefill-load"),
        pytest.param("variant_predicted_load", "llama-decode", 1.3, id="decode-load-at-horizon"),
        pytest.param("variant_model_demand", "llama-decode", 12.0, id="sized-demand"),
        pytest.param("variant_rejection_threshold", "llama-prefill", 0.9, id="rejection-threshold"),
    ],
)
def test_the_models_outlook_is_served_per_variant(metric, ref, expected):
    store = DecisionStore(max_age_s=45.0, clock=FakeClock())
    rep = report(outcome(DECODE, desired=4), outcome(PREFILL, desired=3))
    store.record(CycleReport(rep.cycle, rep.started_at, rep.duration_s, rep.outcomes, rep.errors,
                             outlooks={DECODE.model: _outlook(DECODE.model)}))
    assert [i.value for i in lookup(store, f"variant={ref}", metric)] == [pytest.approx(expected)]


def test_unserved_demand_lowers_the_admission_ratio_further():
    store = DecisionStore(max_age_s=45.0, clock=FakeClock())
    rep = report(outcome(DECODE, desired=4))
    store.record(CycleReport(rep.cycle, rep.started_at, rep.duration_s, rep.outcomes, rep.errors,
                             outlooks={DECODE.model: _outlook(DECODE.model, unserved=6.0)}))
    assert [i.value for i in lookup(store, "", "variant_admission_ratio")] == [pytest.approx(0.5)]
