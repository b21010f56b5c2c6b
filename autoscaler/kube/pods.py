"""Where a variant's pods stand (ready, starting, unschedulable), for the planner's ReplicaCounts.

One LIST per variant, filtered by the label selector the target's scale subresource publishes (read in the
same cycle, so no extra GET): the API server returns only the variant's pods, so the cost does not grow
with other pods in the namespace. Pods are not watched: a pod cache would hold every pod of the watched
namespaces in memory (selectors differ per variant) and need ``watch`` on pods cluster-wide, to save one
small, server-filtered LIST per variant and cycle.

A pod that is terminating or has finished (Succeeded/Failed) is not counted: it is leaving. Among the rest:

    ready          condition Ready=True
    unschedulable  not bound to a node, condition PodScheduled=False with reason Unschedulable
    starting       everything else: bound but not ready (pulling the image, loading weights), or not yet
                   looked at by the scheduler (no verdict yet is not a verdict of "no GPU")
"""

from __future__ import annotations

from collections.abc import Iterable

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import ReplicaCounts
from autoscaler.kube.failures import Request, to_actuation_error

__all__ = ["count_replicas", "list_pods"]

_FINISHED = {"Succeeded", "Failed"}


def _condition(pod: client.V1Pod, type_: str) -> client.V1PodCondition | None:
    conditions = (pod.status.conditions if pod.status else None) or []
    return next((c for c in conditions if c.type == type_), None)


def count_replicas(pods: Iterable[client.V1Pod]) -> ReplicaCounts:
    """Ready, starting and unschedulable pods (see the module docstring); each pod in at most one count."""
    ready = starting = unschedulable = 0
    for pod in pods:
        if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
            continue
        if pod.status is not None and pod.status.phase in _FINISHED:
            continue
        is_ready = _condition(pod, "Ready")
        scheduled = _condition(pod, "PodScheduled")
        if is_ready is not None and is_ready.status == "True":
            ready += 1
        elif not (pod.spec and pod.spec.node_name) and scheduled is not None \
                and scheduled.status == "False" and scheduled.reason == "Unschedulable":
            unschedulable += 1
        else:
            starting += 1
    return ReplicaCounts(ready=ready, starting=starting, unschedulable=unschedulable)


def list_pods(core: client.CoreV1Api, *, namespace: str, selector: str, timeout_s: float,
              purpose: str) -> list[client.V1Pod]:
    """The pods ``selector`` picks in ``namespace`` (one server-filtered LIST). Raises
    :class:`autoscaler.kube.failures.KubeActuationError` naming ``purpose`` when they cannot be listed."""
    request = Request("list", "pods", "", namespace)
    try:
        listed = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=timeout_s)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise to_actuation_error(purpose, request, exc) from exc
    return list(listed.items or [])
