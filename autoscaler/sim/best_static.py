"""``best-static``: the cheapest constant fleet (prefill, decode replicas) whose replay on the simulated engine
attains the feasible share minus a margin (0.5 point), found by search with the simulator in the loop.

The search (:func:`find_best_static`), assuming attainment does not fall when a pool grows:

1. start from the capacity model's busiest-minute fleet (``static-peak``) doubled, and double it (up to the
   scenario's bound) until it reaches the target; if even the bound does not, the bound is the answer (and says so);
2. binary search the fewest prefill replicas that reach the target with decode held at that generous count, then
   the fewest decode replicas with prefill held generous;
3. the pair of minima may miss the target together (each pool was sized with the other generous): grow whichever
   pool's next replica reaches the target at the fewer GPUs, until the pair does.

Every replay is cached in the process per (trace, scenario, profile, fleet); the policy's own run is one more
replay of the found fleet (the same result: replays are deterministic). About 2 * log2(bound) + a few replays per
trace: tens of seconds on the shipped one-hour traces.

On the per-step engine the search runs first on the coarse engine (4-5x faster, validated against the per-step
engine within 0.3 point and 3% GPU-hours, ``tests/core/test_sim_coarse.py``), then :func:`_settle` checks the
found fleet on the per-step engine itself and moves it by single replicas until it is the cheapest there that
reaches the target among its neighbours: the answer is always judged by the engine the policies run on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.runner import RunResult, SimContext, simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.sizing import Sizing
from autoscaler.traces import Trace, window

__all__ = ["BestStatic", "StaticSearch", "find_best_static", "find_best_static_fast"]

MARGIN = 0.005
"""The target is the feasible share minus this (half a point): the cheapest fleet close to the ceiling."""


@dataclass
class StaticSearch:
    """The found fleet, whether it reaches the target, and every replay tried (fleet -> attainment)."""

    fleet: Sizing
    target: float
    reached: bool
    tried: dict[tuple[int, int], float] = field(default_factory=dict)


_CACHE: dict[tuple[object, ...], RunResult] = {}


def _key(trace: Trace, scenario: Scenario, profile: PerformanceProfile, p: int, d: int) -> tuple[object, ...]:
    fingerprint = (len(trace), float(trace.arrival_s[-1]) if len(trace) else 0.0,
                   int(trace.input_tokens.sum()), int(trace.output_tokens.sum()))
    return (fingerprint, scenario, repr(profile), p, d)


def replay_fixed(trace: Trace, scenario: Scenario, profile: PerformanceProfile, p: int, d: int) -> RunResult:
    """The replay of ``trace`` on a fleet of ``p`` prefill and ``d`` decode replicas, cached."""
    from autoscaler.sim.baselines import Fixed

    key = _key(trace, scenario, profile, p, d)
    if key not in _CACHE:
        _CACHE[key] = simulate(trace, scenario, Fixed(prefill=p, decode=d), profile=profile)
    return _CACHE[key]


def find_best_static(trace: Trace, scenario: Scenario, profile: PerformanceProfile, *, start: Sizing,
                     margin: float = MARGIN) -> StaticSearch:
    """The cheapest (prefill, decode) reaching the feasible share minus ``margin`` (see the module docstring)."""
    bound = scenario.max_replicas
    low = max(scenario.min_replicas, 1)
    tried: dict[tuple[int, int], float] = {}

    def attained(p: int, d: int) -> float:
        result = replay_fixed(trace, scenario, profile, p, d)
        tried[(p, d)] = result.both_attainment
        return result.both_attainment

    gp, gd = min(bound, max(low, 2 * start.prefill)), min(bound, max(low, 2 * start.decode))
    first = replay_fixed(trace, scenario, profile, gp, gd)
    # The feasible share does not depend on the fleet: every replay reports the same one.
    target = float(first.extra["feasible_fraction"]) - margin  # type: ignore[arg-type]
    while attained(gp, gd) < target and (gp < bound or gd < bound):
        gp, gd = min(bound, 2 * gp), min(bound, 2 * gd)
    if tried[(gp, gd)] < target:
        return StaticSearch(Sizing(gp, gd), target, reached=False, tried=tried)

    def fewest(ok: Callable[[int], bool], hi: int) -> int:
        lo = low
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi

    p = fewest(lambda n: attained(n, gd) >= target, gp)
    d = fewest(lambda n: attained(gp, n) >= target, gd)
    while attained(p, d) < target:
        up_p = attained(p + 1, d) >= target if p < gp else False
        up_d = attained(p, d + 1) >= target if d < gd else False
        if up_p:  # both pools' replicas cost the same GPUs: either single step is as cheap
            p += 1
        elif up_d:
            d += 1
        else:
            p, d = min(gp, p + 1), min(gd, d + 1)
    return StaticSearch(Sizing(p, d), target, reached=True, tried=tried)


def find_best_static_fast(trace: Trace, scenario: Scenario, profile: PerformanceProfile, *, start: Sizing,
                          margin: float = MARGIN) -> StaticSearch:
    """:func:`find_best_static` searched on the coarse engine and settled on the scenario's own engine."""
    if scenario.engine_mode == "coarse":
        return find_best_static(trace, scenario, profile, start=start, margin=margin)
    rough = find_best_static(trace, replace(scenario, engine_mode="coarse"), profile, start=start, margin=margin)
    return _settle(trace, scenario, profile, rough, margin=margin)


