"""The executor of the fleet-wide node plan (:class:`NodePlanExecutor`): carries out, in order, the actions
:func:`autoscaler.core.nodes.plan_nodes` decided. How many machines a group needs is the core's
(:func:`autoscaler.core.nodes.nodes_for_pods`), for this plan and for the scaler's per-variant groups alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.nodes import DELETE_MACHINE_ANNOTATION, NodePlan, ScaleMachineSet
from autoscaler.core.types import ScaleTarget, VariantRef
from autoscaler.kube.failures import KubeActuationError, Request, to_actuation_error
from autoscaler.kube.scale import MERGE_PATCH, ScaleClient

__all__ = ["NodePlanExecutor"]


class NodePlanExecutor:
    """Carries out an :class:`autoscaler.core.nodes.NodePlan` (the policy's ordered node and pod changes).

    Each action first re-reads the scale it changes: if the object no longer has the replicas the plan
    started from, the plan is stale and execution stops there (the next cycle plans again from what is).
    Execution also stops at the first failure, so nodes are never removed after a pod scale-down that did
    not happen. Machines the plan names for deletion get ``machine.openshift.io/cluster-api-delete-machine``
    before their MachineSet is lowered, so the MachineSet removes those and not a busy one.
    """

    def __init__(self, api: client.ApiClient, *, may_write: Callable[[], bool] = lambda: True,
                 timeout_s: float = 10.0, machine_api_version: str = "machine.openshift.io/v1beta1") -> None:
        self._custom = client.CustomObjectsApi(api)
        self._scales = ScaleClient(api, timeout_s=timeout_s, may_write=may_write)
        self._may_write = may_write
        self._timeout_s = timeout_s
        self._machine_api = machine_api_version

    def execute(self, plan: NodePlan, *, targets: Mapping[VariantRef, ScaleTarget]) -> int:
        """Run the actions in order; returns how many were carried out. Raises KubeActuationError."""
        done = 0
        for action in plan.actions:
            if not self._may_write():
                raise KubeActuationError("node plan stopped: lease not held", status=None, reason="NotLeader")
            if isinstance(action, ScaleMachineSet):
                group, _, version = self._machine_api.rpartition("/")
                for machine in action.delete_machines:
                    self._mark_for_deletion(group, version, action.namespace, machine)
                self._set(api_version=self._machine_api, kind="MachineSet", name=action.machineset,
                          namespace=action.namespace, start=action.from_replicas, end=action.to_replicas)
            else:
                target = targets.get(action.variant)
                if target is None:
                    raise KubeActuationError(f"node plan: no scale target known for {action.variant}",
                                             status=None, reason="TargetNotFound")
                self._set(api_version=target.api_version, kind=target.kind, name=target.name,
                          namespace=action.variant.namespace, start=action.from_replicas, end=action.to_replicas)
            done += 1
        return done

    def _set(self, *, api_version: str, kind: str, name: str, namespace: str, start: int, end: int) -> None:
        state = self._scales.get(api_version=api_version, kind=kind, name=name, namespace=namespace)
        if state.replicas == end:
            return
        if state.replicas != start:
            raise KubeActuationError(f"node plan is stale: {kind} {namespace}/{name} has {state.replicas} "
                                     f"replicas, the plan expected {start}", status=409, reason="Conflict")
        self._scales.patch(api_version=api_version, kind=kind, name=name, namespace=namespace, replicas=end,
                           resource_version=state.resource_version)

    def _mark_for_deletion(self, group: str, version: str, namespace: str, machine: str) -> None:
        request = Request("patch", "machines", group, namespace, machine)
        body = {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: "true"}}}
        try:
            self._custom.patch_namespaced_custom_object(group, version, namespace, "machines", machine, body,
                                                        _content_type=MERGE_PATCH,
                                                        _request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"marking machine {namespace}/{machine} for deletion", request, exc) from exc
