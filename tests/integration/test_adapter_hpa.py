"""The full chain on real components: kube-apiserver aggregates the adapter (APIService -> ExternalName
Service -> localhost), and the real HPA controller in kube-controller-manager scales Deployments to the
replicas the adapter serves.

No scheduler or kubelet runs, so the Deployments never get pods. That does not matter for an External metric
with an AverageValue target: the HPA divides by the scale subresource's status.replicas, not by ready pods
(replica_calculator.go GetExternalPerPodMetricReplicas), and with status.replicas 0 the usage ratio is
infinite, so it always sets ceil(sum / averageValue) = the served value.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as kube_client

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import load_authentication_config
from autoscaler.adapter.run import build_auth
from autoscaler.adapter.server import AdapterServer
from autoscaler.adapter.store import DecisionStore
from autoscaler.adapter.tls import self_signed, server_context
from autoscaler.controller.loop import Controller
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.types import Freshness, Role, VariantSignals, VariantSpec
from autoscaler.kube import llmd
from autoscaler.kube.client import KubeScaler, apply_crd
from autoscaler.kube.llmd_source import LlmdVariantSource
from autoscaler.localstack.kube import ControlPlane
from tests.core.test_adapter_store import outcome, report, spec

pytestmark = pytest.mark.integration

NAMESPACE = "llm"
SERVICE = "variant-autoscaler-adapter"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
_WAIT_S = 60.0


class ShiftedClock:
    """Wall time plus an offset: lets a test age every decision at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@dataclass
class Chain:
    plane: ControlPlane
    api: kube_client.ApiClient
    store: DecisionStore
    clock: ShiftedClock


def wait_for(what: str, probe: Callable[[], object], timeout_s: float = _WAIT_S) -> object:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def chain(kube_assets_paths, tmp_path_factory) -> Iterator[Chain]:
    with ControlPlane(assets=kube_assets_paths, aggregation=True) as plane:
        plane.start_controller_manager(controllers=("horizontalpodautoscaling",), hpa_sync_period_s=1.0)
        api = plane.api_client()
        clock = ShiftedClock()
        store = DecisionStore(max_age_s=45.0, clock=clock)
        config = load_authentication_config(api)
        authenticator, authorizer = build_auth(api, config)
        # The aggregator checks the serving certificate against the caBundle for <service>.<namespace>.svc.
        serving = self_signed(tmp_path_factory.mktemp("adapter"),
                              hosts=(f"{SERVICE}.default.svc", "localhost", "127.0.0.1"))
        context = server_context(cert=serving.cert, key=serving.key, client_cas_pem=config.trusted_cas_pem())
        adapter = ExternalMetricsAPI(store=store, authenticator=authenticator, authorizer=authorizer)
        with AdapterServer(api=adapter, ssl_context=context, host="127.0.0.1") as server:
            register_adapter(api, port=server.port, ca_bundle=serving.cert.read_bytes())
            kube_client.CoreV1Api(api).create_namespace(
                kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=NAMESPACE)))
            yield Chain(plane=plane, api=api, store=store, clock=clock)


def register_adapter(api: kube_client.ApiClient, *, port: int, ca_bundle: bytes) -> None:
    """The objects of manifests/overlays/hpa-adapter, pointed at this process: the aggregator dials an
    ExternalName Service's name directly, on the port of the Service spec."""
    kube_client.CoreV1Api(api).create_namespaced_service("default", kube_client.V1Service(
        metadata=kube_client.V1ObjectMeta(name=SERVICE),
        spec=kube_client.V1ServiceSpec(type="ExternalName", external_name="localhost",
                                       ports=[kube_client.V1ServicePort(name="https", port=port)])))
    registration = kube_client.ApiregistrationV1Api(api)
    registration.create_api_service(kube_client.V1APIService(
        metadata=kube_client.V1ObjectMeta(name=API_SERVICE),
        spec=kube_client.V1APIServiceSpec(
            group="external.metrics.k8s.io", version="v1beta1", group_priority_minimum=100, version_priority=100,
            service=kube_client.ApiregistrationV1ServiceReference(name=SERVICE, namespace="default", port=port),
            ca_bundle=base64.b64encode(ca_bundle).decode())))

    def available() -> bool:
        conditions = registration.read_api_service(API_SERVICE).status.conditions or []
        return any(c.type == "Available" and c.status == "True" for c in conditions)

    wait_for("APIService Available", available)


