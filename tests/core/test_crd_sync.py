"""The CRD is generated from the pydantic models, and both refuse the same specs for the same field.

``SPEC_CASES`` is shared with tests/integration/test_crd_validation.py, which sends the same specs to a real
API server: one table, two validators, the same verdicts.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from autoscaler.core.types import Role
from autoscaler.errors import SpecError
from autoscaler.kube import api, schema
from autoscaler.kube.client import CRD_PATH


def valid_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "role": "decode",
        "accelerator": "H100",
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
        "minReplicas": 1,
        "maxReplicas": 4,
    }
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


GROUP_8 = {"name": "gpu-h100", "gpusPerMachine": 8}

# (spec overrides, field the refusal must name, message both validators must give or None)
SPEC_CASES = [
    pytest.param({}, None, None, id="minimal-valid"),
    pytest.param({"minReplicas": 0, "maxReplicas": 1}, None, None, id="scale-to-zero-valid"),
    pytest.param({"slo": {"ttft": "500ms", "itl": "50ms", "percentile": 95},
                  "gpusPerReplica": 2, "costPerHour": "6.50", "machineSetRef": GROUP_8}, None, None,
                 id="every-field-valid"),
    pytest.param({"gpusPerReplica": 16, "machineSetRef": GROUP_8}, None, None, id="replica-spanning-two-machines"),
    pytest.param({"machineSetRef": {**GROUP_8, "kind": "MachineDeployment", "apiVersion": "cluster.x-k8s.io/v1beta1"}},
                 None, None, id="cluster-api-machinedeployment-valid"),
    pytest.param({"minReplicas": 5, "maxReplicas": 2}, "minReplicas", api.MIN_LE_MAX[1], id="min-above-max"),
    pytest.param({"role": "router"}, "role", None, id="unknown-role"),
    pytest.param({"scaleTargetRef": None}, "scaleTargetRef", None, id="missing-target"),
    pytest.param({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment"}}, "name", None,
                 id="target-without-name"),
    pytest.param({"maxReplicas": 0}, "maxReplicas", None, id="zero-max"),
    pytest.param({"model": ""}, "model", None, id="empty-model"),
    pytest.param({"gpusPerReplica": 0}, "gpusPerReplica", None, id="zero-gpus"),
    pytest.param({"costPerHour": "-3"}, "costPerHour", None, id="negative-cost"),
    pytest.param({"slo": {"percentile": 90}}, "slo", api.SLO_HAS_TARGET[1], id="slo-without-target"),
    pytest.param({"slo": {"ttft": "half a second"}}, "ttft", None, id="slo-duration-not-go-syntax"),
    pytest.param({"slo": {"ttft": "1s", "percentile": 40}}, "percentile", None, id="slo-percentile-below-median"),
    pytest.param({"gpusPerReplica": 12, "machineSetRef": GROUP_8}, "gpusPerReplica",
                 api.REPLICA_FITS_MACHINES[1], id="replica-not-fitting-machines"),
    pytest.param({"machineSetRef": {**GROUP_8, "apiVersion": "cluster.x-k8s.io/v1beta1"}}, "machineSetRef",
                 api.MACHINE_API_MATCHES_KIND[1], id="machineset-with-cluster-api-group"),
]


def va_object(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"namespace": "ns", "name": "llama-decode"}, "spec": copy.deepcopy(spec)}


# -- one source of truth ---------------------------------------------------------------------------------------


def test_crd_file_is_generated_from_the_models() -> None:
    assert CRD_PATH.read_text() == schema.render_crd(), "run: python -m autoscaler.kube.schema"


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("forbidden", ["$ref", "anyOf", "title", "additionalProperties", "$defs"])
def test_generated_schema_is_structural(forbidden: str) -> None:
    schema_root = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]
    offending = [p for p, node in _walk(schema_root) if isinstance(node, dict) and forbidden in node]
    assert not offending, f"{forbidden} at {offending}"


@pytest.mark.parametrize(
    ("model", "path"),
    [
        pytest.param(api.VariantAutoscalingSpec, "spec", id="spec"),
        pytest.param(api.VariantAutoscalingStatus, "status", id="status"),
    ],
)
def test_every_model_field_is_in_the_crd_under_its_json_name(model: type, path: str) -> None:
    properties = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"][path]["properties"]
    names = {info.alias or name for name, info in model.model_fields.items()}  # type: ignore[attr-defined]
    assert names == set(properties)


# -- the same verdicts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field", "message"), SPEC_CASES)
def test_models_accept_and_refuse_the_shared_cases(overrides: dict[str, Any], field: str | None,
                                                   message: str | None) -> None:
    obj = va_object(valid_spec(**overrides))
    if field is None:
        parsed = api.parse_variant_autoscaling(obj)
        assert parsed.spec.max_replicas == obj["spec"]["maxReplicas"]
        return
    with pytest.raises(SpecError) as refused:
        api.parse_variant_autoscaling(obj)
    text = str(refused.value)
    assert "ns/llama-decode" in text and field in text
    if message is not None:
        assert message in text


def test_converts_to_the_core_spec_with_defaults() -> None:
    spec = api.to_variant_spec(va_object(valid_spec(minReplicas=None)))
    assert (spec.role, spec.min_replicas, spec.max_replicas, spec.target.kind) == (Role.DECODE, 1, 4, "Deployment")


def test_every_spec_field_reaches_the_core_spec() -> None:
    """The API server validates these fields: each must change something (machineSetRef is read by the node
    pool and the scaler from the object itself)."""
    spec = api.to_variant_spec(va_object(valid_spec(slo={"ttft": "500ms", "itl": "40ms", "percentile": 95},
                                                    gpusPerReplica=2, costPerHour="6.50")))
    assert (spec.slo.ttft_s, spec.slo.itl_s, spec.slo.percentile) == pytest.approx((0.5, 0.04, 0.95))
    assert (spec.gpus_per_replica, spec.cost_per_hour) == (2, 6.5)


def test_an_slo_target_left_out_stays_unset_for_the_policy_to_fill() -> None:
    spec = api.to_variant_spec(va_object(valid_spec(slo={"ttft": "2s"})))
    assert (spec.slo.ttft_s, spec.slo.itl_s, spec.slo.percentile) == (2.0, None, None)


def test_the_crd_has_no_policy_ref_any_more() -> None:
    """policyRef was validated and then ignored: a field that changes nothing is not offered."""
    properties = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]
    assert "policyRef" not in properties


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("2s", 2.0, id="seconds"),
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
    ],
)
def test_parses_go_durations(text: str, seconds: float) -> None:
    assert api.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [pytest.param("", id="empty"), pytest.param("5", id="no-unit"),
                                  pytest.param("1d", id="days")])
def test_refuses_durations_go_would_refuse_here(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        api.parse_duration(text)
