import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from autoscaler.core.schedule import (
    Schedule,
    ScheduledBounds,
    ScheduleWindow,
    apply_schedule,
    scheduled_bounds,
)

PARIS = "Europe/Paris"
WEEKDAYS = frozenset(range(5))


def at(zone: str, *args: int) -> float:
    """Epoch seconds of a local wall-clock time in ``zone``."""
    return dt.datetime(*args, tzinfo=ZoneInfo(zone)).timestamp()


def hours(h: float) -> int:
    return int(h * 3600)


BUSINESS = ScheduleWindow(days=WEEKDAYS, start_s=hours(8), end_s=hours(20), min_replicas=4, name="business")
NIGHT = ScheduleWindow(days=frozenset({4}), start_s=hours(22), end_s=hours(6), max_replicas=1, name="friday-night")


@pytest.mark.parametrize(
    ("windows", "now", "expected"),
    [
        pytest.param((BUSINESS,), at(PARIS, 2026, 3, 2, 9, 0), ScheduledBounds(4, None, ("business",)),
                     id="monday-morning-raises-min"),
        pytest.param((BUSINESS,), at(PARIS, 2026, 3, 2, 7, 59), ScheduledBounds(), id="before-start-nothing"),
        pytest.param((BUSINESS,), at(PARIS, 2026, 3, 2, 20, 0), ScheduledBounds(), id="end-is-exclusive"),
        pytest.param((BUSINESS,), at(PARIS, 2026, 3, 7, 12, 0), ScheduledBounds(), id="saturday-nothing"),
        pytest.param((NIGHT,), at(PARIS, 2026, 3, 6, 23, 0), ScheduledBounds(None, 1, ("friday-night",)),
                     id="overnight-evening-part"),
        pytest.param((NIGHT,), at(PARIS, 2026, 3, 7, 3, 0), ScheduledBounds(None, 1, ("friday-night",)),
                     id="overnight-runs-into-saturday"),
        pytest.param((NIGHT,), at(PARIS, 2026, 3, 6, 3, 0), ScheduledBounds(), id="overnight-not-from-thursday"),
        pytest.param((BUSINESS, ScheduleWindow(days=WEEKDAYS, start_s=hours(8), end_s=hours(10), min_replicas=6,
                                               max_replicas=8, name="peak")),
                     at(PARIS, 2026, 3, 2, 9, 0), ScheduledBounds(6, 8, ("business", "peak")),
                     id="overlap-takes-the-strictest"),
    ],
)
def test_windows_apply_in_local_time(windows, now, expected):
    assert scheduled_bounds(schedule=Schedule(PARIS, windows), now=now) == expected


def test_windows_follow_daylight_saving_time():
    schedule = Schedule(PARIS, (ScheduleWindow(days=frozenset(range(7)), start_s=hours(8), end_s=hours(9),
                                               min_replicas=2),))
    winter = dt.datetime(2026, 1, 15, 7, 30, tzinfo=dt.UTC).timestamp()  # 08:30 in Paris (UTC+1)
    summer = dt.datetime(2026, 7, 15, 7, 30, tzinfo=dt.UTC).timestamp()  # 09:30 in Paris (UTC+2)
    assert scheduled_bounds(schedule=schedule, now=winter).min_replicas == 2
    assert scheduled_bounds(schedule=schedule, now=summer).min_replicas is None


def test_no_schedule_imposes_nothing():
    assert scheduled_bounds(schedule=None, now=0.0) == ScheduledBounds()


@pytest.mark.parametrize(
    ("low", "high", "bounds", "expected"),
    [
        pytest.param(1, 8, ScheduledBounds(4, None), (4, 8), id="raises-min"),
        pytest.param(1, 8, ScheduledBounds(None, 2), (1, 2), id="lowers-max"),
        pytest.param(1, 6, ScheduledBounds(10, None), (6, 6), id="min-above-max-stops-at-max"),
        pytest.param(2, 6, ScheduledBounds(None, 0), (0, 0), id="max-below-min-wins"),
        pytest.param(1, 8, ScheduledBounds(None, 12), (1, 8), id="looser-max-changes-nothing"),
    ],
)
def test_schedule_bounds_combine_with_the_variants_own(low, high, bounds, expected):
    assert apply_schedule(min_replicas=low, max_replicas=high, bounds=bounds) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"days": frozenset()}, "days", id="no-days"),
        pytest.param({"days": frozenset({7})}, "days", id="day-out-of-range"),
        pytest.param({"days": WEEKDAYS}, "min_replicas, max_replicas or both", id="no-bound"),
        pytest.param({"days": WEEKDAYS, "min_replicas": 5, "max_replicas": 2}, "must be <=", id="min-above-max"),
        pytest.param({"days": WEEKDAYS, "start_s": 90000, "min_replicas": 1}, "start_s", id="start-past-midnight"),
    ],
)
def test_rejects_inconsistent_windows(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduleWindow(**kwargs)


def test_rejects_an_unknown_time_zone():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        Schedule("Mars/Olympus", (BUSINESS,))
