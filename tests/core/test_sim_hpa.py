"""The HPA baseline follows Kubernetes' algorithm: usage ratio with tolerance, missing pods, stabilisation
windows and the default rate limits (100% or 4 pods per 15 s up, 300 s window down)."""

from __future__ import annotations

import pytest

from autoscaler.sim.hpa import HpaBehavior, HpaState, hpa_step, pod_metric_replicas


@pytest.mark.parametrize(("current", "values", "target", "missing", "expected"), [
    pytest.param(4, [2.1, 2.1, 2.1, 2.1], 2.0, 0, 4, id="within-tolerance-holds"),
    pytest.param(2, [4.0, 4.0], 2.0, 0, 4, id="twice-the-target-doubles"),
    pytest.param(4, [0.5, 0.5, 0.5, 0.5], 2.0, 0, 1, id="a-quarter-of-the-target-quarters"),
    pytest.param(3, [3.0, 3.0, 3.0], 2.0, 0, 5, id="rounds-up"),
    pytest.param(4, [4.0, 4.0], 2.0, 2, 4, id="missing-pods-count-zero-on-scale-up"),
    pytest.param(4, [0.0, 0.0], 2.0, 2, 2, id="missing-pods-count-the-target-on-scale-down"),
    pytest.param(4, [2.5, 2.5], 2.0, 2, 4, id="missing-pods-that-flip-the-direction-hold"),
    pytest.param(5, [], 2.0, 0, 5, id="no-metrics-holds"),
])
def test_replica_count_follows_the_hpa_usage_ratio(current, values, target, missing, expected):
    assert pod_metric_replicas(current=current, values=values, target=target, missing=missing) == expected


def test_a_target_of_zero_is_refused():
    with pytest.raises(ValueError, match="target"):
        pod_metric_replicas(current=1, values=[1.0], target=0.0, missing=0)


@pytest.mark.parametrize(("current", "desired", "expected"), [
    pytest.param(2, 20, 6, id="four-pods-beat-doubling-when-small"),
    pytest.param(10, 50, 20, id="doubling-beats-four-pods-when-large"),
    pytest.param(3, 4, 4, id="within-the-limits"),
    pytest.param(60, 100, 64, id="clamped-to-max"),
])
def test_scale_up_is_limited_to_the_larger_of_100_percent_and_4_pods_per_15_s(current, desired, expected):
    value = hpa_step(state=HpaState(), desired=desired, current=current, now=0.0, behavior=HpaBehavior(),
                     min_replicas=1, max_replicas=64)
    assert value == expected


def test_replicas_added_in_the_last_15_s_count_against_the_next_scale_up():
    state, behavior = HpaState(), HpaBehavior()
    first = hpa_step(state=state, desired=20, current=2, now=0.0, behavior=behavior, min_replicas=1, max_replicas=64)
    held = hpa_step(state=state, desired=20, current=first, now=5.0, behavior=behavior, min_replicas=1,
                    max_replicas=64)
    later = hpa_step(state=state, desired=20, current=held, now=15.0, behavior=behavior, min_replicas=1,
                     max_replicas=64)
    assert (first, held, later) == (6, 6, 12)


def test_scale_down_waits_for_the_highest_recommendation_of_the_last_300_s():
    state, behavior = HpaState(), HpaBehavior()
    values = [hpa_step(state=state, desired=d, current=10, now=t, behavior=behavior, min_replicas=1,
                       max_replicas=64) for t, d in ((0.0, 10), (100.0, 2), (299.0, 2), (301.0, 2))]
    assert values == [10, 10, 10, 2]


def test_scale_up_is_not_stabilised_by_default():
    state = HpaState()
    hpa_step(state=state, desired=2, current=2, now=0.0, behavior=HpaBehavior(), min_replicas=1, max_replicas=64)
    assert hpa_step(state=state, desired=3, current=2, now=15.0, behavior=HpaBehavior(), min_replicas=1,
                    max_replicas=64) == 3


def test_never_below_the_minimum():
    assert hpa_step(state=HpaState(), desired=0, current=3, now=0.0, behavior=HpaBehavior(), min_replicas=2,
                    max_replicas=64) == 2
