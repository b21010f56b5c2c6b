"""Scale from zero on the local stack: a real kube-apiserver, a real Prometheus, and a tiny exporter that plays
the Gateway API Inference Extension's endpoint picker (``inference_extension_flow_control_queue_size`` with
its label set: fairness_id, priority, inference_pool, model_name, target_model_name; kubernetes-sigs/
gateway-api-inference-extension pkg/epp/metrics/metrics.go). The variant's Deployment is at zero replicas, so
no vLLM series exists; a request queued at the gateway brings it to one in the next cycle, through the
controller the CLI builds (:func:`autoscaler.controller.wiring.build_controller`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as kube_client
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from autoscaler.config import load_settings
from autoscaler.controller.wiring import build_controller
from autoscaler.kube import api
from autoscaler.kube.client import apply_crd
from autoscaler.localstack.ports import free_port
from autoscaler.localstack.prometheus import PrometheusServer
from autoscaler.signals.queries import GATEWAY_QUEUE_METRIC

pytestmark = pytest.mark.integration

MODEL = "Qwen/Qwen3-0.6B"
POLICY = f"""
version: 1
models:
  - name: {MODEL}
    variants:
      - {{role: both, accelerator: L4, min_replicas: 0, max_replicas: 4, scale_to_zero: true, idle_window_s: 60}}
"""


class Gateway:
    """The endpoint picker's flow-control gauge on an HTTP port, for Prometheus to scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue = Gauge(GATEWAY_QUEUE_METRIC, "Current number of requests actively held in the Flow Control "
                           "queue.", ["fairness_id", "priority", "inference_pool", "model_name", "target_model_name"],
                           registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def queued(self, n: int) -> None:
        self.queue.labels(fairness_id="default", priority="0", inference_pool="qwen-pool", model_name="qwen",
                          target_model_name=MODEL).set(n)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway_and_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[tuple[Gateway, PrometheusServer]]:
    gateway = Gateway()
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{gateway.port}"], "labels": {"job": "epp"}}]))
    server = PrometheusServer(file_sd_path=targets, binary=prometheus_binary, job="epp")
    try:
        server.start()
        yield gateway, server
    finally:
        server.stop()
        gateway.close()


def test_a_request_queued_at_the_gateway_brings_a_variant_at_zero_to_one_within_one_cycle(
        gateway_and_prometheus: tuple[Gateway, PrometheusServer], kube_api_client: kube_client.ApiClient,
        kube_namespace: str, tmp_path: Path) -> None:
    gateway, prometheus = gateway_and_prometheus
    apply_crd(kube_api_client)
    apps = kube_client.AppsV1Api(kube_api_client)
    labels = {"app": "qwen"}
    apps.create_namespaced_deployment(kube_namespace, {
        "metadata": {"name": "qwen"},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, kube_namespace, api.PLURAL,
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "qwen"},
         "spec": {"model": MODEL, "role": "both", "accelerator": "L4", "minReplicas": 0, "maxReplicas": 4,
                  "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen"}}})
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = load_settings(None, {
        "prometheus": {"url": prometheus.url, "gateway_queue_metric": GATEWAY_QUEUE_METRIC, "retries": 0},
        "kube": {"namespace": kube_namespace},
        "planner": {"policy_file": str(policy), "predictive": False},
    })
    controller = build_controller(settings, api_client=kube_api_client)

    def scale() -> int:
        return int(apps.read_namespaced_deployment_scale("qwen", kube_namespace).spec.replicas or 0)

    gateway.queued(0)
    prometheus.wait_for_series(GATEWAY_QUEUE_METRIC)
    controller.run_cycle()
    assert scale() == 0  # nobody waits: the variant stays at zero

    gateway.queued(2)
    prometheus.wait_for_series(GATEWAY_QUEUE_METRIC, until=lambda r: any(float(s["value"][1]) == 2 for s in r))
    report = controller.run_cycle()
    assert scale() == 1
    [outcome] = report.outcomes
    assert outcome.decision is not None and outcome.decision.reason.value == "ScaleFromZero"

