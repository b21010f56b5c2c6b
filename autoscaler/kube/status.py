"""The status of a VariantAutoscaling as a value: next status from the previous one, and the merge patch.

Pure (no I/O, the time is passed in). Conditions follow the Kubernetes API conventions and the HPA's types:

- ``AbleToScale``: the target could be read and patched (False: TargetNotFound, Forbidden, Conflict,
  ApiTimeout, ...).
- ``ScalingActive``: the controller had the signals to compute a recommendation (False: SignalsMissing,
  SignalsStale, SignalsInvalid), so it holds the replicas where they are.
- ``ScalingLimited``: the desired count was clamped by minReplicas/maxReplicas.

The cycle's insight (forecast, admission ratio and prediction, calibration) fills ``forecast``,
``admissionRatio``, ``admission`` and ``calibration`` field by field; a value the cycle does not know keeps
what the status had. Numbers are written to 3 significant digits, so the status (and the API server) sees a
write when a number moves, not on every wobble of a forecast.

``lastTransitionTime`` moves only when a condition's status flips, so re-writing the same condition with a new
message does not reset it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autoscaler.controller.ports import VariantInsight
from autoscaler.core.types import Decision, Reason
from autoscaler.kube.api import (
    AdmissionSummary,
    CalibrationSummary,
    Condition,
    ForecastSummary,
    VariantAutoscalingStatus,
)

__all__ = [
    "ABLE_TO_SCALE",
    "SCALING_ACTIVE",
    "SCALING_LIMITED",
    "ConditionUpdate",
    "decimal_text",
    "decision_conditions",
    "duration_text",
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
_HOLD_REASONS = {Reason.SIGNALS_MISSING, Reason.SIGNALS_STALE, Reason.SIGNALS_INVALID}
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
    insight: VariantInsight | None = None,
) -> VariantAutoscalingStatus:
    """The status after one cycle: fields the controller owns replaced, the rest kept; ``insight`` fields
    that are None keep the status's value too."""
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
    if insight is not None:
        fields.update(_insight_fields(previous, insight))
    conditions = merge_conditions(previous.conditions, updates, generation=generation, now=now)
    return previous.model_copy(update={**fields, "conditions": conditions})


def status_patch(previous: VariantAutoscalingStatus, new: VariantAutoscalingStatus) -> dict[str, Any]:
    """A merge patch body with the top-level status fields that changed; empty when nothing did."""
    old = previous.model_dump(by_alias=True, exclude_none=True, mode="json")
    cur = new.model_dump(by_alias=True, exclude_none=True, mode="json")
    changed = {key: value for key, value in cur.items() if old.get(key) != value}
    return {"status": changed} if changed else {}


def decimal_text(value: float | None, *, digits: int = 3) -> str | None:
    """A non-negative number as the API's decimal string (``^[0-9]+(\\.[0-9]{1,6})?$``), rounded to ``digits``
    significant digits; None for None, negative, NaN or a number too long to write."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    if value == 0:
        return "0"
    places = min(6, digits - 1 - math.floor(math.log10(value)))
    text = f"{round(value, places):.{max(places, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if len(text) <= 32 else None


def _ratio_text(value: float | None) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    text = f"{min(max(value, 0.0), 1.0):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def duration_text(seconds: float | None) -> str | None:
    """Seconds as a Go duration string (``500ms``, ``45s``, ``10m``, ``1h30m``); whole seconds from 1 s on."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


def _merged(model: type[ForecastSummary | CalibrationSummary | AdmissionSummary], previous: Any,
            known: dict[str, Any]) -> Any:
    """``previous`` with the known values replaced; None when there is neither."""
    known = {k: v for k, v in known.items() if v is not None}
    if not known:
        return previous
    base = previous.model_dump() if previous is not None else {}
    return model.model_validate({**base, **known})


def _insight_fields(previous: VariantAutoscalingStatus, insight: VariantInsight) -> dict[str, Any]:
    out: dict[str, Any] = {}
    forecast = _merged(ForecastSummary, previous.forecast, {
        "horizon": duration_text(insight.forecast_horizon_s),
        "requests_per_second": decimal_text(insight.forecast_rps),
        "prompt_tokens_per_second": decimal_text(insight.forecast_prompt_tokens_per_s),
        "generation_tokens_per_second": decimal_text(insight.forecast_generation_tokens_per_s),
    })
    if forecast is not None:
        out["forecast"] = forecast
    calibration = _merged(CalibrationSummary, previous.calibration, {
        "profile": insight.profile,
        "samples": insight.calibration_samples if insight.calibration_samples is None
        else max(0, insight.calibration_samples),
        "factor": decimal_text(insight.calibration_factor),
        "relative_error": decimal_text(insight.calibration_relative_error),
    })
    if calibration is not None:
        out["calibration"] = calibration
    admission = _merged(AdmissionSummary, previous.admission, {
        "rejection_threshold": decimal_text(insight.rejection_threshold),
        "predicted_prefill_load": decimal_text(insight.predicted_prefill_load),
        "predicted_decode_load": decimal_text(insight.predicted_decode_load),
    })
    if admission is not None:
        out["admission"] = admission
    ratio = _ratio_text(insight.admission_ratio)
    if ratio is not None:
        out["admission_ratio"] = ratio
    return out


def _seconds(moment: dt.datetime) -> dt.datetime:
    """metav1.Time has whole seconds; a finer value would read back different and look like a change."""
    return moment.astimezone(dt.UTC).replace(microsecond=0)
