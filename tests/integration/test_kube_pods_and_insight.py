"""KubeScaler against a real kube-apiserver: pod counts for the planner, and the cycle's insight in the status.

There is no scheduler or kubelet: pods are created (bound to a node by ``spec.nodeName`` where the state needs
it) and their status subresource is patched into each state the counts tell apart.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client as kube_client

from autoscaler.controller.ports import VariantInsight
from autoscaler.core.types import Decision, DecisionStep, Reason, ReplicaCounts, VariantSpec
from autoscaler.kube import api
from autoscaler.kube.client import KubeScaler, KubeVariantSource, VariantStore, apply_crd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def crd(kube_api_client: kube_client.ApiClient) -> None:
    apply_crd(kube_api_client)


def make_target(kube_api_client: kube_client.ApiClient, namespace: str, *, kind: str = "Deployment") -> None:
    labels = {"app": "decode"}
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}
    spec = {"replicas": 3, "selector": {"matchLabels": labels}, "template": template}
    apps = kube_client.AppsV1Api(kube_api_client)
    if kind == "Deployment":
        apps.create_namespaced_deployment(namespace, {"metadata": {"name": "decode"}, "spec": spec})
    else:
        apps.create_namespaced_stateful_set(namespace, {"metadata": {"name": "decode"},
                                                        "spec": {**spec, "serviceName": "decode"}})
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama-decode"},
            "spec": {"model": "llama", "role": "decode", "accelerator": "H100",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": "decode"},
                     "minReplicas": 1, "maxReplicas": 8}}
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, body)


def listed(kube_api_client: kube_client.ApiClient, namespace: str) -> tuple[VariantSpec, VariantStore]:
    store = VariantStore()
    specs, errors = KubeVariantSource(kube_api_client, namespace=namespace, store=store).list_variants()
    assert not errors
    [spec] = specs
    return spec, store


def _condition(type_: str, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason,
            "lastTransitionTime": "2025-01-01T00:00:00Z"}


# state -> (spec.nodeName set, pod status); what a scheduler and kubelet would have written
POD_STATES: dict[str, tuple[bool, dict[str, Any]]] = {
    "ready": (True, {"phase": "Running", "conditions": [_condition("PodScheduled", "True"),
                                                        _condition("Ready", "True")]}),
    "loading-weights": (True, {"phase": "Running", "conditions": [_condition("PodScheduled", "True"),
                                                                  _condition("Ready", "False", "ContainersNotReady")]}),
    "pulling-image": (True, {"phase": "Pending", "conditions": [_condition("PodScheduled", "True")]}),
    "no-gpu-free": (False, {"phase": "Pending",
                            "conditions": [_condition("PodScheduled", "False", "Unschedulable")]}),
    "not-yet-scheduled": (False, {"phase": "Pending"}),
    "finished": (True, {"phase": "Succeeded"}),
    "crashed-out": (True, {"phase": "Failed"}),
}


def make_pod(core: kube_client.CoreV1Api, namespace: str, name: str, state: str, *, app: str = "decode") -> None:
    bound, status = POD_STATES[state]
    spec: dict[str, Any] = {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}
    if bound:
        spec["nodeName"] = "gpu-node-1"
    core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": {"app": app}}, "spec": spec})
    core.patch_namespaced_pod_status(name, namespace, {"status": status})


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param([], ReplicaCounts(ready=0), id="no-pods"),
        pytest.param(["ready", "ready", "ready"], ReplicaCounts(ready=3), id="all-ready"),
        pytest.param(["ready", "loading-weights", "pulling-image"], ReplicaCounts(ready=1, starting=2),
                     id="two-starting"),
        pytest.param(["ready", "no-gpu-free", "no-gpu-free"], ReplicaCounts(ready=1, unschedulable=2),
                     id="two-waiting-for-gpus"),
        pytest.param(["not-yet-scheduled"], ReplicaCounts(ready=0, starting=1),
                     id="no-scheduler-verdict-yet-is-starting"),
        pytest.param(["ready", "finished", "crashed-out"], ReplicaCounts(ready=1), id="finished-pods-not-counted"),
    ],
)
def test_counts_the_targets_pods_by_state(kube_api_client: kube_client.ApiClient, kube_namespace: str,
                                          states: list[str], expected: ReplicaCounts) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    make_target(kube_api_client, kube_namespace)
    for i, state in enumerate(states):
        make_pod(core, kube_namespace, f"decode-{i}", state)
    make_pod(core, kube_namespace, "other-ready", "ready", app="other")  # not the target's: not counted
    make_pod(core, kube_namespace, "other-stuck", "no-gpu-free", app="other")
    spec, store = listed(kube_api_client, kube_namespace)
    scaler = KubeScaler(kube_api_client, store=store)
    scaler.current_replicas(spec)

    assert scaler.replica_counts(spec) == expected


def test_a_pod_being_deleted_is_not_counted(kube_api_client: kube_client.ApiClient, kube_namespace: str) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    make_target(kube_api_client, kube_namespace)
    make_pod(core, kube_namespace, "decode-0", "ready")
    make_pod(core, kube_namespace, "decode-1", "ready")
    # A finalizer keeps the object while its deletionTimestamp is set, as a kubelet draining it would.
    core.patch_namespaced_pod("decode-1", kube_namespace, {"metadata": {"finalizers": ["test/hold"]}})
    core.delete_namespaced_pod("decode-1", kube_namespace)
    spec, store = listed(kube_api_client, kube_namespace)
    scaler = KubeScaler(kube_api_client, store=store)
    try:
        assert scaler.replica_counts(spec) == ReplicaCounts(ready=1)  # reads the scale itself when not yet read
    finally:
        core.patch_namespaced_pod("decode-1", kube_namespace, {"metadata": {"finalizers": None}})


def test_counts_pods_of_a_statefulset_through_its_scale_selector(kube_api_client: kube_client.ApiClient,
                                                                 kube_namespace: str) -> None:
    core = kube_client.CoreV1Api(kube_api_client)
    make_target(kube_api_client, kube_namespace, kind="StatefulSet")
    make_pod(core, kube_namespace, "decode-0", "ready")
    make_pod(core, kube_namespace, "decode-1", "no-gpu-free")
    spec, store = listed(kube_api_client, kube_namespace)
    scaler = KubeScaler(kube_api_client, store=store)
    scaler.current_replicas(spec)
    assert scaler.replica_counts(spec) == ReplicaCounts(ready=1, unschedulable=1)


# -- the cycle's insight in the status ---------------------------------------------------------------------------


def hold(spec: VariantSpec, replicas: int) -> Decision:
    return Decision(spec.ref, replicas, replicas,
                    (DecisionStep("recommend", replicas, Reason.WITHIN_TOLERANCE, "fine as it is"),))


def read_status(kube_api_client: kube_client.ApiClient, namespace: str) -> tuple[dict[str, Any], str]:
    obj = kube_client.CustomObjectsApi(kube_api_client).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "llama-decode")
    return obj.get("status") or {}, obj["metadata"]["resourceVersion"]


def write(kube_api_client: kube_client.ApiClient, namespace: str, insight: VariantInsight | None) -> None:
    spec, store = listed(kube_api_client, namespace)  # a fresh listing, as each cycle has
    scaler = KubeScaler(kube_api_client, store=store)
    replicas = scaler.current_replicas(spec)
    scaler.write_status(spec, hold(spec, replicas), scaled_at=None, insight=insight)


def test_status_shows_the_forecast_admission_and_calibration(kube_api_client: kube_client.ApiClient,
                                                              kube_namespace: str) -> None:
    make_target(kube_api_client, kube_namespace)
    write(kube_api_client, kube_namespace, VariantInsight(
        forecast_horizon_s=600.0, forecast_rps=12.3456, forecast_prompt_tokens_per_s=24691.2,
        forecast_generation_tokens_per_s=3086.4, admission_ratio=0.9512, profile="llama-3.1-8b/h100",
        calibration_samples=42, calibration_factor=1.0871, calibration_relative_error=0.0634,
        rejection_threshold=1.0, predicted_prefill_load=0.4213, predicted_decode_load=1.127))

    status, _ = read_status(kube_api_client, kube_namespace)
    assert status["forecast"] == {"horizon": "10m", "requestsPerSecond": "12.3", "promptTokensPerSecond": "24700",
                                  "generationTokensPerSecond": "3090"}
    assert status["admissionRatio"] == "0.951"
    assert status["admission"] == {"rejectionThreshold": "1", "predictedPrefillLoad": "0.421",
                                   "predictedDecodeLoad": "1.13"}
    assert status["calibration"] == {"profile": "llama-3.1-8b/h100", "samples": 42, "factor": "1.09",
                                     "relativeError": "0.0634"}
    assert status["desiredReplicas"] == 3


def test_unknown_insight_fields_keep_what_the_status_had(kube_api_client: kube_client.ApiClient,
                                                         kube_namespace: str) -> None:
    make_target(kube_api_client, kube_namespace)
    write(kube_api_client, kube_namespace, VariantInsight(
        forecast_horizon_s=90.0, forecast_rps=2.0, admission_ratio=1.0, profile="p", calibration_factor=0.9))
    write(kube_api_client, kube_namespace, VariantInsight(forecast_rps=4.0))  # only the rate is known now
    write(kube_api_client, kube_namespace, None)  # nothing known at all

    status, _ = read_status(kube_api_client, kube_namespace)
    assert status["forecast"] == {"horizon": "1m30s", "requestsPerSecond": "4"}
    assert (status["admissionRatio"], status["calibration"]) == ("1", {"profile": "p", "factor": "0.9"})


def test_a_forecast_that_moves_less_than_its_rounding_writes_nothing(kube_api_client: kube_client.ApiClient,
                                                                     kube_namespace: str) -> None:
    make_target(kube_api_client, kube_namespace)
    write(kube_api_client, kube_namespace, VariantInsight(forecast_rps=12.31, admission_ratio=0.95))
    _, before = read_status(kube_api_client, kube_namespace)
    time.sleep(1.1)  # a rewrite would land in a later second, and bump the resourceVersion in any case
    write(kube_api_client, kube_namespace, VariantInsight(forecast_rps=12.34, admission_ratio=0.9501))
    _, unchanged = read_status(kube_api_client, kube_namespace)
    write(kube_api_client, kube_namespace, VariantInsight(forecast_rps=13.0, admission_ratio=0.95))
    status, changed = read_status(kube_api_client, kube_namespace)

    assert unchanged == before
    assert changed != before and status["forecast"]["requestsPerSecond"] == "13"
