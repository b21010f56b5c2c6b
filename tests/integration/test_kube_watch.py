"""The watch-backed VariantAutoscaling cache against a real kube-apiserver, and what a cycle costs the API.

A cycle's requests are counted by wrapping the ApiClient's REST client (only the cycle's own thread: the watch
thread's one long request is not part of a cycle). The claim proved: a cycle makes the same requests whether
the cluster holds 0 or 200 objects unrelated to it.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as kube_client

from autoscaler.config import RuntimeSettings, load_settings
from autoscaler.controller.runtime import ControllerRuntime
from autoscaler.kube import api
from autoscaler.kube.client import KubeVariantSource, apply_crd
from autoscaler.localstack import kube

pytestmark = pytest.mark.integration

UNRELATED = 200


@pytest.fixture(scope="module", autouse=True)
def crd(kube_api_client: kube_client.ApiClient) -> None:
    apply_crd(kube_api_client)


class RequestLog:
    """(method, path?query) of every request the wrapped client makes on the thread that armed it, and the
    bytes of the answers."""

    def __init__(self, api_client: kube_client.ApiClient) -> None:
        self.calls: list[tuple[str, str]] = []
        self._responses: list[Any] = []
        self._thread: int | None = None
        original: Callable[..., Any] = api_client.rest_client.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self._thread:
                parts = urllib.parse.urlsplit(url)
                self.calls.append((method, f"{parts.path}?{parts.query}" if parts.query else parts.path))
                response = original(method, url, *args, **kwargs)
                self._responses.append(response)
                return response
            return original(method, url, *args, **kwargs)

        api_client.rest_client.request = request  # type: ignore[method-assign]

    def during(self, action: Callable[[], Any]) -> list[tuple[str, str]]:
        self.calls, self._responses, self._thread = [], [], threading.get_ident()
        try:
            action()
        finally:
            self._thread = None
        return list(self.calls)

    @property
    def received(self) -> int:
        """Bytes of the answers to the last :meth:`during` (read by then: the client reads every answer)."""
        return sum(len(r.data or b"") for r in self._responses)


@pytest.fixture
def counted_client(control_plane: kube.ControlPlane) -> Iterator[tuple[kube_client.ApiClient, RequestLog]]:
    with control_plane.api_client() as api_client:
        yield api_client, RequestLog(api_client)


@pytest.fixture
def other_namespace(kube_api_client: kube_client.ApiClient) -> Iterator[str]:
    core = kube_client.CoreV1Api(kube_api_client)
    created = core.create_namespace(kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(
        generate_name="vas-noise-")))
    name = str(created.metadata.name)
    yield name
    core.delete_namespace(name)


def variant_body(name: str, target: str, *, max_replicas: int = 8) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": {"model": "llama", "role": "decode", "accelerator": "H100",
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": max_replicas}}


def deployment_body(name: str, *, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]}}}}


def ready_pod(core: kube_client.CoreV1Api, namespace: str, name: str, labels: dict[str, str]) -> None:
    core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": labels},
                                           "spec": {"nodeName": "n1", "containers": [
                                               {"name": "c", "image": "registry.invalid/x:1"}]}})
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})


def make_unrelated(kube_api_client: kube_client.ApiClient, namespace: str, other: str, count: int) -> None:
    """``count`` objects spread over the kinds a cycle touches, none of them ours: ConfigMaps, Deployments and
    pods without our labels beside our variant, and VariantAutoscalings of another shard's namespace."""
    core, apps = kube_client.CoreV1Api(kube_api_client), kube_client.AppsV1Api(kube_api_client)
    custom = kube_client.CustomObjectsApi(kube_api_client)
    quarter = count // 4
    for i in range(quarter):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"noise-{i}"}, "data": {"k": "v" * 64}})
        apps.create_namespaced_deployment(namespace, deployment_body(f"noise-{i}", labels={"app": f"noise-{i}"}))
        ready_pod(core, namespace, f"noise-{i}", {"app": f"noise-{i}"})
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, other, api.PLURAL,
                                               variant_body(f"other-shard-{i}", f"noise-{i}"))


def runtime_for(api_client: kube_client.ApiClient, namespace: str, *, watch: bool) -> ControllerRuntime:
    settings = load_settings(None, {"prometheus": {"url": "http://127.0.0.1:9", "retries": 0},
                                    "controller": {"interval_s": 1.0}, "planner": {"predictive": False}})
    runtime = RuntimeSettings(leader_elect=False, health_port=0, metrics_port=0, shard_namespaces=(namespace,),
                              watch=watch, retry_period_s=0.5, renew_deadline_s=2.0, lease_duration_s=3.0)
    return ControllerRuntime(settings=settings, runtime=runtime, api=api_client)


