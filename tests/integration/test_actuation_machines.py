"""Node groups scale with the pods, in the safe order: machines before pods on the way up, after on the way down.

OpenShift's MachineSet is not served by a plain kube-apiserver, so a copy of its CRD is installed: the fields
of openshift/api machine/v1beta1 (zz_generated.crd-manifests/0000_10_machine-api_01_machinesets-Default)
that matter here, with the same scale subresource paths. The cluster-api MachineDeployment is installed the
same way to show that the second kind takes the same path.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as kube_client

from autoscaler.core.plan import replica_gpus
from autoscaler.core.policyset import PolicySet
from autoscaler.kube import api
from autoscaler.kube.client import KubeScaler, KubeVariantSource, VariantStore, apply_crd
from autoscaler.perf.profiles import default_profiles

pytestmark = pytest.mark.integration

_NODE_GROUP_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}}}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {{type: string}}
          kind: {{type: string}}
          metadata: {{type: object}}
          spec:
            type: object
            properties:
              replicas: {{type: integer, format: int32, default: 1}}
              deletePolicy: {{type: string, enum: [Random, Newest, Oldest]}}
              minReadySeconds: {{type: integer, format: int32}}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                properties:
                  matchLabels: {{type: object, additionalProperties: {{type: string}}}}
              template:
                type: object
                properties:
                  metadata:
                    type: object
                    properties:
                      labels: {{type: object, additionalProperties: {{type: string}}}}
                  spec:
                    type: object
                    properties:
                      providerSpec:
                        type: object
                        properties:
                          value: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status:
            type: object
            properties:
              replicas: {{type: integer, format: int32}}
              readyReplicas: {{type: integer, format: int32}}
              availableReplicas: {{type: integer, format: int32}}
              labelSelector: {{type: string}}
              observedGeneration: {{type: integer, format: int64}}
"""
MACHINESET = {"group": "machine.openshift.io", "kind": "MachineSet", "plural": "machinesets",
              "singular": "machineset"}
MACHINEDEPLOYMENT = {"group": "cluster.x-k8s.io", "kind": "MachineDeployment", "plural": "machinedeployments",
                     "singular": "machinedeployment"}


@pytest.fixture(scope="module", autouse=True)
def crds(kube_api_client: kube_client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    apply_crd(kube_api_client)
    for kind in (MACHINESET, MACHINEDEPLOYMENT):
        path = tmp_path_factory.mktemp("crd") / f"{kind['plural']}.yaml"
        path.write_text(_NODE_GROUP_CRD.format(**kind))
        apply_crd(kube_api_client, path=path)


def _node_group(custom: kube_client.CustomObjectsApi, kind: dict[str, str], namespace: str, name: str,
                replicas: int) -> None:
    custom.create_namespaced_custom_object(kind["group"], "v1beta1", namespace, kind["plural"], {
        "apiVersion": f"{kind['group']}/v1beta1", "kind": kind["kind"], "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"group": name}},
                 "template": {"metadata": {"labels": {"group": name}},
                              "spec": {"providerSpec": {"value": {"instanceType": "p5.48xlarge"}}}}}})


def _deployment(apps: kube_client.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    labels = {"app": name}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "registry.invalid/vllm:1"}]}}}})


def _variant(custom: kube_client.CustomObjectsApi, namespace: str, name: str, target: str, *,
             group: dict[str, Any], gpus_per_replica: int | None, model: str = "llama") -> None:
    spec = {"model": model, "role": "decode", "accelerator": "H100", "minReplicas": 0, "maxReplicas": 16,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}, "machineSetRef": group}
    if gpus_per_replica is not None:
        spec["gpusPerReplica"] = gpus_per_replica
    custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec})


def _version(obj: Any) -> int:
    # This etcd hands out resourceVersions from one global revision counter: a smaller one was written first.
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    version = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
    return int(version)


