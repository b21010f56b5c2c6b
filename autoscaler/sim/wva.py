"""``wva``: llm-d's Workload Variant Autoscaler as released, in the simulator: its saturation analyzer turns the
pods' vLLM gauges into a desired replica count, and the HPA its Helm chart installs scales the Deployment to it.

Read from llm-d/llm-d-workload-variant-autoscaler at commit b08b1c77c89d (2026-02-19, chart image v0.5.0):

- ``internal/saturation/analyzer.go`` (the V1 analyzer): a replica is saturated when its KV-cache usage
  ``>= kvCacheThreshold`` or its queue length ``>= queueLengthThreshold``; over the non-saturated replicas the mean
  spare KV (threshold - usage) and spare queue (threshold - length) are taken; scale up when either mean spare is
  below its trigger (``kvSpareTrigger``, ``queueSpareTrigger``); scale-down is safe when at least 2 replicas are
  non-saturated and, with their mean load spread over one replica fewer, both spares stay at or above the
  triggers. ``CalculateSaturationTargets``: when the variant is in transition (desired set and != current, or the
  replicas reporting metrics != current) the target holds (desired, else current) and nothing steps; otherwise
  scale-up is ``ready + 1`` (skipped while replicas are pending), scale-down ``ready - 1``, else ``ready``.
- ``internal/engines/saturation/engine.go``: V1 runs unless the config's ``analyzerName`` is ``"saturation"``
  (the token-based V2 analyzer is opt-in, so V1 is the released default); current replicas are the Deployment's
  ``status.replicas`` (pods created, Pending included), pending = current - ready.
- ``deploy/configmap-saturation-scaling.yaml``: kvCacheThreshold 0.80, queueLengthThreshold 5, kvSpareTrigger
  0.1, queueSpareTrigger 3. ``config/manager/configmap.yaml``: ``GLOBAL_OPT_INTERVAL: "60s"``.
- ``internal/collector/registration/saturation.go``: the gauges are read as ``max_over_time(...[1m])`` per pod.
- ``charts/workload-variant-autoscaler/values.yaml`` and ``templates/hpa.yaml``: an HPA on the external metric
  ``wva_desired_replicas`` with ``AverageValue`` 1, scale-up and scale-down stabilisation 240 s, 10 pods per
  150 s each way, ``selectPolicy: Max``.

Choices of the harness: one WVA model per pool (prefill and decode are separate Deployments, each one variant, so
the cost-aware choice among variants has a single candidate); the per-pod gauges are sampled every control
interval (15 s) and their maximum over the last 60 s is what the analyzer sees; draining pods are not counted.
The external metric's HPA (``GetExternalPerPodMetricReplicas``: ``ceil(desired / 1)`` unless within the 10%
tolerance of the current count) runs every 15 s with the chart's behaviour (:mod:`autoscaler.sim.hpa`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from autoscaler.core.types import Role
from autoscaler.sim.hpa import TOLERANCE, HpaBehavior, HpaPolicy, HpaRules, HpaState, PolicyKind, hpa_step
from autoscaler.sim.runner import SimContext
from autoscaler.sim.sizing import Sizing

__all__ = ["WVA_CHART_HPA", "WVA_TUNED", "Wva", "WvaThresholds", "saturation_target"]

ROLES = (Role.PREFILL, Role.DECODE)
MIN_NON_SATURATED_FOR_SCALE_DOWN = 2  # internal/saturation/constants.go
WVA_CHART_HPA = HpaBehavior(up=HpaRules(240.0, (HpaPolicy(PolicyKind.PODS, 10, 150.0),)),
                            down=HpaRules(240.0, (HpaPolicy(PolicyKind.PODS, 10, 150.0),)))


@dataclass(frozen=True, slots=True)
class WvaThresholds:
    """One entry of the saturation scaling ConfigMap (``kvCacheThreshold``, ``queueLengthThreshold``,
    ``kvSpareTrigger``, ``queueSpareTrigger``); the defaults are the shipped ``default`` entry.

    Checked as WVA's ``SaturationScalingConfig.Validate`` checks it (``internal/interfaces/saturation_scaling.go``,
    read in the fork zdtsw/llm-d-workload-variant-autoscaler at 42ce1a7f1c36), a little stricter where WVA's
    bound admits a degenerate analyzer: the KV threshold in (0, 1] (at 0 every replica is saturated), the queue
    threshold > 0, the KV spare trigger in [0, 1] and at most the KV threshold, the queue spare trigger >= 0."""

    kv_cache_threshold: float = 0.80
    queue_length_threshold: float = 5.0
    kv_spare_trigger: float = 0.1
    queue_spare_trigger: float = 3.0

    def __post_init__(self) -> None:
        checks = (
            ("kv_cache_threshold", self.kv_cache_threshold, 0.0 < self.kv_cache_threshold <= 1.0, "in (0, 1]"),
            ("queue_length_threshold", self.queue_length_threshold, 0.0 < self.queue_length_threshold < math.inf,
             "> 0"),
            ("kv_spare_trigger", self.kv_spare_trigger, 0.0 <= self.kv_spare_trigger <= 1.0, "in [0, 1]"),
            ("queue_spare_trigger", self.queue_spare_trigger, 0.0 <= self.queue_spare_trigger < math.inf, ">= 0"),
        )
        for name, value, ok, bound in checks:
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"WvaThresholds.{name} must be {bound}, got {value!r}")
        if self.kv_spare_trigger > self.kv_cache_threshold:
            raise ValueError(f"WvaThresholds.kv_spare_trigger ({self.kv_spare_trigger!r}) must be at most "
                             f"kv_cache_threshold ({self.kv_cache_threshold!r})")


WVA_TUNED = WvaThresholds(kv_cache_threshold=0.6, queue_length_threshold=5.0, kv_spare_trigger=0.2,
                          queue_spare_trigger=4.0)
"""The thresholds ``wva`` runs with: chosen by ``benchmarks/sweep_wva.py`` (result:
``benchmarks/results/sweep_wva.json``, rule and choice in its ``chosen`` entry, the shipped setting in
``released``), the cheapest of its 16 ConfigMap settings within 0.5 point of the best on every tuning trace.
Against the shipped ``default`` entry (KV 0.80, queue 5, spare triggers 0.1 and 3), GPU-hours / attainment:
Azure conv 2.48 / 100% (shipped 1.95 / 100%), Mooncake conversation 7.41 / 90.32% (5.95 / 44.55%), held-out
Mooncake synthetic 2.02 / 46.96% (1.77 / 46.96%). ``wva-released`` runs the shipped entry."""


def saturation_target(*, kv: list[float], queue: list[float], current: int, ready: int, desired: int,
                      thresholds: WvaThresholds = WvaThresholds()) -> int:
    """WVA V1's target for one single-variant model from its reporting replicas' (max-over-1m) gauges.

    ``current``: pods of the Deployment (Pending included); ``ready``: replicas reporting metrics (``len(kv)``);
    ``desired``: the previous target (0: none yet)."""
    t = thresholds
    if len(kv) != len(queue) or len(kv) != ready:
        raise ValueError(f"need one kv and one queue value per ready replica, got {len(kv)}, {len(queue)}, {ready}")
    if ready == 0:
        return current  # no metrics: no analysis, the target stays
    if (desired != 0 and desired != current) or ready != current:
        return desired if desired != 0 and desired != current else current
    spare = [(t.kv_cache_threshold - k, t.queue_length_threshold - q) for k, q in zip(kv, queue, strict=True)
             if k < t.kv_cache_threshold and q < t.queue_length_threshold]
    n = len(spare)
    spare_kv = sum(s[0] for s in spare) / n if n else 0.0
    spare_queue = sum(s[1] for s in spare) / n if n else 0.0
    if spare_kv < t.kv_spare_trigger or spare_queue < t.queue_spare_trigger:
        pending = current - ready
        return ready + 1 if pending <= 0 else ready
    if n >= MIN_NON_SATURATED_FOR_SCALE_DOWN:
        grow = n / (n - 1)
        kv_after = t.kv_cache_threshold - (t.kv_cache_threshold - spare_kv) * grow
        queue_after = t.queue_length_threshold - (t.queue_length_threshold - spare_queue) * grow
        if kv_after >= t.kv_spare_trigger and queue_after >= t.queue_spare_trigger:
            return ready - 1
    return ready


def external_average_value_replicas(*, metric: float, target: float, current: int,
                                    tolerance: float = TOLERANCE) -> int:
    """The HPA's ``GetExternalPerPodMetricReplicas``: ``ceil(metric / target)`` unless the usage ratio
    ``metric / (target * current)`` is within the tolerance of 1."""
    if current > 0 and abs(1.0 - metric / (target * current)) <= tolerance:
        return current
    return math.ceil(metric / target)


@dataclass
class Wva:
    """WVA's V1 saturation analyzer per pool, its desired replicas applied through the chart's HPA; ``thresholds``
    default to the shipped ConfigMap entry (the ``wva`` policy runs :data:`WVA_TUNED`)."""

    thresholds: WvaThresholds = field(default_factory=WvaThresholds)
    interval_s: float = 60.0
    window_s: float = 60.0
    hpa: HpaBehavior = field(default_factory=lambda: WVA_CHART_HPA)
    name: str = "wva"
    instant_capacity: bool = False
    _ctx: SimContext | None = field(default=None, init=False, repr=False)
    _samples: dict[Role, deque[tuple[float, dict[str, tuple[float, float]]]]] = field(
        default_factory=dict, init=False, repr=False)
    _desired: dict[Role, int] = field(default_factory=dict, init=False, repr=False)
    _states: dict[Role, HpaState] = field(default_factory=dict, init=False, repr=False)
    _last_run: float | None = field(default=None, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx
        self._samples = {role: deque() for role in ROLES}
        self._desired = {role: 0 for role in ROLES}
        self._states = {role: HpaState() for role in ROLES}
        self._last_run = None

    def _sample(self, role: Role, now: float) -> None:
        pods = self._ctx.cluster.pools[role].pods  # type: ignore[union-attr]
        snap = {p.name: (s.kv_usage, float(s.waiting))
                for p in pods if p.engine is not None for s in (p.engine.snapshot(),)}
        window = self._samples[role]
        while window and now - window[0][0] >= self.window_s - 1e-9:
            window.popleft()
        window.append((now, snap))

    def _max_over_window(self, role: Role) -> tuple[list[float], list[float]]:
        """Per ready pod, the largest KV usage and queue length sampled in the window (max_over_time[1m])."""
        ctx = self._ctx
        assert ctx is not None
        ready = [p.name for p in ctx.cluster.pools[role].pods if p.engine is not None]
        kv, queue = [], []
        for name in ready:
            seen = [snap[name] for _, snap in self._samples[role] if name in snap]
            kv.append(max(s[0] for s in seen))
            queue.append(max(s[1] for s in seen))
        return kv, queue

    def cycle(self, now: float) -> None:
        ctx = self._ctx
        assert ctx is not None
        for role in ROLES:
            self._sample(role, now)
        run_analyzer = self._last_run is None or now - self._last_run >= self.interval_s - 1e-9
        if run_analyzer:
            self._last_run = now
        for role in ROLES:
            spec = ctx.variants.specs[role]
            current = ctx.cluster.replicas(role)
            if run_analyzer:
                kv, queue = self._max_over_window(role)
                target = saturation_target(kv=kv, queue=queue, current=current, ready=len(kv),
                                           desired=self._desired[role], thresholds=self.thresholds)
                self._desired[role] = min(max(target, spec.min_replicas), spec.max_replicas)
            desired = self._desired[role] or current
            recommended = external_average_value_replicas(metric=float(desired), target=1.0, current=current)
            if now < ctx.live_from_s - 1e-9:  # observing: the HPA remembers, nothing is scaled
                self._states[role].recommendations.append((now, recommended))
                continue
            value = hpa_step(state=self._states[role], desired=recommended, current=current, now=now,
                             behavior=self.hpa, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
            ctx.scaler.scale(spec, value)
