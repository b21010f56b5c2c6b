"""The status of a VariantAutoscaling as a value: next status from the previous one, and the merge patch.

Pure (no I/O, the time is passed in). Conditions follow the Kubernetes API conventions and the HPA's types:

- ``AbleToScale``: the target could be read and patched (False: TargetNotFound, Forbidden, Conflict,
  ApiTimeout, ...).
- ``ScalingActive``: the controller had the signals to compute a recommendation (False: SignalsMissing,
  SignalsStale), so it holds the replicas where they are.
- ``ScalingLimited``: the desired count was clamped by minReplicas/maxReplicas.

``lastTransitionTime`` moves only when a condition's status flips, so re-writing the same condition with a new
message does not reset it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autoscaler.core.types import Decision, Reason
from autoscaler.kube.api import Condition, VariantAutoscalingStatus

__all__ = [
    "ABLE_TO_SCALE",
    "SCALING_ACTIVE",
    "SCALING_LIMITED",
    "ConditionUpdate",
    "decision_conditions",
    "find_condition",
    "merge_conditions",
    "next_status",
    "status_patch",
]

ABLE_TO_SCALE = "AbleToScale"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"

_MESSAGE_LIMIT = 1024  # conditions are shown in `kubectl describe`; keep them readable
_STATUS_MESSAGE_LIMIT = 4096
_HOLD_REASONS = {Reason.SIGNALS_MISSING, Reason.SIGNALS_STALE}
_LIMIT_REASONS = {Reason.TOO_FEW_REPLICAS, Reason.TOO_MANY_REPLICAS}


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def merge_conditions(
    previous: Sequence[Condition], updates: Sequence[ConditionUpdate], *, generation: int, now: dt.datetime
) -> list[Condition]:
    """Apply updates by type; the transition time is kept unless the status changes."""
    merged = list(previous)
    for update in updates:
        old = find_condition(merged, update.type)
        changed = old is None or old.status != update.status
        condition = Condition(
            type=update.type,
            status=update.status,
            observed_generation=generation,
            last_transition_time=_seconds(now) if changed or old is None else old.last_transition_time,
            reason=update.reason,
            message=update.message[:_MESSAGE_LIMIT],
        )
        if old is None:
            merged.append(condition)
        else:
            merged[merged.index(old)] = condition
    return merged


def decision_conditions(decision: Decision) -> tuple[ConditionUpdate, ConditionUpdate]:
    """ScalingActive and ScalingLimited for one decision."""
    recommended = decision.steps[0] if decision.steps else None
    if recommended is not None and recommended.reason in _HOLD_REASONS:
        active = ConditionUpdate(SCALING_ACTIVE, "False", recommended.reason.value, recommended.message)
    else:
        reason = recommended.reason.value if recommended is not None else "NoRecommendation"
        active = ConditionUpdate(SCALING_ACTIVE, "True", reason,
                                 recommended.message if recommended is not None else "")
    clamp = next((s for s in decision.steps if s.constrained and s.reason in _LIMIT_REASONS), None)
    if clamp is not None:
        limited = ConditionUpdate(SCALING_LIMITED, "True", clamp.reason.value, clamp.message)
    else:
        limited = ConditionUpdate(SCALING_LIMITED, "False", Reason.DESIRED_WITHIN_RANGE.value,
                                  "the desired count is within the acceptable range")
    return active, limited


def next_status(
    *,
    previous: VariantAutoscalingStatus,
    generation: int,
    now: dt.datetime,
    decision: Decision | None = None,
    able: ConditionUpdate | None = None,
    scaled_at: dt.datetime | None = None,
) -> VariantAutoscalingStatus:
    """The status after one cycle: fields the controller owns replaced, the rest (forecast, ...) kept."""
    updates: list[ConditionUpdate] = []
    fields: dict[str, Any] = {"observed_generation": generation}
    if decision is not None:
        updates.extend(decision_conditions(decision))
        fields.update(current_replicas=decision.current, desired_replicas=decision.desired,
                      reason=decision.reason.value, message=decision.message[:_STATUS_MESSAGE_LIMIT])
    if able is not None:
        updates.append(able)
    if scaled_at is not None:
        fields["last_scale_time"] = _seconds(scaled_at)
    conditions = merge_conditions(previous.conditions, updates, generation=generation, now=now)
    return previous.model_copy(update={**fields, "conditions": conditions})


def status_patch(previous: VariantAutoscalingStatus, new: VariantAutoscalingStatus) -> dict[str, Any]:
    """A merge patch body with the top-level status fields that changed; empty when nothing did."""
    old = previous.model_dump(by_alias=True, exclude_none=True, mode="json")
    cur = new.model_dump(by_alias=True, exclude_none=True, mode="json")
    changed = {key: value for key, value in cur.items() if old.get(key) != value}
    return {"status": changed} if changed else {}


def _seconds(moment: dt.datetime) -> dt.datetime:
    """metav1.Time has whole seconds; a finer value would read back different and look like a change."""
    return moment.astimezone(dt.UTC).replace(microsecond=0)
