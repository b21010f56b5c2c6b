"""``load_scale``: N times the requests on the same clock, the rate curve multiplied minute by minute."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.traces import Trace, load_scale, read_trace

AZURE = Path(traces.__file__).parent / "data" / "traces" / "azure_llm_2023_conv.csv"


@pytest.fixture(scope="module")
def azure() -> Trace:
    return read_trace(AZURE)


def _per_minute(trace: Trace, minutes: int) -> np.ndarray:
    return np.bincount((trace.arrival_s // 60.0).astype(np.int64), minlength=minutes)


def test_times_four_keeps_the_duration_within_a_minute(azure):
    scaled = load_scale(azure, 4.0, seed=1)
    assert abs(scaled.duration_s - azure.duration_s) < 60.0
    assert scaled.arrival_s[0] >= 0.0
    assert np.all(np.diff(scaled.arrival_s) >= 0)


@pytest.mark.parametrize("factor", [pytest.param(4.0, id="whole"), pytest.param(2.5, id="fractional")])
def test_every_minute_carries_factor_times_its_requests(azure, factor):
    minutes = math.ceil(azure.duration_s / 60.0) + 1
    before = _per_minute(azure, minutes)
    after = _per_minute(load_scale(azure, factor, seed=2), minutes)
    # whole copies are exact; the fractional copy draws each request with probability frac(factor)
    slack = 0 if factor.is_integer() else 4 * np.sqrt(before * (factor % 1) * (1 - factor % 1)) + 1
    assert np.all(np.abs(after - factor * before) <= slack)
    assert len(load_scale(azure, factor, seed=2)) == pytest.approx(factor * len(azure), rel=0.01)


def test_lengths_come_from_the_same_minutes_mix(azure):
    scaled = load_scale(azure, 3.0, seed=3)
    for minute in (0, 17, 42):
        own = azure.arrival_s // 60.0 == minute
        pairs = set(zip(azure.input_tokens[own].tolist(), azure.output_tokens[own].tolist(), strict=True))
        copies = scaled.arrival_s // 60.0 == minute
        drawn = set(zip(scaled.input_tokens[copies].tolist(), scaled.output_tokens[copies].tolist(), strict=True))
        assert drawn <= pairs


def test_the_seed_changes_the_copies_and_fixes_them(azure):
    a, b, c = (load_scale(azure, 4.0, seed=s) for s in (1, 2, 1))
    assert not np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.arrival_s, c.arrival_s) and np.array_equal(a.input_tokens, c.input_tokens)


def test_factor_one_returns_the_same_trace(azure):
    assert load_scale(azure, 1.0, seed=5) is azure


def test_sub_second_burstiness_falls_as_users_superpose(azure):
    # relative spread of per-second counts: independent copies average out, aligned ones would not
    def spread(trace: Trace) -> float:
        counts = np.bincount(trace.arrival_s.astype(np.int64))
        return float(counts.std() / counts.mean())

    assert spread(load_scale(azure, 16.0, seed=6)) < 0.6 * spread(azure)


@pytest.mark.parametrize("factor", [0.0, -1.0, math.inf, math.nan])
def test_a_factor_not_finite_and_positive_is_refused_naming_it(azure, factor):
    with pytest.raises(ValueError, match="factor"):
        load_scale(azure, factor, seed=0)
