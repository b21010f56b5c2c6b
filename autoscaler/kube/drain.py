"""Scale-down without killing work: tell the ReplicaSet which pods to remove.

Before a Deployment's replicas are lowered by ``k``, the ``k`` pods with the fewest running requests get the
``controller.kubernetes.io/pod-deletion-cost`` annotation set low; the ReplicaSet controller removes pods with
the lowest cost first (Kubernetes docs, "ReplicaSet: Pod deletion cost", beta since v1.22). Pods marked by
an earlier scale-down that are no longer chosen get the annotation removed, so an old choice never outlives
the load that justified it. Running requests come from a :class:`PodLoad` (Prometheus in the controller);
a pod without a number is treated as busy: it is chosen last, never first.

Only ReplicaSet-managed pods honour the annotation (StatefulSets and LeaderWorkerSets remove the highest
ordinal), so callers use it for Deployments. manifests/README.md documents the vLLM preStop/drain settings
that pair with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import VariantSpec
from autoscaler.errors import AutoscalerError
from autoscaler.kube.api import GROUP
from autoscaler.kube.failures import Request, to_actuation_error
from autoscaler.kube.pods import list_pods
from autoscaler.kube.scale import MERGE_PATCH
from autoscaler.logs import get_logger

__all__ = [
    "DELETION_COST",
    "DRAIN_MARK",
    "REMOVE_FIRST_COST",
    "PodLoad",
    "PodMarker",
    "QueryPodLoad",
    "choose_pods_to_remove",
]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAIN_MARK = f"{GROUP}/remove-first"  # says the cost was ours, so we may take it back
REMOVE_FIRST_COST = -1000  # below the default cost (0) of every unannotated pod


class PodLoad(Protocol):
    def running_requests(self, spec: VariantSpec) -> Mapping[str, float] | None:
        """Running requests per pod name for the variant's pods; None when unknown (then nothing is marked)."""
        ...


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class QueryPodLoad:
    """Running requests per pod from one instant PromQL query (``query`` returns the result vector, as
    :meth:`autoscaler.signals.prometheus.PrometheusSignalSource.query` does); None when the query fails."""

    def __init__(self, query: Callable[[str], list[Any]], *, namespace_label: str = "namespace",
                 model_label: str = "model_name", pod_label: str = "pod",
                 metric: str = "vllm:num_requests_running") -> None:
        self._query = query
        self._namespace = namespace_label
        self._model = model_label
        self._pod = pod_label
        self._metric = metric

    def promql(self, spec: VariantSpec) -> str:
        match = f"{self._namespace}={_quote(spec.ref.namespace)},{self._model}={_quote(spec.model)}"
        return f"sum by ({self._pod}) ({self._metric}{{{match}}})"

    def running_requests(self, spec: VariantSpec) -> Mapping[str, float] | None:
        try:
            result = self._query(self.promql(spec))
        except AutoscalerError as exc:
            get_logger("drain", variant=str(spec.ref)).info("pod_load_unavailable", error=str(exc)[:200])
            return None
        loads: dict[str, float] = {}
        for series in result:
            pod = (series.get("metric") or {}).get(self._pod)
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if pod and math.isfinite(value):
                loads[pod] = value
        return loads


def choose_pods_to_remove(*, pods: Sequence[str], loads: Mapping[str, float], count: int) -> tuple[str, ...]:
    """The ``count`` least-loaded pods; unknown load sorts last, ties by name so the choice is stable."""
    if count <= 0:
        return ()

    def key(pod: str) -> tuple[float, str]:
        load = loads.get(pod)
        return (load if load is not None and math.isfinite(load) else math.inf, pod)

    return tuple(sorted(pods, key=key)[:count])


class PodMarker:
    """Lists the target's pods by its scale selector and sets or clears the deletion-cost annotation."""

    def __init__(self, api: client.ApiClient, *, may_write: Callable[[], bool] = lambda: True,
                 timeout_s: float = 10.0) -> None:
        self._core = client.CoreV1Api(api)
        self._may_write = may_write
        self._timeout_s = timeout_s

    def mark(self, *, namespace: str, selector: str, loads: Mapping[str, float], remove: int,
             pods: Sequence[client.V1Pod] | None = None) -> tuple[str, ...]:
        """Mark the ``remove`` least-loaded running pods; returns the names marked. Raises ActuationError.
        ``pods``: the selector's pods as listed earlier this cycle (saves a LIST); None lists them."""
        if pods is None:
            pods = list_pods(self._core, namespace=namespace, selector=selector, timeout_s=self._timeout_s,
                             purpose="listing pods to drain")
        live = {p.metadata.name: p.metadata.annotations or {} for p in pods
                if p.metadata is not None and p.metadata.name and p.metadata.deletion_timestamp is None}
        chosen = choose_pods_to_remove(pods=list(live), loads=loads, count=remove)
        for name, existing in live.items():
            if name in chosen and existing.get(DELETION_COST) != str(REMOVE_FIRST_COST):
                self._annotate(namespace, name, {DELETION_COST: str(REMOVE_FIRST_COST), DRAIN_MARK: "true"})
            elif name not in chosen and existing.get(DRAIN_MARK) == "true":
                self._annotate(namespace, name, {DELETION_COST: None, DRAIN_MARK: None})
        get_logger("drain", namespace=namespace).info("pods_marked_for_removal", pods=list(chosen),
                                                      loads={p: loads.get(p) for p in chosen})
        return chosen

    def _annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        if not self._may_write():
            return
        request = Request("patch", "pods", "", namespace, name)
        try:
            self._core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}},
                                            _content_type=MERGE_PATCH, _request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"annotating pod {name}", request, exc) from exc
