"""The scaling settings: one pydantic model per concept, one default per field, and the order in which the
sources that may set them override each other, field by field.

Three concepts can be set in more than one place: the **behaviour** (HPA-style stabilisation windows, step
limits, cooldowns, tolerance), the **saturation** thresholds, and the **SLO**. Each has exactly one model here
(:class:`BehaviorModel`, :class:`SaturationModel`, :class:`SloModel`); the settings file
(:mod:`autoscaler.config`) and the policy file (:mod:`autoscaler.policy.schema`) both use these models, and the
VariantAutoscaling's ``spec.slo`` (:mod:`autoscaler.kube.api`) is converted into the SLO's fields.

Order of precedence, most specific first. A source overrides exactly the fields it sets; a field it leaves out
shows the next source's value, so a policy file that sets ``behavior.scale_down`` does not reset the scale-up
window the settings gave (or the default derived from them):

1. the VariantAutoscaling of the variant: ``spec.slo.ttft``/``itl``/``percentile`` (per variant);
2. the policy file (``planner.policy_file``): ``behavior``, ``saturation`` and ``models[].slo`` (per model);
3. the settings: command-line flags, then the environment (``VAS_``), then the settings file
   (:func:`autoscaler.config.load_settings`);
4. the built-in default of the field below.

Defaults derived from other settings: ``behavior.scale_up.stabilization_window_s`` unset is 120 s when new
replicas wait for a GPU node to boot (``planner.nodes_on_demand`` or ``nodes.enabled``), else 0 (see
:data:`NODE_BOOT_SCALE_UP_WINDOW_S`).

Not overridden but combined: replica bounds (the VariantAutoscaling's ``minReplicas``/``maxReplicas`` and the
policy's variant entry intersect, the tighter end wins: :func:`autoscaler.core.policyset.variant_bounds`).
Set in one place only: GPUs per replica (the variant's: ``spec.gpusPerReplica``, or for llm-d objects the pod
template's ``nvidia.com/gpu`` limit; the profile's only when the variant declares none) and the replica's price
(``spec.costPerHour``, else the policy's ``bounds.gpu_hour_usd`` times its GPUs, else the profile's list price).

``variant-autoscaler recommend --explain`` prints every effective setting of a variant with the source it came
from (:func:`explain_variant`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoscaler.core.behavior import Behavior
from autoscaler.core.policyset import PolicySet
from autoscaler.core.saturation import SaturationThresholds
from autoscaler.core.types import VariantSpec
from autoscaler.errors import ConfigError
from autoscaler.perf.capacity import SloTargets
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "CRD",
    "DEFAULT",
    "NODE_BOOT_SCALE_UP_WINDOW_S",
    "POLICY",
    "SCALE_DOWN_WINDOW_S",
    "BehaviorModel",
    "EffectiveSetting",
    "Layers",
    "SaturationModel",
    "SloModel",
    "StepModel",
    "explain_variant",
    "fields_set",
]

DEFAULT = "default"
POLICY = "policy file"
CRD = "VariantAutoscaling"

SCALE_DOWN_WINDOW_S = 300.0
"""Default scale-down window: HPA's, so one quiet sample never drops capacity."""

NODE_BOOT_SCALE_UP_WINDOW_S = 120.0
"""Default scale-up window when new replicas wait for a GPU node: a one-cycle spike would otherwise order a node
that arrives 10-17 minutes later, long after the spike; holding the rise for two minutes first filters those out
at 12-17% of that reaction time (on the simulator's Mooncake conversation replay it cut GPU-hours 7% at the same
SLO attainment: ``benchmarks/results/policies.md``). With free GPUs a pod starts in a minute or two, and two more
minutes would double the reaction: no window."""


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf/.nan (and 1e309) are refused with the field named.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StepModel(_Strict):
    """One direction of the behaviour, as HPA's ``scaleUp``/``scaleDown``."""

    stabilization_window_s: float | None = Field(
        None, ge=0, description="A change must hold this long (scale-up: the lowest recommendation in the window "
                                "wins; scale-down: the highest). Unset: 0 up (120 s when nodes boot on demand), "
                                "300 s down (HPA's default: one quiet sample never drops capacity).")
    max_step: int = Field(1, ge=0, description="Replicas per cycle; 0 = no absolute limit. One at a time down: a "
                                               "removed vLLM replica drops its in-flight requests' KV cache.")
    max_step_percent: float = Field(0.0, ge=0, description="Percent of the current replicas per cycle; 0 = unset. "
                                                           "With max_step, the larger change wins (HPA's Max).")
    cooldown_s: float = Field(0.0, ge=0, description="No step in this direction this soon after a scale event.")


