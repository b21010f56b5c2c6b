"""The loop with a NodeProvisioner: decisions become pod demands, the node plan runs in its order, dry-run
changes nothing, and trouble with the pools never stops the variants from being scaled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from autoscaler.config import load_settings
from autoscaler.controller.loop import Controller, pod_demands
from autoscaler.controller.ports import NodeExecution, NodeObservation, VariantPlacement
from autoscaler.controller.wiring import build_controller
from autoscaler.core.behavior import Behavior
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.nodes import (
    MachineSetState,
    NodePlan,
    NodeState,
    PodDemand,
    ScaleMachineSet,
    ScaleVariant,
)
from autoscaler.core.plan import VariantObservation, replica_gpus
from autoscaler.core.policyset import PolicySet
from autoscaler.core.types import (
    Decision,
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import ActuationError, ConfigError
from autoscaler.kube.nodepool import KubeNodePool
from autoscaler.perf.profiles import default_profiles
from tests.core.test_controller_cycle import SATURATED, Clock, Scaler, Signals, Variants


def spec(name: str, *, accelerator: str = "H100", dry_run: bool = False, gpus: int | None = None) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", name), model="m", role=Role.DECODE, accelerator=accelerator,
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=1, max_replicas=10,
                       dry_run=dry_run, gpus_per_replica=gpus)


def observed(s: VariantSpec, current: int) -> VariantObservation:
    return VariantObservation(spec=s, signals=SATURATED, current=current)


# -- decisions -> pod demands (pure) ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("variant", "placement", "decided", "expected"),
    [
        pytest.param(spec("a"), VariantPlacement(unschedulable=1), 5,
                     PodDemand(VariantRef("ns", "a"), "H100", 4, 2, 5, 1), id="decided-replicas-with-gpus-and-pending"),
        pytest.param(spec("a", dry_run=True), VariantPlacement(), 5,
                     PodDemand(VariantRef("ns", "a"), "H100", 4, 2, 2, 0), id="a-dry-run-variant-demands-what-it-has"),
        pytest.param(spec("a"), None, 5, None, id="no-placement-left-out"),
        pytest.param(spec("a", accelerator="A100"), VariantPlacement(), 5, None,
                     id="accelerator-without-machinesets-left-out"),
        pytest.param(spec("a"), VariantPlacement(), None, None, id="no-decision-left-out"),
    ],
)
def test_turns_decisions_into_pod_demands(variant, placement, decided, expected):
    decisions = {variant.ref: None if decided is None else Decision(variant.ref, 2, decided)}
    placements = {} if placement is None else {variant.ref: placement}
    demands = pod_demands(observations=[observed(variant, 2)], decisions=decisions, placements=placements,
                          accelerators={"H100"}, gpus={variant.ref: 4})
    assert demands == (() if expected is None else (expected,))


# -- the loop ---------------------------------------------------------------------------------------------------

@dataclass
class Pool:
    """An in-memory NodeProvisioner: one H100 MachineSet of 8-GPU nodes, actions recorded in order."""

    machineset_replicas: int = 1
    busy_nodes: int = 1
    placements: dict = field(default_factory=dict)
    stop_after: int | None = None  # execute stops after this many actions
    observe_error: Exception | None = None
    executed: list = field(default_factory=list)
    log: list = field(default_factory=list)  # shared with the scaler: one timeline of writes

    def observe(self, variants):
        if self.observe_error:
            raise self.observe_error
        nodes = tuple(NodeState(f"n{i}", "gpu", machine=f"m{i}", serving_pods=1 if i < self.busy_nodes else 0)
                      for i in range(self.machineset_replicas))
        return NodeObservation((MachineSetState("gpu", "openshift-machine-api", "H100", 8,
                                                self.machineset_replicas, 0, 4),), nodes, self.placements)

    def execute(self, plan: NodePlan, *, targets):
        for done, action in enumerate(plan.actions):
            if self.stop_after is not None and done == self.stop_after:
                return NodeExecution(done, "MachineSet gpu: HTTP 403 forbidden")
            assert not isinstance(action, ScaleVariant) or action.variant in targets
            self.executed.append(action)
            self.log.append(_describe(action))
        return NodeExecution(len(plan.actions))


def _describe(action: Any) -> tuple[str, str, int]:
    if isinstance(action, ScaleMachineSet):
        return ("machineset", action.machineset, action.to_replicas)
    return ("variant", action.variant.name, action.to_replicas)


@dataclass
class LoggingScaler(Scaler):
    log: list = field(default_factory=list)

    def scale(self, s, n):
        super().scale(s, n)
        self.log.append(("variant", s.ref.name, n))


def loop(specs, scaler, pool, **kw) -> Controller:
    return Controller(variants=Variants(specs), signals=Signals({s: SATURATED for s in specs}), scaler=scaler,
                      policy=ScalingPolicy(behavior=Behavior(max_step_up=2)), clock=Clock(), nodes=pool, **kw)


def test_adds_nodes_before_scaling_up_the_pods_that_need_them():
    a = spec("a", gpus=4)
    log: list = []
    scaler, pool = LoggingScaler({"a": 2}, log=log), Pool(placements={a.ref: VariantPlacement()}, log=log)
    report = loop([a], scaler, pool).run_cycle()

    assert log == [("machineset", "gpu", 2), ("variant", "a", 4)]  # 4 pods x 4 GPUs need 2 nodes
    [outcome] = report.outcomes
    assert outcome.applied and not outcome.error
    assert scaler.statuses == [("a", 4)]  # status still written by the scaler
    assert report.nodes is not None and report.nodes.done == 2
    assert [a.to_replicas for a in report.nodes.machineset_changes] == [2]


def test_variants_the_node_plan_does_not_cover_are_scaled_as_before():
    a, cpu = spec("a"), spec("cpu", accelerator="none")
    log: list = []
    scaler = LoggingScaler({"a": 1, "cpu": 1}, log=log)
    pool = Pool(placements={a.ref: VariantPlacement(), cpu.ref: VariantPlacement()}, log=log)
    report = loop([a, cpu], scaler, pool).run_cycle()

    assert ("variant", "cpu", 3) in log and ("variant", "a", 3) in log
    assert [_describe(x) for x in pool.executed] == [("variant", "a", 3)]  # 3 one-GPU pods fit the one node
    assert all(o.applied for o in report.outcomes)


def test_dry_run_plans_nodes_but_executes_nothing():
    a = spec("a", gpus=4)
    log: list = []
    scaler, pool = LoggingScaler({"a": 2}, log=log), Pool(placements={a.ref: VariantPlacement()}, log=log)
    report = loop([a], scaler, pool, dry_run=True).run_cycle()

    assert log == [] and scaler.statuses == []
    assert report.nodes is not None and report.nodes.dry_run and report.nodes.done == 0
    assert [_describe(x) for x in report.nodes.plan.actions] == [("machineset", "gpu", 2), ("variant", "a", 4)]
    assert not report.outcomes[0].applied


def test_pods_after_a_failed_node_step_are_not_scaled_and_say_why():
    a = spec("a", gpus=4)
    log: list = []
    scaler = LoggingScaler({"a": 2}, log=log)
    pool = Pool(placements={a.ref: VariantPlacement()}, stop_after=0, log=log)
    report = loop([a], scaler, pool).run_cycle()

    assert log == []  # no pods without the nodes they need
    [outcome] = report.outcomes
    assert not outcome.applied and "node plan stopped" in outcome.error and "403" in outcome.error
    assert any("403" in e for e in report.errors)
    assert report.nodes is not None and report.nodes.done == 0


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ActuationError("listing Machines: HTTP 503"), id="pools-unreadable"),
        pytest.param(ValueError("MachineSets for H100 differ in GPUs per node"), id="pools-unplannable"),
    ],
)
def test_trouble_with_the_pools_falls_back_to_scaling_the_variants(error):
    a = spec("a", gpus=4)
    scaler, pool = LoggingScaler({"a": 2}), Pool(placements={a.ref: VariantPlacement()}, observe_error=error)
    report = loop([a], scaler, pool).run_cycle()

    assert scaler.log == [("variant", "a", 4)]
    assert report.outcomes[0].applied
    assert report.nodes is not None and report.nodes.plan.actions == () and str(error) in report.nodes.error
    assert any(str(error) in e for e in report.errors)


def test_node_conditions_reach_the_cycle_report():
    a = spec("a")
    scaler = LoggingScaler({"a": 2})
    # 3 nodes, only one busy; the pods scale up, so no node may be removed this cycle.
    pool = Pool(machineset_replicas=3, busy_nodes=1, placements={a.ref: VariantPlacement()})
    report = loop([a], scaler, pool).run_cycle()

    assert any(c.reason is Reason.NODE_BUSY and c.subject == "H100" for c in report.conditions)
    assert [_describe(x) for x in pool.executed] == [("variant", "a", 4)]


def test_held_variants_are_not_handed_to_the_node_plan():
    a = spec("a", gpus=4)
    scaler = LoggingScaler({"a": 2})
    pool = Pool(placements={a.ref: VariantPlacement()})
    idle = VariantSignals(freshness=Freshness.MISSING)
    c = Controller(variants=Variants([a]), signals=Signals({a: idle}), scaler=scaler,
                   policy=ScalingPolicy(behavior=Behavior(max_step_up=2)), clock=Clock(), nodes=pool)
    report = c.run_cycle()
    assert pool.executed == [] and scaler.log == [] and report.outcomes[0].decision.desired == 2


# -- wiring and settings ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("enabled", [pytest.param(True, id="enabled"), pytest.param(False, id="off-by-default")])
def test_the_node_provisioner_is_wired_only_when_enabled(enabled):
    overrides = {"nodes": {"enabled": True}} if enabled else {}
    built = build_controller(load_settings(None, overrides), api_client=client.ApiClient())
    assert isinstance(built.nodes, KubeNodePool) if enabled else built.nodes is None


def test_a_bad_node_setting_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="nodes.accelerator_label"):
        load_settings(None, {"nodes": {"enabled": True, "accelerator_label": ""}})


def test_a_variant_without_declared_gpus_demands_its_profiles_gpus_per_pod():
    # The 70B TP4 profile counts 4 GPUs a replica; a variant that does not declare its GPUs must not be packed
    # as one-GPU pods (the count the planner's quotas and prices use is the node plan's too).
    a = VariantSpec(ref=VariantRef("ns", "a"), model="meta-llama/Llama-3.1-70B-Instruct", role=Role.DECODE,
                    accelerator="H100", target=ScaleTarget("apps/v1", "Deployment", "a"), min_replicas=1,
                    max_replicas=10)
    log: list = []
    scaler, pool = LoggingScaler({"a": 2}, log=log), Pool(placements={a.ref: VariantPlacement()}, log=log)
    report = loop([a], scaler, pool, profiles=default_profiles()).run_cycle()

    [outcome] = report.outcomes
    desired = outcome.decision.desired
    assert desired >= 3  # at 1 GPU a pod, this many would fit the one 8-GPU node
    assert log == [("machineset", "gpu", -(-desired * 4 // 8)), ("variant", "a", desired)]


@pytest.mark.parametrize(
    ("declared", "model", "expected"),
    [
        pytest.param(2, "meta-llama/Llama-3.1-70B-Instruct", 2, id="declared-wins-over-the-profile"),
        pytest.param(None, "meta-llama/Llama-3.1-70B-Instruct", 4, id="undeclared-takes-the-profiles"),
        pytest.param(None, "unknown/model", 1, id="no-declaration-no-profile-one"),
    ],
)
def test_replica_gpus_is_the_declaration_else_the_profiles_count(declared, model, expected):
    s = VariantSpec(ref=VariantRef("ns", "a"), model=model, role=Role.DECODE, accelerator="H100",
                    target=ScaleTarget("apps/v1", "Deployment", "a"), min_replicas=1, max_replicas=10,
                    gpus_per_replica=declared)
    assert replica_gpus(s, default_profiles(), PolicySet()) == expected
