import pytest

from autoscaler.core.nodes import (
    MachineSetState,
    NodeState,
    PodDemand,
    ScaleMachineSet,
    ScaleVariant,
    nodes_for_pods,
    plan_nodes,
)
from autoscaler.core.types import Reason, VariantRef


@pytest.mark.parametrize(
    ("pods", "gpus_per_node", "nodes"),
    [
        pytest.param([], 8, 0, id="no-pods-no-nodes"),
        pytest.param([(1, 8)], 8, 1, id="eight-single-gpu-pods-fill-one-node"),
        pytest.param([(1, 9)], 8, 2, id="a-ninth-pod-needs-a-second-node"),
        pytest.param([(4, 3)], 8, 2, id="tp4-pods-two-per-node"),
        pytest.param([(4, 1), (2, 1), (1, 2)], 8, 1, id="mixed-sizes-pack-into-one"),
        pytest.param([(8, 2), (1, 1)], 8, 3, id="full-node-pods-leave-no-room"),
        pytest.param([(16, 2)], 8, 4, id="multi-node-replicas-take-whole-nodes"),
        pytest.param([(3, 3)], 8, 2, id="sizes-that-do-not-divide-waste-space"),
        pytest.param([(2, 0), (0, 5)], 8, 0, id="zero-counts-and-cpu-pods-need-nothing"),
    ],
)
def test_packs_pods_onto_nodes(pods, gpus_per_node, nodes):
    assert nodes_for_pods(pods=pods, gpus_per_node=gpus_per_node) == nodes


def ms(name="gpu-a", replicas=1, low=0, high=4, acc="H100", gpn=8):
    return MachineSetState(name, "openshift-machine-api", acc, gpn, replicas, low, high)


def pod(name, current, desired, gpus=4, acc="H100", unschedulable=0):
    return PodDemand(VariantRef("ns", name), acc, gpus, current, desired, unschedulable)


def node(name, machineset="gpu-a", serving=0, ready=True):
    return NodeState(name, machineset, machine=f"m-{name}", ready=ready, serving_pods=serving)


def kinds(plan):
    return [(type(a).__name__, getattr(a, "machineset", None) or a.variant.name, a.from_replicas, a.to_replicas)
            for a in plan.actions]


def test_adds_nodes_before_the_pods_that_need_them():
    plan = plan_nodes(pods=[pod("decode", 2, 5), pod("prefill", 2, 1)], machinesets=[ms(replicas=2)],
                      nodes=[node("n1", serving=1), node("n2", serving=2)])
    assert kinds(plan) == [("ScaleMachineSet", "gpu-a", 2, 3), ("ScaleVariant", "prefill", 2, 1),
                           ("ScaleVariant", "decode", 2, 5)]
    assert plan.nodes_needed == {"H100": 3}
    assert plan.actions[0].reason is Reason.NODES_ADDED


def test_removes_only_nodes_without_serving_pods_and_last():
    plan = plan_nodes(pods=[pod("decode", 4, 2)], machinesets=[ms(replicas=3)],
                      nodes=[node("n1", serving=2), node("n2", serving=2), node("n3", serving=0)])
    assert kinds(plan) == [("ScaleVariant", "decode", 4, 2), ("ScaleMachineSet", "gpu-a", 3, 2)]
    assert plan.actions[-1].delete_machines == ("m-n3",)


def test_never_removes_a_node_that_still_runs_a_serving_pod():
    # Scaling 4 -> 1 pod frees a node, but its pods only leave after this cycle: no node goes yet.
    plan = plan_nodes(pods=[pod("decode", 4, 1)], machinesets=[ms(replicas=2)],
                      nodes=[node("n1", serving=2), node("n2", serving=2)])
    assert kinds(plan) == [("ScaleVariant", "decode", 4, 1)]
    assert [c.reason for c in plan.conditions] == [Reason.NODE_BUSY]