class BehaviorModel(_Strict):
    """HPA-style behaviour, applied per control cycle after a recommendation (:mod:`autoscaler.core.behavior`)."""

    tolerance: float = Field(0.0, ge=0, lt=1, description="A predictive change within this fraction of the "
                                                          "current replicas is ignored (HPA uses 0.1).")
    scale_up: StepModel = StepModel()
    scale_down: StepModel = StepModel()

    @field_validator("scale_down")
    @classmethod
    def _percent(cls, value: StepModel) -> StepModel:
        if value.max_step_percent > 100:
            raise ValueError("scale_down.max_step_percent must be <= 100")
        return value


class SaturationModel(_Strict):
    """Reactive thresholds per replica, as llm-d WVA's saturation analyser (:mod:`autoscaler.core.saturation`)."""

    queue_per_replica_high: float = Field(2.0, gt=0, description="Waiting requests per replica above which the "
                                                                 "variant is saturated.")
    queue_per_replica_low: float = Field(0.25, ge=0, description="Below this (and kv_low) there is spare capacity.")
    kv_high: float = Field(0.80, gt=0, le=1, description="Mean KV-cache usage above which the variant is "
                                                         "saturated (preemptions start near 1.0).")
    kv_low: float = Field(0.40, gt=0, le=1, description="Below this (and queue_per_replica_low) there is spare "
                                                        "capacity.")

    @model_validator(mode="after")
    def _ordered(self) -> SaturationModel:
        if self.kv_low >= self.kv_high:
            raise ValueError(f"kv_low ({self.kv_low}) must be below kv_high ({self.kv_high})")
        if self.queue_per_replica_low >= self.queue_per_replica_high:
            raise ValueError(f"queue_per_replica_low ({self.queue_per_replica_low}) must be below "
                             f"queue_per_replica_high ({self.queue_per_replica_high})")
        return self


class SloModel(_Strict):
    """Latency targets the predictive sizing holds."""

    ttft_s: float = Field(1.0, gt=0, description="Time to first token target, seconds.")
    itl_s: float = Field(0.05, gt=0, description="Inter-token latency target, seconds.")
    percentile: float = Field(0.9, ge=0.5, lt=1.0, description="Fraction of requests within both targets.")


_MODELS: dict[str, type[_Strict]] = {"behavior": BehaviorModel, "saturation": SaturationModel, "slo": SloModel}


