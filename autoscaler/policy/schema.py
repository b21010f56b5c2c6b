"""The policy file schema (pydantic, the boundary) and its conversion into core values.

A policy file (``policies/*.yaml``)::

    version: 1
    models:
      - name: meta-llama/Llama-3.1-8B-Instruct
        priority: 100                       # higher is served first when cost bounds bind
        slo: {ttft_s: 1.0, itl_s: 0.05, percentile: 0.9}
        variants:
          - role: decode                    # prefill | decode | both
            accelerator: nvidia-h100-80gb   # as the VariantAutoscaling says
            min_replicas: 1
            max_replicas: 16
            scale_to_zero: false
            idle_window_s: 600
            schedule:
              timezone: Europe/Paris
              windows:
                - {days: [mon-fri], start: "08:00", end: "20:00", min_replicas: 4}
    bounds:
      gpu_quota: {nvidia-h100-80gb: 32}
      max_gpus: 48
      budget_usd_per_hour: 150
      gpu_hour_usd: {nvidia-h100-80gb: 3.2}
    behavior:                               # as HPA's spec.behavior, per cycle
      tolerance: 0.1
      scale_up:   {stabilization_window_s: 0,   max_step: 4, max_step_percent: 100, cooldown_s: 0}
      scale_down: {stabilization_window_s: 300, max_step: 1, max_step_percent: 0,   cooldown_s: 60}
    saturation: {queue_per_replica_high: 2, queue_per_replica_low: 0.25, kv_high: 0.8, kv_low: 0.4}

Every field is optional. ``behavior``, ``saturation`` and ``slo`` are the models of
:mod:`autoscaler.scaling_settings`, shared with the settings file: a field this file leaves out keeps the
settings' value (then the built-in default), field by field, and a VariantAutoscaling's ``spec.slo`` overrides
the model's SLO the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autoscaler.core.accelerators import canonical_accelerator
from autoscaler.core.policyset import CostBounds, ModelPolicy, PolicySet, VariantPolicy
from autoscaler.core.schedule import DAYS, Schedule, ScheduleWindow
from autoscaler.core.types import Role
from autoscaler.errors import ConfigError
from autoscaler.scaling_settings import POLICY, BehaviorModel, Layers, SaturationModel, SloModel, fields_set

__all__ = ["PolicyFile", "to_policy_set"]

_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf/.nan: refused, field named


def _seconds(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class WindowModel(_Strict):
    name: str = ""
    days: list[str] = Field(default_factory=lambda: list(DAYS), min_length=1,
                            description="Day names (mon..sun) or ranges such as mon-fri.")
    start: str = Field("00:00", description="Local time HH:MM the window opens.")
    end: str = Field("24:00", description="Local time HH:MM it closes; at or before start = runs overnight.")
    min_replicas: NonNegativeInt | None = None
    max_replicas: NonNegativeInt | None = None

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        for item in value:
            for part in item.lower().split("-"):
                if part not in DAYS:
                    raise ValueError(f"unknown day {part!r}; use {', '.join(DAYS)} or a range like mon-fri")
            if item.count("-") > 1:
                raise ValueError(f"a day range has one dash, got {item!r}")
        return value

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError(f"expected HH:MM between 00:00 and 24:00, got {value!r}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> WindowModel:
        if self.min_replicas is None and self.max_replicas is None:
            raise ValueError("a window must set min_replicas, max_replicas or both")
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        if self.start == "24:00":
            raise ValueError("start must be before 24:00")
        return self

    def day_numbers(self) -> frozenset[int]:
        out: set[int] = set()
        for item in self.days:
            first, _, last = item.lower().partition("-")
            a, b = DAYS.index(first), DAYS.index(last or first)
            out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])  # fri-mon wraps
        return frozenset(out)


class ScheduleModel(_Strict):
    timezone: str = Field("UTC", description="IANA time zone of the windows, e.g. America/New_York.")
    windows: list[WindowModel] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class VariantModel(_Strict):
    role: Literal["prefill", "decode", "both"]
    accelerator: str = Field(min_length=1)
    min_replicas: NonNegativeInt | None = None
    max_replicas: NonNegativeInt | None = None
    scale_to_zero: bool = False
    idle_window_s: float = Field(600.0, ge=0)
    schedule: ScheduleModel | None = None
    profile: str | None = None

    @model_validator(mode="after")
    def _range(self) -> VariantModel:
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class ModelModel(_Strict):
    name: str = Field(min_length=1)
    priority: int = 0
    slo: SloModel | None = None
    variants: list[VariantModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _variants(self) -> ModelModel:
        keys = [(v.role, canonical_accelerator(v.accelerator)) for v in self.variants]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"variant role={key[0]} accelerator={key[1]} is listed twice")
        roles = {v.role for v in self.variants}
        if "both" in roles and len(roles) > 1:
            raise ValueError("a model is either aggregated (role both) or disaggregated (prefill/decode), not both")
        return self


class BoundsModel(_Strict):
    gpu_quota: dict[str, NonNegativeInt] = Field(default_factory=dict)
    max_gpus: NonNegativeInt | None = None
    budget_usd_per_hour: float | None = Field(None, ge=0)
    gpu_hour_usd: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @field_validator("gpu_quota", "gpu_hour_usd")
    @classmethod
    def _one_key_per_accelerator(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Keys are accelerator types: two spellings of one GPU (H100, nvidia-h100-80gb) are one key."""
        seen: dict[str, str] = {}
        for name in values:
            key = canonical_accelerator(name)
            if key in seen:
                raise ValueError(f"accelerator {name!r} is given twice (as {seen[key]!r}; both are {key})")
            seen[key] = name
        return values


