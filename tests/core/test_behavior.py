import pytest

from autoscaler.core.behavior import Behavior, Recommendation, clamp, rate_limit, stabilise
from autoscaler.core.types import Reason


def hist(*pairs: tuple[float, int]) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(t, r) for t, r in pairs)


@pytest.mark.parametrize(
    ("recommended", "current", "history", "behavior", "expected", "reason"),
    [
        pytest.param(2, 5, hist((50, 5), (80, 4)), Behavior(scale_down_window_s=60), 5,
                     Reason.SCALE_DOWN_STABILISED, id="down-takes-highest-in-window"),
        pytest.param(2, 5, hist((10, 5), (60, 4)), Behavior(scale_down_window_s=60), 4,
                     Reason.SCALE_DOWN_STABILISED, id="entries-outside-window-forgotten"),
        pytest.param(2, 5, (), Behavior(scale_down_window_s=0), 2, Reason.DESIRED_WITHIN_RANGE,
                     id="no-window-drops-at-once"),
        pytest.param(8, 4, hist((90, 5)), Behavior(scale_up_window_s=30), 5, Reason.SCALE_UP_STABILISED,
                     id="up-takes-lowest-in-window"),
        pytest.param(8, 4, hist((90, 3)), Behavior(scale_up_window_s=30), 4, Reason.SCALE_UP_STABILISED,
                     id="up-never-below-current"),
        pytest.param(8, 4, hist((90, 3)), Behavior(scale_up_window_s=0), 8, Reason.DESIRED_WITHIN_RANGE,
                     id="up-without-window-is-immediate"),
    ],
)
def test_stabilises_like_the_hpa(recommended, current, history, behavior, expected, reason):
    step, kept = stabilise(recommended=recommended, current=current, history=history, now=100.0, behavior=behavior)
    assert (step.replicas, step.reason) == (expected, reason)
    assert kept[-1] == Recommendation(100.0, recommended)


def test_history_is_pruned_to_the_longest_window_and_the_newest_entry_before_it():
    _, kept = stabilise(recommended=3, current=3, history=hist((0, 1), (50, 1), (95, 2)), now=100.0,
                        behavior=Behavior(scale_up_window_s=10, scale_down_window_s=20))
    assert [r.at for r in kept] == [50, 95, 100]


def test_flapping_recommendations_do_not_oscillate_replicas():
    behavior = Behavior(scale_down_window_s=60, max_step_down=1, max_step_up=0)
    current, history, seen = 4, (), []
    for i, rec in enumerate([6, 2, 6, 2, 6, 2, 6, 2]):
        step, history = stabilise(recommended=rec, current=current, history=history, now=i * 10.0,
                                  behavior=behavior)
        current = rate_limit(desired=step.replicas, current=current, behavior=behavior).replicas
        seen.append(current)
    assert seen == [6, 6, 6, 6, 6, 6, 6, 6]


@pytest.mark.parametrize(
    ("desired", "current", "behavior", "expected", "constrained"),
    [
        pytest.param(9, 3, Behavior(max_step_up=2), 5, True, id="up-limited"),
        pytest.param(9, 3, Behavior(max_step_up=0), 9, False, id="up-unbounded"),
        pytest.param(1, 5, Behavior(max_step_down=1), 4, True, id="down-limited"),
        pytest.param(4, 5, Behavior(max_step_down=1), 4, False, id="down-within-step"),
    ],
)
def test_rate_limits_steps(desired, current, behavior, expected, constrained):
    step = rate_limit(desired=desired, current=current, behavior=behavior)
    assert (step.replicas, step.constrained) == (expected, constrained)


@pytest.mark.parametrize(
    ("desired", "expected", "reason"),
    [
        pytest.param(0, 1, Reason.TOO_FEW_REPLICAS, id="raised-to-min"),
        pytest.param(20, 8, Reason.TOO_MANY_REPLICAS, id="lowered-to-max"),
        pytest.param(5, 5, Reason.DESIRED_WITHIN_RANGE, id="in-range"),
    ],
)
def test_clamps_to_bounds(desired, expected, reason):
    step = clamp(desired=desired, min_replicas=1, max_replicas=8)
    assert (step.replicas, step.reason) == (expected, reason)


def test_rejects_negative_behavior_values():
    with pytest.raises(ValueError, match="max_step_up"):
        Behavior(max_step_up=-1)


def test_a_ready_replica_is_held_for_the_lead_time_when_it_is_longer_than_the_scale_down_window():
    # Recommended 7 at t=0, 6 since: after the 300 s window, before the 1020 s lead time.
    history = hist((0, 7), (200, 6), (400, 6))
    step, kept = stabilise(recommended=6, current=7, history=history, now=600.0,
                           behavior=Behavior(scale_down_window_s=300), ready=7, lead_s=1020.0)
    assert (step.replicas, step.reason) == (7, Reason.SCALE_DOWN_STABILISED)
    assert kept[0] == Recommendation(0, 7)  # the history is kept for the lead time, not the window alone
    later, _ = stabilise(recommended=6, current=7, history=kept, now=1100.0,
                         behavior=Behavior(scale_down_window_s=300), ready=7, lead_s=1020.0)
    assert later.replicas == 6


def test_a_replica_not_ready_yet_goes_after_the_scale_down_window_whatever_the_lead_time():
    # 8 replicas, 6 ready: the two starting ones serve nothing; only the 300 s window holds them.
    history = hist((0, 8), (200, 6), (400, 6))
    step, _ = stabilise(recommended=6, current=8, history=history, now=600.0,
                        behavior=Behavior(scale_down_window_s=300), ready=6, lead_s=1020.0)
    assert step.replicas == 6


def test_without_a_lead_time_the_scale_down_window_alone_holds_ready_replicas():
    history = hist((0, 7), (200, 6), (400, 6))
    step, _ = stabilise(recommended=6, current=7, history=history, now=600.0,
                        behavior=Behavior(scale_down_window_s=300), ready=7)
    assert step.replicas == 6
