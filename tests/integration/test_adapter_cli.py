"""``variant-autoscaler adapter`` as a process against a real kube-apiserver: it runs control cycles on the
VariantAutoscalings it finds, serves their decisions over HTTPS and its own /metrics, changes nothing, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time

import pytest
from kubernetes import client as kube_client

from autoscaler.kube.client import apply_crd
from autoscaler.localstack.ports import free_port

pytestmark = pytest.mark.integration

_START_TIMEOUT_S = 30.0


def _admin_tls(control_plane) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the adapter's certificate is self-signed in this run
    certs = control_plane.directory / "certs"
    context.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    return context


def _get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, bytes] | None:
    try:
        if context is None:
            connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        else:
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return None


def test_adapter_command_serves_the_decisions_of_its_cycles(control_plane, kube_api_client, kube_namespace,
                                                            tmp_path):
    apply_crd(kube_api_client)
    labels = {"app": "llama-decode"}
    apps = kube_client.AppsV1Api(kube_api_client)
    apps.create_namespaced_deployment(kube_namespace, kube_client.V1Deployment(
        metadata=kube_client.V1ObjectMeta(name="llama-decode"),
        spec=kube_client.V1DeploymentSpec(
            replicas=3, selector=kube_client.V1LabelSelector(match_labels=labels),
            template=kube_client.V1PodTemplateSpec(
                metadata=kube_client.V1ObjectMeta(labels=labels),
                spec=kube_client.V1PodSpec(containers=[kube_client.V1Container(name="vllm", image="vllm")])))))
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        "variant-autoscaler.io", "v1alpha1", kube_namespace, "variantautoscalings", {
            "apiVersion": "variant-autoscaler.io/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": "llama-decode"},
            "spec": {"model": "meta-llama/Llama-3.1-8B", "role": "decode", "accelerator": "L4",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
                     "minReplicas": 1, "maxReplicas": 8}})
    port, metrics_port = free_port(), free_port()
    # No Prometheus: signals are missing, so the decision holds the 3 replicas the Deployment has.
    process = subprocess.Popen(
        [sys.executable, "-m", "autoscaler.cli", "adapter", "--kubeconfig", str(control_plane.kubeconfig_path),
         "--namespace", kube_namespace, "--self-signed", "--port", str(port), "--bind", "127.0.0.1",
         "--interval", "1", "--metrics-port", str(metrics_port), "--prometheus-url", "http://127.0.0.1:9",
         # a loaded CI machine can take seconds per cycle; staleness is tested in tests/core/test_adapter_store.py
         "--stale-after", "30", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        tls = _admin_tls(control_plane)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while (_get(port, "/readyz", tls) or (0, b""))[0] != 200:
            assert process.poll() is None, process.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "adapter not ready (no completed cycle) in time"
            time.sleep(0.2)

        status, body = _get(port, f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{kube_namespace}/"
                                  "variant_desired_replicas?labelSelector=variant%3Dllama-decode", tls) or (0, b"")
        assert status == 200, body
        [item] = json.loads(body)["items"]
        assert (item["metricLabels"], item["value"]) == (
            # WVA's label names too (variant_name, accelerator_type), for the HPAs llm-d and KServe generate
            {"variant": "llama-decode", "model": "meta-llama_Llama-3.1-8B", "role": "decode", "accelerator": "L4",
             "variant_name": "llama-decode", "accelerator_type": "L4"},
            "3")
        assert (_get(port, "/apis", None) or (0, b""))[0] in (0, 400)  # plain HTTP is not served

        status, text = _get(metrics_port, "/metrics", None) or (0, b"")
        assert status == 200
        assert (f'variant_autoscaler_desired_replicas{{accelerator="L4",model="meta-llama/Llama-3.1-8B",'
                f'namespace="{kube_namespace}",role="decode",variant="llama-decode"}} 3.0') in text.decode()
        assert apps.read_namespaced_deployment_scale("llama-decode", kube_namespace).spec.replicas == 3
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output[-2000:]


def test_adapter_command_without_a_certificate_exits_2_with_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "autoscaler.cli", "adapter", "--port", "6443"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no serving certificate: give --tls-cert and --tls-key, or --self-signed for a local run"]
