"""GPU nodes for the replicas decided: how many nodes per accelerator type, and an ordered plan for the
OpenShift MachineSets (machine.openshift.io/v1beta1) that provide them. Pure: the Kubernetes adapter executes
the plan, in order.

Order matters, and the plan encodes it:

1. add nodes (MachineSet scale-up) before the pods that need them, so the pods wait for capacity that is
   already on its way rather than trigger it;
2. scale pods down before pods up, so GPUs freed on one variant can go to another on the same nodes;
3. remove nodes last, and only nodes that run no serving pod of ours *now*: a node whose pods are being
   scaled down this cycle is removed in a later cycle, once they are gone. Nothing is removed on an
   accelerator whose pods scale up this cycle (a new pod could be bound to the node being deleted).

Nodes needed: pods of one replica must fit on one node (tensor parallelism stays within a node) unless a
replica needs more GPUs than a node has, in which case it takes whole nodes (multi-node, e.g. LeaderWorkerSet).
Pods are packed first-fit decreasing; when GPU counts divide the node size (1, 2, 4, 8 on 8-GPU nodes) that is
optimal. Pods Pending for lack of GPUs while the packing says the nodes suffice (fragmentation) get nodes of
their own on top of the nodes already busy.

Machines to delete are named: the adapter marks them with ``machine.openshift.io/cluster-api-delete-machine``
(honoured whatever the MachineSet's ``deletePolicy``, per the OpenShift machine management docs) before
lowering ``replicas``, so the MachineSet removes those and not a busy one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.core.accelerators import canonical_accelerator
from autoscaler.core.types import Condition, Reason, VariantRef

__all__ = [
    "DELETE_MACHINE_ANNOTATION",
    "MachineSetState",
    "NodePlan",
    "NodeState",
    "PodDemand",
    "ScaleMachineSet",
    "ScaleVariant",
    "nodes_for_pods",
    "plan_nodes",
]

DELETE_MACHINE_ANNOTATION = "machine.openshift.io/cluster-api-delete-machine"


@dataclass(frozen=True, slots=True)
class MachineSetState:
    name: str
    namespace: str
    accelerator: str
    gpus_per_node: int
    replicas: int  # spec.replicas now (machines requested, booting ones included)
    min_replicas: int = 0
    max_replicas: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "accelerator", canonical_accelerator(self.accelerator))
        if self.gpus_per_node < 1:
            raise ValueError(f"MachineSet {self.name}: gpus_per_node must be >= 1, got {self.gpus_per_node}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"MachineSet {self.name}: need 0 <= min_replicas <= max_replicas, got "
                             f"{self.min_replicas} and {self.max_replicas}")
        if self.replicas < 0:
            raise ValueError(f"MachineSet {self.name}: replicas must be >= 0, got {self.replicas}")


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    machineset: str
    machine: str = ""  # the Machine behind the node; "" = unknown (then it cannot be picked for deletion)
    ready: bool = True
    serving_pods: int = 0  # serving pods of ours bound to the node, terminating ones included


@dataclass(frozen=True, slots=True)
class PodDemand:
    """The decided replicas of one variant, as the node planner needs them."""

    variant: VariantRef
    accelerator: str
    gpus_per_replica: int
    current: int
    desired: int
    unschedulable: int = 0  # pods Pending now for lack of GPUs


@dataclass(frozen=True, slots=True)
class ScaleMachineSet:
    machineset: str
    namespace: str
    from_replicas: int
    to_replicas: int
    reason: Reason
    message: str
    delete_machines: tuple[str, ...] = ()  # to mark with DELETE_MACHINE_ANNOTATION first (scale-down only)


@dataclass(frozen=True, slots=True)
class ScaleVariant:
    variant: VariantRef
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True, slots=True)
class NodePlan:
    actions: tuple[ScaleMachineSet | ScaleVariant, ...]  # execute in this order
    nodes_needed: Mapping[str, int] = field(default_factory=dict)  # per accelerator
    conditions: tuple[Condition, ...] = ()


def nodes_for_pods(*, pods: Sequence[tuple[int, int]], gpus_per_node: int) -> int:
    """Nodes to hold ``pods`` given as (GPUs per pod, count) pairs, first-fit decreasing."""
    whole = 0
    sizes: list[int] = []
    for gpus, count in pods:
        if count <= 0 or gpus <= 0:
            continue
        if gpus > gpus_per_node:
            whole += count * math.ceil(gpus / gpus_per_node)  # a multi-node replica takes whole nodes
        else:
            sizes += [gpus] * count
    free: list[int] = []  # GPUs left per open node
    for size in sorted(sizes, reverse=True):
        for i, left in enumerate(free):
            if left >= size:
                free[i] = left - size
                break
        else:
            free.append(gpus_per_node - size)
    return whole + len(free)


def plan_nodes(
    *, pods: Sequence[PodDemand], machinesets: Sequence[MachineSetState], nodes: Sequence[NodeState],
) -> NodePlan:
    """The ordered plan that gives the decided pods their nodes. Accelerators without a MachineSet are left to
    whatever provides their nodes; their pod changes are still in the plan."""
    by_acc: dict[str, list[MachineSetState]] = {}
    for ms in sorted(machinesets, key=lambda m: m.name):
        by_acc.setdefault(ms.accelerator, []).append(ms)
    adds: list[ScaleMachineSet] = []
    removes: list[ScaleMachineSet] = []
    needed_by_acc: dict[str, int] = {}
    conditions: list[Condition] = []
    for acc, pools in by_acc.items():
        sizes = {ms.gpus_per_node for ms in pools}
        if len(sizes) > 1:
            raise ValueError(f"MachineSets for {acc} differ in GPUs per node ({sorted(sizes)}); "
                             "give each node size its own accelerator name")
        gpn = sizes.pop()
        mine = [p for p in pods if p.accelerator == acc]
        pool_names = {ms.name for ms in pools}
        pool_nodes = [n for n in nodes if n.machineset in pool_names]
        needed = nodes_for_pods(pods=[(p.gpus_per_replica, p.desired) for p in mine], gpus_per_node=gpn)
        pending = nodes_for_pods(pods=[(p.gpus_per_replica, min(p.unschedulable, p.desired)) for p in mine],
                                 gpus_per_node=gpn)
        if pending:  # fragmentation: pods that do not fit on the busy nodes get nodes of their own
            needed = max(needed, sum(1 for n in pool_nodes if n.serving_pods > 0) + pending)
        needed_by_acc[acc] = needed
        current = sum(ms.replicas for ms in pools)
        low, high = sum(ms.min_replicas for ms in pools), sum(ms.max_replicas for ms in pools)
        target = min(max(needed, low), high)
        if needed > high:
            conditions.append(Condition(Reason.NODES_LIMITED, acc,
                                        f"{needed} {acc} node(s) needed, MachineSets allow {high}: "
                                        f"{needed - high} node(s) of pods will stay Pending"))
        if target > current:
            adds += _add_nodes(pools, target - current, why=f"{needed} node(s) needed for the decided pods")
        elif target < current:
            if any(p.desired > p.current for p in mine):
                conditions.append(Condition(Reason.NODE_BUSY, acc,
                                            f"{current - target} spare {acc} node(s) kept: pods scale up this cycle"))
                continue
            planned, left = _remove_nodes(pools, pool_nodes, current - target)
            removes += planned
            if left:
                conditions.append(Condition(Reason.NODE_BUSY, acc,
                                            f"{left} spare {acc} node(s) still run serving pods (or are not "
                                            "visible yet); removed once empty"))
    downs = [ScaleVariant(p.variant, p.current, p.desired) for p in sorted(pods, key=lambda p: p.variant)
             if p.desired < p.current]
    ups = [ScaleVariant(p.variant, p.current, p.desired) for p in sorted(pods, key=lambda p: p.variant)
           if p.desired > p.current]
    return NodePlan((*adds, *downs, *ups, *removes), needed_by_acc, tuple(conditions))


def _add_nodes(pools: list[MachineSetState], count: int, *, why: str) -> list[ScaleMachineSet]:
    """Spread ``count`` new nodes over the pools with room, the emptiest first (pools are often zones)."""
    replicas = {ms.name: ms.replicas for ms in pools}
    for _ in range(count):
        room = [ms for ms in pools if replicas[ms.name] < ms.max_replicas]
        if not room:
            break
        pick = min(room, key=lambda ms: (replicas[ms.name], ms.name))
        replicas[pick.name] += 1
    return [ScaleMachineSet(ms.name, ms.namespace, ms.replicas, replicas[ms.name], Reason.NODES_ADDED,
                            f"+{replicas[ms.name] - ms.replicas} {ms.accelerator} node(s): {why}")
            for ms in pools if replicas[ms.name] > ms.replicas]


def _remove_nodes(pools: list[MachineSetState], pool_nodes: list[NodeState],
                  count: int) -> tuple[list[ScaleMachineSet], int]:
    """Remove up to ``count`` nodes that run none of our serving pods; returns the actions and what is left."""
    picked: dict[str, list[str]] = {}
    left = count
    empty = sorted((n for n in pool_nodes if n.serving_pods == 0 and n.machine),
                   key=lambda n: (n.ready, n.name))  # not-ready (broken or late) nodes go first
    room = {ms.name: ms.replicas - ms.min_replicas for ms in pools}
    for node in empty:
        if left == 0:
            break
        if room.get(node.machineset, 0) > 0:
            picked.setdefault(node.machineset, []).append(node.machine)
            room[node.machineset] -= 1
            left -= 1
    actions = [ScaleMachineSet(ms.name, ms.namespace, ms.replicas, ms.replicas - len(picked[ms.name]),
                               Reason.NODES_REMOVED,
                               f"-{len(picked[ms.name])} {ms.accelerator} node(s) without serving pods",
                               delete_machines=tuple(picked[ms.name]))
               for ms in pools if ms.name in picked]
    return actions, left