def deployment_with_hpa(api: kube_client.ApiClient, name: str, *, selector: dict[str, str], replicas: int = 1) -> None:
    labels = {"app": name}
    kube_client.AppsV1Api(api).create_namespaced_deployment(NAMESPACE, kube_client.V1Deployment(
        metadata=kube_client.V1ObjectMeta(name=name),
        spec=kube_client.V1DeploymentSpec(
            replicas=replicas, selector=kube_client.V1LabelSelector(match_labels=labels),
            template=kube_client.V1PodTemplateSpec(
                metadata=kube_client.V1ObjectMeta(labels=labels),
                spec=kube_client.V1PodSpec(containers=[kube_client.V1Container(name="vllm", image="vllm")])))))
    # As manifests/overlays/hpa-adapter/examples/, with the HPA's own pacing off (scale-down window 300 s,
    # scale-up at most 4 pods or 100% per 15 s by default) so the test sees each served value at once.
    kube_client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 16,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "variant_desired_replicas", "selector": {"matchLabels": selector}},
                "target": {"type": "AverageValue", "averageValue": "1"}}}],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 0},
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]},
            },
        },
    })


def replicas(api: kube_client.ApiClient, name: str) -> int:
    return int(kube_client.AppsV1Api(api).read_namespaced_deployment_scale(name, NAMESPACE).spec.replicas)


def wait_for_replicas(api: kube_client.ApiClient, name: str, expected: int) -> None:
    seen: list[int] = []

    def at_expected() -> bool:
        seen.append(replicas(api, name))
        return seen[-1] == expected

    try:
        wait_for(f"{name} at {expected} replicas", at_expected)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; replicas seen: {sorted(set(seen))}") from None


def hpa_condition(api: kube_client.ApiClient, name: str, kind: str) -> kube_client.V2HorizontalPodAutoscalerCondition:
    hpa = kube_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, NAMESPACE)
    return next((c for c in hpa.status.conditions or [] if c.type == kind), None)


class StaticVariants:
    def __init__(self, specs: Sequence[VariantSpec]) -> None:
        self._specs = list(specs)

    def list_variants(self):
        return list(self._specs), []


class SaturatedSignals:
    """Ten requests waiting per replica: the saturation policy asks for five times the replicas."""

    def collect(self, variants, *, now):
        return {s: VariantSignals(freshness=Freshness.FRESH, pods=1, waiting=10.0, running=8.0, kv_usage_mean=0.5,
                                  kv_usage_max=0.5) for s in variants}


class DeploymentScale:
    """Reads replicas from the scale subresource; never writes (the HPA owns replicas)."""

    def __init__(self, api: kube_client.ApiClient) -> None:
        self._apps = kube_client.AppsV1Api(api)

    def current_replicas(self, spec: VariantSpec) -> int:
        return int(self._apps.read_namespaced_deployment_scale(spec.target.name, spec.ref.namespace).spec.replicas)

    def scale(self, spec, replicas):
        raise AssertionError("the adapter mode never patches replicas")

    def write_status(self, spec, decision, *, scaled_at, insight=None):
        raise AssertionError("dry-run writes no status")


def test_the_hpa_scales_to_the_replicas_a_real_control_cycle_decided(chain):
    decode = spec("llama-decode", namespace=NAMESPACE)
    deployment_with_hpa(chain.api, "llama-decode", selector={"variant": "llama-decode"})
    controller = Controller(variants=StaticVariants([decode]), signals=SaturatedSignals(),
                            scaler=DeploymentScale(chain.api), policy=ScalingPolicy(), clock=chain.clock,
                            dry_run=True, on_cycle=chain.store.record)
    cycle = controller.run_cycle()
    [decided] = cycle.outcomes
    assert decided.decision is not None and decided.decision.desired > 1 and not decided.applied
    wait_for_replicas(chain.api, "llama-decode", decided.decision.desired)


def test_prefill_and_decode_hpas_each_follow_their_own_variant_up_and_down(chain):
    prefill = spec("llama-prefill", role=Role.PREFILL, namespace=NAMESPACE)
    decode = spec("llama-decode-2", namespace=NAMESPACE)
    chain.store.record(report(outcome(prefill, desired=3), outcome(decode, desired=6), at=chain.clock.now()))
    deployment_with_hpa(chain.api, "llama-prefill", selector={"role": "prefill", "model": "meta-llama_Llama-3.1-8B"})
    deployment_with_hpa(chain.api, "llama-decode-2", selector={"variant": "llama-decode-2"})
    wait_for_replicas(chain.api, "llama-prefill", 3)
    wait_for_replicas(chain.api, "llama-decode-2", 6)

    chain.store.record(report(outcome(prefill, desired=5), outcome(decode, desired=2), at=chain.clock.now()))
    wait_for_replicas(chain.api, "llama-prefill", 5)
    wait_for_replicas(chain.api, "llama-decode-2", 2)


