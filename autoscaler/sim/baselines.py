"""Baseline policies in the simulator, each a :class:`autoscaler.sim.runner.SimPolicy`.

- ``static-peak``: provisioned once for the busiest minute of the trace (the capacity model on that minute's
  actual requests), never changed.
- ``hpa-queue`` / ``hpa-kv``: the Kubernetes HPA (:mod:`autoscaler.sim.hpa`) on each pod's
  ``vllm:num_requests_waiting`` or KV-cache usage, one HPA per variant, default behaviour, 15 s sync period.
  Targets are the saturation policy's high thresholds, so the two differ by algorithm, not by threshold.
- ``saturation``: see :mod:`autoscaler.sim.controlled` (the product's controller, reactive only).
- ``dynamo-style``: NVIDIA Dynamo's SLA planner: every adjustment interval it predicts the next interval's
  requests, prompt and output lengths (constant predictor: the last interval's), corrects its performance model
  by observed/expected TTFT and ITL, and sizes prefill by prompt tokens per second over a prefill replica's
  throughput and decode by output tokens per second over the best decode throughput that meets the corrected ITL
  (Dynamo docs, "SLA-based Planner", scaling algorithm). The performance "profile" it interpolates is our
  profile's roofline model; adjustment interval 60 s (Dynamo's planner test README states it as the default).
- ``oracle``: knows each control interval's actual requests and gets capacity at once: the capacity model's
  fewest replicas for that interval's traffic (a lower bound on GPU-hours, not on latency). It sizes with the
  capacity model rather than by searching the engine: since the model's prompt tail was bounded
  (``autoscaler.perf.capacity.PROMPT_SIGMA_CAP``) one prefill replica at the model's rate shows a p90 TTFT of
  0.79-1.07 of the target on the shipped traces' prompt mixes (0.39 on Mooncake synthetic), against 0.15-0.33
  before, so the model is close to the engine where it matters; a per-interval engine search would cost a
  replay per candidate count, and would still size from an empty start each interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.saturation import SaturationThresholds
from autoscaler.core.types import Role
from autoscaler.sim.hpa import HpaBehavior, HpaState, hpa_step, pod_metric_replicas
from autoscaler.sim.runner import SimContext
from autoscaler.sim.sizing import Sizing, mix_of, size_pools

__all__ = ["DynamoStyle", "Fixed", "HpaBaseline", "Oracle", "StaticPeak", "size_window"]

ROLES = (Role.PREFILL, Role.DECODE)


MIX_WINDOW_S = 300.0
"""The mix (prompt and output lengths) the oracle sizes an interval for is measured over this window centred
on it: a 15 s interval holds a few dozen requests, too few for a stable p90 prompt; the rate is the interval's."""


