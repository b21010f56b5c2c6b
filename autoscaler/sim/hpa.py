"""The Kubernetes HorizontalPodAutoscaler's algorithm, for the ``hpa-tuned`` baseline (and the naive HPAs, and the
HPA that turns WVA's desired replicas into a Deployment's scale).

Follows ``pkg/controller/podautoscaler`` (replica_calculator.go and horizontal.go, Kubernetes 1.27+) for a
``Pods`` metric with an ``AverageValue`` target:

- replica count (``calcPlainMetricReplicas`` and ``groupPods`` in replica_calculator.go, read at kubernetes
  commit 00067268967e): usage ratio = mean metric of the pods that report / target; within the tolerance (0.1)
  nothing changes; Pending pods are ignored, except on a scale-up (ratio > 1) where they count as using 0; pods
  without a metric (started, not ready) count as using the target on a scale-down and 0 on a scale-up, and the
  ratio is recomputed; a result that flips direction or falls within the tolerance keeps the current count; else
  ``ceil(ratio * pods counted)``;
- stabilisation (``stabilizeRecommendationWithBehaviors``): the current count, raised to the lowest
  recommendation in the scale-up window, lowered to the highest in the scale-down window;
- rate limits (``convertDesiredReplicasWithBehaviorRate``): per policy, the count at the start of its period
  (current minus replicas added plus replicas removed in the period) plus ``Pods`` or times ``1+Percent``; the
  largest change wins (``selectPolicy: Max``);
- the defaults (``SetDefaults_HorizontalPodAutoscalerBehavior``): scale-up window 0 s, policies 100% and
  4 pods per 15 s; scale-down window 300 s, policy 100% per 15 s. Sync period 15 s.

Terminating pods are not counted. The metric values are the pods' own (``vllm:num_requests_waiting`` or the KV
cache usage), read from the simulated engines as the custom metrics API would serve them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["HpaBehavior", "HpaPolicy", "HpaRules", "HpaState", "PolicyKind", "hpa_step", "pod_metric_replicas"]

TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance default


class PolicyKind(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


@dataclass(frozen=True, slots=True)
class HpaPolicy:
    kind: PolicyKind
    value: int
    period_s: float


@dataclass(frozen=True, slots=True)
class HpaRules:
    window_s: float
    policies: tuple[HpaPolicy, ...]


@dataclass(frozen=True, slots=True)
class HpaBehavior:
    up: HpaRules = HpaRules(0.0, (HpaPolicy(PolicyKind.PERCENT, 100, 15.0), HpaPolicy(PolicyKind.PODS, 4, 15.0)))
    down: HpaRules = HpaRules(300.0, (HpaPolicy(PolicyKind.PERCENT, 100, 15.0),))


def pod_metric_replicas(*, current: int, values: Sequence[float], target: float, missing: int, pending: int = 0,
                        tolerance: float = TOLERANCE) -> int:
    """Desired replicas from the per-pod metric ``values`` of the pods that report one (``calcPlainMetricReplicas``).

    ``missing``: running pods without a metric yet (counted as using the target on a scale-down, 0 on a scale-up).
    ``pending``: Pending pods (no node yet); ignored, except that on a scale-up they count as using 0 (the HPA's
    ``rebalanceIgnored``), which damps a scale-up while earlier replicas are still coming.
    """
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    if not values:
        return current  # no metrics at all: the HPA reports an error and does not scale
    ratio = sum(values) / len(values) / target
    rebalance_pending = pending > 0 and ratio > 1.0
    if not rebalance_pending and missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * len(values))
    filled = list(values) + [target if ratio < 1.0 else 0.0] * missing
    if rebalance_pending:
        filled += [0.0] * pending
    new_ratio = sum(filled) / len(filled) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    return math.ceil(new_ratio * len(filled))


@dataclass
class HpaState:
    """What the HPA controller remembers per target: recommendations and scale events with their times."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    ups: list[tuple[float, int]] = field(default_factory=list)
    downs: list[tuple[float, int]] = field(default_factory=list)


def _changed_in(events: list[tuple[float, int]], period_s: float, now: float) -> int:
    return sum(change for at, change in events if now - at < period_s)


def hpa_step(*, state: HpaState, desired: int, current: int, now: float, behavior: HpaBehavior,
             min_replicas: int, max_replicas: int) -> int:
    """Stabilise and rate-limit ``desired``, clamp it, and record the scale event. Returns the new count."""
    keep = max(behavior.up.window_s, behavior.down.window_s)
    state.recommendations = [(at, r) for at, r in state.recommendations if now - at < keep]
    up_rec = down_rec = desired
    for at, r in state.recommendations:
        if now - at < behavior.up.window_s:
            up_rec = min(up_rec, r)
        if now - at < behavior.down.window_s:
            down_rec = max(down_rec, r)
    state.recommendations.append((now, desired))
    stabilised = min(max(current, up_rec), down_rec)

    value = stabilised
    if stabilised > current:
        limit = -math.inf
        for p in behavior.up.policies:
            start = current - _changed_in(state.ups, p.period_s, now) + _changed_in(state.downs, p.period_s, now)
            proposed = start + p.value if p.kind is PolicyKind.PODS else math.ceil(start * (1 + p.value / 100))
            limit = max(limit, proposed)
        value = min(stabilised, max(int(limit), current), max_replicas)
    elif stabilised < current:
        limit = math.inf
        for p in behavior.down.policies:
            start = current - _changed_in(state.ups, p.period_s, now) + _changed_in(state.downs, p.period_s, now)
            proposed = start - p.value if p.kind is PolicyKind.PODS else int(start * (1 - p.value / 100))
            limit = min(limit, proposed)
        value = max(stabilised, min(int(limit), current), min_replicas)
    value = min(max(value, min_replicas), max_replicas)
    keep_events = max([p.period_s for p in behavior.up.policies + behavior.down.policies], default=0.0)
    state.ups = [(at, c) for at, c in state.ups if now - at < keep_events]
    state.downs = [(at, c) for at, c in state.downs if now - at < keep_events]
    if value > current:
        state.ups.append((now, value - current))
    elif value < current:
        state.downs.append((now, current - value))
    return value