def fields_set(model: BaseModel | None, prefix: str) -> dict[str, Any]:
    """The fields a source set explicitly, as ``{"behavior.scale_up.max_step": 4, ...}`` (defaults left out)."""
    if model is None:
        return {}
    return _flatten(model.model_dump(exclude_unset=True), prefix)


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dataclass(frozen=True, slots=True)
class Layers:
    """The explicitly set fields of the behaviour, saturation and SLO, each with the source that set it; what
    no source set takes the model's default. :meth:`over` lays a more specific source on top."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    nodes_on_demand: bool = False

    @classmethod
    def defaults(cls, *, nodes_on_demand: bool = False) -> Layers:
        return cls({}, {}, nodes_on_demand)

    def over(self, fields: Mapping[str, Any], source: str | Mapping[str, str]) -> Layers:
        """These fields (``fields_set`` output) override the same fields here; every other field stays.
        ``source``: one name for all of them, or one per field."""
        sources = dict(self.sources)
        for path in fields:
            sources[path] = source if isinstance(source, str) else source[path]
        return Layers({**self.values, **fields}, sources, self.nodes_on_demand)

    def section(self, name: str) -> dict[str, Any]:
        return _nest({p[len(name) + 1:]: v for p, v in self.values.items() if p.startswith(name + ".")})

    def behavior(self) -> Behavior:
        b = BehaviorModel.model_validate(self.section("behavior"))
        up, down = b.scale_up, b.scale_down
        up_window = up.stabilization_window_s
        if up_window is None:
            up_window = NODE_BOOT_SCALE_UP_WINDOW_S if self.nodes_on_demand else 0.0
        down_window = SCALE_DOWN_WINDOW_S if down.stabilization_window_s is None else down.stabilization_window_s
        return Behavior(scale_up_window_s=up_window, scale_down_window_s=down_window,
                        max_step_up=up.max_step, max_step_down=down.max_step,
                        max_step_up_percent=up.max_step_percent, max_step_down_percent=down.max_step_percent,
                        cooldown_up_s=up.cooldown_s, cooldown_down_s=down.cooldown_s, tolerance=b.tolerance)

    def saturation(self) -> SaturationThresholds:
        s = SaturationModel.model_validate(self.section("saturation"))
        return SaturationThresholds(queue_per_replica_high=s.queue_per_replica_high, kv_high=s.kv_high,
                                    queue_per_replica_low=s.queue_per_replica_low, kv_low=s.kv_low)

    def slo(self) -> SloTargets:
        s = SloModel.model_validate(self.section("slo"))
        return SloTargets(ttft_s=s.ttft_s, itl_s=s.itl_s, percentile=s.percentile)

    def validate(self) -> None:
        """Validate the merged sections as wholes: a rule across fields (kv_low below kv_high) holds even when
        two sources set the two fields. Raises ConfigError naming the field (or the section, for a rule)."""
        for name, model in _MODELS.items():
            try:
                model.model_validate(self.section(name))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join([name, *(str(p) for p in first["loc"])])
                setters = sorted({self.sources.get(p, DEFAULT) for p in self.values if p.startswith(name + ".")})
                raise ConfigError(f"{where}: {first['msg']} (merged from: {', '.join(setters)})",
                                  field=where) from exc

    def source_map(self) -> dict[str, str]:
        """The source of every field, defaults included (:attr:`PolicySet.sources`)."""
        out = {}
        for name, model in _MODELS.items():
            for path in _leaves(model, name):
                out[path] = self.sources.get(path, DEFAULT)
        window = "behavior.scale_up.stabilization_window_s"
        if window not in self.sources:
            out[window] = f"{DEFAULT} (nodes boot on demand)" if self.nodes_on_demand else DEFAULT
        return out

    def policy_set(self, **fields: Any) -> PolicySet:
        """A PolicySet with these behaviour and saturation thresholds and their sources; ``fields``: the rest."""
        return PolicySet(behavior=self.behavior(), saturation=self.saturation(), sources=self.source_map(),
                         **fields)


def _leaves(model: type[BaseModel], prefix: str) -> Iterable[str]:
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _leaves(sub, f"{prefix}.{name}")
        else:
            yield f"{prefix}.{name}"


@dataclass(frozen=True, slots=True)
class EffectiveSetting:
    path: str
    value: Any
    source: str


def _behavior_value(behavior: Behavior, path: str) -> Any:
    direction, _, leaf = path.removeprefix("behavior.").partition(".")
    if not leaf:
        return getattr(behavior, direction)
    suffix = "up" if direction == "scale_up" else "down"
    name = {"stabilization_window_s": f"scale_{suffix}_window_s", "max_step": f"max_step_{suffix}",
            "max_step_percent": f"max_step_{suffix}_percent", "cooldown_s": f"cooldown_{suffix}_s"}[leaf]
    return getattr(behavior, name)


def explain_variant(spec: VariantSpec, policy: PolicySet, *, default_slo: SloTargets,
                    profile: PerformanceProfile | None = None) -> tuple[EffectiveSetting, ...]:
    """Every effective setting of one variant, its value and the source it came from (module docstring order).
    ``default_slo``: the settings' SLO (the planner's default)."""
    def source(path: str) -> str:
        return policy.sources.get(path, DEFAULT)

    rows = [EffectiveSetting(p, _behavior_value(policy.behavior, p), source(p))
            for p in _leaves(BehaviorModel, "behavior")]
    rows += [EffectiveSetting(p, getattr(policy.saturation, p.split(".")[1]), source(p))
             for p in _leaves(SaturationModel, "saturation")]
    model = policy.model(spec.model)
    slo = policy.slo_for(spec, default_slo)
    for path in _leaves(SloModel, "slo"):
        leaf = path.split(".")[1]
        if getattr(spec.slo, leaf) is not None:
            where = f"{CRD} spec.slo"
        elif model is not None and leaf in model.slo_set:
            where = f"{POLICY} models[{spec.model}].slo"
        else:
            where = source(path)
        rows.append(EffectiveSetting(path, getattr(slo, leaf), where))
    bounds = f"{CRD} spec" + (f", tightened by the {POLICY}" if policy.variant_policy(spec) else "")
    rows += [EffectiveSetting("min_replicas", spec.min_replicas, bounds),
             EffectiveSetting("max_replicas", spec.max_replicas, bounds)]
    profile_gpus = profile.gpus_per_replica if profile else None
    gpus = spec.gpus(profile_gpus)
    rows.append(EffectiveSetting(
        "gpus_per_replica", gpus, f"{CRD} spec.gpusPerReplica" if spec.gpus_per_replica is not None
        else f"profile {profile.name}" if profile is not None else DEFAULT))
    gpu_price = policy.bounds.gpu_hour_price.get(spec.accelerator)
    if spec.cost_per_hour is not None:
        rows.append(EffectiveSetting("cost_per_hour", spec.cost_per_hour, f"{CRD} spec.costPerHour"))
    elif gpu_price is not None:
        rows.append(EffectiveSetting("cost_per_hour", gpu_price * gpus, f"{POLICY} bounds.gpu_hour_usd"))
    elif profile is not None:
        rows.append(EffectiveSetting("cost_per_hour", profile.cost_per_gpu_hour * gpus, f"profile {profile.name}"))
    return tuple(rows)
