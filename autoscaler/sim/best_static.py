"""``best-static``: the cheapest constant fleet (prefill, decode replicas) whose replay on the simulated engine
attains the feasible share minus a margin (0.5 point), found by search with the simulator in the loop.

The search (:func:`find_best_static`), assuming attainment does not fall when a pool grows:

1. start from the capacity model's busiest-minute fleet (``static-peak``) doubled, and double it (up to the
   scenario's bound) until it reaches the target; if even the bound does not, the bound is the answer (and says so);
2. binary search the fewest prefill replicas that reach the target with decode held at that generous count, then
   the fewest decode replicas with prefill held generous;
3. the pair of minima may miss the target together (each pool was sized with the other generous): grow whichever
   pool's next replica reaches the target at the fewer GPUs, until the pair does.

Every replay is cached in the process per (trace, scenario, profile, fleet), and the policy's own run is the
cached replay of the found fleet (replays are deterministic: the same result). About 2 * log2(bound) + a few replays
per trace: tens of seconds on the shipped one-hour traces. Once the target is known, a replay that only has to say
whether a fleet reaches it gives up as soon as more requests have certainly missed than the target allows
(``simulate``'s ``miss_budget``): a fleet too small for the day's first peak stops there.

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
    replays: int = 0
    """Replays the search made (a coarse search's and its settling's together); ``tried`` is the last stage's."""
    stopped_early: int = 0
    """Of those, replays that stopped once their fleet certainly missed the target."""


_CACHE: dict[tuple[object, ...], RunResult] = {}


def _key(trace: Trace, scenario: Scenario, profile: PerformanceProfile, p: int, d: int) -> tuple[object, ...]:
    fingerprint = (len(trace), float(trace.arrival_s[-1]) if len(trace) else 0.0,
                   int(trace.input_tokens.sum()), int(trace.output_tokens.sum()))
    return (fingerprint, scenario, repr(profile), p, d)


def replay_fixed(trace: Trace, scenario: Scenario, profile: PerformanceProfile, p: int, d: int, *,
                 target: float | None = None) -> RunResult:
    """The replay of ``trace`` on a fleet of ``p`` prefill and ``d`` decode replicas, cached. With ``target``
    (an attainment) the replay may stop once the fleet certainly misses it: its ``both_attainment`` is then an
    upper bound below ``target`` (``extra["gave_up_at_s"]`` says so), enough to decide and no more."""
    from autoscaler.sim.baselines import Fixed

    key = _key(trace, scenario, profile, p, d)
    budget = None if target is None else len(trace) * (1.0 - target)
    cached = _CACHE.get(key)
    if cached is None or (_gave_up(cached) and not (budget is not None and _misses(cached) > budget)):
        _CACHE[key] = simulate(trace, scenario, Fixed(prefill=p, decode=d), profile=profile, miss_budget=budget)
    return _CACHE[key]


def _gave_up(result: RunResult) -> bool:
    return "gave_up_at_s" in result.extra


def _misses(result: RunResult) -> int:
    return int(result.extra["certain_misses"])  # type: ignore[call-overload]


def find_best_static(trace: Trace, scenario: Scenario, profile: PerformanceProfile, *, start: Sizing,
                     margin: float = MARGIN) -> StaticSearch:
    """The cheapest (prefill, decode) reaching the feasible share minus ``margin`` (see the module docstring)."""
    bound = scenario.max_replicas
    low = max(scenario.min_replicas, 1)
    tried: dict[tuple[int, int], float] = {}

    gp, gd = min(bound, max(low, 2 * start.prefill)), min(bound, max(low, 2 * start.decode))
    first = replay_fixed(trace, scenario, profile, gp, gd)
    # The feasible share does not depend on the fleet: every replay reports the same one.
    target = float(first.extra["feasible_fraction"]) - margin  # type: ignore[arg-type]

    def attained(p: int, d: int) -> float:
        result = replay_fixed(trace, scenario, profile, p, d, target=target)
        tried[(p, d)] = result.both_attainment
        return result.both_attainment
    while attained(gp, gd) < target and (gp < bound or gd < bound):
        gp, gd = min(bound, 2 * gp), min(bound, 2 * gd)
    if tried[(gp, gd)] < target:
        return _found(Sizing(gp, gd), target, False, tried, (trace, scenario, profile))

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
    return _found(Sizing(p, d), target, True, tried, (trace, scenario, profile))


