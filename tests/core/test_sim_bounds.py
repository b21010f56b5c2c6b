"""The clairvoyant that pays start-up (autoscaler.sim.bounds): hand-computed cases, and agreement with an exhaustive
search over every multi-replica schedule on small cases (the per-level greedy is optimal)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.types import Role
from autoscaler.sim.bounds import clairvoyant_with_startup, replica_seconds_with_startup

# Intervals of 10 s and a start-up of 30 s unless a case says otherwise; the expected sums are worked per level.
CASES = [
    pytest.param([2, 2, 2, 2], 30.0, 80.0, id="constant-need-enters-warm-and-pays-no-start-up"),
    pytest.param([0, 0, 0], 30.0, 0.0, id="no-need-costs-nothing"),
    pytest.param([1, 1, 1, 1, 3, 1, 1], 30.0, 70.0 + 2 * (30 + 10), id="burst-shorter-than-start-up"),
    pytest.param([1, 1, 1, 1, 2, 2, 2, 2, 2, 1], 30.0, 100.0 + 30 + 50, id="burst-longer-than-start-up"),
    pytest.param([1, 2, 1], 30.0, 30.0 + 10 + 10, id="burst-sooner-than-start-up-pays-from-the-window-start"),
    pytest.param([1, 1, 1, 1, 2, 1, 2, 1], 30.0, 80.0 + (30 + 10) + (10 + 10),
                 id="two-bursts-with-a-gap-shorter-than-start-up-keep-the-replica"),
    pytest.param([1, 1, 1, 1, 2, 1, 1, 1, 1, 2], 30.0, 100.0 + (30 + 10) + (30 + 10),
                 id="two-bursts-with-a-gap-longer-than-start-up-re-add-it"),
    pytest.param([1, 1, 1, 1, 2, 1, 1, 1, 2], 30.0, 90.0 + (30 + 10) + (30 + 10),
                 id="a-gap-equal-to-start-up-costs-the-same-either-way"),
    pytest.param([0, 0, 0, 0, 0, 1], 25.0, 25.0 + 10, id="start-up-off-the-interval-grid"),
    pytest.param([0, 0, 0, 0, 1, 1], 30.0, 30.0 + 20, id="a-need-after-an-empty-start-pays-start-up"),
]


@pytest.mark.parametrize(("needs", "startup_s", "expected"), CASES)
def test_charges_start_up_once_per_run_it_cannot_bridge(needs, startup_s, expected):
    assert replica_seconds_with_startup(needs=needs, interval_s=10.0, startup_s=startup_s) == pytest.approx(expected)


@pytest.mark.parametrize("needs", [
    pytest.param([3, 3, 3], id="flat"),
    pytest.param([1, 4, 0, 2, 2, 5, 1], id="bursty"),
    pytest.param([0, 0, 7], id="late"),
])
def test_without_start_up_equals_the_oracles_replica_seconds(needs):
    assert replica_seconds_with_startup(needs=needs, interval_s=15.0, startup_s=0.0) == pytest.approx(
        sum(needs) * 15.0)


@pytest.mark.parametrize(("needs", "end_s", "expected"), [
    pytest.param([1, 1, 1], 25.0, 25.0, id="last-interval-cut-short"),
    pytest.param([1, 1, 1], 30.0, 30.0, id="whole-last-interval"),
    pytest.param([1, 0, 2], 21.0, 10.0 + (10 + 1) + (20 + 1), id="a-run-in-the-cut-interval-still-pays-its-start-up"),
])
def test_the_measured_window_can_end_inside_the_last_interval(needs, end_s, expected):
    got = replica_seconds_with_startup(needs=needs, interval_s=10.0, startup_s=30.0, end_s=end_s)
    assert got == pytest.approx(expected)


def test_numpy_counts_are_whole_numbers_too():
    needs = np.array([1, 2, 1], dtype=np.int64)
    assert replica_seconds_with_startup(needs=list(needs), interval_s=10.0, startup_s=30.0) == pytest.approx(50.0)


def test_roles_add_up_in_gpu_hours_with_and_without_start_up():
    bound = clairvoyant_with_startup(needs={Role.PREFILL: [1, 1, 2, 1], Role.DECODE: [1, 1, 1, 1]},
                                     interval_s=15.0, startup_s=30.0, gpus_per_replica=4)
    prefill = 60.0 + (30.0 + 15.0)  # level 2 starts 30 s in: the whole start-up falls in the window
    assert bound.gpu_hours == pytest.approx((prefill + 60.0) * 4 / 3600)
    assert bound.gpu_hours_without_startup == pytest.approx((5 + 4) * 15.0 * 4 / 3600)
    assert bound.startup_s == 30.0


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"needs": [1, -1]}, r"needs\[1\] must be a whole number", id="negative-need"),
    pytest.param({"needs": [1, 1.5]}, r"needs\[1\] must be a whole number", id="fractional-need"),
    pytest.param({"needs": [1, True]}, r"needs\[1\] must be a whole number", id="boolean-need"),
    pytest.param({"interval_s": 0.0}, "interval_s must be", id="zero-interval"),
    pytest.param({"startup_s": -1.0}, "startup_s must be", id="negative-start-up"),
    pytest.param({"startup_s": float("nan")}, "startup_s must be", id="nan-start-up"),
    pytest.param({"end_s": 5.0}, r"end_s must fall in the last interval \(10, 20\]", id="end-before-last-interval"),
    pytest.param({"end_s": 21.0}, "end_s must fall", id="end-after-last-interval"),
])
def test_bad_input_is_refused_naming_the_field(kwargs, message):
    args = {"needs": [1, 1], "interval_s": 10.0, "startup_s": 30.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        replica_seconds_with_startup(**args)


def test_a_bad_role_need_or_gpu_count_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"needs\[decode\]\[0\]"):
        clairvoyant_with_startup(needs={Role.PREFILL: [1], Role.DECODE: [-2]}, interval_s=1.0, startup_s=0.0,
                                 gpus_per_replica=1)
    with pytest.raises(ValueError, match="gpus_per_replica"):
        clairvoyant_with_startup(needs={Role.PREFILL: [1]}, interval_s=1.0, startup_s=0.0, gpus_per_replica=0)


def _exhaustive_replica_steps(needs: tuple[int, ...], lead: int) -> int:
    """Fewest replica-steps of ANY schedule on a one-step grid: replicas (up to one more than the peak need, each
    with its own steps-until-ready) may be requested and released at every step; a replica requested at step i
    serves from step i + lead; ones requested before the window start it partly started, charged only from it."""
    cap = max(needs, default=0) + 1

    @functools.cache
    def best(i: int, state: tuple[int, ...]) -> float:
        if i == len(needs):
            return 0.0
        result = float("inf")
        kinds = sorted(set(state))
        for keeps in itertools.product(*(range(state.count(c) + 1) for c in kinds)):
            kept = [c for c, k in zip(kinds, keeps, strict=True) for _ in range(k)]
            for added in range(cap - len(kept) + 1):
                allocated = kept + [lead] * added
                if sum(c == 0 for c in allocated) < needs[i]:
                    continue
                later = tuple(sorted(max(c - 1, 0) for c in allocated))
                result = min(result, len(allocated) + best(i + 1, later))
        return result

    starts = (tuple(sorted(s)) for size in range(cap + 1)
              for s in itertools.combinations_with_replacement(range(lead + 1), size))
    return int(min(best(0, s) for s in starts))


@settings(max_examples=150, deadline=None)
@given(needs=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=7),
       lead=st.integers(min_value=0, max_value=3))
def test_the_per_level_greedy_matches_an_exhaustive_search_over_schedules(needs, lead):
    greedy = replica_seconds_with_startup(needs=needs, interval_s=1.0, startup_s=float(lead))
    assert greedy == _exhaustive_replica_steps(tuple(needs), lead)
