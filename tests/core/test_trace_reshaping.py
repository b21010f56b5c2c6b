"""load_scale (more requests, same clock) and block_bootstrap (resamples of 1-minute blocks) on the shipped Azure
trace: what each keeps, what each changes, and that the seed decides the draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.traces import Trace, block_bootstrap, load_scale, read_trace

AZURE = Path(traces.__file__).parent / "data" / "traces" / "azure_llm_2023_conv.csv"


@pytest.fixture(scope="module")
def azure() -> Trace:
    return read_trace(AZURE)


def per_minute(trace: Trace) -> np.ndarray:
    return np.bincount((trace.arrival_s // 60).astype(np.int64))


def test_load_scale_4_keeps_the_duration_and_multiplies_every_minute_by_4(azure: Trace) -> None:
    scaled = load_scale(azure, 4.0, seed=0)
    assert scaled.duration_s == azure.duration_s
    assert len(scaled) == 4 * len(azure)
    np.testing.assert_array_equal(per_minute(scaled), 4 * per_minute(azure))
    assert np.all(np.diff(scaled.arrival_s) >= 0)


def test_a_fractional_load_scale_gives_floor_or_ceil_copies_per_request(azure: Trace) -> None:
    scaled = load_scale(azure, 2.5, seed=0)
    before, after = per_minute(azure), per_minute(scaled)
    assert np.all((after >= 2 * before) & (after <= 3 * before))
    assert len(scaled) / len(azure) == pytest.approx(2.5, abs=0.02)


def test_a_load_scale_below_one_thins_the_trace(azure: Trace) -> None:
    thinned = load_scale(azure, 0.5, seed=0)
    assert len(thinned) / len(azure) == pytest.approx(0.5, abs=0.02)
    assert set(thinned.arrival_s.tolist()) <= set(azure.arrival_s.tolist())  # kept requests keep their times


def test_load_scale_copies_take_their_lengths_from_the_same_minute(azure: Trace) -> None:
    scaled = load_scale(azure, 3.0, seed=1)
    minute_of = {"azure": (azure.arrival_s // 60).astype(int), "scaled": (scaled.arrival_s // 60).astype(int)}
    mix = {m: set(zip(azure.input_tokens[minute_of["azure"] == m].tolist(),
                      azure.output_tokens[minute_of["azure"] == m].tolist(), strict=True))
           for m in np.unique(minute_of["azure"])}
    for m in np.unique(minute_of["scaled"]):
        sel = minute_of["scaled"] == m
        drawn = set(zip(scaled.input_tokens[sel].tolist(), scaled.output_tokens[sel].tolist(), strict=True))
        assert drawn <= mix[m], f"minute {m} got lengths from another minute"


def test_load_scale_is_deterministic_for_a_seed_and_the_seed_changes_it(azure: Trace) -> None:
    one, again, other = (load_scale(azure, 2.0, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(one.arrival_s, again.arrival_s)
    assert not np.array_equal(one.arrival_s, other.arrival_s)


def test_load_scale_1_is_the_trace_itself(azure: Trace) -> None:
    same = load_scale(azure, 1.0, seed=3)
    np.testing.assert_array_equal(same.arrival_s, azure.arrival_s)
    np.testing.assert_array_equal(same.input_tokens, azure.input_tokens)


def test_a_block_bootstrap_lays_whole_minutes_of_the_trace_end_to_end(azure: Trace) -> None:
    resampled = block_bootstrap(azure, seed=0)
    minutes = len(per_minute(azure))
    assert len(per_minute(resampled)) <= minutes
    assert np.all(np.diff(resampled.arrival_s) >= 0)
    # Each block of the resample is one block of the trace: the same offsets within the minute, the same lengths.
    blocks = {}
    for m in range(minutes):
        sel = (azure.arrival_s // 60).astype(int) == m
        blocks[m] = (tuple(np.round(azure.arrival_s[sel] - 60 * m, 6)), tuple(azure.input_tokens[sel]))
    originals = set(blocks.values())
    drawn = []
    for m in range(len(per_minute(resampled))):
        sel = (resampled.arrival_s // 60).astype(int) == m
        block = (tuple(np.round(resampled.arrival_s[sel] - 60 * m, 6)), tuple(resampled.input_tokens[sel]))
        assert block in originals, f"block {m} is not a minute of the trace"
        drawn.append(block)
    assert len(set(drawn)) < len(drawn)  # drawn with replacement: some minute twice (all 59 distinct: ~1e-25)


def test_block_bootstrap_resamples_differ_by_seed_and_repeat_for_the_same_seed(azure: Trace) -> None:
    a, b, c = (block_bootstrap(azure, seed=seed) for seed in ((0, 0), (0, 0), (1, 0)))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_a_local_block_bootstrap_draws_each_minute_from_within_its_reach(azure: Trace) -> None:
    minutes = len(per_minute(azure))
    offsets = {}
    for m in range(minutes):
        sel = (azure.arrival_s // 60).astype(int) == m
        offsets[m] = (tuple(np.round(azure.arrival_s[sel] - 60 * m, 6)), tuple(azure.input_tokens[sel]))
    resampled = block_bootstrap(azure, seed=(0, 1), reach_s=300.0)
    moved = 0
    for m in range(len(per_minute(resampled))):
        sel = (resampled.arrival_s // 60).astype(int) == m
        block = (tuple(np.round(resampled.arrival_s[sel] - 60 * m, 6)), tuple(resampled.input_tokens[sel]))
        sources = [s for s in range(max(0, m - 5), min(minutes, m + 6)) if offsets[s] == block]
        assert sources, f"minute {m} is not one of the minutes within 5 of it"
        moved += m not in sources
    assert moved > minutes // 2  # it does resample (a minute stays put with chance 1/11)


def test_a_local_block_bootstrap_of_reach_0_is_the_trace_itself(azure: Trace) -> None:
    same = block_bootstrap(azure, seed=4, reach_s=0.0)
    np.testing.assert_array_equal(same.arrival_s, azure.arrival_s)
    np.testing.assert_array_equal(same.output_tokens, azure.output_tokens)


def test_a_negative_reach_is_refused_naming_it(azure: Trace) -> None:
    with pytest.raises(ValueError, match="reach_s"):
        block_bootstrap(azure, seed=0, reach_s=-60.0)
