"""Combining the reactive and the predictive recommendation, and the anti-flap rules around them.

- Scale-up takes the larger of reactive (saturation) and predictive (SLO capacity at the forecast).
- Scale-down needs both to agree, and goes no lower than the consolidation floor: the fewest replicas that
  would still carry today's load under the saturation thresholds (as llm-d WVA and Dynamo check N-1). When
  the caller checked the whole stage (all variants of the model in that role) instead, a variant may go
  lower, since its load moves to its peers.
- While earlier replicas are still starting, or Pending for lack of GPUs, the *reactive* recommendation may
  not step up again: ready pods still look saturated because the new ones carry nothing yet, and each cycle
  would add more (AIBrix #2670, "cascading scale-up"). The predictive target is absolute (demand over
  capacity per replica), does not grow with pending pods, and is not held. Neither kind of pod ever blocks
  a scale-down (Dynamo #14251: a decode pod Pending for an H20 kept the planner from scaling down for hours).
- Scale-to-zero only after an unbroken run of idle cycles spanning the idle window.
"""

from __future__ import annotations

from autoscaler.core.behavior import Recommendation
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import DecisionStep, Reason, ReplicaCounts, VariantSignals

__all__ = ["combine", "guard_reactive", "idle_for", "is_idle", "predictive_step", "scale_to_zero"]


def predictive_step(*, prediction: Prediction, current: int, tolerance: float) -> DecisionStep:
    """The predictive target, ignoring changes within ``tolerance`` of the current replicas (HPA's rule)."""
    target = prediction.replicas
    if current > 0 and target != current and abs(target - current) <= tolerance * current:
        return DecisionStep("predictive", current, Reason.WITHIN_TOLERANCE,
                            f"{target} within {tolerance:.0%} of {current}; {prediction.message}")
    return DecisionStep("predictive", target, prediction.reason, prediction.message)


def guard_reactive(*, reactive: DecisionStep, current: int, replicas: ReplicaCounts | None) -> DecisionStep | None:
    """Hold a reactive scale-up while earlier replicas are not ready; None when nothing is held."""
    if replicas is None or reactive.replicas <= current or replicas.not_ready == 0:
        return None
    if replicas.unschedulable:
        reason = Reason.PENDING_CAPACITY
        why = f"{replicas.unschedulable} pod(s) Pending for lack of GPUs"
    else:
        reason = Reason.REPLICAS_STARTING
        why = f"{replicas.starting} replica(s) still starting"
    return DecisionStep("starting-guard", current, reason,
                        f"reactive {reactive.replicas} held at {current}: {why}", constrained=True)


def combine(
    *, reactive: DecisionStep, predictive: DecisionStep | None, current: int, fresh: bool, floor: int | None,
) -> DecisionStep:
    """One recommendation from both policies.

    ``floor`` is the consolidation floor (None when unknown). With signals missing or stale the result is never
    below ``current``: an unknown cycle is not evidence of low load.
    """
    if predictive is None:
        return DecisionStep("combine", reactive.replicas, reactive.reason, "reactive only")
    up = max(reactive.replicas, predictive.replicas)
    if not fresh:
        value = max(current, predictive.replicas)
        if value > current:
            return DecisionStep("combine", value, predictive.reason,
                                f"predictive {value} (signals {reactive.reason.value}: up only)", constrained=True)
        return DecisionStep("combine", current, reactive.reason, "signals not fresh: holding")
    if up > current:
        if predictive.replicas > reactive.replicas:
            return DecisionStep("combine", up, predictive.reason,
                                f"predictive {predictive.replicas} > reactive {reactive.replicas}", constrained=True)
        return DecisionStep("combine", up, reactive.reason,
                            f"reactive {reactive.replicas} >= predictive {predictive.replicas}")
    # Both at or below current: scale down no lower than the consolidation floor.
    if floor is None:
        return DecisionStep("combine", current, Reason.WITHIN_TOLERANCE, "no load figures for a consolidation check")
    value = min(current, max(predictive.replicas, floor))
    if value == current:
        held_down = reactive.replicas != current
        if predictive.replicas >= current:
            return DecisionStep("combine", current, predictive.reason,
                                f"predictive {predictive.replicas} holds {current}", constrained=held_down)
        return DecisionStep("combine", current, Reason.WITHIN_TOLERANCE,
                            f"predictive {predictive.replicas}, but {current - 1} replicas would saturate",
                            constrained=held_down)
    reason = Reason.UNDERUTILISED if value == floor and floor > predictive.replicas else predictive.reason
    why = "its peers in the stage take its load" if floor == 0 else f"load fits {floor} (consolidation floor)"
    return DecisionStep("combine", value, reason, f"predictive {predictive.replicas}, {why}",
                        constrained=value != reactive.replicas)


def is_idle(*, signals: VariantSignals, prediction: Prediction | None) -> bool:
    """Known to have no demand now (:attr:`VariantSignals.idle`: a signal not read is unknown, never zero) and
    none forecast."""
    return signals.idle and (prediction is None or prediction.replicas == 0)


def idle_for(*, history: tuple[Recommendation, ...], now: float) -> float:
    """Seconds the variant has been idle without a break, from the recorded history (0 if not idle now)."""
    since = None
    for entry in reversed(history):
        if not entry.idle:
            break
        since = entry.at
    return 0.0 if since is None else now - since


def scale_to_zero(*, value: int, idle_s: float, window_s: float) -> DecisionStep | None:
    """Zero once idle for the whole window; a progress step while idle but not long enough; else None."""
    if idle_s <= 0 or value == 0:
        return None
    if idle_s >= window_s:
        return DecisionStep("scale-to-zero", 0, Reason.SCALED_TO_ZERO,
                            f"idle for {idle_s:.0f}s >= {window_s:g}s window", constrained=True)
    return DecisionStep("scale-to-zero", value, Reason.WITHIN_TOLERANCE,
                        f"idle for {idle_s:.0f}s of the {window_s:g}s window")
