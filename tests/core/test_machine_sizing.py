"""One MachineSet sizer: the scaler sizes a variant's node group (``spec.machineSetRef``) with the node plan's
packing (:func:`autoscaler.core.nodes.nodes_for_pods`), so the two paths never disagree on how many machines the
same pods need."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from autoscaler.core.nodes import nodes_for_pods
from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.kube.api import parse_variant_autoscaling
from autoscaler.kube.client import KubeScaler, VariantStore

GROUP = {"name": "gpu-h100", "namespace": "machines", "gpusPerMachine": 8}
DISCOVERY = {
    "/apis/apps/v1": {"resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True},
                                    {"name": "deployments/scale", "kind": "Scale", "namespaced": True}]},
    "/apis/machine.openshift.io/v1beta1": {"resources": [
        {"name": "machinesets", "kind": "MachineSet", "namespaced": True},
        {"name": "machinesets/scale", "kind": "Scale", "namespaced": True}]},
}


def variant(name: str, *, gpus: int, replicas: int) -> Any:
    return parse_variant_autoscaling({
        "apiVersion": "variant-autoscaler.io/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": "ns", "generation": 1},
        "spec": {"model": "m", "role": "decode", "accelerator": "H100", "minReplicas": 0, "maxReplicas": 64,
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "gpusPerReplica": gpus, "machineSetRef": GROUP},
        "status": {"currentReplicas": replicas, "desiredReplicas": replicas},
    })


class FakeApi:
    """Scale subresources of Deployments and the MachineSet; each PATCH recorded by object name."""

    def __init__(self, replicas: dict[str, int]) -> None:
        self.replicas = replicas
        self.patched: dict[str, int] = {}

    def __call__(self, api: Any, method: str, path: str, *, body: Any = None, content_type: str | None = None,
                 timeout_s: float) -> Any:
        if path in DISCOVERY:
            return DISCOVERY[path]
        name = path.rstrip("/").split("/")[-2]  # .../<plural>/<name>/scale
        if method == "PATCH":
            self.patched[name] = self.replicas[name] = body["spec"]["replicas"]
        count = self.replicas[name]
        return {"spec": {"replicas": count}, "status": {"replicas": count}, "metadata": {"resourceVersion": "1"}}


@pytest.mark.parametrize(("mine", "replicas", "other", "machines"), [
    pytest.param(4, 1, 4, 1, id="two-variants-share-a-machine"),
    pytest.param(4, 3, 2, 2, id="mixed-sizes-pack-first-fit-decreasing"),
    pytest.param(8, 2, 16, 4, id="whole-machines-and-multi-machine-replicas"),
])
def test_the_scaler_sizes_a_shared_group_as_the_node_plan_packs_it(monkeypatch, mine, replicas, other, machines):
    me, them = variant("me", gpus=mine, replicas=0), variant("them", gpus=other, replicas=1)
    store = VariantStore()
    store.replace([me, them])
    fake = FakeApi({"me": 0, "them": 1, "gpu-h100": 0})
    monkeypatch.setattr("autoscaler.kube.scale.request_json", fake)
    scaler = KubeScaler(client.ApiClient(), store=store)
    spec = VariantSpec(ref=VariantRef("ns", "me"), model="m", role=Role.DECODE, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", "me"))
    scaler.current_replicas(spec)
    scaler.scale(spec, replicas)
    planned = nodes_for_pods(pods=[(mine, replicas), (other, 1)], gpus_per_node=8)  # what the node plan needs
    assert fake.patched["gpu-h100"] == planned == machines
