"""Reactive saturation policy: keep queue and KV-cache headroom per replica.

Scale up in proportion to the worst saturation ratio; scale down one replica only when both signals are
clearly low *and* the remaining replicas would still sit under the high thresholds (the consolidation check
llm-d WVA and Dynamo use: load*N/(N-1) must stay below the threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.core.types import DecisionStep, Freshness, Reason, VariantSignals

__all__ = ["SaturationThresholds", "consolidation_floor", "recommend_saturation", "saturation_load"]

STAGE = "saturation"


@dataclass(frozen=True, slots=True)
class SaturationThresholds:
    queue_per_replica_high: float = 2.0
    """Waiting requests per replica above which the variant is saturated (vLLM queues once its batch is full)."""
    kv_high: float = 0.80
    """Mean KV-cache usage above which the variant is saturated (preemptions start near 1.0)."""
    queue_per_replica_low: float = 0.25
    """Below this queue per replica (and below ``kv_low``) the variant has spare capacity."""
    kv_low: float = 0.40
    """Below this mean KV-cache usage (and below ``queue_per_replica_low``) there is spare capacity."""

    def __post_init__(self) -> None:
        if not 0 < self.kv_low < self.kv_high <= 1:
            raise ValueError(f"need 0 < kv_low < kv_high <= 1, got kv_low={self.kv_low}, kv_high={self.kv_high}")
        if not 0 <= self.queue_per_replica_low < self.queue_per_replica_high:
            raise ValueError(
                "need 0 <= queue_per_replica_low < queue_per_replica_high, got "
                f"{self.queue_per_replica_low} and {self.queue_per_replica_high}"
            )


def recommend_saturation(
    *, signals: VariantSignals, current: int, thresholds: SaturationThresholds
) -> DecisionStep:
    """Recommend replicas for one variant from its saturation signals alone."""
    if signals.freshness is not Freshness.FRESH:
        reason = Reason.SIGNALS_STALE if signals.freshness is Freshness.STALE else Reason.SIGNALS_MISSING
        return DecisionStep(STAGE, current, reason, f"holding at {current}: signals {signals.freshness}"
                            + (f" ({signals.note})" if signals.note else ""))
    if signals.waiting is None or signals.kv_usage_mean is None:
        absent = [n for n, v in (("waiting", signals.waiting), ("kv_usage", signals.kv_usage_mean)) if v is None]
        return DecisionStep(STAGE, current, Reason.SIGNALS_MISSING, f"holding at {current}: no {', '.join(absent)}")

    replicas = max(current, 1)
    queue = signals.waiting / replicas
    kv = signals.kv_usage_mean
    ratio = max(queue / thresholds.queue_per_replica_high, kv / thresholds.kv_high)
    shown = f"queue/replica={queue:.2f}, kv={kv:.2f}"

    if current == 0:
        # Scaled to zero: any demand at all brings one replica back.
        if signals.waiting > 0 or (signals.running or 0) > 0:
            return DecisionStep(STAGE, 1, Reason.SATURATED, f"demand while at zero ({shown})")
        return DecisionStep(STAGE, 0, Reason.WITHIN_TOLERANCE, "idle at zero")

    if ratio > 1.0:
        desired = max(current + 1, math.ceil(current * ratio))
        return DecisionStep(STAGE, desired, Reason.SATURATED, f"{shown} over thresholds (x{ratio:.2f})")

    clearly_low = queue <= thresholds.queue_per_replica_low and kv <= thresholds.kv_low
    if clearly_low and current > 1:
        remaining = current - 1
        queue_after = signals.waiting / remaining
        kv_after = kv * current / remaining
        if queue_after < thresholds.queue_per_replica_high and kv_after < thresholds.kv_high:
            return DecisionStep(STAGE, remaining, Reason.UNDERUTILISED,
                                f"{shown}; {remaining} replicas would hold it (kv->{kv_after:.2f})")
        return DecisionStep(STAGE, current, Reason.WITHIN_TOLERANCE,
                            f"{shown} low, but {remaining} replicas would saturate (kv->{kv_after:.2f})")
    return DecisionStep(STAGE, current, Reason.WITHIN_TOLERANCE, f"{shown} within thresholds")


def saturation_load(*, signals: VariantSignals, serving: int, thresholds: SaturationThresholds) -> float | None:
    """Today's load in replicas' worth at the high thresholds (2.5 = two and a half replicas exactly at the
    threshold), or None when unknown: the larger of the queue and the KV-cache view."""
    if signals.freshness is not Freshness.FRESH or signals.waiting is None or signals.kv_usage_mean is None:
        return None
    return max(signals.waiting / thresholds.queue_per_replica_high,
               signals.kv_usage_mean * max(serving, 1) / thresholds.kv_high)


def consolidation_floor(*, signals: VariantSignals, serving: int, thresholds: SaturationThresholds) -> int | None:
    """Fewest replicas that would carry today's load under the high thresholds, or None when unknown.

    The multi-step form of the consolidation check: the ``serving`` replicas' total queue and KV-cache load,
    spread over N replicas, must stay below the high thresholds (load*serving/N < threshold). Never below 1;
    scale-to-zero is a separate, explicit decision.
    """
    load = saturation_load(signals=signals, serving=serving, thresholds=thresholds)
    return None if load is None else max(1, math.floor(load) + 1)
