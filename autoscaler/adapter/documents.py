"""The JSON documents of ``external.metrics.k8s.io/v1beta1``, shaped as the Kubernetes Go types serialise them.

- discovery: ``APIGroupList`` (``/apis``), ``APIGroup`` (``/apis/<group>``), ``APIResourceList``
  (``/apis/<group>/<version>``), all in ``apiVersion: v1`` as apimachinery's meta/v1 types;
- ``ExternalMetricValueList`` (k8s.io/metrics ``external_metrics/v1beta1``): items of ``metricName``,
  ``metricLabels``, ``timestamp`` (RFC 3339, seconds) and ``value`` (a quantity string);
- ``Status`` for every failure, the shape clients turn into a typed error (``StatusError``).

Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from autoscaler.adapter.catalog import ExternalMetric
from autoscaler.adapter.quantity import format_quantity
from autoscaler.adapter.store import ExternalValue

__all__ = [
    "GROUP",
    "GROUP_VERSION",
    "VERSION",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "rfc3339",
    "status",
    "value_list",
]

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
_VERSION_ENTRY = {"groupVersion": GROUP_VERSION, "version": VERSION}


def rfc3339(seconds: float) -> str:
    """metav1.Time's wire form: UTC, whole seconds, ``Z``."""
    return dt.datetime.fromtimestamp(int(seconds), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_group() -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [_VERSION_ENTRY],
            "preferredVersion": _VERSION_ENTRY}


def api_group_list() -> dict[str, Any]:
    group = api_group()
    del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def api_resource_list(metrics: Iterable[ExternalMetric]) -> dict[str, Any]:
    """One namespaced resource per metric, with the only verb served (custom-metrics-apiserver lists
    external metrics the same way)."""
    resources = [{"name": m.name, "singularName": "", "namespaced": True, "kind": "ExternalMetricValueList",
                  "verbs": ["get"]} for m in metrics]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources}


def value_list(items: Iterable[ExternalValue]) -> dict[str, Any]:
    return {
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [
            {"metricName": item.metric, "metricLabels": dict(item.labels), "timestamp": rfc3339(item.timestamp),
             "value": format_quantity(item.value)}
            for item in items
        ],
    }


def status(*, code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