def _settle(trace: Trace, scenario: Scenario, profile: PerformanceProfile, rough: StaticSearch, *,
            margin: float) -> StaticSearch:
    """From the coarse search's fleet, on ``scenario``'s own engine: grow by single replicas until the target is
    reached, then drop single replicas while it still is."""
    bound, low = scenario.max_replicas, max(scenario.min_replicas, 1)
    tried: dict[tuple[int, int], float] = {}

    def attained(p: int, d: int) -> float:
        if (p, d) not in tried:
            tried[(p, d)] = replay_fixed(trace, scenario, profile, p, d).both_attainment
        return tried[(p, d)]

    p, d = rough.fleet.prefill, rough.fleet.decode
    target = float(replay_fixed(trace, scenario, profile, p, d).extra["feasible_fraction"]) - margin  # type: ignore[arg-type]
    while attained(p, d) < target and (p < bound or d < bound):
        options = [(attained(p + 1, d), p + 1, d)] if p < bound else []
        options += [(attained(p, d + 1), p, d + 1)] if d < bound else []
        _, p, d = max(options)
    if attained(p, d) < target:
        return StaticSearch(Sizing(p, d), target, reached=False, tried=tried)
    shrunk = True
    while shrunk:
        shrunk = False
        for q, e in ((p - 1, d), (p, d - 1)):
            if q >= low and e >= low and attained(q, e) >= target:
                p, d, shrunk = q, e, True
                break
    return StaticSearch(Sizing(p, d), target, reached=True, tried=tried)


def _trace_proper(ctx: SimContext) -> Trace:
    """The trace the run is measured on: ``ctx.trace`` without its warm-up copy, rebased to 0."""
    end = float(ctx.trace.arrival_s[-1]) + 1.0 if len(ctx.trace) else ctx.measured_from_s
    return window(ctx.trace, start_s=ctx.measured_from_s, end_s=end)


@dataclass
class BestStatic:
    """A constant fleet, the cheapest that reaches the feasible share minus 0.5 point on this very replay."""

    margin: float = MARGIN
    near: Sizing | None = None
    """A fleet found on a similar trace (the previous bootstrap resample): the search then starts there and moves
    by single replicas on this replay's own engine (:func:`_settle`) instead of searching from the capacity model's
    peak; it finds the same fleet whenever the two traces' best fleets are neighbours (on the resamples of one
    trace, they are), for a few replays instead of tens."""
    name: str = "best-static"
    instant_capacity: bool = False
    search: StaticSearch | None = field(default=None, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing:
        from autoscaler.sim.baselines import StaticPeak

        trace = _trace_proper(ctx)
        if self.near is not None:
            self.search = _settle(trace, ctx.scenario, ctx.profile, StaticSearch(self.near, 0.0, reached=False),
                                  margin=self.margin)
        else:
            self.search = find_best_static_fast(trace, ctx.scenario, ctx.profile, start=StaticPeak().initial(ctx),
                                                margin=self.margin)
        return self.search.fleet

    def start(self, ctx: SimContext) -> None:
        pass

    def cycle(self, now: float) -> None:
        pass

