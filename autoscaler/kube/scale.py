"""The ``scale`` subresource of any kind that has one (Deployment, StatefulSet, LeaderWorkerSet, MachineSet, ...).

Kinds are resolved to resource paths by discovering only their own group-version (one request per
group-version, cached), not the whole cluster as ``kubernetes.dynamic`` does on first use; this keeps the
controller's API traffic independent of the other APIs installed and needs no discovery cache on disk
(the container's root filesystem is read-only).

Writes carry the ``resourceVersion`` read before the decision, so a change made in between by someone else
surfaces as a 409 instead of being silently overwritten.

Every PATCH asks ``may_write`` (the leader-election guard) immediately before it is sent, here where the write
happens, so no caller's path (first try, a retry after a 409, a MachineSet) can skip it. A 409 is exactly what
a new leader's write causes: a retry checked only at the start of the call would let the old leader win.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.kube.failures import KubeActuationError, Request, to_actuation_error
from autoscaler.kube.rest import request_json

__all__ = ["MERGE_PATCH", "ScaleClient", "ScaleState"]

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class ScaleState:
    replicas: int  # spec.replicas (omitted on the wire when zero)
    status_replicas: int
    resource_version: str
    selector: str  # status.selector: label selector of the pods, "" when the kind does not publish one


@dataclass(frozen=True, slots=True)
class _Resource:
    group: str
    version: str
    plural: str
    namespaced: bool

    def path(self, *, namespace: str, name: str, subresource: str = "scale") -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{root}{ns}/{self.plural}/{name}" + (f"/{subresource}" if subresource else "")


class ScaleClient:
    def __init__(self, api: client.ApiClient, *, timeout_s: float = 10.0,
                 may_write: Callable[[], bool] = lambda: True) -> None:
        self._api = api
        self._timeout_s = timeout_s
        self._may_write = may_write
        self._resources: dict[tuple[str, str], _Resource] = {}
        self._lock = threading.Lock()

    # -- discovery ---------------------------------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str, *, namespace: str) -> _Resource:
        key = (api_version, kind)
        with self._lock:
            cached = self._resources.get(key)
        if cached is not None:
            return cached
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{api_version}" if group else f"/api/{version}"
        request = Request("get", f"discovery {api_version}", group, None)
        try:
            listing = self._call(path, "GET")
        except ApiException as exc:
            if exc.status == 404:
                raise KubeActuationError(f"{kind}: API {api_version} is not served by this cluster",
                                         status=404, reason="TargetKindUnknown") from exc
            raise to_actuation_error(f"discovering {api_version}", request, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise to_actuation_error(f"discovering {api_version}", request, exc) from exc
        resources = listing.get("resources") or []
        names = {r.get("name") for r in resources}
        for r in resources:
            if r.get("kind") == kind and "/" not in r.get("name", ""):
                if f"{r['name']}/scale" not in names:
                    raise KubeActuationError(f"{kind} ({api_version}) has no scale subresource", status=None,
                                             reason="TargetNotScalable")
                found = _Resource(group, version, r["name"], bool(r.get("namespaced")))
                with self._lock:
                    self._resources[key] = found
                return found
        raise KubeActuationError(f"no kind {kind} in {api_version}", status=404, reason="TargetKindUnknown")

    # -- scale -------------------------------------------------------------------------------------------------

    def get(self, *, api_version: str, kind: str, name: str, namespace: str) -> ScaleState:
        resource = self._resource(api_version, kind, namespace=namespace)
        request = Request("get", f"{resource.plural}/scale", resource.group, namespace, name)
        try:
            obj = self._call(resource.path(namespace=namespace, name=name), "GET")
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"reading scale of {kind}/{name}", request, exc,
                                     not_found_reason="TargetNotFound") from exc
        return _state(obj)

    def read_object(self, *, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        """The whole target object (its pod template: llm-d's labels, GPU node selector, GPU limits)."""
        resource = self._resource(api_version, kind, namespace=namespace)
        request = Request("get", resource.plural, resource.group, namespace, name)
        try:
            obj = self._call(resource.path(namespace=namespace, name=name, subresource=""), "GET")
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"reading {kind}/{name}", request, exc,
                                     not_found_reason="TargetNotFound") from exc
        return dict(obj)

    def patch(self, *, api_version: str, kind: str, name: str, namespace: str, replicas: int,
              resource_version: str | None = None) -> ScaleState:
        """Set spec.replicas; with ``resource_version`` the write fails with 409 if the object changed."""
        resource = self._resource(api_version, kind, namespace=namespace)
        request = Request("patch", f"{resource.plural}/scale", resource.group, namespace, name)
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        if not self._may_write():
            raise KubeActuationError(f"not scaling {kind}/{name}: this instance does not hold the lease",
                                     status=None, reason="NotLeader")
        try:
            obj = self._call(resource.path(namespace=namespace, name=name), "PATCH", body=body,
                             content_type=MERGE_PATCH)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"patching scale of {kind}/{name}", request, exc,
                                     not_found_reason="TargetNotFound") from exc
        return _state(obj)

    def _call(self, path: str, method: str, *, body: Any = None, content_type: str | None = None) -> Any:
        return request_json(self._api, method, path, body=body, content_type=content_type,
                            timeout_s=self._timeout_s)


def _state(obj: dict[str, Any]) -> ScaleState:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return ScaleState(
        replicas=int(spec.get("replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        selector=str(status.get("selector") or ""),
    )
