"""Value types shared by the core, its adapters and the shell.

Frozen dataclasses: cheap, hashable, and impossible to mutate behind a stage's back.
Pydantic models live at the boundaries (config, CRD, files) and convert into these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Role",
    "VariantRef",
    "ScaleTarget",
    "VariantSpec",
    "Freshness",
    "VariantSignals",
    "Reason",
    "DecisionStep",
    "Decision",
    "finite_or_none",
]


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"  # aggregated serving: one pool does prefill and decode


@dataclass(frozen=True, slots=True, order=True)
class VariantRef:
    """Identity of a variant: the namespaced name of its VariantAutoscaling object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    """The object whose ``scale`` subresource is patched (Deployment, StatefulSet, LWS, ...)."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One model on one accelerator type in one role, and the bounds it is scaled within."""

    ref: VariantRef
    model: str
    role: Role
    accelerator: str
    target: ScaleTarget
    min_replicas: int = 1
    max_replicas: int = 10
    dry_run: bool = False


class Freshness(StrEnum):
    FRESH = "fresh"  # every required signal answered within the staleness bound
    STALE = "stale"  # answered, but the newest sample is older than the bound
    MISSING = "missing"  # no answer (Prometheus down, no series for this variant)


def finite_or_none(value: float | None) -> float | None:
    """NaN and +-Inf carry no information for a decision: treat them as absent."""
    if value is None:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class VariantSignals:
    """What Prometheus says about one variant in one cycle. ``None`` means "not known".

    Totals are summed over the variant's pods; ``pods`` is how many pods reported.
    """

    freshness: Freshness
    pods: int | None = None
    waiting: float | None = None  # vllm:num_requests_waiting, summed
    running: float | None = None  # vllm:num_requests_running, summed
    kv_usage_mean: float | None = None  # 0..1
    kv_usage_max: float | None = None  # 0..1
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    ttft_p90_s: float | None = None
    itl_p90_s: float | None = None
    missing: tuple[str, ...] = ()
    note: str = ""

    @classmethod
    def unknown(cls, note: str) -> "VariantSignals":
        return cls(freshness=Freshness.MISSING, note=note)


class Reason(StrEnum):
    """Why a stage produced the replicas it did. Maps onto status conditions and events."""

    SATURATED = "Saturated"
    UNDERUTILISED = "Underutilised"
    WITHIN_TOLERANCE = "WithinTolerance"
    SIGNALS_MISSING = "SignalsMissing"
    SIGNALS_STALE = "SignalsStale"
    SCALE_UP_STABILISED = "ScaleUpStabilized"
    SCALE_DOWN_STABILISED = "ScaleDownStabilized"
    STEP_LIMITED = "StepLimited"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    DESIRED_WITHIN_RANGE = "DesiredWithinRange"
    SLO_CAPACITY = "SLOCapacity"
    FORECAST = "Forecast"
    BUDGET_LIMITED = "BudgetLimited"
    QUOTA_LIMITED = "QuotaLimited"


@dataclass(frozen=True, slots=True)
class DecisionStep:
    """One stage's output, kept for observability (as llm-d WVA's DecisionStep)."""

    stage: str
    replicas: int
    reason: Reason
    message: str
    constrained: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    variant: VariantRef
    current: int
    desired: int
    steps: tuple[DecisionStep, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    @property
    def reason(self) -> Reason:
        """The reason of the last stage that constrained the value, else the recommendation's."""
        for step in reversed(self.steps):
            if step.constrained:
                return step.reason
        return self.steps[0].reason if self.steps else Reason.WITHIN_TOLERANCE

    @property
    def message(self) -> str:
        return "; ".join(f"{s.stage}: {s.message}" for s in self.steps)
