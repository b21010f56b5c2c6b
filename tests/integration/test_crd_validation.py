"""The real API server enforces the CRD's schema and CEL rules: the shared table of specs, sent for real."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from autoscaler.kube import api
from autoscaler.kube.client import apply_crd
from tests.core.test_crd_sync import SPEC_CASES, va_object, valid_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def custom(kube_api_client: kube_client.ApiClient) -> kube_client.CustomObjectsApi:
    apply_crd(kube_api_client)
    return kube_client.CustomObjectsApi(kube_api_client)


def _create(custom: kube_client.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = va_object(spec)
    body["metadata"] = {"namespace": namespace, "name": "llama-decode"}
    created: dict[str, Any] = custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL,
                                                                     body)
    return created


@pytest.mark.parametrize(("overrides", "field", "message"), SPEC_CASES)
def test_api_server_accepts_and_refuses_the_shared_cases(
    custom: kube_client.CustomObjectsApi, kube_namespace: str, overrides: dict[str, Any], field: str | None,
    message: str | None,
) -> None:
    spec = valid_spec(**overrides)
    if field is None:
        created = _create(custom, kube_namespace, spec)
        # What the server stored (after defaulting) is what the controller can parse.
        parsed = api.parse_variant_autoscaling(created)
        assert parsed.spec.max_replicas == spec["maxReplicas"]
        return
    with pytest.raises(ApiException) as refused:
        _create(custom, kube_namespace, spec)
    assert refused.value.status == 422
    body = json.loads(refused.value.body)["message"]  # the text `kubectl apply` shows
    assert field in body
    if message is not None:
        assert message in body


def test_api_server_fills_defaults_the_models_declare(custom: kube_client.CustomObjectsApi,
                                                      kube_namespace: str) -> None:
    created = _create(custom, kube_namespace, valid_spec(minReplicas=None, machineSetRef={"name": "gpu", "gpusPerMachine": 8}))
    defaults = api.VariantAutoscalingSpec.model_validate(valid_spec(machineSetRef={"name": "gpu", "gpusPerMachine": 8}))
    stored = created["spec"]
    assert (stored["minReplicas"], stored["machineSetRef"]["apiVersion"], stored["machineSetRef"]["namespace"]) == (
        defaults.min_replicas, defaults.machine_set_ref.api_version,  # type: ignore[union-attr]
        defaults.machine_set_ref.namespace,  # type: ignore[union-attr]
    )
    # No default for GPUs per replica on either side: left out, the profile's count applies (not 1).
    assert "gpusPerReplica" not in stored and defaults.gpus_per_replica is None


def test_api_server_refuses_a_status_the_models_would_refuse(custom: kube_client.CustomObjectsApi,
                                                             kube_namespace: str) -> None:
    _create(custom, kube_namespace, valid_spec())
    bad = {"status": {"conditions": [{"type": "AbleToScale", "status": "Maybe", "reason": "X", "message": "",
                                      "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, kube_namespace, api.PLURAL,
                                                     "llama-decode", bad,
                                                     _content_type="application/merge-patch+json")
    assert refused.value.status == 422 and "status" in str(refused.value.body)
    with pytest.raises(ValueError, match="status"):
        api.VariantAutoscalingStatus.model_validate(bad["status"])
