"""Replay a trace through the simulated cluster under one policy: the loop that moves simulated time.

Every ``Scenario.run_tick_s`` the cluster steps; every ``Scenario.interval_s`` the policy's control cycle runs first
(on the simulated clock). Deterministic: the trace, the scenario and the policy's own seed fix every result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.adapters import SimClock, SimScaler, SimSignalSource, SimVariantSource, variant_specs
from autoscaler.sim.cluster import SimCluster, ttft_and_itl
from autoscaler.sim.scenario import OBSERVE_S, WARMUP_HEAD_S, Scenario, kv_bytes_per_token, resolve_profile
from autoscaler.sim.sizing import Sizing, feasible, mix_of, size_pools
from autoscaler.traces import Trace, window

__all__ = ["RunResult", "SimContext", "SimPolicy", "Timeline", "simulate", "warm_start_sizing", "with_warmup"]

GIVE_UP_CHECK_S = 300.0  # how often a replay with a miss budget counts its certain misses
WARM_START_S = 300.0  # every dynamic policy starts sized for the first five minutes, as if already running
DEFAULT_KV_BYTES_PER_TOKEN = 131072  # Llama-3.1-8B BF16, when a profile file does not say


@dataclass
class SimContext:
    """What a policy may use: the ports of the control loop, and (for the clairvoyant model and best-static's
    search only) the trace itself."""

    cluster: SimCluster
    scenario: Scenario
    profile: PerformanceProfile
    trace: Trace
    clock: SimClock
    variants: SimVariantSource
    signals: SimSignalSource
    scaler: SimScaler
    live_from_s: float = 0.0
    """Before this time a policy with memory only observes (dry-run): it enters the trace in steady state."""
    measured_from_s: float = 0.0
    """Where the trace proper starts in ``trace`` (after the warm-up copy): what a policy that replays the trace
    itself (``best-static``'s search) cuts off to get the trace it is measured on."""


class SimPolicy(Protocol):
    """A scaling policy plugged into the simulator."""

    name: str
    instant_capacity: bool
    """True for the clairvoyant model: nodes and pods are ready the moment they are asked for."""

    def initial(self, ctx: SimContext) -> Sizing | None:
        """Replicas at time 0 (None: the common warm start)."""
        ...

    def start(self, ctx: SimContext) -> None: ...

    def cycle(self, now: float) -> None: ...


@dataclass
class Timeline:
    """Per control interval: load, replicas, GPUs and the latency of the requests arriving in it."""

    interval_s: float = 0.0
    t: list[float] = field(default_factory=list)
    arrivals_per_s: list[float] = field(default_factory=list)
    prefill_replicas: list[int] = field(default_factory=list)
    prefill_ready: list[int] = field(default_factory=list)
    decode_replicas: list[int] = field(default_factory=list)
    decode_ready: list[int] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    ttft_p90_s: list[float] = field(default_factory=list)
    itl_p90_s: list[float] = field(default_factory=list)
    attainment: list[float] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


@dataclass
class RunResult:
    policy: str
    gpu_hours: float
    cost: float
    ttft_attainment: float
    itl_attainment: float
    both_attainment: float
    rejected: int
    scale_actions: int
    requests: int
    retries: int
    unfinished: int
    simulated_s: float
    wall_s: float
    timeline: Timeline
    extra: dict[str, object] = field(default_factory=dict)
    cluster: SimCluster | None = None
    """The simulated cluster at the end (only when asked for: it holds every engine)."""
    measured: np.ndarray | None = None
    """Which requests of ``cluster.trace`` were measured (the warm-up copy is not), with ``cluster``."""

    def summary(self) -> dict[str, object]:
        """The fields of the ``simulate --json`` output for this policy."""
        out: dict[str, object] = {
            "gpu_hours": round(self.gpu_hours, 4), "cost": round(self.cost, 2),
            "ttft_attainment": round(self.ttft_attainment, 5), "itl_attainment": round(self.itl_attainment, 5),
            "attainment": round(self.both_attainment, 5), "rejected": self.rejected,
            "scale_actions": self.scale_actions, "retries": self.retries, "unfinished": self.unfinished,
            "wall_s": round(self.wall_s, 2),
        }
        out.update(self.extra)
        return out


def warm_start_sizing(*, trace: Trace, scenario: Scenario, profile: PerformanceProfile) -> Sizing:
    """The replicas the capacity model gives for the first five minutes of the trace."""
    end = min(WARM_START_S, max(trace.duration_s, 1.0))
    hi = int(np.searchsorted(trace.arrival_s, end, side="left"))
    mix = mix_of(trace.input_tokens[:hi], np.maximum(trace.output_tokens[:hi], 1), rate_rps=hi / end)
    return size_pools(mix=mix, rate_rps=hi / end, profile=profile, slo=scenario.slo,
                      min_replicas=scenario.min_replicas, max_replicas=scenario.max_replicas)


def with_warmup(trace: Trace, warmup_s: float, *, grid_s: float,
                head_s: float = WARMUP_HEAD_S) -> tuple[Trace, int, float]:
    """The trace preceded by ``warmup_s`` seconds (in whole ``grid_s``) of copies of its first ``head_s`` (at most
    its length; the last copy cut short); returns (trace, warm-up requests, offset of the trace proper).

    Repeating the opening rather than copying a longer start keeps later events (a surge) out of the warm-up."""
    head_s = math.floor(min(head_s, warmup_s, trace.duration_s) / grid_s + 1e-9) * grid_s
    if head_s <= 0:
        return trace, 0, 0.0
    copies = math.ceil(math.floor(warmup_s / grid_s + 1e-9) * grid_s / head_s - 1e-9)
    warmup_s = math.floor(warmup_s / grid_s + 1e-9) * grid_s if copies > 1 else head_s
    parts = [window(trace, start_s=0.0, end_s=min(head_s, warmup_s - k * head_s)) for k in range(copies)]
    shifts = [k * head_s for k in range(copies)]
    hashes = None
    if trace.hash_ids is not None and all(p.hash_ids is not None for p in parts):
        hashes = tuple(h for p in parts for h in (p.hash_ids or ())) + trace.hash_ids
    extended = Trace(
        arrival_s=np.concatenate([*(p.arrival_s + s for p, s in zip(parts, shifts, strict=True)),
                                  trace.arrival_s + warmup_s]),
        input_tokens=np.concatenate([*(p.input_tokens for p in parts), trace.input_tokens]),
        output_tokens=np.concatenate([*(p.output_tokens for p in parts), trace.output_tokens]),
        hash_ids=hashes, start_epoch_s=trace.start_epoch_s, source=trace.source)
    return extended, sum(len(p) for p in parts), warmup_s


def simulate(
    trace: Trace,
    scenario: Scenario,
    policy: SimPolicy,
    *,
    profile: PerformanceProfile | None = None,
    progress: Callable[[float], None] | None = None,
    keep_cluster: bool = False,
    record_latencies: bool = False,
    miss_budget: float | None = None,
) -> RunResult:
    """Replay ``trace`` under ``policy``; ``progress`` gets the simulated seconds of the trace done so far.
    ``keep_cluster`` returns the cluster with the result; ``record_latencies`` keeps every decode step's ITL.

    ``miss_budget``: for a caller that only asks whether the attainment reaches a target (``best-static``'s
    search), the replay gives up as soon as more than this many measured requests have certainly missed an SLO
    (checked every simulated ``GIVE_UP_CHECK_S``), which makes the final attainment lower than
    ``1 - miss_budget / requests`` whatever follows. Such a result says ``gave_up_at_s`` in ``extra``; its
    ``both_attainment`` is then that upper bound, its other figures cover only the part replayed.

    A policy that has already made this very replay (``best-static``: its search replayed the fleet it chose, and
    replays are deterministic) hands it back from ``replayed()`` after ``initial``, and it is returned under the
    policy's name instead of being made twice.

    The run starts ``Scenario.warmup_s`` early on a copy of the trace's beginning, with the warm-start replicas
    and the control loop running, so that every policy is in its steady state (histories, forecasts, windows)
    when the trace proper starts; only the trace proper is measured (its requests, and GPU-seconds from its
    start).
    """
    started = time.perf_counter()
    profile = profile or resolve_profile(scenario.profile)
    run_scenario = scenario.without_delays() if policy.instant_capacity else scenario
    extended, skipped, offset = with_warmup(trace, scenario.warmup(profile, observe_s=OBSERVE_S),
                                            grid_s=scenario.interval_s)
    kv_bytes = kv_bytes_per_token(scenario.profile) or DEFAULT_KV_BYTES_PER_TOKEN
    truth = scenario.true_profile(profile)
    cluster = SimCluster(trace=extended, scenario=run_scenario, profile=truth, belief=profile,
                         kv_bytes_per_token=kv_bytes, record_latencies=record_latencies)
    specs = variant_specs(model=profile.model, accelerator=profile.accelerator,
                          min_replicas=scenario.min_replicas, max_replicas=scenario.max_replicas,
                          gpus_per_replica=profile.gpus_per_replica)
    clock = SimClock()
    ctx = SimContext(cluster=cluster, scenario=run_scenario, profile=profile, trace=extended, clock=clock,
                     variants=SimVariantSource(specs),
                     signals=SimSignalSource(cluster, window_s=scenario.rate_window_s), scaler=SimScaler(cluster),
                     measured_from_s=offset)

    sizing = policy.initial(ctx) or warm_start_sizing(trace=trace, scenario=scenario, profile=profile)
    made = getattr(policy, "replayed", None)
    done = made() if made is not None and not (keep_cluster or record_latencies) else None
    if done is not None:
        if progress is not None:
            progress(trace.duration_s)
        return replace(done, policy=policy.name, wall_s=time.perf_counter() - started, extra=dict(done.extra))
    for role in (Role.PREFILL, Role.DECODE):
        cluster.warm_start(role, sizing.of(role))
    policy.start(ctx)

    end = extended.duration_s + scenario.tail_s
    tick_s = scenario.run_tick_s
    ticks_per_cycle = round(scenario.interval_s / tick_s)
    # A policy whose own loop is faster than the control interval (Dynamo's 5 s load loop) says so with
    # ``cycle_s``; it runs on that grid (at most once per simulation step), the timeline stays on the interval's.
    cycle_s = getattr(policy, "cycle_s", None)
    ticks_per_policy = max(1, round(cycle_s / tick_s)) if cycle_s else ticks_per_cycle
    timeline = Timeline()
    gpu_seconds_before, actions_before, measuring = 0.0, 0, False
    # Signals of idle engines at time 0 say nothing: the loop starts once a rate window of traffic has passed,
    # observes for a scale-down window, then acts.
    control_from = min(math.ceil(scenario.rate_window_s / scenario.interval_s) * scenario.interval_s, offset)
    ctx.live_from_s = min(offset, control_from + OBSERVE_S)
    ticks_per_check = round(GIVE_UP_CHECK_S / tick_s)
    gave_up_at, misses, tally = None, 0, MissTally(first=skipped)
    tick = 0
    while True:
        now = tick * tick_s
        if now >= end or (now > extended.duration_s and cluster.arrived == len(extended) and cluster.idle()):
            break
        if not measuring and now >= offset - 1e-9:
            gpu_seconds_before, actions_before, measuring = cluster.gpu_seconds(), len(ctx.scaler.events), True
        acts, records = tick % ticks_per_policy == 0, tick % ticks_per_cycle == 0
        if (acts or records) and now >= control_from - 1e-9:
            clock.t = now
            if acts:
                policy.cycle(now)
                cluster.settle()
            if records and measuring:
                _record(timeline, cluster, now - offset)
                if progress is not None:
                    progress(now - offset)
        if miss_budget is not None and measuring and tick % ticks_per_check == 0:
            misses = tally.count(cluster, extended.arrival_s, now=now, scenario=scenario)
            if misses > miss_budget:
                gave_up_at = now - offset
                break
        cluster.step(now + tick_s)
        tick += 1
    finished_at = cluster.now
    measured = np.arange(len(extended)) >= skipped
    result = _result(policy.name, cluster=cluster, trace=extended, measured=measured, offset=offset,
                   scenario=scenario, profile=profile, timeline=timeline,
                   gpu_seconds=cluster.gpu_seconds(until=finished_at) - gpu_seconds_before,
                   scale_actions=len(ctx.scaler.events) - actions_before, finished_at=finished_at,
                   wall_s=time.perf_counter() - started, kv_bytes=kv_bytes)
    if gave_up_at is not None:
        n = max(result.requests, 1)
        result.both_attainment = 1.0 - misses / n
        result.extra["gave_up_at_s"] = gave_up_at
        result.extra["certain_misses"] = misses
    if keep_cluster:
        result.cluster, result.measured = cluster, measured
    return result


def certain_misses(cluster: SimCluster, arrival_s: np.ndarray, *, first: int, now: float, scenario: Scenario,
                   end: int | None = None) -> int:
    """Requests of index ``first`` to ``end`` (default: every arrived one) that have already missed an SLO for good
    at ``now``: rejected, first token later than the TTFT target, or finished with a mean ITL over it.

    The first token is known once the request finishes; before that it comes after the prefill pod's (a lower
    bound once prefilled) and, not yet prefilled, after ``now``: a request is late as soon as that bound is."""
    out = cluster.outcomes
    end = cluster.arrived if end is None else end
    if end <= first:
        return 0
    arrived = slice(first, end)
    prefilled = out.prefilled_s[arrived]
    first_token = out.first_token_s[arrived]
    earliest = np.where(np.isnan(first_token), np.where(np.isnan(prefilled), now, prefilled), first_token)
    late = earliest - arrival_s[arrived] > scenario.slo_ttft_s
    gaps = np.maximum(out.generated[arrived] - 1, 1)
    with np.errstate(invalid="ignore"):
        itl = (out.finish_s[arrived] - out.first_token_s[arrived]) / gaps
        slow = (out.generated[arrived] > 1) & (itl > scenario.slo_itl_s)  # NaN (unfinished) compares False
    return int((out.rejected[arrived] | late | slow).sum())


@dataclass
class MissTally:
    """:func:`certain_misses` from ``first`` on, counted as a replay goes: the requests that are done for good
    (finished or rejected) at the head are counted once and passed over, so each count looks only at the few
    still in flight and a check can be frequent even with millions of requests behind it."""

    first: int
    done_misses: int = 0

    def count(self, cluster: SimCluster, arrival_s: np.ndarray, *, now: float, scenario: Scenario) -> int:
        out, end = cluster.outcomes, cluster.arrived
        if end > self.first:
            head = slice(self.first, end)
            done = out.rejected[head] | ~np.isnan(out.finish_s[head])
            settled = self.first + (int(np.argmin(done)) if not done.all() else end - self.first)
            self.done_misses += certain_misses(cluster, arrival_s, first=self.first, now=now, scenario=scenario,
                                               end=settled)
            self.first = settled
        return self.done_misses + certain_misses(cluster, arrival_s, first=self.first, now=now, scenario=scenario)


def _record(timeline: Timeline, cluster: SimCluster, t: float) -> None:
    timeline.t.append(t)
    for role, total, ready in ((Role.PREFILL, timeline.prefill_replicas, timeline.prefill_ready),
                               (Role.DECODE, timeline.decode_replicas, timeline.decode_ready)):
        total.append(cluster.replicas(role))
        ready.append(cluster.replica_counts(role).ready)
    timeline.gpus.append(cluster.gpus_allocated())


def _result(name: str, *, cluster: SimCluster, trace: Trace, measured: np.ndarray, offset: float,
            scenario: Scenario, profile: PerformanceProfile, timeline: Timeline, gpu_seconds: float,
            scale_actions: int, finished_at: float, wall_s: float, kv_bytes: int) -> RunResult:
    out = cluster.outcomes
    ttft, itl = ttft_and_itl(out, trace.arrival_s)
    ttft_ok = np.nan_to_num(ttft, nan=math.inf) <= scenario.slo_ttft_s
    itl_ok = np.nan_to_num(itl, nan=math.inf) <= scenario.slo_itl_s
    both = ttft_ok & itl_ok
    n = int(measured.sum())
    prompts, outputs = trace.input_tokens[measured], np.maximum(trace.output_tokens[measured], 1)
    transfer = scenario.kv_latency_s + prompts * kv_bytes / scenario.kv_bandwidth_bytes_per_s
    # Feasible on the engine the pods really run: a request no fleet could serve within the SLO is the ceiling.
    ok = feasible(prompts, outputs, profile=scenario.true_profile(profile), slo=scenario.slo, transfer_s=transfer)
    _fill_latency(timeline, arrival_s=trace.arrival_s[measured] - offset, ttft=ttft[measured], itl=itl[measured],
                  both=both[measured], rejected=out.rejected[measured], interval=scenario.interval_s)

    def share(flags: np.ndarray) -> float:
        return float(flags[measured].mean()) if n else 1.0

    return RunResult(
        policy=name,
        gpu_hours=gpu_seconds / 3600.0,
        cost=gpu_seconds / 3600.0 * profile.cost_per_gpu_hour,
        ttft_attainment=share(ttft_ok),
        itl_attainment=share(itl_ok),
        both_attainment=share(both),
        rejected=int(out.rejected[measured].sum()),
        scale_actions=scale_actions,
        requests=n,
        retries=int(out.retries[measured].sum()),
        unfinished=int((~out.rejected & np.isnan(out.finish_s))[measured].sum()),
        simulated_s=finished_at - offset,
        wall_s=wall_s,
        timeline=timeline,
        extra={"feasible_fraction": round(float(ok.mean()), 5) if n else 1.0},
    )


def _fill_latency(timeline: Timeline, *, arrival_s: np.ndarray, ttft: np.ndarray, itl: np.ndarray,
                  both: np.ndarray, rejected: np.ndarray, interval: float) -> None:
    steps = len(timeline.t)
    timeline.interval_s = interval
    index = np.minimum((arrival_s // interval).astype(np.int64), max(steps - 1, 0))
    # Requests grouped by interval once (a stable sort), then each interval reads its slice: a two-day replay has
    # 11,520 intervals and millions of requests, too many to scan the whole trace per interval.
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(steps + 1), side="left")
    ttft, itl, both, rejected = ttft[order], itl[order], both[order], rejected[order]
    for i in range(steps):
        sel = slice(int(bounds[i]), int(bounds[i + 1]))
        count = sel.stop - sel.start
        timeline.arrivals_per_s.append(count / interval)
        timeline.rejected.append(int(rejected[sel].sum()))
        served = ttft[sel][~np.isnan(ttft[sel])]
        timeline.ttft_p90_s.append(float(np.quantile(served, 0.9)) if served.size else math.nan)
        served_itl = itl[sel][~np.isnan(itl[sel])]
        timeline.itl_p90_s.append(float(np.quantile(served_itl, 0.9)) if served_itl.size else math.nan)
        timeline.attainment.append(float(both[sel].mean()) if count else math.nan)
