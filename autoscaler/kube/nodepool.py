"""The loop's NodeProvisioner over the Kubernetes API: GPU MachineSets, their nodes, where our pods run.

Which MachineSets (``machine.openshift.io/v1beta1``) are managed:

- the one a VariantAutoscaling names in ``spec.machineSetRef`` (accelerator: the variant's; GPUs per node:
  ``gpusPerMachine``);
- every MachineSet in ``machine_namespace`` labelled with ``accelerator_label`` (accelerator: the label's
  value, spelled as the VariantAutoscalings spell ``spec.accelerator``; GPUs per node: the MachineSet's
  ``machine.openshift.io/GPU`` annotation, which OpenShift's machine API sets for scale from zero, else the
  allocatable ``nvidia.com/gpu`` of its nodes).

Bounds: ``variant-autoscaler.io/min-machines`` and ``max-machines`` on the MachineSet, else the cluster
autoscaler's ``machine.openshift.io/cluster-api-autoscaler-node-group-min-size``/``max-size`` (what a
MachineAutoscaler writes); with neither, min 0 and max the current replicas: a MachineSet is never grown
past a size nobody declared (the plan reports NodesLimited instead).

Nodes: each Machine of a managed MachineSet (matched by its ``spec.selector.matchLabels``) that is not being
deleted and has a node (``status.nodeRef``, else the node's ``machine.openshift.io/machine`` annotation);
readiness from the Nodes listed with ``node_selector`` (a node not listed counts as not ready). Our serving
pods per node come from each variant's pods (the label selector its scale subresource publishes), so pods of
other workloads on these nodes are not seen: the MachineSets managed here should serve our variants only.

A variant whose ``machineSetRef`` is a cluster-api MachineDeployment is left out of the node plan (the
scaler sizes its group per variant as before); its pods still count as busy on the nodes they occupy.
Cost per cycle: one list of VariantAutoscalings and one of Machines per namespace, one list of labelled
MachineSets, one get per referenced MachineSet, one list of Nodes, a scale get and a pod list per variant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.controller.ports import NodeExecution, NodeObservation, VariantPlacement
from autoscaler.core.nodes import MachineSetState, NodePlan, NodeState
from autoscaler.core.types import ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import AutoscalerError, SpecError
from autoscaler.kube.api import GROUP, PLURAL, VERSION, VariantAutoscaling, parse_variant_autoscaling
from autoscaler.kube.failures import Request, to_actuation_error
from autoscaler.kube.machines import NodePlanExecutor
from autoscaler.kube.scale import ScaleClient
from autoscaler.logs import get_logger

__all__ = [
    "ACCELERATOR_LABEL",
    "GPU_ANNOTATION",
    "MAX_MACHINES_ANNOTATIONS",
    "MIN_MACHINES_ANNOTATIONS",
    "KubeNodePool",
    "machineset_state",
]

MACHINE_GROUP, MACHINE_VERSION = "machine.openshift.io", "v1beta1"
ACCELERATOR_LABEL = f"{GROUP}/accelerator"
GPU_ANNOTATION = "machine.openshift.io/GPU"
NODE_MACHINE_ANNOTATION = "machine.openshift.io/machine"  # "<namespace>/<machine>", set by OpenShift on nodes
# First found wins: ours, then the cluster autoscaler's (OpenShift MachineAutoscaler).
_AUTOSCALER_BOUND = "machine.openshift.io/cluster-api-autoscaler-node-group-{}-size"
MIN_MACHINES_ANNOTATIONS = (f"{GROUP}/min-machines", _AUTOSCALER_BOUND.format("min"))
MAX_MACHINES_ANNOTATIONS = (f"{GROUP}/max-machines", _AUTOSCALER_BOUND.format("max"))
GPU_RESOURCE = "nvidia.com/gpu"

_Pool = tuple[dict[str, Any], str, int | None]  # a MachineSet object, its accelerator, GPUs per node if known


class KubeNodePool:
    """Reads the GPU pools for :func:`autoscaler.core.nodes.plan_nodes` and executes its plans through
    :class:`autoscaler.kube.machines.NodePlanExecutor` (see the module docstring)."""

    def __init__(self, api: client.ApiClient, *, accelerator_label: str | None = ACCELERATOR_LABEL,
                 machine_namespace: str | None = "openshift-machine-api", node_selector: str | None = None,
                 may_write: Callable[[], bool] = lambda: True, timeout_s: float = 10.0) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._scales = ScaleClient(api, timeout_s=timeout_s, may_write=may_write)
        self._executor = NodePlanExecutor(api, may_write=may_write, timeout_s=timeout_s,
                                          machine_api_version=f"{MACHINE_GROUP}/{MACHINE_VERSION}")
        self._label = accelerator_label or None
        self._machine_namespace = machine_namespace or None
        self._node_selector = node_selector if node_selector is not None else (self._label or "")
        self._timeout_s = timeout_s

    # -- the NodeProvisioner port ----------------------------------------------------------------------------

    def observe(self, variants: Sequence[VariantSpec]) -> NodeObservation:
        log = get_logger("nodepool")
        vas = self._variant_autoscalings(variants)
        pools: dict[tuple[str, str], _Pool] = {}  # (namespace, name) -> object, accelerator, GPUs per node
        planned: set[VariantRef] = set()  # variants the node plan may scale
        for spec in variants:
            va = vas.get(spec.ref)
            if va is None:
                log.warning("variant_unreadable", variant=str(spec.ref))
                continue
            ref = va.spec.machine_set_ref
            if ref is None:
                planned.add(spec.ref)
                continue
            if ref.kind != "MachineSet" or not ref.api_version.startswith(f"{MACHINE_GROUP}/"):
                continue  # a cluster-api group: the scaler's per-variant sizing keeps it
            key = (ref.namespace, ref.name)
            if key not in pools:
                obj = self._get_machineset(ref.namespace, ref.name)
                if obj is None:
                    log.warning("machineset_not_found", variant=str(spec.ref),
                                machineset=f"{key[0]}/{key[1]}")
                    continue
                pools[key] = (obj, spec.accelerator, ref.gpus_per_machine)
            planned.add(spec.ref)
        for obj in self._labelled_machinesets():
            meta = obj["metadata"]
            pools.setdefault((meta["namespace"], meta["name"]), (obj, meta["labels"][self._label], None))

        nodes = self._nodes()
        machines = self._machines_by_pool(pools, nodes)
        pods_on_node: Counter[str] = Counter()
        placements: dict[VariantRef, VariantPlacement] = {}
        for spec in variants:  # every variant's pods count on their nodes, planned or not
            on_nodes, unschedulable = self._pods(spec)
            pods_on_node.update(on_nodes)
            va = vas.get(spec.ref)
            if va is not None and spec.ref in planned:
                placements[spec.ref] = VariantPlacement(unschedulable)

        states: list[MachineSetState] = []
        node_states: list[NodeState] = []
        for key, (obj, accelerator, gpus) in sorted(pools.items()):
            members = machines.get(key, [])
            gpus = gpus or _gpus_from(obj, [nodes[n] for _, n in members if n in nodes])
            states.append(machineset_state(obj, accelerator=accelerator, gpus_per_node=gpus))
            node_states += [NodeState(node, key[1], machine=machine, ready=_ready(nodes.get(node)),
                                      serving_pods=pods_on_node[node]) for machine, node in members]
        return NodeObservation(tuple(states), tuple(node_states), placements)

    def execute(self, plan: NodePlan, *, targets: Mapping[VariantRef, ScaleTarget]) -> NodeExecution:
        """One action at a time, so that the count of those done is exact when one fails."""
        for done, action in enumerate(plan.actions):
            try:
                self._executor.execute(NodePlan((action,)), targets=targets)
            except AutoscalerError as exc:
                return NodeExecution(done, str(exc))
        return NodeExecution(len(plan.actions))

    # -- reads -----------------------------------------------------------------------------------------------

    def _call(self, what: str, request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self._timeout_s, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(what, request, exc) from exc

    def _variant_autoscalings(self, variants: Sequence[VariantSpec]) -> dict[VariantRef, VariantAutoscaling]:
        wanted = {s.ref for s in variants}
        found: dict[VariantRef, VariantAutoscaling] = {}
        for namespace in sorted({r.namespace for r in wanted}):
            listed = self._call("listing VariantAutoscalings", Request("list", PLURAL, GROUP, namespace),
                                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
            for obj in cast(dict[str, Any], listed).get("items", []):
                try:
                    va = parse_variant_autoscaling(obj)
                except SpecError:
                    continue  # the variant source reports it
                if va.ref in wanted:
                    found[va.ref] = va
        return found

    def _get_machineset(self, namespace: str, name: str) -> dict[str, Any] | None:
        what, request = f"reading MachineSet {namespace}/{name}", Request("get", "machinesets", MACHINE_GROUP,
                                                                          namespace, name)
        try:
            obj = self._custom.get_namespaced_custom_object(MACHINE_GROUP, MACHINE_VERSION, namespace,
                                                            "machinesets", name, _request_timeout=self._timeout_s)
            return cast(dict[str, Any], obj)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise to_actuation_error(what, request, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise to_actuation_error(what, request, exc) from exc

    def _labelled_machinesets(self) -> list[dict[str, Any]]:
        if self._label is None or self._machine_namespace is None:
            return []
        ns = self._machine_namespace
        listed = self._call("listing MachineSets", Request("list", "machinesets", MACHINE_GROUP, ns),
                            self._custom.list_namespaced_custom_object, MACHINE_GROUP, MACHINE_VERSION, ns,
                            "machinesets", label_selector=self._label)
        return list(cast(dict[str, Any], listed).get("items", []))

    def _nodes(self) -> dict[str, client.V1Node]:
        listed = self._call("listing Nodes", Request("list", "nodes", "", None), self._core.list_node,
                            label_selector=self._node_selector or None)
        return {n.metadata.name: n for n in listed.items}

    def _machines_by_pool(self, pools: Mapping[tuple[str, str], _Pool],
                          nodes: Mapping[str, client.V1Node]) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """(machine, node) pairs per MachineSet, for live machines that have a node."""
        node_of_machine = {_annotations(n)[NODE_MACHINE_ANNOTATION]: name for name, n in nodes.items()
                           if NODE_MACHINE_ANNOTATION in _annotations(n)}
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for namespace in sorted({ns for ns, _ in pools}):
            listed = self._call("listing Machines", Request("list", "machines", MACHINE_GROUP, namespace),
                                self._custom.list_namespaced_custom_object, MACHINE_GROUP, MACHINE_VERSION,
                                namespace, "machines")
            for machine in cast(dict[str, Any], listed).get("items", []):
                meta = machine.get("metadata") or {}
                if meta.get("deletionTimestamp"):
                    continue  # on its way out: already subtracted from its MachineSet
                node = (((machine.get("status") or {}).get("nodeRef") or {}).get("name")
                        or node_of_machine.get(f"{namespace}/{meta.get('name')}"))
                if not node:
                    continue  # still provisioning: counted in the MachineSet's replicas, not removable
                for (ns, name), (obj, _, _) in pools.items():
                    if ns == namespace and _selects(obj, meta.get("labels") or {}):
                        out.setdefault((ns, name), []).append((str(meta["name"]), str(node)))
                        break
        return out

    def _pods(self, spec: VariantSpec) -> tuple[Counter[str], int]:
        """Our pods per node, and how many are Pending unschedulable. Pods that cannot be found make the whole
        observation fail: a node that looks empty only because its pods were not seen must not be removed."""
        target = spec.target
        selector = self._scales.get(api_version=target.api_version, kind=target.kind, name=target.name,
                                    namespace=spec.ref.namespace).selector
        if not selector:
            raise SpecError(f"{spec.ref}: {target.kind} {target.name} publishes no pod selector in its scale "
                            "subresource, so the nodes its pods run on are unknown")
        listed = self._call(f"listing pods of {spec.ref}", Request("list", "pods", "", spec.ref.namespace),
                            self._core.list_namespaced_pod, spec.ref.namespace, label_selector=selector)
        on_nodes: Counter[str] = Counter()
        unschedulable = 0
        for pod in listed.items:
            phase = pod.status.phase if pod.status else None
            if phase in ("Succeeded", "Failed"):
                continue
            if pod.spec and pod.spec.node_name:
                on_nodes[pod.spec.node_name] += 1
            elif any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                     for c in (pod.status.conditions or [] if pod.status else [])):
                unschedulable += 1
        return on_nodes, unschedulable


def machineset_state(obj: Mapping[str, Any], *, accelerator: str, gpus_per_node: int) -> MachineSetState:
    """A MachineSet object as the planner sees it; SpecError names the MachineSet and the bad annotation."""
    meta = obj.get("metadata") or {}
    where = f"MachineSet {meta.get('namespace')}/{meta.get('name')}"
    annotations = meta.get("annotations") or {}
    replicas = int((obj.get("spec") or {}).get("replicas") or 0)
    low = _annotation_int(annotations, MIN_MACHINES_ANNOTATIONS, where=where)
    high = _annotation_int(annotations, MAX_MACHINES_ANNOTATIONS, where=where)
    low = 0 if low is None else low
    high = max(replicas, low) if high is None else high  # undeclared: never grown past its size
    try:
        return MachineSetState(str(meta.get("name")), str(meta.get("namespace")), accelerator, gpus_per_node,
                               replicas, low, high)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def _annotation_int(annotations: Mapping[str, str], keys: Iterable[str], *, where: str) -> int | None:
    for key in keys:
        if key in annotations:
            try:
                value = int(str(annotations[key]).strip())
            except ValueError:
                value = -1
            if value < 0:
                raise SpecError(f"{where}: annotation {key}: expected a whole number >= 0, "
                                f"got {annotations[key]!r}")
            return value
    return None


def _gpus_from(obj: Mapping[str, Any], nodes: Sequence[client.V1Node]) -> int:
    meta = obj.get("metadata") or {}
    where = f"MachineSet {meta.get('namespace')}/{meta.get('name')}"
    declared = _annotation_int(meta.get("annotations") or {}, (GPU_ANNOTATION,), where=where)
    if declared:
        return declared
    seen = [_allocatable_gpus(n) for n in nodes]
    if seen and max(seen) > 0:
        return max(seen)
    raise SpecError(f"{where}: GPUs per node unknown: no {GPU_ANNOTATION} annotation and no node with "
                    f"allocatable {GPU_RESOURCE}")


def _allocatable_gpus(node: client.V1Node) -> int:
    allocatable = (node.status.allocatable if node.status else None) or {}
    try:
        return int(allocatable.get(GPU_RESOURCE, 0))
    except ValueError:
        return 0


def _annotations(node: client.V1Node) -> dict[str, str]:
    return dict((node.metadata.annotations if node.metadata else None) or {})


def _ready(node: client.V1Node | None) -> bool:
    if node is None or node.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _selects(machineset: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = (((machineset.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())
