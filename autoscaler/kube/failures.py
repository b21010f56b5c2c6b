"""Kubernetes API failures turned into :class:`ActuationError` with a condition-ready reason.

    ApiException 404  -> reason TargetNotFound (or NotFound for other objects)
    ApiException 403  -> reason Forbidden, message naming the verb, resource and namespace that RBAC refused
    ApiException 409  -> reason Conflict (callers re-read and retry)
    urllib3 timeouts  -> reason ApiTimeout
    other transport   -> reason ApiUnreachable
    anything else     -> reason ApiError

Response bodies are cut before they reach messages, logs or status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import ActuationError

__all__ = ["BODY_LIMIT", "KubeActuationError", "Request", "to_actuation_error"]

BODY_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Request:
    """What was asked of the API, to say which permission was missing."""

    verb: str  # get, list, patch, create, update
    resource: str  # plural, with subresource: "deployments/scale"
    group: str  # "" for the core group
    namespace: str | None
    name: str | None = None

    def describe(self) -> str:
        group = f' in API group "{self.group}"' if self.group else " in the core API group"
        where = f' in namespace "{self.namespace}"' if self.namespace else " cluster-wide"
        return f"{self.verb} {self.resource}{group}{where}"


class KubeActuationError(ActuationError):
    """An ActuationError that knows the condition reason it maps onto."""

    def __init__(self, message: str, *, status: int | None, reason: str) -> None:
        super().__init__(message, status=status)
        self.reason = reason


def _server_message(exc: ApiException) -> str:
    body = exc.body if isinstance(exc.body, str) else (exc.body or b"").decode("utf-8", "replace")
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body
    return (message or str(exc.reason or ""))[:BODY_LIMIT]


def to_actuation_error(what: str, request: Request, exc: BaseException, *,
                       not_found_reason: str = "NotFound") -> KubeActuationError:
    """Map an exception from the client onto a KubeActuationError (call as ``raise ... from exc``)."""
    if isinstance(exc, ApiException):
        status = exc.status
        detail = _server_message(exc)
        if status == 404:
            return KubeActuationError(f"{what}: not found: {detail}", status=404, reason=not_found_reason)
        if status == 403:
            return KubeActuationError(f"{what}: missing permission: {request.describe()}: {detail}",
                                      status=403, reason="Forbidden")
        if status == 409:
            return KubeActuationError(f"{what}: conflict: {detail}", status=409, reason="Conflict")
        if status == 504 or status == 408:
            return KubeActuationError(f"{what}: API server timeout: {detail}", status=status, reason="ApiTimeout")
        return KubeActuationError(f"{what}: HTTP {status}: {detail}", status=status, reason="ApiError")
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or (
        isinstance(exc, urllib3.exceptions.MaxRetryError)
        and isinstance(exc.reason, urllib3.exceptions.TimeoutError)
    ):
        return KubeActuationError(f"{what}: timed out: {str(exc)[:BODY_LIMIT]}", status=None, reason="ApiTimeout")
    return KubeActuationError(f"{what}: API unreachable: {str(exc)[:BODY_LIMIT]}", status=None,
                              reason="ApiUnreachable")
