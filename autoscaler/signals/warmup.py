"""Which pods are past their warm-up (pure).

A pod that has just started serves its first requests on cold paths (CUDA-graph and compile caches, an empty
prefix cache) and its rate windows straddle the start; its latencies say little about steady-state capacity,
so calibration leaves them out (Dynamo #12430). A pod is warming while younger than ``warmup_s``: its age comes
from ``process_start_time_seconds`` when the pod exports it, else from when this collector first saw it. After
a controller restart every pod without a start time counts as new again; that only delays calibration by one
warm-up, the cautious side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.signals.queries import SeriesKey

__all__ = ["PodCensus", "PodMemory", "PodSighting", "take_census"]


@dataclass(frozen=True, slots=True)
class PodSighting:
    first_seen: float
    last_seen: float


PodMemory = Mapping[tuple[SeriesKey, str], PodSighting]


@dataclass(frozen=True, slots=True)
class PodCensus:
    warm: tuple[str, ...] = ()
    warming: tuple[str, ...] = ()


def take_census(
    ages: Mapping[SeriesKey, Mapping[str, float | None]],
    *,
    memory: PodMemory,
    now: float,
    warmup_s: float,
    forget_after_s: float = 600.0,
) -> tuple[dict[SeriesKey, PodCensus], dict[tuple[SeriesKey, str], PodSighting]]:
    """Split each variant's pods into warm and warming; return the sightings to remember for next time.

    Sightings of pods not seen for ``forget_after_s`` are forgotten, so memory follows the live fleet, while
    a pod gone for a scrape gap or two is not counted as new when it reappears.
    """
    remembered = {k: v for k, v in memory.items() if now - v.last_seen <= forget_after_s}
    census: dict[SeriesKey, PodCensus] = {}
    for key, pods in ages.items():
        warm: list[str] = []
        warming: list[str] = []
        for pod, age in sorted(pods.items()):
            seen = remembered.get((key, pod))
            first = seen.first_seen if seen is not None else now
            remembered[(key, pod)] = PodSighting(first_seen=first, last_seen=now)
            known_age = age if age is not None else now - first
            (warming if known_age < warmup_s else warm).append(pod)
        census[key] = PodCensus(warm=tuple(warm), warming=tuple(warming))
    return census, remembered
