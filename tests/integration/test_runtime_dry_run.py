"""``variant-autoscaler run --dry-run`` against a real API server: it decides and logs, and writes nothing.

The Deployment sits at 0 replicas under a VariantAutoscaling with minReplicas 1 and Prometheus is unreachable,
so every cycle would scale it to 1 (held on signals, clamped to the minimum). A real run would take a Lease,
patch the scale, write status and record an Event; the dry run must do none of that. Runtime settings come
from the file's ``runtime:`` section and one VAS_RUNTIME_* variable, as a Deployment would give them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

from autoscaler.kube import api
from autoscaler.kube.client import apply_crd
from autoscaler.localstack import kube

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def crd(kube_api_client: kube_client.ApiClient) -> None:
    apply_crd(kube_api_client)


def run_cli(*, kubeconfig: Path, namespace: str, workdir: Path, dry_run: bool) -> tuple[int, list[dict[str, Any]]]:
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "runtime": {"lease_namespace": namespace, "health_port": 0, "metrics_port": 0,
                    "lease_duration_s": 3, "renew_deadline_s": 2, "retry_period_s": 0.5},
        "planner": {"predictive": False},
        "prometheus": {"retries": 0},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAS_")}
    env["VAS_RUNTIME_SHARD_NAMESPACES"] = namespace
    argv = [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config), "--kubeconfig", str(kubeconfig),
            "--prometheus-url", "http://127.0.0.1:9", "--interval", "0.5", "--log-format", "json",
            "--duration", "4", "--dry-run" if dry_run else "--no-dry-run"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    events = []
    for line in (done.stdout + done.stderr).splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return done.returncode, events


def setup_variant(kube_api_client: kube_client.ApiClient, namespace: str) -> None:
    labels = {"app": "decode"}
    kube_client.AppsV1Api(kube_api_client).create_namespaced_deployment(namespace, {
        "metadata": {"name": "decode"},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL,
        {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama-decode"},
         "spec": {"model": "llama", "role": "decode", "accelerator": "H100",
                  "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "decode"},
                  "minReplicas": 1, "maxReplicas": 4}})


def cluster_writes(kube_api_client: kube_client.ApiClient, namespace: str) -> dict[str, Any]:
    """What a controller run leaves behind: Leases, the Deployment's replicas, the status, Events."""
    variant = kube_client.CustomObjectsApi(kube_api_client).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "llama-decode")
    return {
        "leases": [lease.metadata.name for lease in
                   kube_client.CoordinationV1Api(kube_api_client).list_namespaced_lease(namespace).items],
        "replicas": kube_client.AppsV1Api(kube_api_client).read_namespaced_deployment("decode", namespace)
        .spec.replicas,
        "status": variant.get("status") or {},
        "events": [e.reason for e in kube_client.EventsV1Api(kube_api_client).list_namespaced_event(namespace).items],
    }


@pytest.mark.parametrize("dry_run", [pytest.param(True, id="dry-run"), pytest.param(False, id="real-run")])
def test_dry_run_decides_and_logs_but_writes_nothing(control_plane: kube.ControlPlane,
                                                     kube_api_client: kube_client.ApiClient, kube_namespace: str,
                                                     tmp_path: Path, dry_run: bool) -> None:
    setup_variant(kube_api_client, kube_namespace)
    code, events = run_cli(kubeconfig=control_plane.kubeconfig_path, namespace=kube_namespace, workdir=tmp_path,
                           dry_run=dry_run)
    after = cluster_writes(kube_api_client, kube_namespace)

    assert code == 0, events[-5:]
    [started] = [e for e in events if e.get("event") == "runtime_started"]
    assert started["lease"].startswith(f"{kube_namespace}/")  # the file's runtime section was read
    assert started["shard_namespaces"] == [kube_namespace]  # and the environment's
    cycles = [e for e in events if e.get("event") == "cycle"]
    assert cycles and all(c["variants"] == 1 and c["dry_run"] is dry_run for c in cycles)
    if dry_run:
        would = [e for e in events if e.get("event") == "would_scale"]
        assert would and {(e["current"], e["desired"]) for e in would} == {(0, 1)}
        assert after == {"leases": [], "replicas": 0, "status": {}, "events": []}
    else:  # the same run without --dry-run does all of it: the test above can tell
        assert after["leases"] and after["replicas"] == 1
        assert after["status"]["desiredReplicas"] == 1 and "SuccessfulRescale" in after["events"]
