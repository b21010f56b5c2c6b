"""A whole local serving stack: kube-apiserver/etcd with the CRD, Deployments and VariantAutoscalings of a
scenario, the vLLM emulator following those Deployments, and Prometheus scraping the emulator.

Used by the demo (``variant-autoscaler demo``) and by the end-to-end tests, so both exercise the same wiring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from kubernetes import client

from autoscaler.emulator.emulator import Emulator
from autoscaler.emulator.kube_follow import follow_deployments
from autoscaler.emulator.variant import EmulatedVariant
from autoscaler.kube.api import GROUP, KIND, PLURAL, VERSION
from autoscaler.kube.client import apply_crd
from autoscaler.localstack.kube import ControlPlane
from autoscaler.localstack.prometheus import PrometheusServer

__all__ = ["LocalStack", "StackVariant", "create_deployment", "create_variant_autoscaling"]


@dataclass(frozen=True, slots=True)
class StackVariant:
    """An emulated variant plus the VariantAutoscaling bounds it is created with."""

    emulated: EmulatedVariant
    min_replicas: int = 1
    max_replicas: int = 8
    initial_replicas: int = 1


def create_deployment(api: client.ApiClient, *, namespace: str, name: str, replicas: int,
                      labels: dict[str, str]) -> None:
    """A vLLM-shaped Deployment. Nothing schedules its pods here: the emulator plays them."""
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name, **labels}),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="vllm", image="vllm/vllm-openai:latest",
                    ports=[client.V1ContainerPort(container_port=8000, name="http")],
                )]),
            ),
        ),
    )
    client.AppsV1Api(api).create_namespaced_deployment(namespace, body)


def create_variant_autoscaling(api: client.ApiClient, *, namespace: str, name: str, model: str, role: str,
                               accelerator: str, target: str, min_replicas: int, max_replicas: int,
                               annotations: dict[str, str] | None = None) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "model": model, "role": role, "accelerator": accelerator,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
        },
    }
    return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


class LocalStack:
    """Start order: control plane, CRD, objects, emulator, Prometheus. Stop is the reverse and leaves nothing."""

    def __init__(self, *, variants: Sequence[StackVariant], control_plane: ControlPlane | None = None,
                 speedup: float = 1.0) -> None:
        self.variants = list(variants)
        self._own_control_plane = control_plane is None
        self.control_plane = control_plane or ControlPlane()
        self.speedup = speedup
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.emulator: Emulator | None = None
        self.prometheus: PrometheusServer | None = None
        self.api: client.ApiClient | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        try:
            if self._own_control_plane:
                self.control_plane.start()
            self.api = self.control_plane.api_client()
            apply_crd(self.api)
            self._create_objects(self.api)
            self._dir = tempfile.TemporaryDirectory(prefix="vas-stack-")
            sd = Path(self._dir.name) / "targets.json"
            self.emulator = Emulator(variants=[v.emulated for v in self.variants],
                                     replicas_of=follow_deployments(self.api), file_sd_path=sd,
                                     speedup=self.speedup)
            self.emulator.start()
            self.prometheus = PrometheusServer(file_sd_path=sd)
            self.prometheus.start()
        except BaseException:
            self.stop()
            raise

    def _create_objects(self, api: client.ApiClient) -> None:
        core = client.CoreV1Api(api)
        existing = {ns.metadata.name for ns in core.list_namespace().items}
        for ns in sorted({v.emulated.namespace for v in self.variants} - existing):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        for v in self.variants:
            e = v.emulated
            labels = {"model": e.model.split("/")[-1].lower()[:63], "role": e.role.value,
                      "accelerator": e.accelerator}
            create_deployment(api, namespace=e.namespace, name=e.deployment, replicas=v.initial_replicas,
                              labels=labels)
            create_variant_autoscaling(api, namespace=e.namespace, name=e.deployment, model=e.model,
                                       role=e.role.value, accelerator=e.accelerator, target=e.deployment,
                                       min_replicas=v.min_replicas, max_replicas=v.max_replicas)

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        if self.api is not None:
            self.api.close()
            self.api = None
        if self._own_control_plane:
            self.control_plane.stop()