@pytest.mark.parametrize(
    ("kind", "api_version"),
    [
        pytest.param(MACHINESET, "machine.openshift.io/v1beta1", id="openshift-machineset"),
        pytest.param(MACHINEDEPLOYMENT, "cluster.x-k8s.io/v1beta1", id="cluster-api-machinedeployment"),
    ],
)
def test_machines_grow_before_the_pods_and_shrink_after_them(
    kube_api_client: kube_client.ApiClient, kube_namespace: str, kind: dict[str, str], api_version: str
) -> None:
    apps, custom = kube_client.AppsV1Api(kube_api_client), kube_client.CustomObjectsApi(kube_api_client)
    _node_group(custom, kind, kube_namespace, "gpu-h100", replicas=1)
    _deployment(apps, kube_namespace, "decode", replicas=1)
    group = {"apiVersion": api_version, "kind": kind["kind"], "name": "gpu-h100", "namespace": kube_namespace,
             "gpusPerMachine": 8}
    _variant(custom, kube_namespace, "llama-decode", "decode", group=group, gpus_per_replica=4)  # 2 per machine

    def read() -> tuple[dict[str, Any], Any]:
        machines = custom.get_namespaced_custom_object(kind["group"], "v1beta1", kube_namespace, kind["plural"],
                                                       "gpu-h100")
        return machines, apps.read_namespaced_deployment(name="decode", namespace=kube_namespace)

    store = VariantStore()
    [spec], _ = KubeVariantSource(kube_api_client, namespace=kube_namespace, store=store).list_variants()
    scaler = KubeScaler(kube_api_client, store=store)

    scaler.current_replicas(spec)
    scaler.scale(spec, 5)
    machines, pods = read()
    assert (machines["spec"]["replicas"], pods.spec.replicas) == (3, 5)
    assert _version(machines) < _version(pods), "machines must be added before the pods that need them"

    scaler.current_replicas(spec)
    scaler.scale(spec, 1)
    machines, pods = read()
    assert (machines["spec"]["replicas"], pods.spec.replicas) == (1, 1)
    assert _version(pods) < _version(machines), "pods must be removed before their machines"


def test_a_variant_that_leaves_out_gpus_per_replica_is_sized_by_its_profiles_count(
        kube_api_client: kube_client.ApiClient, kube_namespace: str) -> None:
    # A TP4 70B whose object does not say gpusPerReplica: the API server must not default it to 1, and the
    # scaler counts the profile's 4 GPUs as the planner's quotas and prices do (5 pods x 4 GPUs = 3 machines).
    apps, custom = kube_client.AppsV1Api(kube_api_client), kube_client.CustomObjectsApi(kube_api_client)
    _node_group(custom, MACHINESET, kube_namespace, "gpu-h100", replicas=1)
    _deployment(apps, kube_namespace, "decode", replicas=1)
    group = {"name": "gpu-h100", "namespace": kube_namespace, "gpusPerMachine": 8}
    _variant(custom, kube_namespace, "llama-70b-decode", "decode", group=group, gpus_per_replica=None,
             model="meta-llama/Llama-3.1-70B-Instruct")
    store = VariantStore()
    [spec], _ = KubeVariantSource(kube_api_client, namespace=kube_namespace, store=store).list_variants()
    assert spec.gpus_per_replica is None
    profiles, policy = default_profiles(), PolicySet()
    scaler = KubeScaler(kube_api_client, store=store, gpus_for=lambda s: replica_gpus(s, profiles, policy))
    scaler.current_replicas(spec)
    scaler.scale(spec, 5)
    machines = custom.get_namespaced_custom_object("machine.openshift.io", "v1beta1", kube_namespace, "machinesets",
                                                   "gpu-h100")
    assert machines["spec"]["replicas"] == 3


def test_a_shared_node_group_keeps_the_machines_of_the_other_variant(kube_api_client: kube_client.ApiClient,
                                                                     kube_namespace: str) -> None:
    apps, custom = kube_client.AppsV1Api(kube_api_client), kube_client.CustomObjectsApi(kube_api_client)
    _node_group(custom, MACHINESET, kube_namespace, "gpu-h100", replicas=8)
    _deployment(apps, kube_namespace, "prefill", replicas=4)
    _deployment(apps, kube_namespace, "decode", replicas=4)
    group = {"name": "gpu-h100", "namespace": kube_namespace, "gpusPerMachine": 8}
    _variant(custom, kube_namespace, "llama-prefill", "prefill", group=group, gpus_per_replica=8)
    _variant(custom, kube_namespace, "llama-decode", "decode", group=group, gpus_per_replica=8)
    store = VariantStore()
    specs, _ = KubeVariantSource(kube_api_client, namespace=kube_namespace, store=store).list_variants()
    scaler = KubeScaler(kube_api_client, store=store)
    for spec in specs:
        scaler.current_replicas(spec)  # the loop reads every variant before acting
    decode = next(s for s in specs if s.ref.name == "llama-decode")
    scaler.scale(decode, 1)
    machines = custom.get_namespaced_custom_object("machine.openshift.io", "v1beta1", kube_namespace, "machinesets",
                                                   "gpu-h100")
    assert machines["spec"]["replicas"] == 4 + 1  # prefill's 4 machines stay, decode keeps 1 of its 4


