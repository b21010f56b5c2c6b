"""The hpa-adapter overlay's own objects are accepted by a real kube-apiserver (server-side dry run).

The Deployment patch needs manifests/base and cert-manager's kinds are not served here; the pure checks in
tests/core/test_adapter_manifests.py cover those."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

pytestmark = pytest.mark.integration

OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "hpa-adapter"
FILES = ["rbac.yaml", "service.yaml", "apiservice.yaml", "examples/hpa-decode.yaml", "examples/hpa-prefill.yaml"]


@pytest.mark.parametrize("name", FILES)
def test_the_api_server_accepts_the_overlays_objects(kube_api_client, kube_namespace, name):
    dynamic = DynamicClient(kube_api_client)
    accepted = []
    for document in yaml.safe_load_all((OVERLAY / name).read_text()):
        resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        namespace = None
        if resource.namespaced:
            # Objects meant for kube-system stay there; the rest go to the test's namespace.
            namespace = document["metadata"].get("namespace")
            namespace = namespace if namespace == "kube-system" else kube_namespace
            document["metadata"]["namespace"] = namespace
        created = resource.create(body=document, namespace=namespace, dry_run="All")
        accepted.append((created.kind, created.metadata.name))
    assert accepted == [(d["kind"], d["metadata"]["name"])
                        for d in yaml.safe_load_all((OVERLAY / name).read_text())]


def test_kubectl_kustomize_renders_the_overlay_on_the_base():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl binary: tests/core/test_adapter_manifests.py applies the patch with jsonpatch")
    done = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
               for o in yaml.safe_load_all(done.stdout) if o}
    deployment = objects[("Deployment", "variant-autoscaler", "variant-autoscaler")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "adapter"
    assert ("APIService", None, "v1beta1.external.metrics.k8s.io") in objects
    assert ("RoleBinding", "kube-system", "variant-autoscaler-adapter-auth-reader") in objects
