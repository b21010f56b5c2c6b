"""Generate the VariantAutoscaling CRD from the pydantic models in :mod:`autoscaler.kube.api`.

One source of truth: the models. Their JSON schema is turned into a Kubernetes *structural* schema ($refs
inlined, ``anyOf [X, null]`` of optional fields reduced to X, titles and ``additionalProperties: false``
dropped, since apiextensions/v1 refuses or ignores them), then wrapped in the CRD with names, printer columns
and subresources. ``python -m autoscaler.kube.schema`` rewrites manifests/crd/variantautoscalings.yaml;
tests/core/test_crd_sync.py fails when the file is out of date.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from autoscaler.kube import api

__all__ = ["CRD_FILE", "render_crd", "structural_schema", "variant_autoscaling_crd"]

CRD_FILE = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "variantautoscalings.yaml"

_HEADER = "# Generated from autoscaler/kube/api.py by `python -m autoscaler.kube.schema`; do not edit by hand.\n"
_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}

_PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
    {"name": "Accelerator", "type": "string", "jsonPath": ".spec.accelerator"},
    {"name": "Target", "type": "string", "jsonPath": ".spec.scaleTargetRef.name"},
    {"name": "Min", "type": "integer", "jsonPath": ".spec.minReplicas"},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.maxReplicas"},
    {"name": "Current", "type": "integer", "jsonPath": ".status.currentReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "AbleToScale", "type": "string", "jsonPath": '.status.conditions[?(@.type=="AbleToScale")].status',
     "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's validation JSON schema (by alias) in the structural form apiextensions/v1 requires."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    structural: dict[str, Any] = _structural(raw, defs)
    return structural


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:  # Optional[X]: the field may be absent; Kubernetes has no null without nullable.
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
        if node.get("default", ...) is None:
            del node["default"]
        node = {**branches[0], **node}
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **node}  # the field's description wins over the model's docstring
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "description" and isinstance(value, str):
            out[key] = " ".join(value.split())  # docstrings wrap; the API shows one line
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _structural(value, defs)
    if out.get("type") == "object" and "properties" in out and not out.get("required"):
        out.pop("required", None)
    return out


def variant_autoscaling_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    spec = structural_schema(api.VariantAutoscalingSpec)
    status = structural_schema(api.VariantAutoscalingStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.KIND.lower(),
                "shortNames": ["vas"],
                "categories": ["autoscaling"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Autoscaling of one variant (one model on one accelerator type in "
                                           "one role) of a vLLM deployment.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML text kept in the repository."""
    return _HEADER + str(yaml.safe_dump(variant_autoscaling_crd(), sort_keys=False, width=110))


def main() -> None:
    CRD_FILE.write_text(render_crd())
    sys.stderr.write(f"wrote {CRD_FILE}\n")


if __name__ == "__main__":
    main()
