"""The one entry to the per-variant decision. The controller and the simulator both call :func:`decide`.

Stages, each leaving a :class:`DecisionStep` with its reason (HPA's pipeline with two more sources and guards):

1. ``saturation``: the reactive recommendation from queue and KV-cache headroom;
2. ``predictive``: the SLO-driven target (from :mod:`autoscaler.core.slo_policy` or the cost-optimal
   allocation), when the caller has one; changes within the tolerance are ignored;
3. ``starting-guard``: no reactive step on top of replicas still starting or Pending for GPUs;
4. ``combine``: the larger of the two for scale-up; for scale-down both must agree, down to the consolidation
   floor at most;
5. ``stabilise``: HPA windows over the history (scale-down takes the highest recommendation in its window);
6. ``scale-to-zero``: zero after an unbroken idle window, when the policy allows it;
7. ``cooldown``, 8. ``rate-limit``: per-direction cooldown and step limits (absolute and percent);
9. ``scale-from-zero``: a variant at zero replicas whose model has requests waiting at the gateway gets one,
   whatever the other stages said (at zero its pods export nothing, so only the gateway sees the demand);
10. ``clamp``: min/max of the VariantAutoscaling, the policy and its schedule.

Missing or stale signals never scale down; only a predictive target may still scale up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoscaler.core import combine as combining
from autoscaler.core.behavior import (
    Behavior,
    Recommendation,
    clamp,
    cooldown,
    rate_limit,
    remember,
    stabilise,
)
from autoscaler.core.policyset import VariantPolicy, variant_bounds
from autoscaler.core.saturation import SaturationThresholds, consolidation_floor, recommend_saturation
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    Decision,
    DecisionStep,
    Freshness,
    Reason,
    ReplicaCounts,
    VariantSignals,
    VariantSpec,
)

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
    prediction: Prediction | None = None,
    replicas: ReplicaCounts | None = None,
    last_scaled_at: float | None = None,
    variant_policy: VariantPolicy | None = None,
    lead_s: float = 0.0,
) -> tuple[Decision, tuple[Recommendation, ...]]:
    """Decide the replicas of one variant. Pure: same inputs, same output.

    ``prediction``: the predictive target (None = reactive only). ``replicas``: ready/starting/unschedulable
    pods (None = unknown: no starting guard). ``last_scaled_at``: time of the last scale event (None = no
    cooldown). ``variant_policy``: bounds, schedule and scale-to-zero from the policy file. ``lead_s``: how long a
    new replica takes to serve (the planner's lead time; 0 = unknown): ready replicas are held at least that long
    before a scale-down (:func:`autoscaler.core.behavior.stabilise`).
    """
    behavior = policy.behavior
    fresh = signals.freshness is Freshness.FRESH
    bounds = variant_bounds(spec=spec, policy=variant_policy, now=now)

    reactive = recommend_saturation(signals=signals, current=current, thresholds=policy.saturation)
    steps: list[DecisionStep] = [reactive]
    predictive = None
    if prediction is not None:
        predictive = combining.predictive_step(prediction=prediction, current=current, tolerance=behavior.tolerance)
        steps.append(predictive)
    guard = combining.guard_reactive(reactive=reactive, current=current, replicas=replicas)
    if guard is not None:
        steps.append(guard)
    serving = replicas.ready if replicas is not None else current
    floor = consolidation_floor(signals=signals, serving=serving, thresholds=policy.saturation)
    if prediction is not None and prediction.stage_holds_load and floor is not None:
        floor = 0  # the stage as a whole was checked: this variant's load can move to its peers
    combined = combining.combine(reactive=guard or reactive, predictive=predictive, current=current, fresh=fresh,
                                 floor=floor)
    if predictive is not None:
        steps.append(combined)
    value = combined.replicas

    retain_s = max(bounds.idle_window_s if bounds.scale_to_zero else 0.0, lead_s)
    if fresh:
        idle = combining.is_idle(signals=signals, prediction=prediction)
        stabilised, history = stabilise(recommended=value, current=current, history=history, now=now,
                                        behavior=behavior, idle=idle, retain_s=retain_s,
                                        ready=replicas.ready if replicas is not None else None, lead_s=lead_s)
        steps.append(stabilised)
        value = stabilised.replicas
        if bounds.scale_to_zero:
            to_zero = combining.scale_to_zero(value=value, idle_s=combining.idle_for(history=history, now=now),
                                              window_s=bounds.idle_window_s)
            if to_zero is not None:
                steps.append(to_zero)
                value = to_zero.replicas
    else:
        # An unknown cycle is not evidence of low load: it is recorded as holding at least the current replicas,
        # not idle. So the first fresh cycle after an outage still waits the scale-down window, and an idle run
        # broken by an outage starts again.
        history = remember(history, Recommendation(now, max(value, current), idle=False), behavior=behavior,
                           retain_s=retain_s)

    if value != current:
        held = cooldown(desired=value, current=current, last_scaled_at=last_scaled_at, now=now, behavior=behavior)
        limited = rate_limit(desired=held.replicas, current=current, behavior=behavior)
        steps += [held, limited]
        value = limited.replicas

    wake = _scale_from_zero(value=value, current=current, signals=signals)
    if wake is not None:
        steps.append(wake)
        value = wake.replicas

    low = 0 if value == 0 and bounds.scale_to_zero else bounds.min_replicas
    bounded = clamp(desired=value, min_replicas=low, max_replicas=bounds.max_replicas)
    if bounded.constrained:
        reason = bounds.min_reason if bounded.replicas == low else bounds.max_reason
        if reason is not bounded.reason:
            where = ", ".join(bounds.windows)
            bounded = DecisionStep("clamp", bounded.replicas, reason, f"{bounded.message} (schedule: {where})",
                                   constrained=True)
    steps.append(bounded)
    return Decision(variant=spec.ref, current=current, desired=bounded.replicas, steps=tuple(steps)), history


def _scale_from_zero(*, value: int, current: int, signals: VariantSignals) -> DecisionStep | None:
    """One replica for a variant at zero with requests queued at the gateway (no cooldown, window or missing
    pod metric holds it: nothing can serve them until it exists)."""
    queued = signals.gateway_waiting
    if current != 0 or value > 0 or queued is None or not queued > 0:
        return None
    return DecisionStep("scale-from-zero", 1, Reason.SCALE_FROM_ZERO,
                        f"{queued:g} request(s) queued at the gateway for a model with no replica", constrained=True)
