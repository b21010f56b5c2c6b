"""Routing, authentication, authorisation and answers of the external metrics API, without HTTP.

:meth:`ExternalMetricsAPI.handle` takes one request (method, target, credentials) and returns one
:class:`Response`; :mod:`autoscaler.adapter.server` only moves bytes. That is the testing seam: every answer
the HPA or the aggregator can get is checked here without sockets.

Paths:

    /healthz /livez /readyz                                        200, no authentication (probes)
    /apis                                                          APIGroupList
    /apis/external.metrics.k8s.io                                  APIGroup
    /apis/external.metrics.k8s.io/v1beta1                          APIResourceList
    /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric} ExternalMetricValueList (?labelSelector=)
    anything else (/openapi/v2, /openapi/v3, ...)                  404 Status: the aggregator skips it quietly

Order of checks, as the generic apiserver: authentication (401), authorisation (403), then the answer.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoscaler.adapter import documents
from autoscaler.adapter.auth import (
    Attributes,
    Authenticator,
    AuthError,
    Authorizer,
    Credentials,
    Forbidden,
    Unauthenticated,
)
from autoscaler.adapter.catalog import METRICS
from autoscaler.adapter.selectors import SelectorError, parse_selector
from autoscaler.adapter.store import DecisionStore, MetricError
from autoscaler.logs import get_logger

__all__ = ["HEALTH_PATHS", "ExternalMetricsAPI", "Response"]

HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = _JSON
    endpoint: str = "other"  # a low-cardinality name of what was asked, for the adapter's own metrics

    def json(self) -> Any:
        return json.loads(self.body)


def _json(status: int, document: dict[str, Any], endpoint: str) -> Response:
    return Response(status, json.dumps(document, separators=(",", ":")).encode(), _JSON, endpoint)


def _status(code: int, reason: str, message: str, endpoint: str) -> Response:
    return _json(code, documents.status(code=code, reason=reason, message=message), endpoint)


class ExternalMetricsAPI:
    def __init__(self, *, store: DecisionStore, authenticator: Authenticator, authorizer: Authorizer,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self._store = store
        self._authenticator = authenticator
        self._authorizer = authorizer
        self._ready = ready
        self._resources = documents.api_resource_list(METRICS)
        self._log = get_logger("adapter")

    def handle(self, *, method: str, target: str, credentials: Credentials) -> Response:
        split = urllib.parse.urlsplit(target)
        path = "/" + split.path.strip("/")
        if path in HEALTH_PATHS:
            if method not in ("GET", "HEAD"):
                return _status(405, "MethodNotAllowed", f"{method} is not allowed on {path}", "health")
            ok = path != "/readyz" or self._ready()
            return Response(200 if ok else 503, b"ok" if ok else b"not ready", "text/plain", "health")
        try:
            return self._authenticated(method, path, split.query, credentials)
        except AuthError as exc:
            self._log.debug("request_refused", path=path, status=exc.status, error=str(exc))
            return _status(exc.status, exc.reason, str(exc), "auth")

    def _authenticated(self, method: str, path: str, query: str, credentials: Credentials) -> Response:
        user = self._authenticator.authenticate(credentials)
        if user is None:
            raise Unauthenticated("Unauthorized: no valid client certificate, request headers or bearer token")
        parts = path.strip("/").split("/")
        group, version = documents.GROUP, documents.VERSION
        if method != "GET":
            return _status(405, "MethodNotAllowed", f"{method} is not supported: this API is read-only", "other")

        if parts in (["apis"], ["apis", group], ["apis", group, version]):
            self._authorize(Attributes(user=user, verb="get", path=path))
            if len(parts) == 1:
                return _json(200, documents.api_group_list(), "discovery")
            if len(parts) == 2:
                return _json(200, documents.api_group(), "discovery")
            return _json(200, self._resources, "discovery")

        if len(parts) == 6 and parts[:4] == ["apis", group, version, "namespaces"] and parts[4] and parts[5]:
            namespace, metric = parts[4], parts[5]
            self._authorize(Attributes(user=user, verb="list", namespace=namespace, group=group, version=version,
                                       resource=metric))
            return self._metric(namespace, metric, query)

        return _status(404, "NotFound", f"the server could not find the requested resource ({path})", "other")

    def _authorize(self, attributes: Attributes) -> None:
        allowed, reason = self._authorizer.authorize(attributes)
        if not allowed:
            why = f": {reason}" if reason else ""
            raise Forbidden(f"user {attributes.user.name!r} cannot {attributes.describe()}{why}")

    def _metric(self, namespace: str, metric: str, query: str) -> Response:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        try:
            selector = parse_selector((params.get("labelSelector") or [""])[0])
        except SelectorError as exc:
            return _status(400, "BadRequest", str(exc), "metric")
        try:
            items = self._store.lookup(namespace=namespace, metric=metric, selector=selector)
        except MetricError as exc:
            self._log.debug("metric_unavailable", namespace=namespace, metric=metric, status=exc.status,
                            error=str(exc))
            return _status(exc.status, exc.reason, str(exc), "metric")
        return _json(200, documents.value_list(items), "metric")
