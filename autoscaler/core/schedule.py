"""Time-of-day bounds: a schedule that raises a variant's minimum or lowers its maximum in wall-clock windows.

AIBrix offers the same (scheduled min/max replicas); here a window is local time in a named time zone, so
"weekdays 08:00-20:00 Europe/Paris" follows daylight saving. ``now`` is passed in (epoch seconds); nothing here
reads a clock.

A window whose end is at or before its start runs overnight (``22:00``-``06:00`` belongs to the day it starts).
Where windows overlap the strictest wins: the largest minimum and the smallest maximum. Where the scheduled
minimum and maximum disagree with each other or with the variant's own bounds, maxima win over minima (a
maximum usually stands for a hard limit: a quota, a budget, a night-time shutdown).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DAYS", "Schedule", "ScheduleWindow", "ScheduledBounds", "apply_schedule", "scheduled_bounds"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
_DAY_S = 86400


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """Days (0 = Monday) and local times (seconds after midnight) during which the bounds apply."""

    days: frozenset[int]
    start_s: int = 0
    end_s: int = _DAY_S  # start 0, end 86400: the whole day
    min_replicas: int | None = None
    max_replicas: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise ValueError(f"days must be a non-empty subset of 0..6, got {sorted(self.days)}")
        if not (0 <= self.start_s < _DAY_S and 0 < self.end_s <= _DAY_S):
            raise ValueError(f"start_s must be in [0, 86400) and end_s in (0, 86400], got {self.start_s}, {self.end_s}")
        if self.min_replicas is None and self.max_replicas is None:
            raise ValueError("a window must set min_replicas, max_replicas or both")
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")

    def active(self, local: dt.datetime) -> bool:
        second = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        if self.start_s < self.end_s:
            return day in self.days and self.start_s <= second < self.end_s
        # Overnight: the evening part on a listed day, the morning part on the day after one.
        return (day in self.days and second >= self.start_s) or ((day - 1) % 7 in self.days and second < self.end_s)


@dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str
    windows: tuple[ScheduleWindow, ...]

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc

    def local(self, now: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(now, tz=ZoneInfo(self.timezone))  # ZoneInfo caches its instances


@dataclass(frozen=True, slots=True)
class ScheduledBounds:
    """What the schedule imposes at one instant; ``None`` = no window sets that bound now."""

    min_replicas: int | None = None
    max_replicas: int | None = None
    windows: tuple[str, ...] = ()  # names (or indexes) of the windows in force


def scheduled_bounds(*, schedule: Schedule | None, now: float) -> ScheduledBounds:
    """The bounds in force at ``now`` (epoch seconds)."""
    if schedule is None:
        return ScheduledBounds()
    local = schedule.local(now)
    mins, maxes, names = [], [], []
    for i, window in enumerate(schedule.windows):
        if window.active(local):
            names.append(window.name or f"window {i}")
            if window.min_replicas is not None:
                mins.append(window.min_replicas)
            if window.max_replicas is not None:
                maxes.append(window.max_replicas)
    return ScheduledBounds(max(mins) if mins else None, min(maxes) if maxes else None, tuple(names))


def apply_schedule(*, min_replicas: int, max_replicas: int, bounds: ScheduledBounds) -> tuple[int, int]:
    """The variant's bounds with the schedule applied; maxima win over minima."""
    high = max_replicas if bounds.max_replicas is None else min(max_replicas, bounds.max_replicas)
    low = min_replicas if bounds.min_replicas is None else max(min_replicas, bounds.min_replicas)
    return min(low, high), high
