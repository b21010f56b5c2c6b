"""manifests/: rendered like kustomize, applied server-side to a real API server, RBAC checked as the controller.

kustomize is not installed here, so ``render`` implements the part of it these kustomizations use (resources,
nested kustomizations, JSON 6902 patches) and refuses any other field; when a ``kubectl`` binary is at hand
(PATH, $KUBEBUILDER_ASSETS or the asset cache) a test checks that ``kubectl kustomize`` renders the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from kubernetes import client as kube_client
from kubernetes.dynamic import DynamicClient

from autoscaler.core.types import Decision, DecisionStep, Reason
from autoscaler.kube import api
from autoscaler.kube.client import KubeScaler, KubeVariantSource, VariantStore
from autoscaler.kube.lease import ElectionTiming, KubeLeaseLock, LeaderElector
from autoscaler.localstack import assets

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OURS = ["crd", "base", "overlays/openshift", "samples"]  # overlays/hpa-adapter belongs to the adapter
SA_USER = "system:serviceaccount:variant-autoscaler:variant-autoscaler"
FIELD_MANAGER = "variant-autoscaler-tests"
_SUPPORTED = {"apiVersion", "kind", "resources", "patches"}

# -- rendering ----------------------------------------------------------------------------------------------------


def render(directory: Path) -> list[dict[str, Any]]:
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = sorted(set(kustomization) - _SUPPORTED)
    if unknown:
        raise ValueError(f"{path}: {unknown} not implemented by this renderer; keep to {sorted(_SUPPORTED)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        source = directory / entry
        if source.is_dir():
            objects += render(source)
        else:
            objects += [doc for doc in yaml.safe_load_all(source.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        target = patch.get("target") or {}
        text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
        operations = yaml.safe_load(text)
        if not isinstance(operations, list):
            raise TypeError(f"{path}: only JSON 6902 patches (a list of operations) are implemented")
        matched = [i for i, obj in enumerate(objects) if _matches(obj, target)]
        if not matched:
            raise ValueError(f"{path}: patch target {target} matches nothing")
        for i in matched:
            objects[i] = jsonpatch.apply_patch(objects[i], operations)
    return objects


def _matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    meta = obj["metadata"]
    wanted = {"group": group, "version": version, "kind": obj["kind"], "name": meta["name"],
              "namespace": meta.get("namespace", "")}
    return all(wanted[key] == value for key, value in target.items())


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _kubectl() -> str | None:
    candidates = [shutil.which("kubectl"), os.environ.get("KUBECTL")]
    if os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(str(Path(os.environ["KUBEBUILDER_ASSETS"]) / "kubectl"))
    candidates.append(str(assets.cache_dir() / "kubectl"))
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


# -- static checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", OURS)
def test_kustomization_renders(directory: str) -> None:
    objects = render(MANIFESTS / directory)
    assert objects
    keys = [_key(o) for o in objects]
    assert len(keys) == len(set(keys)), "an object is defined twice"


def test_every_file_we_ship_is_in_a_kustomization() -> None:
    listed: set[Path] = set()
    for directory in OURS:
        for entry in yaml.safe_load((MANIFESTS / directory / "kustomization.yaml").read_text())["resources"]:
            listed.add((MANIFESTS / directory / entry).resolve())
    shipped = {p.resolve() for d in OURS for p in (MANIFESTS / d).glob("*.yaml") if p.name != "kustomization.yaml"}
    assert shipped - listed == set()


@pytest.mark.parametrize("directory", OURS)
def test_kubectl_kustomize_renders_the_same(directory: str) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("no kubectl binary: the built-in renderer is the only check")
    done = subprocess.run([kubectl, "kustomize", str(MANIFESTS / directory)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(done.stdout) if o}
    ours = {_key(o): o for o in render(MANIFESTS / directory)}
    assert theirs == ours


def _deployment() -> dict[str, Any]:
    return next(o for o in render(MANIFESTS / "base") if o["kind"] == "Deployment")


def test_deployment_is_a_hardened_pair_of_leader_elected_replicas() -> None:
    deployment = _deployment()
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]
    env = {e["name"]: e for e in container["env"]}
    assert deployment["spec"]["replicas"] == 2
    assert env["VAS_RUNTIME_LEADER_ELECT"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (security["readOnlyRootFilesystem"], security["allowPrivilegeEscalation"],
            security["capabilities"]["drop"]) == (True, False, ["ALL"])
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert (container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz", "/readyz")
    assert container["args"][0] == "run"
    assert pod["serviceAccountName"] == "variant-autoscaler"


def test_deployment_runs_the_image_the_readme_builds() -> None:
    image = _deployment()["spec"]["template"]["spec"]["containers"][0]["image"]
    readme = (MANIFESTS / "README.md").read_text()
    assert f"-t {image} -f Containerfile" in readme and f"push {image}" in readme


# -- against the API server -----------------------------------------------------------------------------------

_SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors",
                  "singular": "servicemonitor"},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}],
    },
}


def _apply(dynamic: DynamicClient, objects: list[dict[str, Any]]) -> None:
    # CRDs and namespaces first, as kustomize orders them; then wait for each CRD before its kind is used.
    order = {"Namespace": 0, "CustomResourceDefinition": 1}
    for obj in sorted(objects, key=lambda o: order.get(o["kind"], 2)):
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dynamic.server_side_apply(resource, body=obj, field_manager=FIELD_MANAGER, force_conflicts=True)
        if obj["kind"] == "CustomResourceDefinition":
            _wait_established(dynamic, obj["metadata"]["name"])


def _wait_established(dynamic: DynamicClient, name: str) -> None:
    import time

    crds = dynamic.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = (dynamic.get(crds, name=name).to_dict().get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            dynamic.resources.invalidate_cache()
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not established")


@pytest.fixture(scope="module")
def installed(kube_api_client: kube_client.ApiClient) -> DynamicClient:
    """base + the OpenShift overlay + samples, applied server-side (with their prerequisites)."""
    dynamic = DynamicClient(kube_api_client)
    core = kube_client.CoreV1Api(kube_api_client)
    for namespace in ("openshift-machine-api", "llm-d"):
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except kube_client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    _apply(dynamic, [_SERVICEMONITOR_CRD])
    _apply(dynamic, render(MANIFESTS / "overlays" / "openshift"))
    _apply(dynamic, render(MANIFESTS / "samples"))
    return dynamic


@pytest.mark.integration
@pytest.mark.parametrize("directory", OURS)
def test_every_manifest_is_stored_as_written(installed: DynamicClient, directory: str) -> None:
    for obj in render(MANIFESTS / directory):
        resource = installed.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        stored = installed.get(resource, name=meta["name"], namespace=meta.get("namespace")).to_dict()
        managers = {m["manager"] for m in stored["metadata"].get("managedFields", [])}
        assert FIELD_MANAGER in managers, f"{_key(obj)} not applied by us"


@pytest.mark.integration
def test_samples_are_valid_variant_autoscalings(installed: DynamicClient) -> None:
    listed = kube_client.CustomObjectsApi(installed.client).list_namespaced_custom_object(
        api.GROUP, api.VERSION, "llm-d", api.PLURAL)["items"]
    roles = sorted(api.parse_variant_autoscaling(o).spec.role.value for o in listed)
    assert roles == ["decode", "prefill"]


@pytest.fixture
def as_controller(kube_api_client: kube_client.ApiClient) -> Iterator[kube_client.ApiClient]:
    """A client that the API server treats as the controller's ServiceAccount."""
    impersonating = kube_client.ApiClient(configuration=kube_api_client.configuration)
    impersonating.set_default_header("Impersonate-User", SA_USER)
    with impersonating:
        yield impersonating


