import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.signals.histogram import add_buckets, parse_le, quantile
from autoscaler.signals.parse import parse_buckets
from autoscaler.signals.queries import LabelMap

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        pytest.param(0.5, {0.1: 1, 0.5: 3, INF: 4}, 0.3, id="interpolates-inside-the-bucket"),
        pytest.param(0.25, {0.1: 2, 0.5: 3, INF: 4}, 0.05, id="lowest-bucket-starts-at-zero"),
        pytest.param(0.9, {0.1: 1, 0.5: 3, INF: 4}, 0.5, id="rank-in-inf-answers-highest-finite-bound"),
        pytest.param(0.5, {-1.0: 2, 1.0: 3, INF: 4}, -1.0, id="non-positive-lowest-bound-is-returned-as-is"),
        pytest.param(0.5, {0.1: 5, 0.5: 3, INF: 6}, 0.1 * 3 / 5, id="decreasing-counts-are-made-monotonic"),
        pytest.param(0.5, {0.1: 1, 0.5: 3}, None, id="no-inf-bucket"),
        pytest.param(0.5, {INF: 3}, None, id="fewer-than-two-buckets"),
        pytest.param(0.5, {0.1: 0, INF: 0}, None, id="no-observations"),
        pytest.param(0.5, {0.1: math.nan, 0.2: 1, INF: 2}, 0.2, id="non-finite-counts-are-ignored"),
    ],
)
def test_quantiles_follow_prometheus_histogram_quantile(q, buckets, expected):
    value = quantile(q, buckets)
    assert value == expected if expected is None else math.isclose(value, expected)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.5, 2.0])
def test_refuses_quantiles_outside_zero_one(q):
    with pytest.raises(ValueError, match="quantile"):
        quantile(q, {1.0: 1, INF: 1})


counts = st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=12)


@given(counts, st.floats(min_value=0.01, max_value=0.99), st.floats(min_value=0.01, max_value=0.99))
def test_quantiles_rise_with_q_and_stay_within_the_finite_bounds(increments, q1, q2):
    bounds = [0.1 * 2 ** i for i in range(len(increments))] + [INF]
    cumulative = [sum(increments[: i + 1]) for i in range(len(increments))]
    buckets = dict(zip(bounds, [*cumulative, cumulative[-1]]))
    low, high = quantile(min(q1, q2), buckets), quantile(max(q1, q2), buckets)
    if cumulative[-1] == 0:
        assert low is None and high is None
    else:
        assert 0 <= low <= high <= bounds[-2]


def test_adding_histograms_adds_bucket_by_bucket():
    assert add_buckets([{0.1: 1, INF: 2}, {0.1: 3, 0.5: 4, INF: 5}]) == {0.1: 4, 0.5: 4, INF: 7}


@pytest.mark.parametrize(("raw", "bound"), [("0.25", 0.25), ("+Inf", INF), ("1e3", 1000.0), ("NaN", None),
                                            ("x", None), (None, None), (5, None)])
def test_le_labels(raw, bound):
    assert parse_le(raw) == bound


def test_bucket_series_are_parsed_per_variant_and_bound():
    metric = {"namespace": "ns", "model_name": "m", "role": "decode", "accelerator": "H100"}
    result = [
        {"metric": {**metric, "le": "0.1"}, "value": [1, "2"]},
        {"metric": {**metric, "le": "0.1", "job": "dup"}, "value": [1, "1"]},  # same bound twice: added
        {"metric": {**metric, "le": "+Inf"}, "value": [1, "4"]},
        {"metric": {**metric, "le": "oops"}, "value": [1, "4"]},
        {"metric": {**metric, "le": "0.5"}, "value": [1, "-3"]},  # a negative rate means nothing
        {"metric": metric, "value": [1, "9"]},  # no le at all
    ]
    assert parse_buckets(result, key_of=LabelMap().key_of) == {("ns", "m", "decode", "H100"): {0.1: 3.0, INF: 4.0}}