def find_best_static_fast(trace: Trace, scenario: Scenario, profile: PerformanceProfile, *, start: Sizing,
                          margin: float = MARGIN) -> StaticSearch:
    """:func:`find_best_static` searched on the coarse engine and settled on the scenario's own engine."""
    if scenario.engine_mode == "coarse":
        return find_best_static(trace, scenario, profile, start=start, margin=margin)
    rough = find_best_static(trace, replace(scenario, engine_mode="coarse"), profile, start=start, margin=margin)
    settled = _settle(trace, scenario, profile, rough, margin=margin)
    return replace(settled, replays=rough.replays + settled.replays,
                   stopped_early=rough.stopped_early + settled.stopped_early)


def _found(fleet: Sizing, target: float, reached: bool, tried: dict[tuple[int, int], float],
           replayed_on: tuple[Trace, Scenario, PerformanceProfile]) -> StaticSearch:
    stopped = sum(_gave_up(_CACHE[_key(*replayed_on, p, d)]) for p, d in tried)
    return StaticSearch(fleet, target, reached=reached, tried=tried, replays=len(tried), stopped_early=stopped)


def _settle(trace: Trace, scenario: Scenario, profile: PerformanceProfile, rough: StaticSearch, *,
            margin: float) -> StaticSearch:
    """From the coarse search's fleet, on ``scenario``'s own engine: grow by single replicas until the target is
    reached, then drop single replicas while it still is."""
    bound, low = scenario.max_replicas, max(scenario.min_replicas, 1)
    tried: dict[tuple[int, int], float] = {}

    p, d = rough.fleet.prefill, rough.fleet.decode
    target = float(replay_fixed(trace, scenario, profile, p, d).extra["feasible_fraction"]) - margin  # type: ignore[arg-type]

    def attained(p: int, d: int, *, full: bool = True) -> float:
        """``full``: the whole replay's attainment (growing compares misses' sizes); else only whether it
        reaches the target, and a replay may stop once it cannot."""
        result = replay_fixed(trace, scenario, profile, p, d, target=None if full else target)
        tried[(p, d)] = result.both_attainment
        return result.both_attainment

    while attained(p, d) < target and (p < bound or d < bound):
        options = [(attained(p + 1, d), p + 1, d)] if p < bound else []
        options += [(attained(p, d + 1), p, d + 1)] if d < bound else []
        _, p, d = max(options)
    if attained(p, d) < target:
        return _found(Sizing(p, d), target, False, tried, (trace, scenario, profile))
    shrunk = True
    while shrunk:
        shrunk = False
        for q, e in ((p - 1, d), (p, d - 1)):
            if q >= low and e >= low and attained(q, e, full=False) >= target:
                p, d, shrunk = q, e, True
                break
    return _found(Sizing(p, d), target, True, tried, (trace, scenario, profile))


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
    _replay_key: tuple[object, ...] | None = field(default=None, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing:
        from autoscaler.sim.baselines import StaticPeak

        trace = _trace_proper(ctx)
        if self.near is not None:
            self.search = _settle(trace, ctx.scenario, ctx.profile, StaticSearch(self.near, 0.0, reached=False),
                                  margin=self.margin)
        else:
            self.search = find_best_static_fast(trace, ctx.scenario, ctx.profile, start=StaticPeak().initial(ctx),
                                                margin=self.margin)
        fleet = self.search.fleet
        self._replay_key = _key(trace, ctx.scenario, ctx.profile, fleet.prefill, fleet.decode)
        return fleet

    def replayed(self) -> RunResult | None:
        """The search's replay of the chosen fleet: the policy's own run, already made (see ``simulate``)."""
        result = _CACHE.get(self._replay_key) if self._replay_key is not None else None
        if result is None or _gave_up(result) or self.search is None:
            return None
        # what the search cost, in the run's JSON: replays made, and how many stopped early
        return replace(result, extra={**result.extra, "search_replays": self.search.replays,
                                      "search_replays_stopped_early": self.search.stopped_early})

    def start(self, ctx: SimContext) -> None:
        pass

    def cycle(self, now: float) -> None:
        pass

