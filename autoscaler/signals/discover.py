"""Variants found from the metrics alone, for ``recommend --prometheus-url`` without a cluster.

Every (namespace, model, role, accelerator) label set on vLLM's ``num_requests_running`` is one variant (the
labels the shipped PodMonitor adds from llm-d's pod labels); the replicas it has are the pods that report.
No VariantAutoscaling, Deployment or scale subresource is read, so bounds are the defaults, the names are
made up from the labels, and nothing is written: what ``recommend`` prints is what the decision would be for
what Prometheus sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from autoscaler.core.types import Decision, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import ActuationError, SpecError
from autoscaler.signals.parse import parse_vector
from autoscaler.signals.queries import METRICS, LabelMap, MetricNames, SeriesKey, by

__all__ = ["MetricsOnlyScaler", "PrometheusVariantSource", "discovery_query", "pods_query"]

_NAME = re.compile(r"[^a-z0-9-]+")
MAX_REPLICAS = 64  # no VariantAutoscaling says otherwise; a recommendation, never applied


def _running(labels: LabelMap) -> str:
    return METRICS["running"].expr(MetricNames.AUTO, lambda n: n)


def discovery_query(labels: LabelMap) -> str:
    return f"group by ({labels.group}) ({_running(labels)})"


def pods_query(labels: LabelMap) -> str:
    return f"count by ({labels.group}) (count by ({by(labels.variant_labels, labels.pod_labels)}) " \
           f"({_running(labels)}))"


def _name(key: SeriesKey) -> str:
    _, model, role, accelerator = key
    text = _NAME.sub("-", f"{model.rsplit('/', 1)[-1]}-{role}-{accelerator}".lower()).strip("-")
    return text[:63].rstrip("-") or "variant"


class PrometheusVariantSource:
    """The VariantSource of a cluster-less ``recommend``. ``query``: PromQL -> result list."""

    def __init__(self, *, query: Callable[[str], list[Any]], labels: LabelMap, namespace: str | None = None) -> None:
        self._query = query
        self._labels = labels
        self._namespace = namespace

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        found = parse_vector(self._query(discovery_query(self._labels)), key_of=self._labels.key_of)
        specs: list[VariantSpec] = []
        errors: list[SpecError] = []
        for key in sorted(found):
            namespace, model, role, accelerator = key
            if self._namespace and namespace != self._namespace:
                continue
            if not model or role not in {r.value for r in Role}:
                errors.append(SpecError(f"series {dict(zip(self._labels.variant_labels, key))}: no model or an "
                                        f"unknown role; label the pods (manifests/monitoring)"))
                continue
            name = _name(key)
            specs.append(VariantSpec(ref=VariantRef(namespace or "default", name), model=model, role=Role(role),
                                     accelerator=accelerator or "unknown",
                                     target=ScaleTarget("", "(not read)", name), min_replicas=1,
                                     max_replicas=MAX_REPLICAS))
        return specs, errors


class MetricsOnlyScaler:
    """A Scaler that reads replicas as the pods reporting and writes nothing (a cluster-less dry run). The pod
    counts are read once, at the first variant: it serves the one cycle of ``recommend``."""

    def __init__(self, *, query: Callable[[str], list[Any]], labels: LabelMap) -> None:
        self._query = query
        self._labels = labels
        self._pods: Mapping[SeriesKey, float] | None = None

    def current_replicas(self, spec: VariantSpec) -> int:
        if self._pods is None:
            self._pods = parse_vector(self._query(pods_query(self._labels)), key_of=self._labels.key_of)
        key = (spec.ref.namespace if spec.ref.namespace != "default" else "", spec.model, spec.role.value,
               spec.accelerator)
        return int(self._pods.get(key, self._pods.get((spec.ref.namespace, *key[1:]), 0)))

    def scale(self, spec: VariantSpec, replicas: int) -> None:
        raise ActuationError(f"{spec.ref}: no cluster: nothing is scaled")

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None,
                     insight: Any = None) -> None:
        return None