@pytest.mark.integration
def test_the_controller_does_its_whole_job_with_the_granted_permissions(
    installed: DynamicClient, as_controller: kube_client.ApiClient, kube_api_client: kube_client.ApiClient,
    kube_namespace: str,
) -> None:
    apps, core = kube_client.AppsV1Api(kube_api_client), kube_client.CoreV1Api(kube_api_client)
    labels = {"app": "decode"}
    apps.create_namespaced_deployment(kube_namespace, {
        "metadata": {"name": "decode"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})
    for name in ("decode-0", "decode-1"):
        core.create_namespaced_pod(kube_namespace, {"metadata": {"name": name, "labels": labels},
                                                    "spec": {"containers": [{"name": "vllm", "image": "x"}]}})
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, kube_namespace, api.PLURAL, {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama-decode"},
            "spec": {"model": "llama", "role": "decode", "accelerator": "H100", "maxReplicas": 4,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "decode"}}})

    class Load:
        def running_requests(self, spec: Any) -> dict[str, float]:
            return {"decode-0": 3, "decode-1": 0}

    # Everything the controller does in a cycle, through its own code, as the ServiceAccount.
    store = VariantStore()
    specs, _ = KubeVariantSource(as_controller, store=store).list_variants()  # cluster-wide, as deployed
    spec = next(s for s in specs if s.ref.namespace == kube_namespace)
    scaler = KubeScaler(as_controller, store=store, identity="rbac-test", pod_load=Load())
    assert scaler.current_replicas(spec) == 2
    scaler.scale(spec, 1)  # with the pod-deletion-cost annotation on decode-1
    decision = Decision(spec.ref, 2, 1, (DecisionStep("recommend", 1, Reason.UNDERUTILISED, "idle"),))
    scaler.write_status(spec, decision, scaled_at=1.0)
    lock = KubeLeaseLock(as_controller, namespace="variant-autoscaler", name=f"rbac-{uuid.uuid4().hex[:8]}")
    elector = LeaderElector(lock, identity="rbac-test", timing=ElectionTiming(3, 2, 0.5))
    assert elector.try_acquire_or_renew() and elector.try_acquire_or_renew()  # create, then update

    status = kube_client.CustomObjectsApi(kube_api_client).get_namespaced_custom_object(
        api.GROUP, api.VERSION, kube_namespace, api.PLURAL, "llama-decode")["status"]
    assert (status["desiredReplicas"], status["conditions"][0]["status"]) == (1, "True")
    events = kube_client.EventsV1Api(kube_api_client).list_namespaced_event(kube_namespace).items
    assert [e.reason for e in events] == ["SuccessfulRescale"]
    annotated = core.read_namespaced_pod("decode-1", kube_namespace).metadata.annotations or {}
    assert "controller.kubernetes.io/pod-deletion-cost" in annotated


