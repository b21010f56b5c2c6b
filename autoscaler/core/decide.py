"""The one entry to the decision core. The controller and the simulator both call :func:`decide`."""

from __future__ import annotations

from dataclasses import dataclass, field

from autoscaler.core.behavior import Behavior, Recommendation, clamp, rate_limit, stabilise
from autoscaler.core.saturation import SaturationThresholds, recommend_saturation
from autoscaler.core.types import Decision, Freshness, VariantSignals, VariantSpec

__all__ = ["ScalingPolicy", "decide"]


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    saturation: SaturationThresholds = field(default_factory=SaturationThresholds)
    behavior: Behavior = field(default_factory=Behavior)


def decide(
    *,
    spec: VariantSpec,
    signals: VariantSignals,
    current: int,
    history: tuple[Recommendation, ...],
    policy: ScalingPolicy,
    now: float,
) -> tuple[Decision, tuple[Recommendation, ...]]:
    """Decide the replicas of one variant. Pure: same inputs, same output.

    Missing or stale signals hold the variant where it is (never a scale-down), apart from the min/max clamp.
    """
    recommended = recommend_saturation(signals=signals, current=current, thresholds=policy.saturation)
    steps = [recommended]
    if signals.freshness is Freshness.FRESH:
        stabilised, history = stabilise(
            recommended=recommended.replicas, current=current, history=history, now=now, behavior=policy.behavior
        )
        limited = rate_limit(desired=stabilised.replicas, current=current, behavior=policy.behavior)
        steps += [stabilised, limited]
        value = limited.replicas
    else:
        value = current  # no history entry either: an unknown cycle is not evidence of low load
    bounded = clamp(desired=value, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
    steps.append(bounded)
    return Decision(variant=spec.ref, current=current, desired=bounded.replicas, steps=tuple(steps)), history