def size_window(ctx: SimContext, start: float, end: float, *, mix_window_s: float = MIX_WINDOW_S) -> Sizing:
    """The capacity model's replicas for the requests actually arriving in ``[start, end)``."""
    trace, s = ctx.trace, ctx.scenario
    lo, hi = np.searchsorted(trace.arrival_s, [start, end], side="left")
    pad = max(0.0, (mix_window_s - (end - start)) / 2)
    mlo, mhi = np.searchsorted(trace.arrival_s, [start - pad, end + pad], side="left")
    rate = float(hi - lo) / (end - start)
    mix = mix_of(trace.input_tokens[mlo:mhi], np.maximum(trace.output_tokens[mlo:mhi], 1), rate_rps=rate)
    return size_pools(mix=mix, rate_rps=rate, profile=ctx.profile, slo=s.slo, min_replicas=s.min_replicas,
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
        starts = np.arange(0.0, max(ctx.trace.duration_s, self.window_s), self.window_s)
        whole = max(ctx.trace.duration_s, self.window_s)
        sizes = [size_window(ctx, float(t), float(t) + self.window_s, mix_window_s=whole) for t in starts]
        return Sizing(max(z.prefill for z in sizes), max(z.decode for z in sizes))

    def start(self, ctx: SimContext) -> None:
        pass

    def cycle(self, now: float) -> None:
        pass


@dataclass
class HpaBaseline:
    """One HPA per variant on a per-pod vLLM metric (``queue``: requests waiting; ``kv``: KV-cache usage)."""

    metric: str = "queue"
    target: float | None = None
    behavior: HpaBehavior = field(default_factory=HpaBehavior)
    instant_capacity: bool = False
    name: str = ""
    _ctx: SimContext | None = field(default=None, init=False, repr=False)
    _states: dict[Role, HpaState] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in ("queue", "kv"):
            raise ValueError(f"metric must be 'queue' or 'kv', got {self.metric!r}")
        thresholds = SaturationThresholds()
        if self.target is None:
            self.target = thresholds.queue_per_replica_high if self.metric == "queue" else thresholds.kv_high
        self.name = self.name or f"hpa-{self.metric}"

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx
        self._states = {role: HpaState() for role in ROLES}

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None and self.target is not None
        for role in ROLES:
            engines = [p.engine for p in ctx.cluster.pools[role].pods if p.engine is not None]
            stats = [e.snapshot() for e in engines]
            values = [float(s.waiting) if self.metric == "queue" else s.kv_usage for s in stats]
            counts = ctx.cluster.replica_counts(role)
            current = ctx.cluster.replicas(role)
            desired = pod_metric_replicas(current=current, values=values, target=self.target,
                                          missing=counts.starting)
            spec = ctx.variants.specs[role]
            if now < ctx.live_from_s - 1e-9:  # observing: recommendations are remembered, nothing is scaled
                self._states[role].recommendations.append((now, desired))
                continue
            value = hpa_step(state=self._states[role], desired=desired, current=current, now=now,
                             behavior=self.behavior, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
            _scale(ctx, role, value)


@dataclass
class DynamoStyle:
    """Dynamo's SLA planner: predictive sizing of prefill by TTFT and decode by ITL each adjustment interval."""

    adjustment_interval_s: float = 60.0
    name: str = "dynamo-style"
    instant_capacity: bool = False
    _ctx: SimContext | None = field(default=None, init=False, repr=False)
    _last_at: float | None = field(default=None, init=False, repr=False)
    _last_arrived: int = field(default=0, init=False, repr=False)
    _p_correction: float = field(default=1.0, init=False, repr=False)
    _d_correction: float = field(default=1.0, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx
        self._last_at, self._last_arrived = 0.0, 0

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None and self._last_at is not None
        if now - self._last_at < self.adjustment_interval_s - 1e-9:
            return
        interval = now - self._last_at
        arrived = ctx.cluster.arrived
        num_req = arrived - self._last_arrived  # the frontend's request count over the interval
        self._last_at, self._last_arrived = now, arrived
        observed = self._frontend_metrics(now, interval)
        if observed is None or num_req == 0:
            return  # nothing observed: Dynamo skips the adjustment
        isl, osl, ttft, itl, duration = observed
        p, s = ctx.profile, ctx.scenario
        expected_ttft = p.prefill_time(isl) + math.ceil(isl / p.max_num_batched_tokens - 1) * p.prefill_a
        self._p_correction = ttft / expected_ttft if expected_ttft > 0 else 1.0
        decode_n = max(1, ctx.cluster.replica_counts(Role.DECODE).ready)
        concurrency = num_req / decode_n * duration / interval
        context = isl + osl / 2
        expected_itl = p.decode_step_time(max(concurrency, 1.0), context)
        self._d_correction = itl / expected_itl if expected_itl > 0 and itl > 0 else 1.0

        # Constant load predictor: the next interval looks like the last one.
        load_tokens = num_req * isl / interval * min(1.0, self._p_correction)
        prefill_per_gpu = isl / expected_ttft / p.gpus_per_replica
        prefill = math.ceil(load_tokens / prefill_per_gpu / p.gpus_per_replica)
        corrected_itl = s.slo_itl_s / self._d_correction
        decode_per_gpu = self._best_decode_throughput_per_gpu(corrected_itl, context)
        if decode_per_gpu <= 0:
            decode = s.max_replicas
        else:
            decode = math.ceil(num_req * osl / interval / decode_per_gpu / p.gpus_per_replica)
        for role, value in ((Role.PREFILL, prefill), (Role.DECODE, decode)):
            spec = ctx.variants.specs[role]
            _scale(ctx, role, min(spec.max_replicas, max(spec.min_replicas, value)))

    def _best_decode_throughput_per_gpu(self, itl: float, context: float) -> float:
        """Tokens/s per GPU at the largest batch whose step meets ``itl`` and whose KV fits."""
        p = self._ctx.profile  # type: ignore[union-attr]
        per_seq = p.decode_beta + p.decode_gamma * context
        by_itl = math.floor((itl - p.decode_alpha) / per_seq) if per_seq > 0 else p.max_num_seqs
        batch = min(by_itl, math.floor(p.kv_capacity_tokens / max(context, 1.0)), p.max_num_seqs)
        if batch < 1:
            return 0.0
        return batch / p.decode_step_time(batch, context) / p.gpus_per_replica

    def _frontend_metrics(self, now: float, interval: float) -> tuple[float, float, float, float, float] | None:
        """Mean ISL, OSL, TTFT, ITL and request duration of the requests finished in the last interval."""
        ctx = self._ctx
        assert ctx is not None
        out, trace = ctx.cluster.outcomes, ctx.trace
        arrived = ctx.cluster.arrived
        finish = out.finish_s[:arrived]
        sel = np.flatnonzero(finish > now - interval)
        if sel.size == 0:
            return None
        first = out.first_token_s[sel]
        arrival = trace.arrival_s[sel]
        generated = out.generated[sel]
        gaps = np.maximum(generated - 1, 1)
        itl = np.where(generated > 1, (finish[sel] - first) / gaps, np.nan)
        return (float(trace.input_tokens[sel].mean()), float(generated.mean()), float((first - arrival).mean()),
                float(np.nanmean(itl)) if np.isfinite(itl).any() else 0.0, float((finish[sel] - arrival).mean()))


@dataclass
class Oracle:
    """Each control interval: the fewest replicas the capacity model gives for that interval's actual traffic,
    with capacity that arrives at once. Its GPU-hours are the lower bound the others are compared to."""

    name: str = "oracle"
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
