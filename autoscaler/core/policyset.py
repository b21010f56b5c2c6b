"""The declarative policy as core values: per model SLOs and priority, per variant bounds, global cost bounds.

Built from ``policies/*.yaml`` by :mod:`autoscaler.policy` (pydantic at the boundary); everything here is
frozen and already valid. A variant of a model is matched by (role, accelerator), the same key the
VariantAutoscaling objects carry.

>>> policy = PolicySet(models=(ModelPolicy(model="llama", variants=(
...     VariantPolicy(role=Role.DECODE, accelerator="H100", max_replicas=8),)),))
>>> policy.model("llama").variant(Role.DECODE, "H100").max_replicas
8
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from autoscaler.core.accelerators import canonical_accelerator
from autoscaler.core.behavior import Behavior
from autoscaler.core.saturation import SaturationThresholds
from autoscaler.core.schedule import Schedule, apply_schedule, scheduled_bounds
from autoscaler.core.types import Reason, Role, SloFields, VariantSpec
from autoscaler.perf.capacity import SloTargets

__all__ = ["CostBounds", "ModelPolicy", "PolicySet", "VariantBounds", "VariantPolicy", "variant_bounds",
           "with_slo_fields"]


@dataclass(frozen=True, slots=True)
class VariantPolicy:
    role: Role
    accelerator: str
    min_replicas: int | None = None
    """Floor while the variant serves; None = the VariantAutoscaling's own. Both apply: the larger wins."""
    max_replicas: int | None = None
    """Ceiling; None = the VariantAutoscaling's own. Both apply: the smaller wins."""
    scale_to_zero: bool = False
    """May go to zero replicas after ``idle_window_s`` without any demand (and no forecast demand)."""
    idle_window_s: float = 600.0
    """How long a variant must be idle before it goes to zero: long enough to ride out a lull between bursts."""
    schedule: Schedule | None = None
    profile: str | None = None
    """Name of the performance profile (``models/profiles``) that sizes this variant; None = look up by key."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "accelerator", canonical_accelerator(self.accelerator))
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if (self.min_replicas is not None and self.max_replicas is not None
                and self.min_replicas > self.max_replicas):
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        if self.idle_window_s < 0:
            raise ValueError(f"idle_window_s must be >= 0, got {self.idle_window_s}")


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    model: str
    slo: SloTargets | None = None
    """The model's SLO, the policy file's fields laid over the settings' (None: the settings' SLO holds)."""
    priority: int = 0
    """Higher is served first when cost bounds bind (as Kubernetes PriorityClass values)."""
    variants: tuple[VariantPolicy, ...] = ()
    slo_set: frozenset[str] = frozenset()
    """Which SLO fields the policy file set (``ttft_s``, ...), for ``recommend --explain``."""

    def variant(self, role: Role, accelerator: str) -> VariantPolicy | None:
        for v in self.variants:
            if v.role is role and v.accelerator == canonical_accelerator(accelerator):
                return v
        return None


def _by_accelerator(values: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = canonical_accelerator(name)
        if key in out and out[key] != value:
            raise ValueError(f"accelerator {name!r} is given twice (as {key}) with different values")
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class CostBounds:
    """Global limits over every managed variant. ``None`` / absent = no limit."""

    gpu_quota: Mapping[str, int] = field(default_factory=dict)
    """GPUs per accelerator type (e.g. the namespace's ResourceQuota on nvidia.com/gpu for that node pool)."""
    max_gpus: int | None = None
    """GPUs in total, all accelerator types together."""
    budget_per_hour: float | None = None
    """US dollars per hour for all replicas together, priced per GPU-hour."""
    gpu_hour_price: Mapping[str, float] = field(default_factory=dict)
    """$/GPU-hour per accelerator type; overrides the profiles' list prices (negotiated or spot prices)."""

    def __post_init__(self) -> None:
        # Quota and price keys are accelerator types: one spelling, as every spec and MachineSet has.
        object.__setattr__(self, "gpu_quota", _by_accelerator(self.gpu_quota))
        object.__setattr__(self, "gpu_hour_price", _by_accelerator(self.gpu_hour_price))

    @property
    def unbounded(self) -> bool:
        return not self.gpu_quota and self.max_gpus is None and self.budget_per_hour is None


@dataclass(frozen=True, slots=True)
class PolicySet:
    models: tuple[ModelPolicy, ...] = ()
    bounds: CostBounds = field(default_factory=CostBounds)
    saturation: SaturationThresholds = field(default_factory=SaturationThresholds)
    behavior: Behavior = field(default_factory=Behavior)
    source: str = ""  # where it was loaded from, for status and logs
    sources: Mapping[str, str] = field(default_factory=dict)
    """Which source set each behaviour, saturation and SLO field (``behavior.scale_up.max_step`` -> ``policy
    file``), as :mod:`autoscaler.scaling_settings` merged them; a field not listed has its default."""

    def model(self, name: str) -> ModelPolicy | None:
        for m in self.models:
            if m.model == name:
                return m
        return None

    def variant_policy(self, spec: VariantSpec) -> VariantPolicy | None:
        model = self.model(spec.model)
        return model.variant(spec.role, spec.accelerator) if model else None

    def slo_for(self, spec: VariantSpec, default: SloTargets) -> SloTargets:
        """The variant's SLO, field by field: its VariantAutoscaling's ``spec.slo``, else the model's policy,
        else ``default`` (the settings')."""
        model = self.model(spec.model)
        base = model.slo if model is not None and model.slo is not None else default
        return with_slo_fields(base, spec.slo)

    def priority(self, model: str) -> int:
        found = self.model(model)
        return found.priority if found else 0


def with_slo_fields(base: SloTargets, fields: SloFields) -> SloTargets:
    """``base`` with the fields ``fields`` sets."""
    changes = {name: value for name in ("ttft_s", "itl_s", "percentile")
               if (value := getattr(fields, name)) is not None}
    return replace(base, **changes) if changes else base


@dataclass(frozen=True, slots=True)
class VariantBounds:
    """The replica range of a variant at one instant, and which rule set each end."""

    min_replicas: int
    max_replicas: int
    min_reason: Reason = Reason.TOO_FEW_REPLICAS  # SCHEDULE_MINIMUM when a schedule window raised it
    max_reason: Reason = Reason.TOO_MANY_REPLICAS  # SCHEDULE_MAXIMUM when a schedule window lowered it
    windows: tuple[str, ...] = ()  # schedule windows in force
    scale_to_zero: bool = False
    idle_window_s: float = 0.0


def variant_bounds(*, spec: VariantSpec, policy: VariantPolicy | None, now: float) -> VariantBounds:
    """Intersect the VariantAutoscaling's bounds with the policy's and its schedule's (maxima win)."""
    low, high = spec.min_replicas, spec.max_replicas
    if policy is None:
        return VariantBounds(min(low, high), high)
    if policy.min_replicas is not None:
        low = max(low, policy.min_replicas)
    if policy.max_replicas is not None:
        high = min(high, policy.max_replicas)
    low = min(low, high)
    scheduled = scheduled_bounds(schedule=policy.schedule, now=now)
    new_low, new_high = apply_schedule(min_replicas=low, max_replicas=high, bounds=scheduled)
    return VariantBounds(
        new_low, new_high,
        min_reason=Reason.SCHEDULE_MINIMUM if new_low > low else Reason.TOO_FEW_REPLICAS,
        max_reason=Reason.SCHEDULE_MAXIMUM if new_high < high else Reason.TOO_MANY_REPLICAS,
        windows=scheduled.windows, scale_to_zero=policy.scale_to_zero, idle_window_s=policy.idle_window_s,
    )
