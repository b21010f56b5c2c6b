"""The window means online calibration reads (ITL, batch, KV, prefill time, E[prompt^2]), as assembled."""

from __future__ import annotations

import math

import pytest

from autoscaler.core.types import Freshness
from autoscaler.signals.histogram import bucket_moments
from tests.core.test_signal_assembly import buckets, full_outcomes, one


@pytest.mark.parametrize(("values", "expected"), [
    pytest.param({"itl_sum_per_s": "3", "itl_count_per_s": "200"}, {"itl_mean_s": 0.015, "decoding": 3.0},
                 id="itl-mean-and-time-averaged-batch"),
    pytest.param({"itl_sum_per_s": "0", "itl_count_per_s": "0"}, {"itl_mean_s": None, "decoding": 0.0},
                 id="no-token-in-the-window-is-no-latency-not-zero"),
    pytest.param({"prefill_time_sum_per_s": "0.5", "prefill_time_count_per_s": "4"},
                 {"prefill_time_mean_s": 0.125}, id="prefill-time-mean"),
    pytest.param({"prefill_time_sum_per_s": "NaN", "prefill_time_count_per_s": "4"},
                 {"prefill_time_mean_s": None}, id="nan-prefill-time"),
    pytest.param({"kv_window_sum": "0.9"}, {"kv_usage_window_mean": 0.45}, id="kv-window-mean-over-engines"),
    pytest.param({"kv_window_sum": "90"}, {"kv_usage_window_mean": None}, id="percent-scaled-kv-rejected"),
])
def test_calibration_inputs_are_window_means(values, expected):
    sig = one(full_outcomes(**values))
    assert sig.freshness is Freshness.FRESH
    assert {name: getattr(sig, name) for name in expected} == pytest.approx(expected)


def test_calibration_inputs_failing_leave_the_variant_fresh_and_the_input_unknown():
    sig = one(full_outcomes(itl_sum_per_s=RuntimeError("timeout")))
    assert sig.freshness is Freshness.FRESH and sig.decoding is None and sig.itl_mean_s is None


def test_prompt_second_moment_is_the_bucket_estimate_rescaled_to_the_exact_mean():
    # 4 prompts/s, all in (1000, 2000], mean exactly 1024 (sum rate 4096).
    sig = one(full_outcomes(prompt_len_sum_per_s="4096", prompt_len_count_per_s="4",
                            prompt_len_buckets=buckets(("1000", "0"), ("2000", "4"), ("+Inf", "4"))))
    assert sig.prompt_tokens_mean == 1024
    assert sig.prompt_tokens_sq_mean == pytest.approx(1024**2, rel=0.05)


@pytest.mark.parametrize(("histogram", "expected"), [
    pytest.param({10.0: 2.0, math.inf: 2.0}, (5.0, 100 / 3), id="one-bucket-uniform-from-zero"),
    pytest.param({10.0: 0.0, 20.0: 1.0, math.inf: 1.0}, (15.0, (100 + 200 + 400) / 3), id="second-bucket"),
    pytest.param({10.0: 1.0, math.inf: 2.0}, (7.5, (100 / 3 + 100) / 2), id="inf-bucket-at-its-lower-bound"),
    pytest.param({10.0: 0.0, math.inf: 0.0}, None, id="no-observations"),
    pytest.param({10.0: 3.0}, None, id="no-inf-bucket"),
    pytest.param({10.0: 3.0, 5.0: 1.0, math.inf: 3.0}, ((2.5 + 2 * 7.5) / 3, None), id="unsorted-input"),
])
def test_bucket_moments(histogram, expected):
    got = bucket_moments(histogram)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[0] == pytest.approx(expected[0])
        if expected[1] is not None:
            assert got[1] == pytest.approx(expected[1])
