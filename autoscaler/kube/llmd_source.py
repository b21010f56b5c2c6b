"""The ``llmd.ai`` VariantAutoscalings of a cluster as variants of this controller, and their WVA-shaped status.

    LlmdVariantSource   lists llmd.ai/v1alpha1 VariantAutoscalings when the CRD is installed (a 404 means it
                        is not: no variants, no error), reads each target's pod template for role and
                        accelerator (:func:`autoscaler.kube.llmd.template_identity`), and writes
                        ``TargetResolved`` (TargetFound / TargetNotFound), ``OptimizationReady=False``
                        (InvalidConfiguration) for a ``variantCost`` that is not a number, and after each
                        decision ``desiredOptimizedAlloc``, ``actuation.applied``, ``MetricsAvailable`` and
                        ``OptimizationReady``: the status WVA writes (see :mod:`autoscaler.kube.llmd`)
    MergedVariantSource our own VariantAutoscalings and llm-d's as one VariantSource; a name used by both in
                        one namespace is decided once, for our object, and the other is reported

Every write asks ``may_write`` (the leader-election guard) and is a merge patch on ``/status``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, cast

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import Decision, Role, VariantRef, VariantSpec
from autoscaler.errors import AutoscalerError, SpecError
from autoscaler.kube import llmd
from autoscaler.kube.failures import KubeActuationError, Request, to_actuation_error
from autoscaler.kube.scale import MERGE_PATCH, ScaleClient
from autoscaler.logs import get_logger

__all__ = ["LlmdVariantSource", "MergedVariantSource"]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LlmdVariantSource:
    """See the module docstring. ``namespaces``: one LIST each (empty = all namespaces); ``label_selector``: this
    controller's shard, filtered by the API server as for our own VariantAutoscalings (two shards must not both
    decide one llm-d variant)."""

    def __init__(self, api: client.ApiClient, *, namespaces: Sequence[str] = (), label_selector: str | None = None,
                 timeout_s: float = 10.0,
                 may_write: Callable[[], bool] = lambda: True, now: Callable[[], dt.datetime] = _utc_now) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._scales = ScaleClient(api, timeout_s=timeout_s)
        self._namespaces = tuple(namespaces)
        self._selector = label_selector or None
        self._timeout_s = timeout_s
        self._may_write = may_write
        self._now = now
        self._lock = threading.Lock()
        self._items: dict[VariantRef, llmd.LlmdVariant] = {}
        self._accelerators: dict[VariantRef, str] = {}
        self._log = get_logger("llmd")

    # -- listing ---------------------------------------------------------------------------------------------

    def _list(self, namespace: str | None) -> list[dict[str, Any]] | None:
        """The objects, or None when the llmd.ai CRD is not installed."""
        request = Request("list", llmd.PLURAL, llmd.GROUP, namespace)
        try:
            if namespace:
                listed = self._custom.list_namespaced_custom_object(
                    llmd.GROUP, llmd.VERSION, namespace, llmd.PLURAL, label_selector=self._selector,
                    _request_timeout=self._timeout_s)
            else:
                listed = self._custom.list_cluster_custom_object(llmd.GROUP, llmd.VERSION, llmd.PLURAL,
                                                                 label_selector=self._selector,
                                                                 _request_timeout=self._timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise to_actuation_error("listing llmd.ai VariantAutoscalings", request, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise to_actuation_error("listing llmd.ai VariantAutoscalings", request, exc) from exc
        return list(cast(dict[str, Any], listed).get("items", []))

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        objects: list[dict[str, Any]] = []
        for namespace in self._namespaces or (None,):
            objects.extend(self._list(namespace) or ())
        errors: list[SpecError] = []
        resolved: list[tuple[llmd.LlmdVariant, llmd.TemplateIdentity]] = []
        for obj in sorted(objects, key=lambda o: ((o.get("metadata") or {}).get("namespace") or "",
                                                  (o.get("metadata") or {}).get("name") or "")):
            try:
                va = llmd.parse_llmd_variant(obj)
            except SpecError as exc:
                errors.append(exc)
                continue
            va, found = self._resolve(va)
            if isinstance(found, SpecError):
                errors.append(found)
            else:
                resolved.append((va, found))
        prefill_models = {(va.namespace, va.model_id) for va, ident in resolved if ident.role is Role.PREFILL}
        specs = [llmd.to_variant_spec(va, ident, aggregated=(va.namespace, va.model_id) not in prefill_models)
                 for va, ident in resolved]
        with self._lock:
            self._items = {va.ref: va for va, _ in resolved}
            self._accelerators = {va.ref: ident.accelerator for va, ident in resolved}
        return specs, errors

    def _resolve(self, va: llmd.LlmdVariant) -> tuple[llmd.LlmdVariant, llmd.TemplateIdentity | SpecError]:
        """The target's identity (or why there is none), and the object with the conditions it now has."""
        where = f"{llmd.GROUP} VariantAutoscaling {va.namespace}/{va.name}"
        if va.cost_error:
            va = self._set_conditions(va, [{"type": llmd.OPTIMIZATION_READY, "status": "False",
                                            "reason": llmd.INVALID_CONFIGURATION, "message": va.cost_error}])
            return va, SpecError(f"{where}: {va.cost_error}")
        target = va.target
        try:
            workload = self._scales.read_object(api_version=target.api_version, kind=target.kind,
                                                name=target.name, namespace=va.namespace)
        except KubeActuationError as exc:
            if exc.reason in {"TargetNotFound", "TargetKindUnknown"}:
                message = f"scale target {target.kind}/{target.name} not found: {exc}"
                va = self._set_conditions(va, [{"type": llmd.TARGET_RESOLVED, "status": "False",
                                                "reason": llmd.TARGET_NOT_FOUND, "message": message}])
                return va, SpecError(f"{where}: {message}")
            return va, SpecError(f"{where}: {exc}")
        identity = llmd.template_identity(workload, va_labels=va.labels)
        va = self._set_conditions(va, [{"type": llmd.TARGET_RESOLVED, "status": "True", "reason": llmd.TARGET_FOUND,
                                   "message": f"{target.kind}/{target.name}: role "
                                              f"{identity.role.value if identity.role else 'unlabelled'}, "
                                              f"accelerator {identity.accelerator} "
                                              f"(from {identity.accelerator_source})"}])
        return va, identity

    # -- status ----------------------------------------------------------------------------------------------

    def owns(self, ref: VariantRef) -> bool:
        with self._lock:
            return ref in self._items

    def write_status(self, spec: VariantSpec, decision: Decision, *, current: int | None) -> None:
        """Write the decision as WVA does. ``current``: the replicas the target runs now (``applied`` when it
        equals the decision)."""
        with self._lock:
            va = self._items.get(spec.ref)
            accelerator = self._accelerators.get(spec.ref, spec.accelerator)
        if va is None:
            raise AutoscalerError(f"{spec.ref}: not an llmd.ai VariantAutoscaling of this cycle")
        status = llmd.wva_status(va, now=self._now(), conditions=llmd.wva_conditions(decision), decision=decision,
                                 accelerator=accelerator,
                                 applied=None if current is None else current == decision.desired)
        self._patch(va, status)

    def _set_conditions(self, va: llmd.LlmdVariant, conditions: Sequence[Mapping[str, str]]) -> llmd.LlmdVariant:
        """``va`` with the conditions set, written when they changed (a failed write is logged: the listing
        goes on, and the next cycle writes them)."""
        status = llmd.wva_status(va, now=self._now(), conditions=conditions)
        if not self._may_write():
            return replace(va, status=status)  # a standby or a dry run writes nothing; the leader will
        try:
            self._patch(va, status)
        except AutoscalerError as exc:
            self._log.warning("llmd_status_write_failed", variant=f"{va.namespace}/{va.name}", error=str(exc))
            return va
        return replace(va, status=status)

    def _patch(self, va: llmd.LlmdVariant, status: dict[str, Any]) -> None:
        if not llmd.status_changed(va.status, status):
            return
        if not self._may_write():
            raise KubeActuationError(f"{va.namespace}/{va.name}: not writing status: lease not held",
                                     status=None, reason="NotLeader")
        request = Request("patch", f"{llmd.PLURAL}/status", llmd.GROUP, va.namespace, va.name)
        try:
            self._custom.patch_namespaced_custom_object_status(
                llmd.GROUP, llmd.VERSION, va.namespace, llmd.PLURAL, va.name, {"status": status},
                _content_type=MERGE_PATCH, _request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"{va.namespace}/{va.name}: writing llmd.ai status", request, exc) from exc
        with self._lock:
            if va.ref in self._items:
                self._items[va.ref] = replace(va, status=status)


class _Source(Protocol):
    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]: ...


class MergedVariantSource:
    """Several VariantSources as one (the first wins a name both use)."""

    def __init__(self, *sources: _Source) -> None:
        self._sources = sources

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        specs: list[VariantSpec] = []
        errors: list[SpecError] = []
        seen: set[VariantRef] = set()
        for source in self._sources:
            found, failed = source.list_variants()
            errors.extend(failed)
            for spec in found:
                if spec.ref in seen:
                    errors.append(SpecError(f"VariantAutoscaling {spec.ref}: the name is used by both a "
                                            f"variant-autoscaler.io and an llmd.ai object; deciding the first"))
                    continue
                seen.add(spec.ref)
                specs.append(spec)
        return specs, errors
