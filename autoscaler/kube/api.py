"""The VariantAutoscaling custom resource (v1alpha1) as pydantic models, and conversion to core values.

Group ``variant-autoscaler.io``: our own, so it can live beside llm-d's ``llmd.ai`` VariantAutoscaling.
These models are the single source of the CRD's schema: :mod:`autoscaler.kube.schema` generates
manifests/crd/variantautoscalings.yaml from them (tests/core/test_crd_sync.py proves the file is current).
Rules that span fields exist twice, as CEL in ``x-kubernetes-validations`` (so the API server refuses a bad
object) and as a pydantic validator (so the controller refuses one that slipped past an older CRD); both carry
the same message, and tests run one table of cases through each.

Following the API conventions: no floats in spec or status (decimals are strings, durations are Go duration
strings such as ``500ms``), camelCase names, conditions shaped like ``metav1.Condition``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from autoscaler.config import format_validation_error
from autoscaler.core.types import Role, ScaleTarget, SloFields, VariantRef, VariantSpec
from autoscaler.errors import SpecError

__all__ = [
    "API_VERSION",
    "DRY_RUN_ANNOTATION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "CalibrationSummary",
    "Condition",
    "ForecastSummary",
    "MachineSetRef",
    "ScaleTargetRef",
    "ServiceLevelObjective",
    "VariantAutoscaling",
    "VariantAutoscalingSpec",
    "VariantAutoscalingStatus",
    "parse_duration",
    "parse_variant_autoscaling",
    "to_variant_spec",
]

GROUP = "variant-autoscaler.io"
VERSION = "v1alpha1"
PLURAL = "variantautoscalings"
KIND = "VariantAutoscaling"
API_VERSION = f"{GROUP}/{VERSION}"
DRY_RUN_ANNOTATION = f"{GROUP}/dry-run"

# Go's time.ParseDuration units that make sense here (metav1.Duration is what users know from other CRDs).
_DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DECIMAL = r"^[0-9]+(\.[0-9]{1,6})?$"
_RATIO = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$"
# metav1.Condition's reason: CamelCase, machine-readable.
_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Int32 = Annotated[int, Field(json_schema_extra={"format": "int32"})]
Int64 = Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})]
Name = Annotated[str, Field(min_length=1, max_length=253)]
DurationText = Annotated[str, Field(pattern=_DURATION, max_length=64)]
DecimalText = Annotated[str, Field(pattern=_DECIMAL, max_length=32)]

# The cross-field rules: (CEL, message). The pydantic validators below raise these same messages.
MIN_LE_MAX = ("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
              "minReplicas must be less than or equal to maxReplicas")
REPLICA_FITS_MACHINES = (
    ("!has(self.machineSetRef) || !has(self.gpusPerReplica)"
     " || self.gpusPerReplica <= self.machineSetRef.gpusPerMachine"
     " || self.gpusPerReplica % self.machineSetRef.gpusPerMachine == 0"),
    ("gpusPerReplica must fit on one machine (<= machineSetRef.gpusPerMachine) or span whole machines"
     " (a multiple of it)"),
)
SLO_HAS_TARGET = ("has(self.ttft) || has(self.itl)", "slo needs at least one target: ttft or itl")
MACHINE_API_MATCHES_KIND = (
    ("self.kind == 'MachineSet' ? self.apiVersion.startsWith('machine.openshift.io/')"
     " : self.apiVersion.startsWith('cluster.x-k8s.io/')"),
    "apiVersion must be machine.openshift.io/* for a MachineSet and cluster.x-k8s.io/* for a MachineDeployment",
)


# Where a rule blames one field, the API server's error names it (spec.minReplicas: Invalid value ...).
_FIELD_PATHS = {MIN_LE_MAX: ".minReplicas", REPLICA_FITS_MACHINES: ".gpusPerReplica"}


def _rules(*rules: tuple[str, str]) -> dict[str, Any]:
    out = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if rule in _FIELD_PATHS:
            entry["fieldPath"] = _FIELD_PATHS[rule]
        out.append(entry)
    return {"x-kubernetes-validations": out}


class _Model(BaseModel):
    # extra="ignore": an object written under a newer CRD must not make an older controller refuse it.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel, frozen=True)


class ScaleTargetRef(_Model):
    """The object whose scale subresource is patched: a Deployment, StatefulSet, LeaderWorkerSet, or any
    resource with a scale subresource, in the namespace of the VariantAutoscaling."""

    api_version: str = Field(min_length=1, max_length=316, description="API version of the target, e.g. apps/v1.")
    kind: str = Field(min_length=1, max_length=63, description="Kind of the target, e.g. Deployment.")
    name: Name = Field(description="Name of the target.")


class ServiceLevelObjective(_Model):
    """Latency targets the replicas are sized for."""

    model_config = ConfigDict(json_schema_extra=_rules(SLO_HAS_TARGET))

    ttft: DurationText | None = Field(None, description="Time to first token target, e.g. 500ms.")
    itl: DurationText | None = Field(None, description="Inter-token latency target, e.g. 50ms.")
    percentile: Int32 | None = Field(None, ge=50, le=99, description="Percentile the targets hold at; unset: "
                                                                     "the policy's or the controller's (90).")

    @model_validator(mode="after")
    def _has_target(self) -> ServiceLevelObjective:
        if self.ttft is None and self.itl is None:
            raise ValueError(SLO_HAS_TARGET[1])
        return self


class MachineSetRef(_Model):
    """The node group that supplies this variant's GPUs: an OpenShift MachineSet or a cluster-api
    MachineDeployment, scaled through its scale subresource."""

    model_config = ConfigDict(json_schema_extra=_rules(MACHINE_API_MATCHES_KIND))

    api_version: str = Field("machine.openshift.io/v1beta1", min_length=1, max_length=316,
                             description="machine.openshift.io/v1beta1 or cluster.x-k8s.io/v1beta1.")
    kind: Literal["MachineSet", "MachineDeployment"] = Field("MachineSet", description="Kind of the node group.")
    name: Name = Field(description="Name of the node group.")
    namespace: Name = Field("openshift-machine-api", description="Namespace of the node group.")
    gpus_per_machine: Int32 = Field(ge=1, description="GPUs one machine of this group provides.")

    @model_validator(mode="after")
    def _api_matches_kind(self) -> MachineSetRef:
        prefix = "machine.openshift.io/" if self.kind == "MachineSet" else "cluster.x-k8s.io/"
        if not self.api_version.startswith(prefix):
            raise ValueError(MACHINE_API_MATCHES_KIND[1])
        return self


class VariantAutoscalingSpec(_Model):
    """Desired autoscaling of one variant: one model on one accelerator type in one role."""

    model_config = ConfigDict(json_schema_extra=_rules(MIN_LE_MAX, REPLICA_FITS_MACHINES))

    model: str = Field(min_length=1, max_length=253, description="Model name as served (vLLM's model_name label).")
    role: Role = Field(description="Serving role of the pods scaled: prefill, decode, or both (aggregated).")
    accelerator: str = Field(min_length=1, max_length=63, description="Accelerator type, e.g. H100.")
    scale_target_ref: ScaleTargetRef
    min_replicas: Int32 = Field(1, ge=0, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: Int32 = Field(ge=1, description="Most replicas.")
    slo: ServiceLevelObjective | None = Field(
        None, description="Latency objectives the replicas are sized for; each target set here overrides the "
                          "policy file's and the controller's for this variant.")
    # No default: an object that leaves it out takes its profile's count (a TP4 70B uses 4), which a
    # schema default of 1 would hide from the controller.
    gpus_per_replica: Int32 | None = Field(
        None, ge=1, description="GPUs one replica uses (tensor x pipeline parallel): the one count quotas, prices "
                                "and MachineSet sizing use. Unset: the model's performance profile's count.")
    cost_per_hour: DecimalText | None = Field(
        None, description="Cost of one replica for one hour in US dollars; overrides the policy's GPU-hour "
                          "price and the profile's list price."
    )
    machine_set_ref: MachineSetRef | None = Field(None, description="Node group to scale with the replicas.")

    @model_validator(mode="after")
    def _cross_field(self) -> VariantAutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"{MIN_LE_MAX[1]} (minReplicas {self.min_replicas} > maxReplicas {self.max_replicas})")
        ms = self.machine_set_ref
        gpus = self.gpus_per_replica
        if ms is not None and gpus is not None and gpus > ms.gpus_per_machine and gpus % ms.gpus_per_machine:
            raise ValueError(REPLICA_FITS_MACHINES[1])
        return self


class Condition(_Model):
    """One aspect of the current state, as metav1.Condition."""

    type: str = Field(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$",
                      description="CamelCase type, e.g. AbleToScale.")
    status: Literal["True", "False", "Unknown"]
    observed_generation: Int64 | None = Field(None, description="metadata.generation the condition was set for.")
    last_transition_time: dt.datetime = Field(description="When status last changed.")
    reason: str = Field(min_length=1, max_length=1024, pattern=_REASON, description="CamelCase reason.")
    message: str = Field(max_length=32768, description="Human-readable detail.")


class ForecastSummary(_Model):
    """The demand forecast the last decision used."""

    horizon: DurationText | None = Field(None, description="How far ahead the forecast looks.")
    requests_per_second: DecimalText | None = None
    prompt_tokens_per_second: DecimalText | None = None
    generation_tokens_per_second: DecimalText | None = None


class CalibrationSummary(_Model):
    """How well the performance profile matches what the pods measure."""

    profile: str | None = Field(None, max_length=253, description="Name of the performance profile in use.")
    samples: Int32 | None = Field(None, ge=0, description="Observations the calibration is based on.")
    factor: DecimalText | None = Field(
        None, description="Observed / profile-predicted latency at the operating point (1 = the profile is right).")
    relative_error: DecimalText | None = Field(None, description="Mean relative error of predicted latency.")


class AdmissionSummary(_Model):
    """Prediction-based early rejection for the model (Mooncake, arXiv 2407.00079, section 7): loads are
    predicted latency over its SLO, so 1 is at the SLO."""

    rejection_threshold: DecimalText | None = Field(
        None, description="Predicted load above which a gateway rejects new requests.")
    predicted_prefill_load: DecimalText | None = Field(
        None, description="Predicted TTFT of a request arriving now over the TTFT SLO.")
    predicted_decode_load: DecimalText | None = Field(
        None, description="Predicted decode load when a request admitted now reaches decode.")


class VariantAutoscalingStatus(_Model):
    """Observed state, written by the controller through the status subresource."""

    observed_generation: Int64 | None = Field(None, description="metadata.generation of the last decision.")
    current_replicas: Int32 | None = Field(None, ge=0, description="Replicas the target had.")
    desired_replicas: Int32 | None = Field(None, ge=0, description="Replicas the controller decided.")
    last_scale_time: dt.datetime | None = Field(None, description="When the target was last scaled.")
    reason: str | None = Field(None, max_length=1024, description="Reason of the last decision.")
    message: str | None = Field(None, max_length=4096, description="How the last decision was reached.")
    forecast: ForecastSummary | None = None
    calibration: CalibrationSummary | None = None
    admission_ratio: str | None = Field(None, pattern=_RATIO, max_length=16,
                                        description="Fraction of requests admitted (0-1) under early rejection.")
    admission: AdmissionSummary | None = None
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="AbleToScale, ScalingActive, ScalingLimited.",
    )


class VariantAutoscaling(_Model):
    """A VariantAutoscaling object as read from the API (metadata kept as the few fields the controller uses)."""

    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    spec: VariantAutoscalingSpec
    status: VariantAutoscalingStatus = Field(default_factory=VariantAutoscalingStatus)

    @property
    def ref(self) -> VariantRef:
        return VariantRef(namespace=self.namespace, name=self.name)

    @property
    def dry_run(self) -> bool:
        return str(self.annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true"


def parse_variant_autoscaling(obj: dict[str, Any]) -> VariantAutoscaling:
    """Validate an object as the API returns it; :class:`SpecError` names the object and the field."""
    meta = obj.get("metadata") or {}
    where = f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
    try:
        spec = VariantAutoscalingSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source=f"VariantAutoscaling {where}: spec")) from exc
    try:
        status = VariantAutoscalingStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = VariantAutoscalingStatus()  # a status we cannot read is rewritten, never a reason to stop
    if not meta.get("namespace") or not meta.get("name"):
        raise SpecError(f"VariantAutoscaling {where}: metadata needs namespace and name")
    return VariantAutoscaling(
        namespace=meta["namespace"], name=meta["name"], uid=meta.get("uid") or "",
        generation=int(meta.get("generation") or 0), annotations=meta.get("annotations") or {},
        labels=meta.get("labels") or {}, spec=spec, status=status,
    )


def to_variant_spec(obj: dict[str, Any] | VariantAutoscaling) -> VariantSpec:
    """Convert a VariantAutoscaling object (as the API returns it, or parsed) into a core VariantSpec."""
    va = obj if isinstance(obj, VariantAutoscaling) else parse_variant_autoscaling(obj)
    ref = va.spec.scale_target_ref
    return VariantSpec(
        ref=va.ref,
        model=va.spec.model,
        role=va.spec.role,
        accelerator=va.spec.accelerator,
        target=ScaleTarget(api_version=ref.api_version, kind=ref.kind, name=ref.name),
        min_replicas=va.spec.min_replicas,
        max_replicas=va.spec.max_replicas,
        dry_run=va.dry_run,
        slo=_slo_fields(va.spec.slo),
        gpus_per_replica=va.spec.gpus_per_replica,
        cost_per_hour=float(va.spec.cost_per_hour) if va.spec.cost_per_hour is not None else None,
    )


def _slo_fields(slo: ServiceLevelObjective | None) -> SloFields:
    """The targets the object sets (no defaults: a default here would override the policy's)."""
    if slo is None:
        return SloFields()
    return SloFields(ttft_s=parse_duration(slo.ttft) if slo.ttft else None,
                     itl_s=parse_duration(slo.itl) if slo.itl else None,
                     percentile=slo.percentile / 100 if slo.percentile is not None else None)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string (``1m30s``, ``500ms``); ValueError names the text."""
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 2s, 1m30s)")
    return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
