"""Kubernetes I/O: list VariantAutoscalings, read and patch scale subresources, write status.

All calls go through one ``ApiClient``; API errors become :class:`ActuationError` (or :class:`SpecError` for
unusable objects) with the HTTP status kept, response bodies truncated before they reach logs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from autoscaler.core.types import Decision, VariantSpec
from autoscaler.errors import ActuationError, SpecError
from autoscaler.kube.api import GROUP, PLURAL, VERSION, to_variant_spec

__all__ = ["load_api_client", "KubeVariantSource", "KubeScaler", "apply_crd", "CRD_PATH"]

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "variantautoscalings.yaml"
MERGE_PATCH = "application/merge-patch+json"


def load_api_client(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """kubeconfig if given, else in-cluster service account, else ~/.kube/config."""
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig), context=context)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(context=context)


def _api_error(what: str, exc: ApiException | DynamicApiError) -> ActuationError:
    status = getattr(exc, "status", None)
    body = str(getattr(exc, "body", "") or exc)[:300]
    return ActuationError(f"{what}: HTTP {status}: {body}", status=status)


class KubeVariantSource:
    def __init__(self, api: client.ApiClient, *, namespace: str | None = None) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        """All VariantAutoscalings in scope; unusable ones come back as errors, never abort the cycle."""
        try:
            if self._namespace:
                listed = self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL)
            else:
                listed = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        except ApiException as exc:
            raise _api_error("listing VariantAutoscalings", exc) from exc
        specs: list[VariantSpec] = []
        errors: list[SpecError] = []
        for obj in listed.get("items", []):
            try:
                specs.append(to_variant_spec(obj))
            except SpecError as exc:
                errors.append(exc)
        return specs, errors


class KubeScaler:
    """Reads and patches the ``scale`` subresource of any scalable kind (discovered once per kind)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._dynamic: DynamicClient | None = None
        self._custom = client.CustomObjectsApi(api)

    def _scale_resource(self, spec: VariantSpec) -> Any:
        if self._dynamic is None:
            self._dynamic = DynamicClient(self._api)
        try:
            resource = self._dynamic.resources.get(api_version=spec.target.api_version, kind=spec.target.kind)
        except ResourceNotFoundError as exc:
            raise ActuationError(f"{spec.ref}: no kind {spec.target.kind} in {spec.target.api_version}",
                                 status=404) from exc
        scale = resource.subresources.get("scale")
        if scale is None:
            raise ActuationError(f"{spec.ref}: {spec.target.kind} has no scale subresource")
        return scale

    def current_replicas(self, spec: VariantSpec) -> int:
        try:
            obj = self._scale_resource(spec).get(name=spec.target.name, namespace=spec.ref.namespace)
        except DynamicApiError as exc:
            raise _api_error(f"{spec.ref}: reading scale of {spec.target.kind}/{spec.target.name}", exc) from exc
        return int(obj.spec.replicas or 0)

    def scale(self, spec: VariantSpec, replicas: int) -> None:
        try:
            self._scale_resource(spec).patch(
                body={"spec": {"replicas": replicas}}, name=spec.target.name, namespace=spec.ref.namespace,
                content_type=MERGE_PATCH,
            )
        except DynamicApiError as exc:
            raise _api_error(f"{spec.ref}: patching scale of {spec.target.kind}/{spec.target.name}", exc) from exc

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None) -> None:
        status: dict[str, Any] = {
            "currentReplicas": decision.current,
            "desiredReplicas": decision.desired,
            "reason": decision.reason.value,
            "message": decision.message[:1000],
        }
        if scaled_at is not None:
            status["lastScaleTime"] = dt.datetime.fromtimestamp(scaled_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, spec.ref.namespace, PLURAL, spec.ref.name, {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            raise _api_error(f"{spec.ref}: writing status", exc) from exc


def apply_crd(api: client.ApiClient, *, path: Path = CRD_PATH, timeout_s: float = 30.0) -> None:
    """Create or update the CRD and wait until it is Established (used by the local stack and tests)."""
    body = yaml.safe_load(path.read_text())
    ext = client.ApiextensionsV1Api(api)
    name = body["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise _api_error(f"creating CRD {name}", exc) from exc
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        conditions: Sequence[Any] = (crd.status and crd.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise ActuationError(f"CRD {name} not Established after {timeout_s:g}s")
