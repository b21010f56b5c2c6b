"""Normalisation after a recommendation, in the Kubernetes HPA's order: stabilise, rate-limit, clamp.

- Stabilisation: scale-up takes the *lowest* recommendation in its window (so a spike must persist),
  scale-down the *highest* in its window (so one quiet sample cannot drop capacity).
- Rate limit: at most ``max_step_up`` / ``max_step_down`` replicas per decision, or a percentage of the current
  replicas; when both are set the larger change wins (HPA's default ``selectPolicy: Max``); 0 means unset.
- Cooldown: no step in a direction until ``cooldown_up_s`` / ``cooldown_down_s`` have passed since the last
  scale event.
- Clamp: min/max replicas of the variant.

History is a value: the recommendations of previous cycles with their times go in, the updated tuple comes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.core.types import DecisionStep, Reason

__all__ = ["Behavior", "Recommendation", "clamp", "cooldown", "rate_limit", "remember", "stabilise"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float  # seconds, on the caller's clock
    replicas: int
    idle: bool = False  # no demand at all this cycle; a run of these spanning the idle window allows zero


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
    max_step_up_percent: float = 0.0
    """Most replicas added per decision as a percentage of the current ones (100 = may double); 0 = unset."""
    max_step_down_percent: float = 0.0
    """Most replicas removed per decision as a percentage of the current ones; 0 = unset."""
    cooldown_up_s: float = 0.0
    """No scale-up until this long after the last scale event; 0 = off (the starting guard covers most cases)."""
    cooldown_down_s: float = 0.0
    """No scale-down until this long after the last scale event; keeps a fresh scale-up from being undone."""
    tolerance: float = 0.0
    """A predictive recommendation within this fraction of the current replicas is ignored (HPA's 0.1)."""

    def __post_init__(self) -> None:
        for name in ("scale_up_window_s", "scale_down_window_s", "max_step_up", "max_step_down",
                     "max_step_up_percent", "max_step_down_percent", "cooldown_up_s", "cooldown_down_s",
                     "tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_step_down_percent > 100:
            raise ValueError(f"max_step_down_percent must be <= 100, got {self.max_step_down_percent}")
        if self.tolerance >= 1:
            raise ValueError(f"tolerance must be < 1, got {self.tolerance}")

    def step_up_limit(self, current: int) -> int | None:
        """Most replicas one decision may add from ``current``; None = unbounded."""
        limits = [self.max_step_up] if self.max_step_up else []
        if self.max_step_up_percent:
            limits.append(max(1, math.ceil(current * self.max_step_up_percent / 100 - 1e-9)))
        return max(limits) if limits else None

    def step_down_limit(self, current: int) -> int | None:
        """Most replicas one decision may remove from ``current``; None = unbounded."""
        limits = [self.max_step_down] if self.max_step_down else []
        if self.max_step_down_percent:
            limits.append(max(1, math.floor(current * self.max_step_down_percent / 100 + 1e-9)))
        return max(limits) if limits else None


def stabilise(
    *, recommended: int, current: int, history: tuple[Recommendation, ...], now: float, behavior: Behavior,
    idle: bool = False, retain_s: float = 0.0, ready: int | None = None, lead_s: float = 0.0,
) -> tuple[DecisionStep, tuple[Recommendation, ...]]:
    """Apply the scale-up and scale-down windows. Returns the step and the pruned, extended history.

    ``idle`` is recorded with the recommendation; ``retain_s`` keeps entries longer than the windows need
    (the scale-to-zero idle window reads them).

    ``lead_s`` (the time a new replica takes to serve, node included) with ``ready`` (the replicas serving):
    a ready replica is held for the scale-down window or the lead time, whichever is longer, since one released
    and asked for again within the lead time is back only a lead time later (on the 70B Azure load x8 a replica
    released at minute 6 and re-ordered at minute 12 was ready at minute 30, after the hour's peak had begun);
    replicas not ready yet serve nothing, and go within the scale-down window as before.
    """
    kept = remember(history, Recommendation(now, recommended, idle), behavior=behavior,
                    retain_s=max(retain_s, lead_s))
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
        held_for = f" for {behavior.scale_down_window_s:g}s window"
        if ready is not None and lead_s > behavior.scale_down_window_s:
            value = max(value, min(ready, max(r.replicas for r in kept if now - r.at <= lead_s)))
            held_for = (f": ready replicas for the {lead_s:g}s lead time, others for the "
                        f"{behavior.scale_down_window_s:g}s window")
        if value > recommended:
            return DecisionStep("stabilise", value, Reason.SCALE_DOWN_STABILISED,
                                f"down to {recommended} held at {value}{held_for}", constrained=True), kept
    return DecisionStep("stabilise", recommended, Reason.DESIRED_WITHIN_RANGE, "stable"), kept


def remember(history: tuple[Recommendation, ...], entry: Recommendation, *, behavior: Behavior,
             retain_s: float = 0.0) -> tuple[Recommendation, ...]:
    """``history`` with ``entry`` (this cycle's, at ``entry.at``) appended, pruned to the longest window.

    The newest entry older than that horizon is kept as well: it is what held when the horizon began. Without
    it the oldest entry is always younger than the horizon, so a run measured over the history (the idle
    window) could reach its length only when a cycle happened to land on the boundary.
    """
    now = entry.at
    horizon = max(behavior.scale_up_window_s, behavior.scale_down_window_s, retain_s)
    older = [r for r in history if now - r.at > horizon]
    inside = tuple(r for r in history if now - r.at <= horizon)
    return tuple(older[-1:]) + inside + (entry,)


def rate_limit(*, desired: int, current: int, behavior: Behavior) -> DecisionStep:
    up, down = behavior.step_up_limit(current), behavior.step_down_limit(current)
    if up is not None and desired > current + up:
        return DecisionStep("rate-limit", current + up, Reason.STEP_LIMITED,
                            f"up {desired - current} limited to {up}", constrained=True)
    if down is not None and desired < current - down:
        return DecisionStep("rate-limit", current - down, Reason.STEP_LIMITED,
                            f"down {current - desired} limited to {down}", constrained=True)
    return DecisionStep("rate-limit", desired, Reason.DESIRED_WITHIN_RANGE, "within step limits")


def cooldown(*, desired: int, current: int, last_scaled_at: float | None, now: float,
             behavior: Behavior) -> DecisionStep:
    """Hold a step that comes too soon after the last scale event (unknown last event: no hold)."""
    if last_scaled_at is not None and desired != current:
        wait = behavior.cooldown_up_s if desired > current else behavior.cooldown_down_s
        since = now - last_scaled_at
        if since < wait:
            direction = "up" if desired > current else "down"
            return DecisionStep("cooldown", current, Reason.COOLDOWN,
                                f"{direction} to {desired} held: {since:.0f}s since last scale < {wait:g}s cooldown",
                                constrained=True)
    return DecisionStep("cooldown", desired, Reason.DESIRED_WITHIN_RANGE, "no cooldown in force")


def clamp(*, desired: int, min_replicas: int, max_replicas: int) -> DecisionStep:
    if desired < min_replicas:
        return DecisionStep("clamp", min_replicas, Reason.TOO_FEW_REPLICAS,
                            f"{desired} raised to min {min_replicas}", constrained=True)
    if desired > max_replicas:
        return DecisionStep("clamp", max_replicas, Reason.TOO_MANY_REPLICAS,
                            f"{desired} lowered to max {max_replicas}", constrained=True)
    return DecisionStep("clamp", desired, Reason.DESIRED_WITHIN_RANGE, f"within [{min_replicas}, {max_replicas}]")
