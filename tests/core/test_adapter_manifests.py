"""The hpa-adapter overlay agrees with itself and with the code it deploys."""

from __future__ import annotations

from pathlib import Path

import jsonpatch
import pytest
import typer.main
import yaml

from autoscaler.adapter.catalog import LABELS, METRICS_BY_NAME
from autoscaler.cli import app

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
OVERLAY = MANIFESTS / "overlays" / "hpa-adapter"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((OVERLAY / name).read_text()) if d]


def one(name: str, kind: str) -> dict:
    [found] = [d for d in documents(name) if d["kind"] == kind]
    return found


def adapter_deployment() -> dict:
    """The base Deployment with the overlay's JSON 6902 patch applied, as kustomize renders it."""
    [base] = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "deployment.yaml").read_text())
              if d and d["kind"] == "Deployment"]
    operations = yaml.safe_load((OVERLAY / "deployment-patch.yaml").read_text())
    return jsonpatch.apply_patch(base, operations)


def adapter_container() -> dict:
    [container] = [c for c in adapter_deployment()["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "controller"]
    return container


def test_kustomization_lists_every_manifest_of_the_overlay():
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    listed = {r for r in kustomization["resources"] if not r.startswith("..")}
    listed |= {p["path"] for p in kustomization["patches"]}
    present = {p.name for p in OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_the_apiservice_points_at_the_service_on_its_port():
    api_service = one("apiservice.yaml", "APIService")
    service = one("service.yaml", "Service")
    assert api_service["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert (api_service["spec"]["group"], api_service["spec"]["version"]) == ("external.metrics.k8s.io", "v1beta1")
    ref = api_service["spec"]["service"]
    assert (ref["name"], ref["namespace"]) == (service["metadata"]["name"], service["metadata"]["namespace"])
    assert ref["port"] in [p["port"] for p in service["spec"]["ports"]]


def test_the_service_targets_a_port_the_adapter_container_declares():
    service = one("service.yaml", "Service")
    container = adapter_container()
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in declared
    assert f"--port={declared[port['targetPort']]}" in container["args"]


def test_the_container_args_are_options_of_the_adapter_command():
    command, *flags = adapter_container()["args"]
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    options = {o for p in click_command.params for o in p.opts}
    assert {f.split("=")[0] for f in flags} <= options


def test_the_certificate_covers_the_name_the_aggregator_checks():
    service = one("service.yaml", "Service")
    certificate = one("certificate.yaml", "Certificate")
    expected = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert expected in certificate["spec"]["dnsNames"]
    volumes = {v["name"]: v for v in adapter_deployment()["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in adapter_container()["volumeMounts"]}
    [name] = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == certificate["spec"]["secretName"]]
    assert f"--tls-cert={mounts[name]}/tls.crt" in adapter_container()["args"]


def test_probes_ask_the_adapter_port_over_https():
    container = adapter_container()
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "https"
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_patch_keeps_objects_in_their_own_namespaces():
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "namespace" not in kustomization, "a namespace transformer would move the kube-system RoleBinding"
    assert adapter_deployment()["metadata"]["namespace"] == one("service.yaml", "Service")["metadata"]["namespace"]


def test_rbac_grants_the_delegated_auth_roles():
    refs = {(d["kind"], d["roleRef"]["name"], d["metadata"].get("namespace")) for d in documents("rbac.yaml")
            if "roleRef" in d}
    assert ("ClusterRoleBinding", "system:auth-delegator", None) in refs
    assert ("RoleBinding", "extension-apiserver-authentication-reader", "kube-system") in refs


@pytest.mark.parametrize("example", sorted(p.name for p in (OVERLAY / "examples").glob("*.yaml")))
def test_example_hpas_ask_for_a_served_metric_by_served_labels_at_average_value_one(example):
    hpa = documents(f"examples/{example}")[0]
    [metric] = hpa["spec"]["metrics"]
    external = metric["external"]
    assert external["metric"]["name"] in METRICS_BY_NAME
    assert set(external["metric"]["selector"]["matchLabels"]) <= set(LABELS)
    assert external["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_there_is_an_example_for_prefill_and_for_decode():
    names = {p.stem for p in (OVERLAY / "examples").glob("*.yaml")}
    assert {"hpa-prefill", "hpa-decode"} <= names
