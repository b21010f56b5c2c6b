"""The clairvoyant that pays start-up: the fewest GPU-hours any policy can spend on a trace when it knows the
future but each replica it adds takes ``startup_s`` of paid GPU time before it is ready.

The oracle (:class:`autoscaler.sim.baselines.Oracle`) knows the future *and* gets capacity at once. In the
simulator (:mod:`autoscaler.sim.cluster`) a new replica's node is charged from the moment it is requested, through
the node delay and the pod delay, until it is released; with one replica per node and empty nodes released at once
(every benchmark scenario), a replica added at ``t`` costs ``gpus_per_replica * (release - t)`` and serves from
``t + node_delay + pod_delay``. This bound keeps the oracle's per-interval needs and charges that start-up.
It bounds what realising *those needs* costs, not what meeting the SLO costs: a policy may ride a short burst
out in its queue with fewer replicas than the oracle sizes that interval for, and then spends less than this.

Per replica level ``k`` (the k-th replica of a role), the intervals where ``need >= k`` form runs. One replica
serves the level: it starts ``startup_s`` before each run it cannot be kept through and is released at each run's
end unless the gap to the next run is shorter than ``startup_s`` (keeping it through a gap ``g`` costs ``g``,
re-adding costs ``startup_s``). Measurement starts at the trace's first interval (the runner measures GPU-seconds
from there; everything before is the unmeasured warm-up a policy enters warm from), so a run starting ``s``
seconds in pays ``min(startup_s, s)``: a run at the very start pays nothing, like the oracle's and every policy's
warm replicas.

Why the per-level greedy is optimal (the docstring of :func:`replica_seconds_with_startup` for one level):

- *Achievable*: one replica per level, each on its own level's schedule, together have ``>= need(t)`` ready at
  every ``t`` (level ``k`` is ready wherever ``need >= k``); replicas are interchangeable, so the costs add.
- *No schedule does better*: let ``m(t)`` be the replicas allocated (requested, not released) in a feasible
  schedule; its cost is ``integral m = sum_k |{t: m(t) >= k}|``. Take a maximal interval ``[u, v)`` of
  ``{m >= k}`` with ``u > 0`` and the first time ``s`` in it where ``need >= k``. Just before ``u`` at most
  ``k - 1`` replicas were allocated, and a replica's life is one interval, so at most ``k - 1`` of those ready at
  ``s`` predate ``u``; the ``k``-th was requested at or after ``u`` and is ready by ``s``: ``s - u >= startup_s``.
  So ``{m >= k}`` covers level ``k``'s runs with a start-up lead before each of its pieces: it *is* a one-replica
  schedule for level ``k``, which costs at least that level's optimum (a piece from the window's start costs at
  least ``s``, at least the clipped ``min(startup_s, s)``). Summing over ``k`` bounds the total.
  (The levels are independent because the sets ``{need >= k}`` nest: any ``m >= need`` covers every level.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoscaler.core.types import Role

__all__ = ["StartupBound", "clairvoyant_with_startup", "replica_seconds_with_startup"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class StartupBound:
    """GPU-hours of the clairvoyant that pays start-up, and of the same needs with capacity at once."""

    gpu_hours: float
    """Fewest GPU-hours of any schedule meeting every interval's need, each added replica paying ``startup_s``."""
    gpu_hours_without_startup: float
    """The same needs held with capacity at once (the oracle's replica-hours, drains excluded)."""
    startup_s: float
    """Request to ready of one added replica (node delay + pod delay)."""


def _check(*, needs: Sequence[int], interval_s: float, startup_s: float, end_s: float | None,
           name: str) -> float:
    """The measured window's end, after checking the arguments (errors name the field)."""
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval_s must be a finite number > 0, got {interval_s!r}")
    if not (math.isfinite(startup_s) and startup_s >= 0):
        raise ValueError(f"startup_s must be a finite number >= 0, got {startup_s!r}")
    for i, n in enumerate(needs):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"{name}[{i}] must be a whole number of replicas >= 0, got {n!r}")
    full = len(needs) * interval_s
    if end_s is None:
        return full
    if not (math.isfinite(end_s) and (len(needs) - 1) * interval_s < end_s <= full + _EPS):
        raise ValueError(f"end_s must fall in the last interval ({(len(needs) - 1) * interval_s:g}, {full:g}] "
                         f"of the {len(needs)} in {name}, got {end_s!r}")
    return end_s


def _runs(needs: Sequence[int], level: int) -> list[tuple[int, int]]:
    """[first, past-last) interval indices of each maximal run where ``needs >= level``."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i, n in enumerate(needs):
        if n >= level and start is None:
            start = i
        elif n < level and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(needs)))
    return runs


def replica_seconds_with_startup(*, needs: Sequence[int], interval_s: float, startup_s: float,
                                 end_s: float | None = None, name: str = "needs") -> float:
    """Fewest replica-seconds of any schedule with ``needs[i]`` replicas ready over each interval
    ``[i * interval_s, (i + 1) * interval_s)``, every replica added paying ``startup_s`` first.

    ``end_s`` cuts the last interval short (the measured window ended in it). For one level the cost is its runs'
    lengths, plus ``min(startup_s, s)`` for the first run (starting at ``s``), plus ``min(gap, startup_s)`` for
    each later run: bridging a gap and paying start-up again are the only choices, and each gap's choice is
    independent of the others (a later run starts after the gap, so its clipped start-up is the full
    ``startup_s`` whenever that is at most the gap).

    >>> replica_seconds_with_startup(needs=[1, 0, 1, 0, 0, 0, 1], interval_s=10.0, startup_s=25.0)
    65.0
    """
    end = _check(needs=needs, interval_s=interval_s, startup_s=startup_s, end_s=end_s, name=name)
    total = 0.0
    for level in range(1, max(needs, default=0) + 1):
        previous_end: float | None = None
        for first, past in _runs(needs, level):
            start, stop = first * interval_s, min(past * interval_s, end)
            if previous_end is None:
                total += min(startup_s, start)
            else:
                total += min(start - previous_end, startup_s)
            total += stop - start
            previous_end = stop
    return total


def clairvoyant_with_startup(*, needs: Mapping[Role, Sequence[int]], interval_s: float, startup_s: float,
                             gpus_per_replica: int, end_s: float | None = None) -> StartupBound:
    """The bound over every role's per-interval needs (roles are independent: replicas are not shared)."""
    if isinstance(gpus_per_replica, bool) or not isinstance(gpus_per_replica, numbers.Integral) or gpus_per_replica < 1:
        raise ValueError(f"gpus_per_replica must be a whole number >= 1, got {gpus_per_replica!r}")
    with_startup = without = 0.0
    for role, role_needs in needs.items():
        name = f"needs[{role.value}]"
        with_startup += replica_seconds_with_startup(needs=role_needs, interval_s=interval_s, startup_s=startup_s,
                                                     end_s=end_s, name=name)
        without += replica_seconds_with_startup(needs=role_needs, interval_s=interval_s, startup_s=0.0,
                                                end_s=end_s, name=name)
    return StartupBound(gpu_hours=with_startup * gpus_per_replica / 3600.0,
                        gpu_hours_without_startup=without * gpus_per_replica / 3600.0, startup_s=startup_s)
