"""The VariantAutoscaling custom resource (v1alpha1) as pydantic models, and conversion to core values.

Group ``variant-autoscaler.io``: our own, so it can live beside llm-d's ``llmd.ai`` VariantAutoscaling.
The CRD schema in manifests/crd/ carries the same rules; tests/integration/test_crd.py proves the API server
enforces them, tests/core/test_api.py proves these models do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autoscaler.config import format_validation_error
from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import SpecError

__all__ = ["GROUP", "VERSION", "PLURAL", "KIND", "DRY_RUN_ANNOTATION", "VariantAutoscalingSpec", "to_variant_spec"]

GROUP = "variant-autoscaler.io"
VERSION = "v1alpha1"
PLURAL = "variantautoscalings"
KIND = "VariantAutoscaling"
DRY_RUN_ANNOTATION = f"{GROUP}/dry-run"


class ScaleTargetRef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: str = Field(alias="apiVersion", min_length=1)
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)


class VariantAutoscalingSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = Field(min_length=1)
    role: Role
    accelerator: str = Field(min_length=1)
    scale_target_ref: ScaleTargetRef = Field(alias="scaleTargetRef")
    min_replicas: int = Field(1, alias="minReplicas", ge=0)
    max_replicas: int = Field(alias="maxReplicas", ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "VariantAutoscalingSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})")
        return self


def to_variant_spec(obj: dict[str, Any]) -> VariantSpec:
    """Convert a VariantAutoscaling object (as the API returns it) into a core VariantSpec."""
    meta = obj.get("metadata") or {}
    where = f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
    try:
        spec = VariantAutoscalingSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source=f"VariantAutoscaling {where}: spec")) from exc
    annotations = meta.get("annotations") or {}
    ref = spec.scale_target_ref
    return VariantSpec(
        ref=VariantRef(namespace=meta["namespace"], name=meta["name"]),
        model=spec.model,
        role=spec.role,
        accelerator=spec.accelerator,
        target=ScaleTarget(api_version=ref.api_version, kind=ref.kind, name=ref.name),
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        dry_run=str(annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true",
    )
