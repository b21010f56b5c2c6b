"""The control loop's ports (:mod:`autoscaler.controller.ports`) on the simulated cluster.

- :class:`SimClock`: the simulation's time, moved only by the runner.
- :class:`SimVariantSource`: the two VariantAutoscalings of the model (prefill and decode).
- :class:`SimSignalSource`: :class:`VariantSignals` with the fields and the semantics the Prometheus source
  gives: gauges summed over the pods serving metrics (ready or draining), ``rate()`` of counters and histogram
  quantiles over ``Scenario.rate_window_s``, the mix of the requests finished in the window, pods younger than
  the warm-up as ``warming_pods``. A variant with no pod reporting is MISSING, as "no series" is in Prometheus.
- :class:`SimScaler`: ``spec.replicas`` of the variant's Deployment; scaling counts a scale action.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from autoscaler.controller.ports import VariantInsight
from autoscaler.core.types import (
    Decision,
    Freshness,
    ReplicaCounts,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import SpecError
from autoscaler.sim.cluster import PoolCounters, SimCluster

__all__ = ["ScaleEvent", "SimClock", "SimScaler", "SimSignalSource", "SimVariantSource", "variant_specs"]

NAMESPACE = "sim"
LATENCY_QUANTILES = (0.5, 0.9, 0.99)
WARMUP_S = 120.0  # the Prometheus source's default warm-up: younger pods are kept out of calibration


class SimClock:
    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


def variant_specs(*, model: str, accelerator: str, min_replicas: int, max_replicas: int,
                  gpus_per_replica: int | None = None) -> dict[Role, VariantSpec]:
    """The prefill and decode VariantAutoscalings of the simulated model."""
    short = model.rsplit("/", 1)[-1].lower()
    return {
        role: VariantSpec(
            ref=VariantRef(NAMESPACE, f"{short}-{role.value}"), model=model, role=role, accelerator=accelerator,
            target=ScaleTarget("apps/v1", "Deployment", f"{short}-{role.value}"),
            min_replicas=min_replicas, max_replicas=max_replicas, gpus_per_replica=gpus_per_replica)
        for role in (Role.PREFILL, Role.DECODE)
    }


@dataclass
class SimVariantSource:
    specs: dict[Role, VariantSpec]

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        return list(self.specs.values()), []


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    at: float
    role: Role
    before: int
    after: int


@dataclass
class SimScaler:
    cluster: SimCluster
    events: list[ScaleEvent] = field(default_factory=list)
    decisions: dict[VariantRef, Decision] = field(default_factory=dict)

    def current_replicas(self, spec: VariantSpec) -> int:
        return self.cluster.replicas(spec.role)

    def replica_counts(self, spec: VariantSpec) -> ReplicaCounts:
        return self.cluster.replica_counts(spec.role)

    def scale(self, spec: VariantSpec, replicas: int) -> None:
        before = self.cluster.replicas(spec.role)
        if replicas != before:
            self.cluster.set_replicas(spec.role, replicas)
            self.events.append(ScaleEvent(self.cluster.now, spec.role, before, replicas))

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None,
                     insight: VariantInsight | None = None) -> None:
        self.decisions[spec.ref] = decision


def _quantile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    if weights is None:
        return float(np.quantile(values, q))
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(values[order][min(index, len(values) - 1)])


class SimSignalSource:
    """Signals from the simulated pods, windowed like the Prometheus queries."""

    def __init__(self, cluster: SimCluster, *, window_s: float) -> None:
        self.cluster = cluster
        self.window_s = window_s
        self._samples: dict[Role, deque[tuple[float, PoolCounters]]] = {r: deque() for r in cluster.pools}
        self._cache: dict[Role, tuple[float, VariantSignals]] = {}
        self._kv: dict[Role, deque[tuple[float, float]]] = {r: deque() for r in cluster.pools}

    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        return {spec: self.signals(spec.role, now=now) for spec in variants}

    def signals(self, role: Role, *, now: float) -> VariantSignals:
        cached = self._cache.get(role)
        if cached is not None and cached[0] == now:
            return cached[1]
        value = self._measure(role, now)
        self._cache[role] = (now, value)
        return value

    def _rates(self, role: Role, now: float) -> tuple[float, PoolCounters, PoolCounters] | None:
        samples = self._samples[role]
        current = self.cluster.counters(role)
        samples.append((now, current))
        while len(samples) > 1 and samples[1][0] <= now - self.window_s + 1e-9:
            samples.popleft()
        t0, first = samples[0]
        if now - t0 <= 0:
            return None
        return now - t0, first, current

    def _measure(self, role: Role, now: float) -> VariantSignals:
        cluster = self.cluster
        engines = cluster.engines(role)
        rates = self._rates(role, now)
        if not engines:
            return VariantSignals.unknown(f"no pod of the {role.value} variant reports metrics")
        stats = [e.snapshot() for e in engines]
        kv = [s.kv_usage for s in stats]
        per_s: dict[str, float | None] = dict.fromkeys(
            ("prompt", "generation", "requests", "preemptions", "busy", "iterations"), None)
        if rates is not None:
            span, a, b = rates
            per_s = {"prompt": (b.prompt_tokens - a.prompt_tokens) / span,
                     "generation": (b.generation_tokens - a.generation_tokens) / span,
                     "requests": (b.successes - a.successes) / span,
                     "preemptions": (b.preemptions - a.preemptions) / span,
                     "busy": (b.busy_s - a.busy_s) / span,
                     "iterations": (b.iterations - a.iterations) / span}
        kv_window = self._kv_window_mean(role, now, float(np.mean(kv)))
        since = now - self.window_s
        done = [c for c in cluster.completions(role) if c.at > since]
        mix: dict[str, float | None] = {}
        ttft_q: tuple[tuple[float, float], ...] = ()
        itl_q: tuple[tuple[float, float], ...] = ()
        itl_mean: float | None = None
        if done:
            prompts = np.array([c.prompt_tokens for c in done], dtype=float)
            generated = np.array([c.generated_tokens for c in done], dtype=float)
            ttft = np.array([c.ttft_s for c in done])
            mix = {"prompt_mean": float(prompts.mean()), "prompt_p90": float(np.quantile(prompts, 0.9)),
                   "gen_mean": float(generated.mean()), "gen_p90": float(np.quantile(generated, 0.9)),
                   "prompt_sq_mean": float((prompts * prompts).mean())}
            ttft_q = tuple((q, _quantile(ttft, None, q)) for q in LATENCY_QUANTILES)
            itl = np.array([c.itl_s for c in done])
            counts = np.array([c.itl_count for c in done], dtype=float)
            if counts.sum() > 0:
                itl_q = tuple((q, _quantile(itl, counts, q)) for q in LATENCY_QUANTILES)
                itl_mean = float((itl * counts).sum() / counts.sum())
        elif rates is not None:
            mix = {"prompt_mean": 0.0, "prompt_p90": 0.0, "gen_mean": 0.0, "gen_p90": 0.0}  # idle: zero demand
        ages = cluster.pod_ages(role)
        return VariantSignals(
            freshness=Freshness.FRESH,
            pods=len(engines),
            waiting=float(sum(s.waiting for s in stats)),
            running=float(sum(s.running for s in stats)),
            kv_usage_mean=float(np.mean(kv)),
            kv_usage_max=float(np.max(kv)),
            prompt_tokens_per_s=per_s["prompt"],
            generation_tokens_per_s=per_s["generation"],
            completions_per_s=per_s["requests"],
            ttft_p90_s=dict(ttft_q).get(0.9),
            itl_p90_s=dict(itl_q).get(0.9),
            prompt_tokens_mean=mix.get("prompt_mean"),
            prompt_tokens_p90=mix.get("prompt_p90"),
            generation_tokens_mean=mix.get("gen_mean"),
            generation_tokens_p90=mix.get("gen_p90"),
            preemptions_per_s=per_s["preemptions"],
            prefix_cache_hit_ratio=None,  # the simulated engines run without prefix caching
            ttft_quantiles_s=ttft_q,
            itl_quantiles_s=itl_q,
            warm_pods=tuple(name for name, age in ages if age >= WARMUP_S),
            warming_pods=tuple(name for name, age in ages if age < WARMUP_S),
            missing=("prefix_cache_hit_ratio",),
            itl_mean_s=itl_mean,
            # The ITL histogram's _sum rate: each generated token adds the step it took, once per sequence.
            decoding=itl_mean * per_s["generation"] if itl_mean is not None and per_s["generation"] else None,
            kv_usage_window_mean=kv_window,
            prompt_tokens_sq_mean=mix.get("prompt_sq_mean"),
            busy_per_s=per_s["busy"],
            iterations_per_s=per_s["iterations"],
        )

    def _kv_window_mean(self, role: Role, now: float, kv_now: float) -> float:
        """KV usage averaged over the rate window (``avg_over_time``) from the samples taken each cycle."""
        samples = self._kv[role]
        samples.append((now, kv_now))
        while samples and samples[0][0] <= now - self.window_s + 1e-9:
            samples.popleft()
        return float(np.mean([v for _, v in samples]))
