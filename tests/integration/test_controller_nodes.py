"""GPU nodes planned with the pods, end to end on the real API server: one control cycle reads MachineSets,
Machines, Nodes and our pods, and scales MachineSets and Deployments in the node plan's order.

No kubelet or machine controller runs: Nodes, Machines (with ``status.nodeRef``) and bound pods are written
by hand to stand for the capacity a cluster would have. Signals come from a fixed source (Prometheus is not
what is under test here). The MachineSet and Machine CRDs are the copies of tests/integration/
test_actuation_machines.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as kube_client

from autoscaler.config import load_settings
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.wiring import build_controller
from autoscaler.core.nodes import DELETE_MACHINE_ANNOTATION, ScaleMachineSet, ScaleVariant
from autoscaler.core.types import Freshness, Reason, VariantSignals
from autoscaler.kube import api
from autoscaler.kube.client import apply_crd
from autoscaler.kube.nodepool import KubeNodePool
from tests.integration.test_actuation_machines import _MACHINE_CRD, _NODE_GROUP_CRD, MACHINESET

pytestmark = pytest.mark.integration

LABEL = "variant-autoscaler.io/accelerator"
MS_GROUP, MS_VERSION = "machine.openshift.io", "v1beta1"
SATURATED = VariantSignals(freshness=Freshness.FRESH, waiting=40.0, running=10.0, kv_usage_mean=0.9)
IDLE = VariantSignals(freshness=Freshness.FRESH, waiting=0.0, running=0.0, kv_usage_mean=0.1)


@pytest.fixture(scope="module", autouse=True)
def crds(kube_api_client: kube_client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    apply_crd(kube_api_client)
    folder = tmp_path_factory.mktemp("crd")
    (folder / "machinesets.yaml").write_text(_NODE_GROUP_CRD.format(**MACHINESET))
    (folder / "machines.yaml").write_text(_MACHINE_CRD)
    for name in ("machinesets.yaml", "machines.yaml"):
        apply_crd(kube_api_client, path=folder / name)


class Cluster:
    """Writes the objects of one test's scene; Nodes (cluster-scoped) are deleted afterwards."""

    def __init__(self, api_client: kube_client.ApiClient, namespace: str) -> None:
        self.api, self.ns = api_client, namespace
        self.core, self.apps = kube_client.CoreV1Api(api_client), kube_client.AppsV1Api(api_client)
        self.custom = kube_client.CustomObjectsApi(api_client)
        self.nodes: list[str] = []

    def machineset(self, name: str, *, replicas: int, max_machines: int, labels: dict[str, str]) -> None:
        self.custom.create_namespaced_custom_object(MS_GROUP, MS_VERSION, self.ns, "machinesets", {
            "apiVersion": f"{MS_GROUP}/{MS_VERSION}", "kind": "MachineSet",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {"variant-autoscaler.io/max-machines": str(max_machines)}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"group": name}},
                     "template": {"metadata": {"labels": {"group": name}}}}})

    def machine_with_node(self, machineset: str, machine: str, *, gpus: int = 8) -> str:
        """A Machine of ``machineset`` whose Node has joined: Ready, ``gpus`` allocatable, labelled H100."""
        node = f"{self.ns}-{machine}"
        self.custom.create_namespaced_custom_object(MS_GROUP, MS_VERSION, self.ns, "machines", {
            "apiVersion": f"{MS_GROUP}/{MS_VERSION}", "kind": "Machine",
            "metadata": {"name": machine, "labels": {"group": machineset}}})
        self.custom.patch_namespaced_custom_object_status(MS_GROUP, MS_VERSION, self.ns, "machines", machine,
                                                          {"status": {"nodeRef": {"kind": "Node", "name": node}}})
        self.core.create_node({"metadata": {"name": node, "labels": {LABEL: "H100"}}})
        self.nodes.append(node)
        self.core.patch_node_status(node, {"status": {
            "capacity": {"nvidia.com/gpu": str(gpus)}, "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}]}})
        return node

    def deployment(self, name: str, *, replicas: int, pods_on: list[str]) -> None:
        """A Deployment and, as its ReplicaSet, the scheduler and the kubelet would make them, its pods bound to
        nodes and ready."""
        labels = {"app": name}
        self.apps.create_namespaced_deployment(self.ns, {
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})
        for i, node in enumerate(pods_on):
            self.core.create_namespaced_pod(self.ns, {
                "metadata": {"name": f"{name}-{i}", "labels": labels},
                "spec": {"nodeName": node, "containers": [{
                    "name": "vllm", "image": "registry.invalid/vllm:1",
                    "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}})
            # Running and Ready, as the kubelet would report: the planner counts pods that are not as starting.
            ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            self.core.patch_namespaced_pod_status(f"{name}-{i}", self.ns,
                                                  {"status": {"phase": "Running", "conditions": [ready]}})

    def variant(self, name: str, target: str, *, gpus_per_replica: int,
                machine_set_ref: dict[str, Any] | None = None) -> None:
        spec: dict[str, Any] = {
            "model": "llama", "role": "decode", "accelerator": "H100", "minReplicas": 1, "maxReplicas": 8,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "gpusPerReplica": gpus_per_replica}
        if machine_set_ref is not None:
            spec["machineSetRef"] = machine_set_ref
        self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, self.ns, api.PLURAL, {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec})

    def machineset_obj(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(MS_GROUP, MS_VERSION, self.ns, "machinesets", name))

    def deployment_obj(self, name: str) -> kube_client.V1Deployment:
        return self.apps.read_namespaced_deployment(name=name, namespace=self.ns)

    def marked_machines(self) -> set[str]:
        items = self.custom.list_namespaced_custom_object(MS_GROUP, MS_VERSION, self.ns, "machines")["items"]
        return {m["metadata"]["name"] for m in items
                if (m["metadata"].get("annotations") or {}).get(DELETE_MACHINE_ANNOTATION) == "true"}

    def cleanup(self) -> None:
        for node in self.nodes:
            self.core.delete_node(node)


@pytest.fixture
def cluster(kube_api_client: kube_client.ApiClient, kube_namespace: str) -> Iterator[Cluster]:
    scene = Cluster(kube_api_client, kube_namespace)
    yield scene
    scene.cleanup()


@dataclasses.dataclass
class FixedSignals:
    signals: VariantSignals

    def collect(self, variants: Any, *, now: float) -> dict[Any, VariantSignals]:
        return {v: self.signals for v in variants}


def controller(cluster: Cluster, signals: VariantSignals, *, dry_run: bool = False) -> Controller:
    """The wired controller (nodes.enabled), with fixed signals in place of Prometheus."""
    settings = load_settings(None, {
        "kube": {"namespace": cluster.ns},
        "nodes": {"enabled": True, "machine_namespace": cluster.ns},
        "planner": {"predictive": False},
        # One cycle acts: no stabilisation (nodes.enabled would otherwise hold a rise for 120 s).
        "behavior": {"scale_up": {"max_step": 2, "stabilization_window_s": 0},
                     "scale_down": {"stabilization_window_s": 0}},
    })
    built = build_controller(settings, api_client=cluster.api, dry_run=dry_run)
    assert isinstance(built.nodes, KubeNodePool)
    return dataclasses.replace(built, signals=FixedSignals(signals))


def version(obj: Any) -> int:
    # One etcd revision counter hands out every resourceVersion here: the smaller one was written first.
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    return int(meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version)


def actions(report: CycleReport) -> list[tuple[str, str, int, int]]:
    assert report.nodes is not None
    return [("MachineSet", a.machineset, a.from_replicas, a.to_replicas) if isinstance(a, ScaleMachineSet)
            else ("Variant", a.variant.name, a.from_replicas, a.to_replicas) for a in report.nodes.plan.actions]


def scale_up_scene(cluster: Cluster) -> None:
    """One 8-GPU H100 node (a labelled MachineSet, max 3) full with two 4-GPU decode pods."""
    cluster.machineset("gpu-h100", replicas=1, max_machines=3, labels={LABEL: "H100"})
    node = cluster.machine_with_node("gpu-h100", "gpu-h100-a")
    cluster.deployment("decode", replicas=2, pods_on=[node, node])
    cluster.variant("llama-decode", "decode", gpus_per_replica=4)


def test_a_scale_up_that_needs_more_gpus_adds_a_machine_before_the_pods(cluster: Cluster) -> None:
    scale_up_scene(cluster)

    report = controller(cluster, SATURATED).run_cycle()

    machines, pods = cluster.machineset_obj("gpu-h100"), cluster.deployment_obj("decode")
    assert (machines["spec"]["replicas"], pods.spec.replicas) == (2, 4)  # 4 pods x 4 GPUs = 2 nodes
    assert version(machines) < version(pods), "the machine must be asked for before the pods that need it"
    assert actions(report) == [("MachineSet", "gpu-h100", 1, 2), ("Variant", "llama-decode", 2, 4)]
    assert report.nodes is not None and report.nodes.done == 2 and not report.errors
    [outcome] = report.outcomes
    assert outcome.applied
    status = cluster.custom.get_namespaced_custom_object_status(api.GROUP, api.VERSION, cluster.ns, api.PLURAL,
                                                                "llama-decode")["status"]
    assert (status["currentReplicas"], status["desiredReplicas"]) == (2, 4)


def test_dry_run_plans_the_machine_but_changes_nothing(cluster: Cluster) -> None:
    scale_up_scene(cluster)
    before = (version(cluster.machineset_obj("gpu-h100")), version(cluster.deployment_obj("decode")))

    report = controller(cluster, SATURATED, dry_run=True).run_cycle()

    assert actions(report)[0] == ("MachineSet", "gpu-h100", 1, 2)
    assert report.nodes is not None and report.nodes.dry_run and report.nodes.done == 0
    after = (version(cluster.machineset_obj("gpu-h100")), version(cluster.deployment_obj("decode")))
    assert after == before
    assert cluster.marked_machines() == set()


def test_a_scale_down_removes_the_pods_first_and_then_the_machine_they_freed(cluster: Cluster) -> None:
    # Found through the variant's machineSetRef this time (the MachineSet carries no accelerator label).
    cluster.machineset("gpu-h100", replicas=2, max_machines=2, labels={})
    node_a = cluster.machine_with_node("gpu-h100", "gpu-h100-a")
    node_b = cluster.machine_with_node("gpu-h100", "gpu-h100-b")
    cluster.deployment("decode", replicas=2, pods_on=[node_a, node_b])
    cluster.variant("llama-decode", "decode", gpus_per_replica=4,
                    machine_set_ref={"name": "gpu-h100", "namespace": cluster.ns, "gpusPerMachine": 8})
    loop = controller(cluster, IDLE)

    first = loop.run_cycle()
    # The pods go first; both nodes still run one, so neither may go yet.
    assert actions(first) == [("Variant", "llama-decode", 2, 1)]
    assert any(c.reason is Reason.NODE_BUSY for c in first.conditions)
    assert cluster.deployment_obj("decode").spec.replicas == 1
    assert cluster.machineset_obj("gpu-h100")["spec"]["replicas"] == 2
    assert cluster.marked_machines() == set()

    cluster.core.delete_namespaced_pod("decode-1", cluster.ns, grace_period_seconds=0)  # as the ReplicaSet would
    second = loop.run_cycle()

    assert [a for a in actions(second) if a[0] == "Variant"] == []
    assert actions(second) == [("MachineSet", "gpu-h100", 2, 1)]
    machines, pods = cluster.machineset_obj("gpu-h100"), cluster.deployment_obj("decode")
    assert machines["spec"]["replicas"] == 1
    assert cluster.marked_machines() == {"gpu-h100-b"}, "only the machine whose node the pods left"
    assert version(pods) < version(machines)
    assert second.nodes is not None and second.nodes.done == 1 and not second.errors
    assert all(isinstance(a, ScaleMachineSet) for a in second.nodes.machineset_changes)
    assert not any(isinstance(a, ScaleVariant) for a in second.nodes.plan.actions)