def test_the_crd_copy_serves_the_scale_subresource(kube_api_client: kube_client.ApiClient,
                                                   kube_namespace: str) -> None:
    custom = kube_client.CustomObjectsApi(kube_api_client)
    _node_group(custom, MACHINESET, kube_namespace, "gpu", replicas=2)
    scale = custom.get_namespaced_custom_object_scale("machine.openshift.io", "v1beta1", kube_namespace,
                                                      "machinesets", "gpu")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 2)


# -- the policy's fleet-wide node plan ----------------------------------------------------------------------------

_MACHINE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: machines.machine.openshift.io
spec:
  group: machine.openshift.io
  names: {kind: Machine, listKind: MachineList, plural: machines, singular: machine}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


@pytest.fixture
def plan_scene(kube_api_client: kube_client.ApiClient, kube_namespace: str,
               tmp_path: Any) -> tuple[kube_client.CustomObjectsApi, kube_client.AppsV1Api]:
    path = tmp_path / "machines.yaml"
    path.write_text(_MACHINE_CRD)
    apply_crd(kube_api_client, path=path)
    custom, apps = kube_client.CustomObjectsApi(kube_api_client), kube_client.AppsV1Api(kube_api_client)
    _node_group(custom, MACHINESET, kube_namespace, "gpu-h100", replicas=3)
    for name in ("gpu-h100-a", "gpu-h100-b", "gpu-h100-c"):
        custom.create_namespaced_custom_object("machine.openshift.io", "v1beta1", kube_namespace, "machines", {
            "apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine", "metadata": {"name": name}})
    _deployment(apps, kube_namespace, "decode", replicas=3)
    return custom, apps


def _machineset_replicas(custom: kube_client.CustomObjectsApi, namespace: str) -> int:
    obj = custom.get_namespaced_custom_object("machine.openshift.io", "v1beta1", namespace, "machinesets", "gpu-h100")
    return int(obj["spec"]["replicas"])


def test_node_plan_removes_the_named_idle_machine_after_the_pods(
    kube_api_client: kube_client.ApiClient, kube_namespace: str, plan_scene: Any,
) -> None:
    from autoscaler.core.nodes import DELETE_MACHINE_ANNOTATION, NodePlan, ScaleMachineSet, ScaleVariant
    from autoscaler.core.types import Reason, ScaleTarget, VariantRef
    from autoscaler.kube.machines import NodePlanExecutor

    custom, apps = plan_scene
    ref = VariantRef(kube_namespace, "llama-decode")
    plan = NodePlan((
        ScaleVariant(ref, 3, 1),
        ScaleMachineSet("gpu-h100", kube_namespace, 3, 2, Reason.NODES_REMOVED, "idle node",
                        delete_machines=("gpu-h100-b",)),
    ))
    done = NodePlanExecutor(kube_api_client).execute(
        plan, targets={ref: ScaleTarget("apps/v1", "Deployment", "decode")})

    assert done == 2
    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 1
    assert _machineset_replicas(custom, kube_namespace) == 2
    marked = {m["metadata"]["name"] for m in custom.list_namespaced_custom_object(
        "machine.openshift.io", "v1beta1", kube_namespace, "machines")["items"]
        if (m["metadata"].get("annotations") or {}).get(DELETE_MACHINE_ANNOTATION) == "true"}
    assert marked == {"gpu-h100-b"}


def test_a_stale_node_plan_stops_before_removing_nodes(
    kube_api_client: kube_client.ApiClient, kube_namespace: str, plan_scene: Any,
) -> None:
    from autoscaler.core.nodes import NodePlan, ScaleMachineSet, ScaleVariant
    from autoscaler.core.types import Reason, ScaleTarget, VariantRef
    from autoscaler.kube.failures import KubeActuationError
    from autoscaler.kube.machines import NodePlanExecutor

    custom, apps = plan_scene
    ref = VariantRef(kube_namespace, "llama-decode")
    plan = NodePlan((
        ScaleVariant(ref, 5, 1),  # planned from 5 replicas; the Deployment has 3
        ScaleMachineSet("gpu-h100", kube_namespace, 3, 1, Reason.NODES_REMOVED, "idle nodes",
                        delete_machines=("gpu-h100-b", "gpu-h100-c")),
    ))
    with pytest.raises(KubeActuationError, match="stale"):
        NodePlanExecutor(kube_api_client).execute(plan, targets={ref: ScaleTarget("apps/v1", "Deployment",
                                                                                   "decode")})
    assert apps.read_namespaced_deployment(name="decode", namespace=kube_namespace).spec.replicas == 3
    assert _machineset_replicas(custom, kube_namespace) == 3
