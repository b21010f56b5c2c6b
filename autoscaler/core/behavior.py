"""Normalisation after a recommendation, in the Kubernetes HPA's order: stabilise, rate-limit, clamp.

- Stabilisation: scale-up takes the *lowest* recommendation in its window (so a spike must persist),
  scale-down the *highest* in its window (so one quiet sample cannot drop capacity).
- Rate limit: at most ``max_step_up`` / ``max_step_down`` replicas per decision (0 means unbounded).
- Clamp: min/max replicas of the variant.

History is a value: the recommendations of previous cycles with their times go in, the updated tuple comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.core.types import DecisionStep, Reason

__all__ = ["Behavior", "Recommendation", "stabilise", "rate_limit", "clamp"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float  # seconds, on the caller's clock
    replicas: int


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up_window_s: float = 0.0
    """How long a higher recommendation must persist before scaling up (HPA default: 0)."""
    scale_down_window_s: float = 300.0
    """How long a lower recommendation must persist before scaling down (HPA default: 300 s)."""
    max_step_up: int = 0
    """Most replicas added per decision; 0 = unbounded."""
    max_step_down: int = 1
    """Most replicas removed per decision; 0 = unbounded. One at a time protects in-flight requests."""

    def __post_init__(self) -> None:
        for name in ("scale_up_window_s", "scale_down_window_s", "max_step_up", "max_step_down"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def stabilise(
    *, recommended: int, current: int, history: tuple[Recommendation, ...], now: float, behavior: Behavior
) -> tuple[DecisionStep, tuple[Recommendation, ...]]:
    """Apply the scale-up and scale-down windows. Returns the step and the pruned, extended history."""
    horizon = max(behavior.scale_up_window_s, behavior.scale_down_window_s)
    kept = tuple(r for r in history if now - r.at <= horizon) + (Recommendation(now, recommended),)
    up_window = [r.replicas for r in kept if now - r.at <= behavior.scale_up_window_s]
    down_window = [r.replicas for r in kept if now - r.at <= behavior.scale_down_window_s]

    if recommended > current:
        value = max(current, min(up_window))
        if value < recommended:
            return DecisionStep("stabilise", value, Reason.SCALE_UP_STABILISED,
                                f"up to {recommended} held at {value} for {behavior.scale_up_window_s:g}s window",
                                constrained=True), kept
    elif recommended < current:
        value = min(current, max(down_window))
        if value > recommended:
            return DecisionStep("stabilise", value, Reason.SCALE_DOWN_STABILISED,
                                f"down to {recommended} held at {value} for {behavior.scale_down_window_s:g}s window",
                                constrained=True), kept
    return DecisionStep("stabilise", recommended, Reason.DESIRED_WITHIN_RANGE, "stable"), kept


def rate_limit(*, desired: int, current: int, behavior: Behavior) -> DecisionStep:
    if behavior.max_step_up and desired > current + behavior.max_step_up:
        value = current + behavior.max_step_up
        return DecisionStep("rate-limit", value, Reason.STEP_LIMITED,
                            f"up {desired - current} limited to {behavior.max_step_up}", constrained=True)
    if behavior.max_step_down and desired < current - behavior.max_step_down:
        value = current - behavior.max_step_down
        return DecisionStep("rate-limit", value, Reason.STEP_LIMITED,
                            f"down {current - desired} limited to {behavior.max_step_down}", constrained=True)
    return DecisionStep("rate-limit", desired, Reason.DESIRED_WITHIN_RANGE, "within step limits")


def clamp(*, desired: int, min_replicas: int, max_replicas: int) -> DecisionStep:
    if desired < min_replicas:
        return DecisionStep("clamp", min_replicas, Reason.TOO_FEW_REPLICAS,
                            f"{desired} raised to min {min_replicas}", constrained=True)
    if desired > max_replicas:
        return DecisionStep("clamp", max_replicas, Reason.TOO_MANY_REPLICAS,
                            f"{desired} lowered to max {max_replicas}", constrained=True)
    return DecisionStep("clamp", desired, Reason.DESIRED_WITHIN_RANGE, f"within [{min_replicas}, {max_replicas}]")
