"""Kubernetes Events (events.k8s.io/v1) on a VariantAutoscaling: one per scale action and per refusal.

Recording an event never fails the caller: an event that cannot be written is logged and dropped, as
client-go's recorder does. Refusals are recorded by the caller on a condition *transition* only, so a target
that stays missing does not produce one event per cycle.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Literal

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.kube.api import API_VERSION, KIND, VariantAutoscaling
from autoscaler.kube.failures import Request, to_actuation_error
from autoscaler.logs import get_logger

__all__ = ["FAILED_RESCALE", "REPORTING_CONTROLLER", "SUCCESSFUL_RESCALE", "EventRecorder"]

REPORTING_CONTROLLER = "variant-autoscaler.io/controller"
SUCCESSFUL_RESCALE = "SuccessfulRescale"  # the HPA's reason names, which dashboards already know
FAILED_RESCALE = "FailedRescale"
_NOTE_LIMIT = 1024  # events.k8s.io/v1 refuses longer notes


class EventRecorder:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        instance: str,
        may_write: Callable[[], bool] = lambda: True,
        timeout_s: float = 10.0,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._events = client.EventsV1Api(api)
        self._instance = instance[:128]
        self._may_write = may_write
        self._timeout_s = timeout_s
        self._now = now

    def record(self, va: VariantAutoscaling, *, type_: Literal["Normal", "Warning"], reason: str, action: str,
               note: str) -> bool:
        """Create one event regarding ``va``; False (and a log line) when it could not be written."""
        log = get_logger("events", variant=f"{va.namespace}/{va.name}", reason=reason)
        if not self._may_write():
            log.debug("event_skipped_not_leader")
            return False
        regarding = {"apiVersion": API_VERSION, "kind": KIND, "namespace": va.namespace, "name": va.name}
        if va.uid:
            regarding["uid"] = va.uid
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # client-go names events "<object>.<unique hex>"; generateName would be refused for the trailing dot.
            "metadata": {"name": f"{va.name}.{uuid.uuid4().hex[:16]}", "namespace": va.namespace},
            "eventTime": self._now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._instance,
            "action": action,
            "reason": reason,
            "regarding": regarding,
            "note": note[:_NOTE_LIMIT],
            "type": type_,
        }
        request = Request("create", "events", "events.k8s.io", va.namespace)
        try:
            # A dict body is sent as it is; the typed EventsV1Event would need every field mapped.
            self._events.create_namespaced_event(va.namespace, body,  # type: ignore[arg-type]
                                                 _request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning("event_not_recorded", error=str(to_actuation_error("creating event", request, exc)))
            return False
        return True
