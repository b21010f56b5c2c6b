"""KubeScaler against a real kube-apiserver: scale, status, events, and each failure the API can answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from kubernetes import client as kube_client

from autoscaler.core.types import Decision, DecisionStep, Reason, VariantSpec
from autoscaler.errors import ActuationError
from autoscaler.kube import api
from autoscaler.kube.client import KubeScaler, KubeVariantSource, VariantStore, apply_crd
from autoscaler.kube.drain import DELETION_COST, DRAIN_MARK, REMOVE_FIRST_COST
from autoscaler.kube.events import REPORTING_CONTROLLER
from autoscaler.kube.failures import KubeActuationError

pytestmark = pytest.mark.integration

IDENTITY = "test-controller_0001"


@pytest.fixture(scope="module", autouse=True)
def crd(kube_api_client: kube_client.ApiClient) -> None:
    apply_crd(kube_api_client)


def make_deployment(apps: kube_client.AppsV1Api, namespace: str, name: str, *, replicas: int) -> None:
    labels = {"app": name}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}},
    })


def make_variant(custom: kube_client.CustomObjectsApi, namespace: str, name: str, *, target: str,
                 **spec: Any) -> None:
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"model": "llama", "role": "decode", "accelerator": "H100",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 8, **spec}}
    custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, body)


def decision_for(spec: VariantSpec, *, current: int, desired: int, reason: Reason = Reason.SATURATED) -> Decision:
    return Decision(spec.ref, current, desired, (DecisionStep("recommend", desired, reason, f"test says {desired}"),))


def read_variant(custom: kube_client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
    return obj


def events_for(kube_api_client: kube_client.ApiClient, namespace: str, name: str) -> list[Any]:
    listed = kube_client.EventsV1Api(kube_api_client).list_namespaced_event(namespace)
    return [e for e in listed.items if e.regarding and e.regarding.name == name and e.regarding.kind == api.KIND]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.fixture
def apis(kube_api_client: kube_client.ApiClient) -> tuple[kube_client.AppsV1Api, kube_client.CustomObjectsApi]:
    return kube_client.AppsV1Api(kube_api_client), kube_client.CustomObjectsApi(kube_api_client)


def listed_spec(kube_api_client: kube_client.ApiClient, namespace: str, store: VariantStore | None,
                name: str) -> VariantSpec:
    specs, errors = KubeVariantSource(kube_api_client, namespace=namespace, store=store).list_variants()
    assert not errors
    return next(s for s in specs if s.ref.name == name)


# -- the path that works ------------------------------------------------------------------------------------------


def test_scales_the_target_and_records_status_and_an_event(kube_api_client: kube_client.ApiClient,
                                                           kube_namespace: str, apis: Any) -> None:
    apps, custom = apis
    make_deployment(apps, kube_namespace, "decode", replicas=1)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    scaler = KubeScaler(kube_api_client, store=store, identity=IDENTITY)

    assert scaler.current_replicas(spec) == 1
    scaler.scale(spec, 3)
    scaler.write_status(spec, decision_for(spec, current=1, desired=3), scaled_at=time.time())

    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 3
    obj = read_variant(custom, kube_namespace, "llama-decode")
    able = condition(obj, "AbleToScale")
    assert (obj["status"]["currentReplicas"], obj["status"]["desiredReplicas"], obj["status"]["reason"]) == (
        1, 3, "Saturated")
    assert (able["status"], able["reason"], able["observedGeneration"]) == ("True", "SucceededRescale",
                                                                             obj["metadata"]["generation"])
    assert "lastScaleTime" in obj["status"]
    [event] = events_for(kube_api_client, kube_namespace, "llama-decode")
    assert (event.reason, event.type, event.reporting_controller, event.reporting_instance) == (
        "SuccessfulRescale", "Normal", REPORTING_CONTROLLER, IDENTITY)
    assert "New size: 3" in event.note and event.regarding.uid == obj["metadata"]["uid"]


def test_status_is_not_rewritten_when_nothing_changed(kube_api_client: kube_client.ApiClient, kube_namespace: str,
                                                      apis: Any) -> None:
    apps, custom = apis
    make_deployment(apps, kube_namespace, "decode", replicas=2)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    versions = []
    for _ in range(3):  # a fresh listing each cycle, as the loop does
        store = VariantStore()
        spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
        scaler = KubeScaler(kube_api_client, store=store, identity=IDENTITY)
        current = scaler.current_replicas(spec)
        scaler.write_status(spec, decision_for(spec, current=current, desired=current,
                                               reason=Reason.WITHIN_TOLERANCE), scaled_at=None)
        versions.append(read_variant(custom, kube_namespace, "llama-decode")["metadata"]["resourceVersion"])
    assert versions[0] == versions[1] == versions[2]
    assert events_for(kube_api_client, kube_namespace, "llama-decode") == []


# -- failures -----------------------------------------------------------------------------------------------------


def test_missing_target_becomes_a_condition_and_one_warning_event(kube_api_client: kube_client.ApiClient,
                                                                  kube_namespace: str, apis: Any) -> None:
    _, custom = apis
    make_variant(custom, kube_namespace, "llama-decode", target="gone")
    for _ in range(3):
        store = VariantStore()
        spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
        with pytest.raises(ActuationError) as refused:
            KubeScaler(kube_api_client, store=store, identity=IDENTITY).current_replicas(spec)
        assert refused.value.status == 404
    able = condition(read_variant(custom, kube_namespace, "llama-decode"), "AbleToScale")
    assert (able["status"], able["reason"]) == ("False", "TargetNotFound")
    assert "Deployment/gone" in able["message"]
    warnings = events_for(kube_api_client, kube_namespace, "llama-decode")
    assert [(e.type, e.reason) for e in warnings] == [("Warning", "TargetNotFound")]  # once, not per cycle


def test_conflicting_change_is_read_again_and_the_decision_reapplied(kube_api_client: kube_client.ApiClient,
                                                                     kube_namespace: str, apis: Any) -> None:
    apps, custom = apis
    make_deployment(apps, kube_namespace, "decode", replicas=2)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    scaler = KubeScaler(kube_api_client, store=store, identity=IDENTITY)
    assert scaler.current_replicas(spec) == 2
    # Someone else (a person, another autoscaler) changes the Deployment after our read.
    apps.patch_namespaced_deployment(name="decode", namespace=kube_namespace,
                                     body={"spec": {"replicas": 5}})
    with structlog.testing.capture_logs() as logs:
        scaler.scale(spec, 3)
    assert [e["event"] for e in logs].count("scale_conflict_reread") == 1
    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 3


def _service_account_client(kube_api_client: kube_client.ApiClient, namespace: str, *, rules: list[dict[str, Any]],
                            name: str = "limited") -> kube_client.ApiClient:
    """A client acting as a ServiceAccount with exactly ``rules`` in ``namespace`` (by impersonation)."""
    core, rbac = kube_client.CoreV1Api(kube_api_client), kube_client.RbacAuthorizationV1Api(kube_api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    impersonating = kube_client.ApiClient(configuration=kube_api_client.configuration)
    impersonating.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{name}")
    return impersonating


def test_forbidden_patch_names_the_missing_permission(kube_api_client: kube_client.ApiClient, kube_namespace: str,
                                                      apis: Any) -> None:
    apps, custom = apis
    make_deployment(apps, kube_namespace, "decode", replicas=1)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    limited = _service_account_client(kube_api_client, kube_namespace, rules=[
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},  # no patch
        {"apiGroups": [api.GROUP], "resources": [api.PLURAL], "verbs": ["get", "list"]},
        {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/status"], "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ])
    with limited:
        store = VariantStore()
        spec = listed_spec(limited, kube_namespace, store, "llama-decode")
        scaler = KubeScaler(limited, store=store, identity=IDENTITY)
        assert scaler.current_replicas(spec) == 1
        with pytest.raises(KubeActuationError) as refused:
            scaler.scale(spec, 2)
        scaler.write_status(spec, decision_for(spec, current=1, desired=2), scaled_at=None)
    assert refused.value.status == 403
    expected = f'missing permission: patch deployments/scale in API group "apps" in namespace "{kube_namespace}"'
    assert expected in str(refused.value)
    able = condition(read_variant(custom, kube_namespace, "llama-decode"), "AbleToScale")
    assert (able["status"], able["reason"]) == ("False", "Forbidden") and expected in able["message"]
    assert [(e.type, e.reason) for e in events_for(kube_api_client, kube_namespace, "llama-decode")] == [
        ("Warning", "Forbidden")]
    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 1


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: the shape of a hung API server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_hung_api_server_times_out_as_an_actuation_error(silent_server: str) -> None:
    configuration = kube_client.Configuration(host=silent_server)
    configuration.retries = False
    spec = VariantSpec(ref=api.VariantRef("ns", "v"), model="m", role=api.Role.DECODE, accelerator="H100",
                       target=api.ScaleTarget("apps/v1", "Deployment", "d"))
    with kube_client.ApiClient(configuration=configuration) as hung:
        scaler = KubeScaler(hung, timeout_s=0.5, dry_run=True)
        started = time.monotonic()
        with pytest.raises(KubeActuationError) as refused:
            scaler.current_replicas(spec)
    assert refused.value.reason == "ApiTimeout"
    assert time.monotonic() - started < 5


# -- scale-down without killing work ---------------------------------------------------------------------------


class FixedLoad:
    def __init__(self, loads: dict[str, float]) -> None:
        self.loads = loads

    def running_requests(self, spec: VariantSpec) -> dict[str, float]:
        return self.loads


def _make_pods(core: kube_client.CoreV1Api, namespace: str, app: str, names: list[str],
               annotations: dict[str, dict[str, str]] | None = None) -> None:
    for name in names:
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": {"app": app}, "annotations": (annotations or {}).get(name, {})},
            "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}})


def _costs(core: kube_client.CoreV1Api, namespace: str) -> dict[str, str | None]:
    return {p.metadata.name: (p.metadata.annotations or {}).get(DELETION_COST)
            for p in core.list_namespaced_pod(namespace).items}


def test_scale_down_marks_the_least_loaded_pods_for_removal_first(kube_api_client: kube_client.ApiClient,
                                                                  kube_namespace: str, apis: Any) -> None:
    apps, custom = apis
    core = kube_client.CoreV1Api(kube_api_client)
    make_deployment(apps, kube_namespace, "decode", replicas=4)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    # decode-3 was marked by an earlier scale-down that never happened; it is busy now.
    _make_pods(core, kube_namespace, "decode", ["decode-0", "decode-1", "decode-2", "decode-3"],
               {"decode-3": {DELETION_COST: str(REMOVE_FIRST_COST), DRAIN_MARK: "true"}})
    _make_pods(core, kube_namespace, "other", ["unrelated"])
    load = FixedLoad({"decode-0": 7, "decode-1": 0, "decode-2": 2, "decode-3": 9})
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    scaler = KubeScaler(kube_api_client, store=store, identity=IDENTITY, pod_load=load)

    assert scaler.current_replicas(spec) == 4
    scaler.scale(spec, 2)

    low = str(REMOVE_FIRST_COST)
    assert _costs(core, kube_namespace) == {"decode-0": None, "decode-1": low, "decode-2": low, "decode-3": None,
                                            "unrelated": None}
    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 2


def test_a_scale_down_cycle_marks_from_the_pods_it_counted_with_one_list(
        kube_api_client: kube_client.ApiClient, kube_namespace: str, apis: Any) -> None:
    apps, custom = apis
    core = kube_client.CoreV1Api(kube_api_client)
    make_deployment(apps, kube_namespace, "decode", replicas=3)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    _make_pods(core, kube_namespace, "decode", ["decode-0", "decode-1", "decode-2"])
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    load = FixedLoad({"decode-0": 3, "decode-1": 1, "decode-2": 5})
    scaler = KubeScaler(kube_api_client, store=store, identity=IDENTITY, pod_load=load)
    pod_lists: list[str] = []
    original = kube_api_client.rest_client.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "GET" and url.split("?")[0].endswith("/pods"):
            pod_lists.append(url)
        return original(method, url, *args, **kwargs)

    kube_api_client.rest_client.request = request  # type: ignore[method-assign]
    try:
        # As the loop runs a cycle: read the scale, count the pods, then scale down.
        scaler.current_replicas(spec)
        assert scaler.replica_counts(spec) is not None
        scaler.scale(spec, 2)
        first_cycle = len(pod_lists)
        marked_first = _costs(core, kube_namespace)
        before_second = len(pod_lists)
        # A later cycle that skipped counting lists for itself rather than reuse the last cycle's pods.
        load.loads = {"decode-0": 0, "decode-1": 4, "decode-2": 5}
        scaler.current_replicas(spec)
        scaler.scale(spec, 1)
    finally:
        kube_api_client.rest_client.request = original  # type: ignore[method-assign]

    assert (first_cycle, len(pod_lists) - before_second) == (1, 1)
    low = str(REMOVE_FIRST_COST)
    assert marked_first == {"decode-0": None, "decode-1": low, "decode-2": None}
    assert _costs(core, kube_namespace) == {"decode-0": low, "decode-1": None, "decode-2": None}


def test_scale_up_touches_no_pod(kube_api_client: kube_client.ApiClient, kube_namespace: str, apis: Any) -> None:
    apps, custom = apis
    core = kube_client.CoreV1Api(kube_api_client)
    make_deployment(apps, kube_namespace, "decode", replicas=2)
    make_variant(custom, kube_namespace, "llama-decode", target="decode")
    _make_pods(core, kube_namespace, "decode", ["decode-0", "decode-1"])
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    scaler = KubeScaler(kube_api_client, store=store, pod_load=FixedLoad({"decode-0": 0, "decode-1": 0}))
    scaler.current_replicas(spec)
    scaler.scale(spec, 3)
    assert set(_costs(core, kube_namespace).values()) == {None}


# -- dry run ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_dry_run", "annotated"),
    [
        pytest.param(True, False, id="dry-run-flag"),
        pytest.param(False, True, id="dry-run-annotation"),
    ],
)
def test_dry_run_writes_nothing_even_when_the_target_is_gone(kube_api_client: kube_client.ApiClient,
                                                             kube_namespace: str, apis: Any, global_dry_run: bool,
                                                             annotated: bool) -> None:
    _, custom = apis
    make_variant(custom, kube_namespace, "llama-decode", target="gone")
    if annotated:
        custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, kube_namespace, api.PLURAL, "llama-decode",
                                              {"metadata": {"annotations": {api.DRY_RUN_ANNOTATION: "true"}}})
    before = read_variant(custom, kube_namespace, "llama-decode")["metadata"]["resourceVersion"]
    store = VariantStore()
    spec = listed_spec(kube_api_client, kube_namespace, store, "llama-decode")
    assert spec.dry_run is annotated
    with pytest.raises(ActuationError):
        KubeScaler(kube_api_client, store=store, dry_run=global_dry_run).current_replicas(spec)
    assert read_variant(custom, kube_namespace, "llama-decode")["metadata"]["resourceVersion"] == before
    assert events_for(kube_api_client, kube_namespace, "llama-decode") == []