@pytest.mark.parametrize("watch", [pytest.param(True, id="watched"), pytest.param(False, id="listed")])
def test_a_cycle_makes_the_same_requests_with_200_unrelated_objects(
        counted_client: tuple[kube_client.ApiClient, RequestLog], kube_api_client: kube_client.ApiClient,
        kube_namespace: str, other_namespace: str, watch: bool) -> None:
    api_client, log = counted_client
    core = kube_client.CoreV1Api(kube_api_client)
    kube_client.AppsV1Api(kube_api_client).create_namespaced_deployment(
        kube_namespace, deployment_body("decode", labels={"app": "decode"}))
    kube_client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, kube_namespace, api.PLURAL, variant_body("llama-decode", "decode"))
    for i in range(2):
        ready_pod(core, kube_namespace, f"decode-{i}", {"app": "decode"})
    runtime = runtime_for(api_client, kube_namespace, watch=watch)
    runtime.source.start()
    try:
        assert runtime.source.wait_synced(10) is watch
        for _ in range(2):  # discovery, first status write: what a running controller has behind it
            runtime.controller.run_cycle()
        alone = log.during(runtime.controller.run_cycle)
        alone_bytes = log.received
        make_unrelated(kube_api_client, kube_namespace, other_namespace, UNRELATED)
        time.sleep(0.5)  # let the watch see whatever it would see
        crowded = log.during(runtime.controller.run_cycle)
        crowded_bytes = log.received
        report = runtime.controller.run_cycle()
    finally:
        runtime.source.stop()

    assert crowded == alone, f"alone: {alone}\ncrowded: {crowded}"
    # Same answers too, give or take resourceVersion digits: the server filtered the unrelated objects out.
    assert alone_bytes > 1000 and abs(crowded_bytes - alone_bytes) < 64, (alone_bytes, crowded_bytes)
    assert [o.spec.ref.name for o in report.outcomes] == ["llama-decode"]
    # Our own group's objects (llm-d's llmd.ai objects are listed by their own source, which has no cache yet).
    listed_variants = [c for c in alone if c[0] == "GET" and c[1].endswith(f"/{api.PLURAL}")
                       and f"/apis/{api.API_VERSION}/" in c[1]]
    assert len(listed_variants) == (0 if watch else 1)  # the watched cycle reads its cache
    assert sum(1 for method, path in alone if method == "GET" and "/pods" in path) == 1  # one pod list per variant


def test_the_cache_follows_creations_changes_and_deletions_without_listing(
        counted_client: tuple[kube_client.ApiClient, RequestLog], kube_api_client: kube_client.ApiClient,
        kube_namespace: str) -> None:
    api_client, log = counted_client
    custom = kube_client.CustomObjectsApi(kube_api_client)
    source = KubeVariantSource(api_client, namespace=kube_namespace, watch=True, retry_s=0.5)

    def maxima() -> dict[str, int]:
        specs, errors = source.list_variants()
        assert not errors
        return {s.ref.name: s.max_replicas for s in specs}

    def eventually(expected: dict[str, int]) -> None:
        deadline = time.monotonic() + 10
        while maxima() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert maxima() == expected

    assert log.during(maxima) == [("GET", f"/apis/{api.API_VERSION}/namespaces/{kube_namespace}/{api.PLURAL}")]
    source.start()
    try:
        assert source.wait_synced(10)
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, kube_namespace, api.PLURAL,
                                               variant_body("a", "a"))
        eventually({"a": 8})
        custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, kube_namespace, api.PLURAL, "a",
                                              {"spec": {"maxReplicas": 3}})
        eventually({"a": 3})
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, kube_namespace, api.PLURAL,
                                               variant_body("b", "b"))
        custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, kube_namespace, api.PLURAL, "a")
        eventually({"b": 8})
        assert log.during(maxima) == []  # served from the cache: no request at all
    finally:
        started = time.monotonic()
        source.stop()
        stopped_in = time.monotonic() - started

    assert stopped_in < 2.0  # the watch's socket is shut, not waited out (its timeout is minutes)
    assert not [t for t in threading.enumerate() if t.name.startswith("watch ") and kube_namespace in t.name]
    assert not source.synced