def test_the_hpa_holds_its_replicas_when_the_decision_is_stale(chain):
    held = spec("llama-held", namespace=NAMESPACE)
    chain.store.record(report(outcome(held, desired=4), at=chain.clock.now()))
    deployment_with_hpa(chain.api, "llama-held", selector={"variant": "llama-held"})
    wait_for_replicas(chain.api, "llama-held", 4)

    chain.clock.offset = 3600.0  # every decision is now an hour old
    try:
        condition = wait_for("ScalingActive=False", lambda: (c := hpa_condition(chain.api, "llama-held", "ScalingActive"))
                             and c.status == "False" and c)
        assert condition.reason == "FailedGetExternalMetric"
        assert "not serving a stale value" in condition.message
        time.sleep(3)  # three more HPA syncs
        assert replicas(chain.api, "llama-held") == 4
    finally:
        chain.clock.offset = 0.0


def test_the_aggregated_api_answers_kubernetes_clients_with_the_exact_shape(chain):
    chain.store.record(report(outcome(spec("llama-read", namespace=NAMESPACE), desired=7), at=chain.clock.now()))
    body = kube_client.CustomObjectsApi(chain.api).list_namespaced_custom_object(
        "external.metrics.k8s.io", "v1beta1", NAMESPACE, "variant_desired_replicas",
        label_selector="variant=llama-read")
    assert set(body) == {"kind", "apiVersion", "metadata", "items"}
    [item] = body["items"]
    assert set(item) == {"metricName", "metricLabels", "timestamp", "value"}
    assert (body["kind"], item["metricName"], item["value"]) == ("ExternalMetricValueList",
                                                                 "variant_desired_replicas", "7")


def test_the_apiservers_own_openapi_still_serves_with_the_adapter_answering_404(chain):
    response = chain.api.rest_client.pool_manager.request("GET", f"{chain.plane.server_url}/openapi/v2")
    assert response.status == 200
    assert b'"swagger"' in response.data[:200]


# -- llm-d / KServe: an llmd.ai VariantAutoscaling and the HPA llm-d documents ---------------------------------

WVA_CRD = Path(__file__).resolve().parents[1] / "fixtures" / "wva" / "crd-variantautoscalings.llmd.ai.yaml"


def llmd_variant_with_wva_hpa(api: kube_client.ApiClient, name: str, *, model: str) -> None:
    """A Deployment labelled as llm-d's charts label pods, an llmd.ai VariantAutoscaling for it, and the HPA of
    WVA's config/samples/hpa-integration.yaml (llm-d/llm-d-workload-variant-autoscaler): external metric
    wva_desired_replicas selected by variant_name, AverageValue 1, stabilisation windows 0."""
    labels = {"app": name, "llm-d.ai/role": "decode", "llm-d.ai/accelerator-variant": "nvidia-h100-80gb"}
    kube_client.AppsV1Api(api).create_namespaced_deployment(NAMESPACE, {
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                     "containers": [{"name": "vllm", "image": "vllm",
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
    kube_client.CustomObjectsApi(api).create_namespaced_custom_object(
        llmd.GROUP, llmd.VERSION, NAMESPACE, llmd.PLURAL, {
            "apiVersion": f"{llmd.GROUP}/{llmd.VERSION}", "kind": "VariantAutoscaling",
            "metadata": {"name": f"{name}-va"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "modelID": model}})
    fast = {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 10, "periodSeconds": 1}]}
    kube_client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": f"{name}-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "maxReplicas": 10,
            "behavior": {"scaleUp": fast, "scaleDown": fast},
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "wva_desired_replicas", "selector": {"matchLabels": {"variant_name": f"{name}-va"}}},
                "target": {"type": "AverageValue", "averageValue": "1"}}}],
        },
    })