def test_keeps_spare_nodes_while_pods_scale_up_on_them():
    plan = plan_nodes(pods=[pod("decode", 1, 2), pod("prefill", 4, 1)], machinesets=[ms(replicas=3)],
                      nodes=[node("n1", serving=1), node("n2", serving=2), node("n3", serving=0)])
    assert not [a for a in plan.actions if isinstance(a, ScaleMachineSet)]
    assert Reason.NODE_BUSY in {c.reason for c in plan.conditions}


def test_respects_machineset_min_and_max():
    plan = plan_nodes(pods=[pod("decode", 2, 20)], machinesets=[ms(replicas=1, high=4)], nodes=[node("n1", serving=2)])
    assert kinds(plan)[0] == ("ScaleMachineSet", "gpu-a", 1, 4)
    assert Reason.NODES_LIMITED in {c.reason for c in plan.conditions}
    plan = plan_nodes(pods=[pod("decode", 1, 0)], machinesets=[ms(replicas=2, low=2)],
                      nodes=[node("n1", serving=1), node("n2")])
    assert not [a for a in plan.actions if isinstance(a, ScaleMachineSet)]


def test_spreads_new_nodes_over_machinesets_emptiest_first():
    sets = [ms("gpu-a", replicas=2), ms("gpu-b", replicas=0), ms("gpu-c", replicas=1)]
    plan = plan_nodes(pods=[pod("decode", 0, 12)], machinesets=sets, nodes=[])
    assert [(a.machineset, a.from_replicas, a.to_replicas) for a in plan.actions if isinstance(a, ScaleMachineSet)] \
        == [("gpu-b", 0, 2), ("gpu-c", 1, 2)]


def test_pending_pods_that_do_not_fit_the_busy_nodes_get_nodes_of_their_own():
    # Two TP4 pods on two nodes (fragmented: one per node) and a pending TP8 pod: packing says 2 nodes would
    # do, but the pending pod fits on neither busy node.
    plan = plan_nodes(pods=[pod("a", 2, 2, gpus=4), pod("b", 1, 1, gpus=8, unschedulable=1)],
                      machinesets=[ms(replicas=2)], nodes=[node("n1", serving=1), node("n2", serving=1)])
    assert kinds(plan) == [("ScaleMachineSet", "gpu-a", 2, 3)]


def test_accelerators_without_machinesets_still_get_their_pod_changes():
    plan = plan_nodes(pods=[pod("l40s", 1, 3, acc="L40S")], machinesets=[ms()], nodes=[])
    assert kinds(plan) == [("ScaleVariant", "l40s", 1, 3)]
    assert isinstance(plan.actions[0], ScaleVariant)


def test_not_ready_empty_nodes_are_removed_first():
    plan = plan_nodes(pods=[pod("decode", 1, 1)], machinesets=[ms(replicas=3)],
                      nodes=[node("n1", serving=1), node("n2"), node("n3", ready=False)])
    assert plan.actions[-1].delete_machines == ("m-n3", "m-n2")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"gpus_per_node": 0}, "gpus_per_node", id="no-gpus"),
        pytest.param({"min_replicas": 3, "max_replicas": 2}, "min_replicas", id="min-above-max"),
        pytest.param({"replicas": -1}, "replicas", id="negative-replicas"),
    ],
)
def test_refuses_invalid_machinesets(kwargs, match):
    base = {"name": "x", "namespace": "ns", "accelerator": "H100", "gpus_per_node": 8, "replicas": 1,
            "min_replicas": 0, "max_replicas": 4}
    with pytest.raises(ValueError, match=match):
        MachineSetState(**{**base, **kwargs})


def test_refuses_machinesets_of_one_accelerator_with_different_node_sizes():
    with pytest.raises(ValueError, match="differ in GPUs per node"):
        plan_nodes(pods=[], machinesets=[ms("a", gpn=8), ms("b", gpn=4)], nodes=[])