class PolicyFile(_Strict):
    version: Literal[1] = 1
    models: list[ModelModel] = Field(default_factory=list)
    bounds: BoundsModel | None = None
    behavior: BehaviorModel | None = None
    saturation: SaturationModel | None = None

    @model_validator(mode="after")
    def _unique_models(self) -> PolicyFile:
        names = [m.name for m in self.models]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"model {name!r} is listed twice")
        return self


def _variant(v: VariantModel) -> VariantPolicy:
    schedule = None
    if v.schedule is not None:
        schedule = Schedule(v.schedule.timezone, tuple(
            ScheduleWindow(days=w.day_numbers(), start_s=_seconds(w.start), end_s=_seconds(w.end),
                           min_replicas=w.min_replicas, max_replicas=w.max_replicas, name=w.name)
            for w in v.schedule.windows))
    return VariantPolicy(role=Role(v.role), accelerator=v.accelerator, min_replicas=v.min_replicas,
                         max_replicas=v.max_replicas, scale_to_zero=v.scale_to_zero,
                         idle_window_s=v.idle_window_s, schedule=schedule, profile=v.profile)


def to_policy_set(policy: PolicyFile, *, source: str = "", base: Layers | None = None) -> PolicySet:
    """Convert a validated file into the core's frozen values. ``base``: the settings' behaviour, saturation and
    SLO with their sources; the fields this file sets override them one by one (:mod:`autoscaler.scaling_settings`),
    what it leaves out keeps the settings' value (or the built-in default). Raises ConfigError when the merged
    values break a rule across fields (a kv_low the file sets above the settings' kv_high)."""
    base = base if base is not None else Layers.defaults()
    layers = base.over({**fields_set(policy.behavior, "behavior"), **fields_set(policy.saturation, "saturation")},
                       POLICY)
    try:
        layers.validate()
    except ConfigError as exc:
        raise ConfigError(f"{source or 'policy'}: {exc}", field=exc.field) from exc
    bounds = policy.bounds or BoundsModel()
    return layers.policy_set(
        models=tuple(
            ModelPolicy(model=m.name, priority=m.priority,
                        slo=base.over(fields_set(m.slo, "slo"), POLICY).slo() if m.slo else None,
                        slo_set=frozenset(m.slo.model_fields_set) if m.slo else frozenset(),
                        variants=tuple(_variant(v) for v in m.variants))
            for m in policy.models),
        bounds=CostBounds(gpu_quota=dict(bounds.gpu_quota), max_gpus=bounds.max_gpus,
                          budget_per_hour=bounds.budget_usd_per_hour, gpu_hour_price=dict(bounds.gpu_hour_usd)),
        source=source,
    )