class SaturatedThenSteady(SaturatedSignals):
    """Saturated in the first cycle, then within the thresholds (the new replicas hold the load)."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, variants, *, now):
        self.calls += 1
        if self.calls == 1:
            return super().collect(variants, now=now)
        return {s: VariantSignals(freshness=Freshness.FRESH, pods=1, waiting=1.0, running=8.0, kv_usage_mean=0.6,
                                  kv_usage_max=0.6) for s in variants}


def test_an_llmd_variant_autoscaling_drives_its_deployment_through_the_hpa_llm_d_documents(chain):
    apply_crd(chain.api, path=WVA_CRD)
    llmd_variant_with_wva_hpa(chain.api, "qwen-decode", model="Qwen/Qwen3-0.6B")
    source = LlmdVariantSource(chain.api, namespaces=(NAMESPACE,))
    controller = Controller(variants=source, signals=SaturatedThenSteady(), scaler=KubeScaler(chain.api, llmd=source),
                            policy=ScalingPolicy(), clock=chain.clock, on_cycle=chain.store.record)
    cycle = controller.run_cycle()
    [decided] = cycle.outcomes
    assert decided.spec.role is Role.BOTH and decided.spec.accelerator == "H100"  # from the pod template
    assert decided.decision is not None and decided.decision.desired > 1
    desired = decided.decision.desired
    assert replicas(chain.api, "qwen-decode") == 1  # the controller itself patched nothing
    wait_for_replicas(chain.api, "qwen-decode", desired)  # the real HPA did, from wva_desired_replicas

    def status() -> dict:
        return kube_client.CustomObjectsApi(chain.api).get_namespaced_custom_object(
            llmd.GROUP, llmd.VERSION, NAMESPACE, llmd.PLURAL, "qwen-decode-va")["status"]

    written = status()
    assert written["desiredOptimizedAlloc"]["numReplicas"] == desired
    assert written["desiredOptimizedAlloc"]["accelerator"] == "H100"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in written["conditions"]}
    assert conditions == {"TargetResolved": ("True", "TargetFound"), "MetricsAvailable": ("True", "MetricsFound"),
                          "OptimizationReady": ("True", "OptimizationSucceeded")}
    assert written["actuation"] == {"applied": False}  # the HPA had not acted when the cycle wrote
    controller.run_cycle()  # the next cycle sees the HPA's work
    assert status()["actuation"] == {"applied": True}


def test_an_llmd_variant_autoscaling_whose_target_is_missing_gets_wvas_target_not_found(chain):
    apply_crd(chain.api, path=WVA_CRD)
    kube_client.CustomObjectsApi(chain.api).create_namespaced_custom_object(
        llmd.GROUP, llmd.VERSION, NAMESPACE, llmd.PLURAL, {
            "apiVersion": f"{llmd.GROUP}/{llmd.VERSION}", "kind": "VariantAutoscaling",
            "metadata": {"name": "orphan-va"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "no-such-deployment"}, "modelID": "m"}})
    specs, errors = LlmdVariantSource(chain.api, namespaces=(NAMESPACE,)).list_variants()
    assert "orphan-va" not in {s.ref.name for s in specs}
    assert any("orphan-va" in str(e) and "not found" in str(e) for e in errors)
    status = kube_client.CustomObjectsApi(chain.api).get_namespaced_custom_object(
        llmd.GROUP, llmd.VERSION, NAMESPACE, llmd.PLURAL, "orphan-va")["status"]
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("TargetResolved", "False",
                                                                            "TargetNotFound")


class QueuedAtTheGateway:
    """No pod, so no vLLM series; one request waits at the gateway for the model."""

    def collect(self, variants, *, now):
        return {s: VariantSignals(freshness=Freshness.MISSING, note="no series", gateway_waiting=1.0)
                for s in variants}


def test_an_llmd_variant_at_zero_is_patched_to_one_as_wva_does_since_its_hpa_cannot(chain):
    apply_crd(chain.api, path=WVA_CRD)
    llmd_variant_with_wva_hpa(chain.api, "qwen-zero", model="Qwen/Qwen3-8B")
    kube_client.AppsV1Api(chain.api).patch_namespaced_deployment_scale("qwen-zero", NAMESPACE,
                                                                       {"spec": {"replicas": 0}})
    source = LlmdVariantSource(chain.api, namespaces=(NAMESPACE,))
    controller = Controller(variants=source, signals=QueuedAtTheGateway(), scaler=KubeScaler(chain.api, llmd=source),
                            policy=ScalingPolicy(), clock=chain.clock, on_cycle=chain.store.record)
    cycle = controller.run_cycle()
    [woken] = [o for o in cycle.outcomes if o.spec.ref.name == "qwen-zero-va"]
    assert woken.decision is not None and woken.decision.reason.value == "ScaleFromZero" and woken.applied
    assert replicas(chain.api, "qwen-zero") == 1  # patched by the controller, not left to the idle HPA
