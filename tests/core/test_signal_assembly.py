import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.signals.assemble import assemble, parse_vector
from autoscaler.signals.queries import SIGNALS, LabelMap, build_queries

LABELS = LabelMap()
NOW = 1_000.0


def spec(name: str = "d", role: Role = Role.DECODE) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", name), model="m", role=role, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", name))


def series(value: str, role: str = "decode", **extra: str) -> dict:
    metric = {"namespace": "ns", "model_name": "m", "role": role, "accelerator": "H100", **extra}
    return {"metric": metric, "value": [NOW, value]}


def full_outcomes(**values: str) -> dict:
    base = {s.name: [series("1")] for s in SIGNALS}
    base["newest_sample"] = [series(str(NOW - 2))]
    for name, value in values.items():
        base[name] = value if not isinstance(value, str) else [series(value)]
    return base


def test_builds_one_query_per_signal_grouped_by_mapped_labels():
    queries = build_queries(LabelMap(namespace="ns", model="model", role="llm_d_role", accelerator="gpu"), "2m")
    assert set(queries) == {s.name for s in SIGNALS}
    assert "sum by (ns, model, llm_d_role, gpu) (vllm:num_requests_waiting)" == queries["waiting"]
    assert "[2m]" in queries["ttft_p90_s"] and ", le)" in queries["ttft_p90_s"]


def test_fresh_signals_are_assembled_per_variant():
    out = assemble(variants=[spec()], outcomes=full_outcomes(waiting="7", kv_usage_mean="0.5"), labels=LABELS,
                   now=NOW, staleness_s=30)
    sig = out[spec()]
    assert (sig.freshness, sig.waiting, sig.kv_usage_mean) == (Freshness.FRESH, 7.0, 0.5)


def test_failed_query_is_unknown_not_zero():
    out = assemble(variants=[spec()], outcomes=full_outcomes(waiting=SignalError("connection refused")),
                   labels=LABELS, now=NOW, staleness_s=30)
    sig = out[spec()]
    assert sig.freshness is Freshness.MISSING and sig.waiting is None and "connection refused" in sig.note


def test_variant_without_series_is_missing():
    out = assemble(variants=[spec(role=Role.PREFILL)], outcomes=full_outcomes(), labels=LABELS, now=NOW,
                   staleness_s=30)
    assert out[spec(role=Role.PREFILL)].freshness is Freshness.MISSING


def test_old_samples_are_stale():
    out = assemble(variants=[spec()], outcomes=full_outcomes(newest_sample=str(NOW - 120)), labels=LABELS,
                   now=NOW, staleness_s=30)
    assert out[spec()].freshness is Freshness.STALE


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf", "not-a-number"])
def test_non_finite_samples_are_unknown(raw):
    out = assemble(variants=[spec()], outcomes=full_outcomes(kv_usage_mean=raw), labels=LABELS, now=NOW,
                   staleness_s=30)
    assert out[spec()].kv_usage_mean is None and out[spec()].freshness is Freshness.MISSING


def test_duplicate_series_are_summed_for_totals_and_averaged_for_ratios():
    waiting = parse_vector([series("3", pod="a"), series("4", pod="b")], labels=LABELS, signal="waiting")
    kv = parse_vector([series("0.2", pod="a"), series("0.6", pod="b")], labels=LABELS, signal="kv_usage_mean")
    key = ("ns", "m", "decode", "H100")
    assert waiting[key] == 7 and math.isclose(kv[key], 0.4)


hostile_item = st.one_of(
    st.none(), st.integers(), st.text(max_size=5),
    st.fixed_dictionaries({"metric": st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4))),
                           "value": st.one_of(st.none(), st.lists(st.one_of(st.floats(), st.text(max_size=6)),
                                                                  max_size=3))}),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(hostile_item, max_size=6), st.none(), st.text(max_size=5), st.dictionaries(st.text(), st.integers())))
def test_hostile_responses_never_crash_and_never_scale_down(result):
    outcomes = full_outcomes()
    outcomes["waiting"] = result
    out = assemble(variants=[spec()], outcomes=outcomes, labels=LABELS, now=NOW, staleness_s=30)
    sig = out[spec()]
    assert sig.waiting is None or math.isfinite(sig.waiting)
    if sig.waiting is None:
        assert sig.freshness is not Freshness.FRESH
