"""Baseline policies in the simulator, each a :class:`autoscaler.sim.runner.SimPolicy`.

- ``static-peak``: provisioned once for the busiest minute of the trace (the capacity model on that minute's
  actual requests), never changed.
- ``hpa-tuned``: two Kubernetes HPAs (:mod:`autoscaler.sim.hpa`), prefill on requests waiting per pod, decode
  on KV-cache use, with targets and behaviour from a sweep (:data:`HPA_TUNED_PREFILL_QUEUE_TARGET` and below).
- ``hpa-queue-naive`` / ``hpa-kv-naive``: one metric and target on both pools, the HPA's default behaviour.
- ``wva``, ``dynamo``, ``best-static``: :mod:`autoscaler.sim.wva`, :mod:`autoscaler.sim.dynamo`,
  :mod:`autoscaler.sim.best_static`.
- ``saturation``: see :mod:`autoscaler.sim.controlled` (the product's controller, reactive only).
- ``clairvoyant-model``: knows each control interval's actual requests and gets capacity at once, sized by the
  project's own capacity model: agreement with that model, not a bound (:class:`ClairvoyantModel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.saturation import SaturationThresholds
from autoscaler.core.types import Role
from autoscaler.perf.capacity import TrafficMix
from autoscaler.sim.hpa import (
    HpaBehavior,
    HpaPolicy,
    HpaRules,
    HpaState,
    PolicyKind,
    hpa_step,
    pod_metric_replicas,
)
from autoscaler.sim.runner import SimContext
from autoscaler.sim.sizing import Sizing, mix_of, size_pools, window_mixes
from autoscaler.traces import Trace

__all__ = ["ClairvoyantModel", "Fixed", "HpaPools", "StaticPeak", "hpa_naive", "hpa_tuned", "size_window"]

ROLES = (Role.PREFILL, Role.DECODE)


MIX_WINDOW_S = 300.0
"""The mix (prompt and output lengths) the clairvoyant model sizes an interval for is measured over this window centred
on it: a 15 s interval holds a few dozen requests, too few for a stable p90 prompt; the rate is the interval's."""


def size_window(ctx: SimContext, start: float, end: float, *, mix_window_s: float = MIX_WINDOW_S) -> Sizing:
    """The capacity model's replicas for the requests actually arriving in ``[start, end)``."""
    trace = ctx.trace
    mlo, mhi, rates = _windows(trace, np.array([start]), np.array([end]), mix_window_s=mix_window_s)
    a, b, rate = int(mlo[0]), int(mhi[0]), float(rates[0])
    return _sized(ctx, mix_of(trace.input_tokens[a:b], np.maximum(trace.output_tokens[a:b], 1), rate_rps=rate),
                  rate)


def _windows(trace: Trace, starts: np.ndarray, ends: np.ndarray, *,
             mix_window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window ``[start, end)``: the index range of the requests in its mix window (``mix_window_s`` wide,
    centred on it, never narrower than the window), and its arrival rate."""
    lo = np.searchsorted(trace.arrival_s, starts, side="left")
    hi = np.searchsorted(trace.arrival_s, ends, side="left")
    pad = np.maximum(0.0, (mix_window_s - (ends - starts)) / 2)
    mlo = np.searchsorted(trace.arrival_s, starts - pad, side="left")
    mhi = np.searchsorted(trace.arrival_s, ends + pad, side="left")
    return mlo, mhi, (hi - lo) / (ends - starts)


def _sized(ctx: SimContext, mix: TrafficMix | None, rate_rps: float) -> Sizing:
    s = ctx.scenario
    return size_pools(mix=mix, rate_rps=rate_rps, profile=ctx.profile, slo=s.slo, min_replicas=s.min_replicas,
                      max_replicas=s.max_replicas)


def _scale(ctx: SimContext, role: Role, replicas: int) -> None:
    ctx.scaler.scale(ctx.variants.specs[role], replicas)


@dataclass
class Fixed:
    """A fixed number of replicas per role, never changed (the theory check runs on it)."""

    prefill: int
    decode: int
    name: str = "fixed"
    instant_capacity: bool = False

    def initial(self, ctx: SimContext) -> Sizing:
        return Sizing(self.prefill, self.decode)

    def start(self, ctx: SimContext) -> None:
        pass

    def cycle(self, now: float) -> None:
        pass


@dataclass
class StaticPeak:
    """Sized once for the busiest ``window_s`` of the trace, per role."""

    window_s: float = 60.0
    name: str = "static-peak"
    instant_capacity: bool = False

    def initial(self, ctx: SimContext) -> Sizing:
        """Each window sized as :func:`size_window` sizes it with a trace-long mix window, the mixes taken all at
        once (:func:`window_mixes`: the same values, without a partition of millions of prompts per window)."""
        trace = ctx.trace
        whole = max(trace.duration_s, self.window_s)
        starts = np.arange(0.0, whole, self.window_s)
        mlo, mhi, rates = _windows(trace, starts, starts + self.window_s, mix_window_s=whole)
        mixes = window_mixes(trace.input_tokens, np.maximum(trace.output_tokens, 1), lo=mlo, hi=mhi, rates_rps=rates)
        sizes = [_sized(ctx, mix, rate) for mix, rate in zip(mixes, rates.tolist(), strict=True)]
        return Sizing(max(z.prefill for z in sizes), max(z.decode for z in sizes))

    def start(self, ctx: SimContext) -> None:
        pass

    def cycle(self, now: float) -> None:
        pass


HPA_TUNED_PREFILL_QUEUE_TARGET = 2.0
HPA_TUNED_DECODE_KV_TARGET = 0.6
HPA_TUNED_UP = HpaRules(60.0, (HpaPolicy(PolicyKind.PODS, 2, 30.0),))
HPA_TUNED_DOWN = HpaRules(600.0, (HpaPolicy(PolicyKind.PODS, 1, 60.0),))
"""``hpa-tuned``'s targets and behaviour. Chosen by ``benchmarks/sweep_hpa.py`` (result:
``benchmarks/results/sweep_hpa.json``, rule and choice in its ``chosen`` entry): the cheapest of its 16 settings
whose attainment is within 0.5 point of the best setting's on every tuning trace."""