def _allowed(kube_api_client: kube_client.ApiClient, **attributes: str) -> bool:
    review = kube_client.AuthorizationV1Api(kube_api_client).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": SA_USER, "groups": ["system:serviceaccounts", "system:serviceaccounts:variant-autoscaler",
                                             "system:authenticated"],
                 "resourceAttributes": attributes}})
    return bool(review.status.allowed)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        pytest.param({"verb": "list", "group": api.GROUP, "resource": api.PLURAL}, True, id="list-variants"),
        pytest.param({"verb": "patch", "group": api.GROUP, "resource": api.PLURAL, "subresource": "status",
                      "namespace": "llm-d"}, True, id="patch-variant-status"),
        pytest.param({"verb": "patch", "group": "apps", "resource": "deployments", "subresource": "scale",
                      "namespace": "llm-d"}, True, id="patch-deployment-scale"),
        pytest.param({"verb": "patch", "group": "leaderworkerset.x-k8s.io", "resource": "leaderworkersets",
                      "subresource": "scale", "namespace": "llm-d"}, True, id="patch-lws-scale"),
        pytest.param({"verb": "update", "group": "coordination.k8s.io", "resource": "leases",
                      "namespace": "variant-autoscaler"}, True, id="renew-own-lease"),
        pytest.param({"verb": "patch", "group": "machine.openshift.io", "resource": "machinesets",
                      "subresource": "scale", "namespace": "openshift-machine-api"}, True,
                     id="openshift-scale-machinesets"),
        pytest.param({"verb": "patch", "group": "machine.openshift.io", "resource": "machines",
                      "namespace": "openshift-machine-api"}, True, id="openshift-mark-machine-for-deletion"),
        pytest.param({"verb": "list", "group": "llmd.ai", "resource": "variantautoscalings"}, True,
                     id="list-llmd-variants"),
        pytest.param({"verb": "patch", "group": "llmd.ai", "resource": "variantautoscalings",
                      "subresource": "status", "namespace": "llm-d"}, True, id="patch-llmd-variant-status"),
        pytest.param({"verb": "get", "group": "apps", "resource": "deployments", "namespace": "llm-d"}, True,
                     id="read-deployment-pod-template"),
        # refused: what the controller never needs
        pytest.param({"verb": "patch", "group": "llmd.ai", "resource": "variantautoscalings",
                      "namespace": "llm-d"}, False, id="edit-llmd-variant-spec"),
        pytest.param({"verb": "patch", "group": api.GROUP, "resource": api.PLURAL, "namespace": "llm-d"}, False,
                     id="edit-variant-spec"),
        pytest.param({"verb": "patch", "group": "apps", "resource": "deployments", "namespace": "llm-d"}, False,
                     id="edit-deployment-itself"),
        pytest.param({"verb": "delete", "group": "", "resource": "pods", "namespace": "llm-d"}, False,
                     id="delete-pods"),
        pytest.param({"verb": "get", "group": "", "resource": "secrets", "namespace": "llm-d"}, False,
                     id="read-secrets"),
        pytest.param({"verb": "create", "group": "coordination.k8s.io", "resource": "leases",
                      "namespace": "kube-system"}, False, id="leases-elsewhere"),
        pytest.param({"verb": "patch", "group": "machine.openshift.io", "resource": "machinesets",
                      "namespace": "openshift-machine-api"}, False, id="edit-machineset-template"),
        pytest.param({"verb": "patch", "group": "machine.openshift.io", "resource": "machinesets",
                      "subresource": "scale", "namespace": "llm-d"}, False, id="machinesets-outside-machine-api"),
        pytest.param({"verb": "create", "group": "", "resource": "events", "namespace": "llm-d"}, False,
                     id="legacy-core-events"),
        pytest.param({"verb": "delete", "group": "machine.openshift.io", "resource": "machines",
                      "namespace": "openshift-machine-api"}, False, id="delete-machines"),
    ],
)
def test_rbac_grants_what_the_controller_needs_and_nothing_else(
    installed: DynamicClient, kube_api_client: kube_client.ApiClient, attributes: dict[str, str], allowed: bool,
) -> None:
    assert _allowed(kube_api_client, **attributes) is allowed