@dataclass
class HpaPools:
    """One Kubernetes HPA per pool (:mod:`autoscaler.sim.hpa`), each on a per-pod vLLM metric with an
    ``AverageValue`` target: ``queue`` (``vllm:num_requests_waiting``) or ``kv`` (``vllm:kv_cache_usage_perc``).

    ``metrics`` maps each role to (metric, target); ``behavior`` is each HPA's ``spec.behavior``. The sync period
    is the scenario's control interval (15 s, the HPA's default). Pods that have no node yet are Pending (ignored,
    or 0 on a scale-up); pods on a node but not ready have no metric (missing), as the custom metrics API serves
    them (vLLM exports metrics once it serves)."""

    metrics: dict[Role, tuple[str, float]]
    behavior: HpaBehavior = field(default_factory=HpaBehavior)
    name: str = "hpa"
    instant_capacity: bool = False
    _ctx: SimContext | None = field(default=None, init=False, repr=False)
    _states: dict[Role, HpaState] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for role, (metric, target) in self.metrics.items():
            if metric not in ("queue", "kv"):
                raise ValueError(f"metric for {role.value} must be 'queue' or 'kv', got {metric!r}")
            if not target > 0:
                raise ValueError(f"target for {role.value} must be > 0, got {target!r}")

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx
        self._states = {role: HpaState() for role in ROLES}

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None
        for role in ROLES:
            metric, target = self.metrics[role]
            engines = [p.engine for p in ctx.cluster.pools[role].pods if p.engine is not None]
            stats = [e.snapshot() for e in engines]
            values = [float(s.waiting) if metric == "queue" else s.kv_usage for s in stats]
            counts = ctx.cluster.replica_counts(role)
            current = ctx.cluster.replicas(role)
            desired = pod_metric_replicas(current=current, values=values, target=target,
                                          missing=counts.starting, pending=counts.unschedulable)
            spec = ctx.variants.specs[role]
            if now < ctx.live_from_s - 1e-9:  # observing: recommendations are remembered, nothing is scaled
                self._states[role].recommendations.append((now, desired))
                continue
            value = hpa_step(state=self._states[role], desired=desired, current=current, now=now,
                             behavior=self.behavior, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
            _scale(ctx, role, value)


def hpa_tuned(*, prefill_queue_target: float = HPA_TUNED_PREFILL_QUEUE_TARGET,
              decode_kv_target: float = HPA_TUNED_DECODE_KV_TARGET, up: HpaRules = HPA_TUNED_UP,
              down: HpaRules = HPA_TUNED_DOWN, name: str = "hpa-tuned") -> HpaPools:
    """Two HPAs as an operator sets them: prefill on requests waiting per pod, decode on KV-cache use."""
    return HpaPools(metrics={Role.PREFILL: ("queue", prefill_queue_target), Role.DECODE: ("kv", decode_kv_target)},
                    behavior=HpaBehavior(up=up, down=down), name=name)


def hpa_naive(metric: str) -> HpaPools:
    """The same metric and target on both pools with the HPA's default behaviour (+100% or +4 pods per 15 s):
    what a first HPA looks like, kept to show why it is not a baseline (``hpa-queue-naive``, ``hpa-kv-naive``).
    Targets are the saturation policy's high thresholds."""
    thresholds = SaturationThresholds()
    target = thresholds.queue_per_replica_high if metric == "queue" else thresholds.kv_high
    return HpaPools(metrics={role: (metric, target) for role in ROLES}, name=f"hpa-{metric}-naive")


@dataclass
class ClairvoyantModel:
    """``clairvoyant-model``: each control interval, the fewest replicas *the project's own capacity model* gives
    for that interval's actual traffic, with capacity that arrives at once.

    It is not a bound: it measures agreement with our capacity model, which is neither exact (other policies can
    spend fewer GPU-hours and attain more) nor independent of the ``default`` policy (which plans with the same
    model). No headline divides by it."""

    name: str = "clairvoyant-model"
    instant_capacity: bool = True
    _ctx: SimContext | None = field(default=None, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing:
        return size_window(ctx, 0.0, ctx.scenario.interval_s)

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None
        sizing = size_window(ctx, now, now + ctx.scenario.interval_s)
        for role in ROLES:
            _scale(ctx, role, sizing.of(role))
