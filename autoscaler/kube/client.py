"""Kubernetes I/O for the control loop: list VariantAutoscalings, read and patch scale subresources, write status.

    KubeVariantSource   the variants of this controller's shard (namespaces and/or a label selector): from a
                        watch-backed cache once started with ``watch=True`` (no API call per cycle), else a
                        LIST per namespace (also while the cache is not synced)
    KubeScaler          the loop's Scaler port: scale subresource (409 -> re-read and retry), pod deletion
                        cost before a Deployment scale-down, node group before/after the pods, status
                        (merge patch, only what changed, with the cycle's forecast, admission ratio and
                        calibration), Events for rescales and refusals; and the ReplicaReader port: where
                        the target's pods stand (one server-filtered pod LIST per variant)
    VariantStore        the last listing, shared by both so that writing status needs no extra GET

Every API error becomes an :class:`ActuationError` (a ``KubeActuationError`` carrying the condition reason)
with the response body cut short. Every write first asks ``may_write`` (the leader-election guard).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import urllib3.exceptions
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from autoscaler.controller.ports import VariantInsight
from autoscaler.core.nodes import nodes_for_pods
from autoscaler.core.types import Decision, ReplicaCounts, VariantRef, VariantSpec
from autoscaler.errors import ActuationError, ConfigError, SpecError
from autoscaler.kube.api import (
    GROUP,
    PLURAL,
    VERSION,
    VariantAutoscaling,
    parse_variant_autoscaling,
    to_variant_spec,
)
from autoscaler.kube.drain import PodLoad, PodMarker
from autoscaler.kube.events import FAILED_RESCALE, SUCCESSFUL_RESCALE, EventRecorder
from autoscaler.kube.failures import KubeActuationError, Request, to_actuation_error
from autoscaler.kube.llmd_source import LlmdVariantSource
from autoscaler.kube.pods import count_replicas, list_pods
from autoscaler.kube.scale import MERGE_PATCH, ScaleClient, ScaleState
from autoscaler.kube.status import ABLE_TO_SCALE, ConditionUpdate, find_condition, next_status, status_patch
from autoscaler.kube.watch import WatchCache
from autoscaler.logs import get_logger

__all__ = ["CRD_PATH", "KubeScaler", "KubeVariantSource", "VariantStore", "apply_crd", "cluster_configured",
           "load_api_client"]

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "variantautoscalings.yaml"


def load_api_client(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """kubeconfig if given, else in-cluster service account, else ~/.kube/config.

    urllib3's hidden retries are off: by default it retries a timed-out GET or PUT three times, which would
    stretch every timeout fourfold, the lease renewal's too. The control loop and the elector retry themselves.

    A kubeconfig that cannot be read or used is a :class:`ConfigError` naming it (the CLI exits 2 with one
    line), not a traceback.
    """
    configuration = client.Configuration()
    configuration.retries = False
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), context=context,  # type: ignore[no-untyped-call]
                                    client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(context=context,  # type: ignore[no-untyped-call]
                                        client_configuration=configuration)
    except (config.ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config (no in-cluster service account)"
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"kubeconfig {where}: {detail}", field="kube.kubeconfig") from exc
    return client.ApiClient(configuration=configuration)


def cluster_configured(kubeconfig: Path | None = None) -> bool:
    """Whether any way to reach a cluster is configured: a kubeconfig named, in-cluster, or a default one."""
    if kubeconfig is not None or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    paths = os.environ.get("KUBECONFIG", "")
    if paths:
        return any(Path(p).expanduser().exists() for p in paths.split(os.pathsep) if p)
    return Path("~/.kube/config").expanduser().exists()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class VariantStore:
    """The VariantAutoscalings of the latest listing, by reference (thread-safe)."""

    def __init__(self) -> None:
        self._items: dict[VariantRef, VariantAutoscaling] = {}
        self._lock = threading.Lock()

    def replace(self, items: Iterable[VariantAutoscaling]) -> None:
        with self._lock:
            self._items = {va.ref: va for va in items}

    def put(self, va: VariantAutoscaling) -> None:
        with self._lock:
            self._items[va.ref] = va

    def get(self, ref: VariantRef) -> VariantAutoscaling | None:
        with self._lock:
            return self._items.get(ref)

    def all(self) -> list[VariantAutoscaling]:
        with self._lock:
            return list(self._items.values())


class KubeVariantSource:
    """The VariantAutoscalings of one shard: ``namespaces`` (one list or watch each; empty = all) and an
    optional ``label_selector`` filtered by the API server, so the cost of a cycle does not grow with
    objects of other shards.

    With ``watch=True``, :meth:`start` begins one :class:`WatchCache` per namespace and each cycle reads the
    caches: no API call at all while nothing changes. A namespace whose cache is not synced (starting, or
    its watch failed) is listed as without a watch. :meth:`stop` ends the watches."""

    def __init__(self, api: client.ApiClient, *, namespace: str | None = None, namespaces: Sequence[str] = (),
                 label_selector: str | None = None, store: VariantStore | None = None,
                 timeout_s: float = 10.0, watch: bool = False, watch_timeout_s: float = 300.0,
                 retry_s: float = 2.0) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._namespaces = tuple(namespaces) or ((namespace,) if namespace else ())
        self._selector = label_selector or None
        self._store = store
        self._timeout_s = timeout_s
        self._caches: dict[str | None, WatchCache] = {}
        if watch:
            self._caches = {ns: WatchCache(list_fn=self._list_fn(ns), what=f"{PLURAL} in {ns or 'all namespaces'}",
                                           request_timeout_s=timeout_s, watch_timeout_s=watch_timeout_s,
                                           retry_s=retry_s)
                            for ns in self._namespaces or (None,)}

    @property
    def store(self) -> VariantStore | None:
        return self._store

    @property
    def synced(self) -> bool:
        """Every namespace is served from a synced watch cache (False without ``watch``)."""
        return bool(self._caches) and all(c.synced for c in self._caches.values())

    def start(self) -> KubeVariantSource:
        for cache in self._caches.values():
            cache.start()
        return self

    def stop(self) -> None:
        for cache in self._caches.values():
            cache.stop()

    def wait_synced(self, timeout_s: float) -> bool:
        return all(c.wait_synced(timeout_s) for c in self._caches.values()) and bool(self._caches)

    def _list_fn(self, namespace: str | None) -> Callable[..., Any]:
        if namespace:
            return functools.partial(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                     PLURAL, label_selector=self._selector)
        return functools.partial(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                 label_selector=self._selector)

    def _items(self, namespace: str | None) -> list[dict[str, Any]]:
        cache = self._caches.get(namespace)
        cached = cache.items() if cache is not None else None
        if cached is not None:
            return cached
        request = Request("list", PLURAL, GROUP, namespace)
        try:
            listed = self._list_fn(namespace)(_request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error("listing VariantAutoscalings", request, exc) from exc
        return list(cast(dict[str, Any], listed).get("items", []))

    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        """All VariantAutoscalings in scope; unusable ones come back as errors, never abort the cycle."""
        items: list[dict[str, Any]] = []
        for namespace in self._namespaces or (None,):
            items.extend(self._items(namespace))
        items.sort(key=lambda obj: ((obj.get("metadata") or {}).get("namespace") or "",
                                    (obj.get("metadata") or {}).get("name") or ""))
        parsed: list[VariantAutoscaling] = []
        errors: list[SpecError] = []
        for obj in items:
            try:
                parsed.append(parse_variant_autoscaling(obj))
            except SpecError as exc:
                errors.append(exc)
        if self._store is not None:
            self._store.replace(parsed)
        return [to_variant_spec(va) for va in parsed], errors


class KubeScaler:
    """The Scaler port over the Kubernetes API (see the module docstring)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        store: VariantStore | None = None,
        identity: str = "variant-autoscaler",
        may_write: Callable[[], bool] = lambda: True,
        dry_run: bool = False,
        pod_load: PodLoad | None = None,
        timeout_s: float = 10.0,
        conflict_retries: int = 3,
        now: Callable[[], dt.datetime] = _utc_now,
        llmd: LlmdVariantSource | None = None,
        gpus_for: Callable[[VariantSpec], int] = VariantSpec.gpus,
    ) -> None:
        """``gpus_for``: a variant's GPUs per replica as the planner counts them (declared, else its profile's:
        :func:`autoscaler.core.plan.replica_gpus`), so MachineSets are sized as quotas and prices count."""
        self._custom = client.CustomObjectsApi(api)
        self._scales = ScaleClient(api, timeout_s=timeout_s, may_write=may_write)
        self._events = EventRecorder(api, instance=identity, may_write=may_write, timeout_s=timeout_s, now=now)
        self._pods = PodMarker(api, may_write=may_write, timeout_s=timeout_s)
        self._core = client.CoreV1Api(api)
        self._store = store
        self._may_write = may_write
        self._dry_run = dry_run
        self._pod_load = pod_load
        self._timeout_s = timeout_s
        self._conflict_retries = conflict_retries
        self._now = now
        self._gpus_for = gpus_for
        self._llmd = llmd  # llm-d's objects: actuated by their HPA, status written the way WVA writes it
        self._observed: dict[VariantRef, ScaleState] = {}  # the scale read before this cycle's decision
        # The pods counted this cycle, by the selector they were listed with: a scale-down marks from them.
        self._listed: dict[VariantRef, tuple[str, list[client.V1Pod]]] = {}
        self._able: dict[VariantRef, ConditionUpdate] = {}  # this cycle's AbleToScale, for write_status

    # -- the Scaler port -------------------------------------------------------------------------------------

    def current_replicas(self, spec: VariantSpec) -> int:
        try:
            state = self._scales.get(api_version=spec.target.api_version, kind=spec.target.kind,
                                     name=spec.target.name, namespace=spec.ref.namespace)
        except KubeActuationError as exc:
            self._refused(spec, exc, write_status=True)
            raise
        self._observed[spec.ref] = state
        self._listed.pop(spec.ref, None)  # a new cycle: last cycle's pods are not this one's
        self._able[spec.ref] = ConditionUpdate(ABLE_TO_SCALE, "True", "ReadyForNewScale",
                                               "the target's scale subresource can be read")
        return state.replicas

    def replica_counts(self, spec: VariantSpec) -> ReplicaCounts | None:
        """Ready, starting and unschedulable pods of the target (:mod:`autoscaler.kube.pods`), selected by the
        selector its scale subresource published when this cycle read it. None when the kind publishes no
        selector. Raises ActuationError when the pods cannot be listed (the loop then goes without)."""
        observed = self._observed.get(spec.ref)
        if observed is None:
            target = spec.target
            observed = self._scales.get(api_version=target.api_version, kind=target.kind, name=target.name,
                                        namespace=spec.ref.namespace)
        if not observed.selector:
            return None
        pods = list_pods(self._core, namespace=spec.ref.namespace, selector=observed.selector,
                         timeout_s=self._timeout_s, purpose="listing pods to count replicas")
        self._listed[spec.ref] = (observed.selector, pods)
        return count_replicas(pods)

    def scale(self, spec: VariantSpec, replicas: int) -> None:
        log = get_logger("scaler", variant=str(spec.ref))
        if not self._may_write():
            raise KubeActuationError(f"{spec.ref}: not scaling: this instance does not hold the lease",
                                     status=None, reason="NotLeader")
        observed = self._observed.get(spec.ref)
        current = observed.replicas if observed is not None else None
        if self._llmd is not None and self._llmd.owns(spec.ref) and not (current == 0 and replicas > 0):
            # As WVA: the decision is published (status, wva_desired_replicas) and the HPA or ScaledObject
            # llm-d/KServe generated for the object scales the target; patching it too would fight the HPA.
            # The one exception is WVA's too (docs/user-guide/scale-from-zero.md): from 0 to 1 the target is
            # patched, because an HPA whose target has 0 replicas does not act.
            log.debug("scale_left_to_hpa", replicas=replicas)
            return
        va = self._variant(spec)
        group = va.spec.machine_set_ref if va is not None else None
        try:
            if group is not None and (current is None or replicas > current):
                self._scale_machines(va, replicas, grow=True)  # type: ignore[arg-type]
            if current is not None and replicas < current and spec.target.kind == "Deployment":
                self._mark_pods(spec, observed, remove=current - replicas)  # type: ignore[arg-type]
            state = self._patch_with_retry(spec, replicas, observed)
            if group is not None and current is not None and replicas < current:
                self._scale_machines(va, replicas, grow=False)  # type: ignore[arg-type]
        except KubeActuationError as exc:
            self._refused(spec, exc, write_status=False)
            raise
        self._observed[spec.ref] = state
        self._able[spec.ref] = ConditionUpdate(ABLE_TO_SCALE, "True", "SucceededRescale",
                                               f"the target was scaled to {replicas}")
        log.debug("scale_patched", replicas=replicas, was=current)

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None,
                     insight: VariantInsight | None = None) -> None:
        if self._llmd is not None and self._llmd.owns(spec.ref):
            observed = self._observed.get(spec.ref)
            self._able.pop(spec.ref, None)
            self._llmd.write_status(spec, decision, current=observed.replicas if observed is not None else None)
            return
        va = self._variant(spec)
        if va is None:
            raise ActuationError(f"{spec.ref}: cannot write status: the VariantAutoscaling could not be read")
        able = self._able.pop(spec.ref, None)
        scaled = dt.datetime.fromtimestamp(scaled_at, dt.UTC) if scaled_at is not None else None
        if scaled is not None:
            self._events.record(va, type_="Normal", reason=SUCCESSFUL_RESCALE, action="Scale",
                                note=f"New size: {decision.desired} (was {decision.current}); "
                                     f"reason: {decision.reason.value}; {decision.message}")
        elif able is not None and able.status == "False" and _is_transition(va, able):
            self._events.record(va, type_="Warning", reason=able.reason, action="Scale",
                                note=f"{FAILED_RESCALE}: {able.message}")
        new = next_status(previous=va.status, generation=va.generation, now=self._now(), decision=decision,
                          able=able, scaled_at=scaled, insight=insight)
        self._patch_status(va, new)

    # -- internals -------------------------------------------------------------------------------------------

    def _variant(self, spec: VariantSpec) -> VariantAutoscaling | None:
        if self._store is not None:
            found = self._store.get(spec.ref)
            if found is not None:
                return found
        try:
            obj = self._custom.get_namespaced_custom_object(GROUP, VERSION, spec.ref.namespace, PLURAL,
                                                            spec.ref.name, _request_timeout=self._timeout_s)
            va = parse_variant_autoscaling(cast(dict[str, Any], obj))
        except (ApiException, urllib3.exceptions.HTTPError, SpecError) as exc:
            get_logger("scaler", variant=str(spec.ref)).warning("variant_unreadable", error=str(exc)[:300])
            return None
        if self._store is not None:
            self._store.put(va)
        return va

    def _patch_with_retry(self, spec: VariantSpec, replicas: int, observed: ScaleState | None) -> ScaleState:
        """Patch with the resourceVersion the decision was based on; on 409 read again and re-apply."""
        version = observed.resource_version if observed is not None else None
        target = spec.target
        for attempt in range(self._conflict_retries + 1):
            try:
                return self._scales.patch(api_version=target.api_version, kind=target.kind, name=target.name,
                                          namespace=spec.ref.namespace, replicas=replicas,
                                          resource_version=version)
            except KubeActuationError as exc:
                if exc.status != 409 or attempt == self._conflict_retries:
                    raise
            fresh = self._scales.get(api_version=target.api_version, kind=target.kind, name=target.name,
                                     namespace=spec.ref.namespace)
            get_logger("scaler", variant=str(spec.ref)).info("scale_conflict_reread", attempt=attempt + 1,
                                                            replicas_now=fresh.replicas, desired=replicas)
            if fresh.replicas == replicas:
                return fresh
            version = fresh.resource_version
        raise AssertionError("unreachable")

    def _mark_pods(self, spec: VariantSpec, observed: ScaleState, *, remove: int) -> None:
        log = get_logger("scaler", variant=str(spec.ref))
        if self._pod_load is None or not observed.selector:
            return
        loads = self._pod_load.running_requests(spec)
        if loads is None:
            log.info("drain_skipped", why="per-pod load unknown")
            return
        listed = self._listed.pop(spec.ref, None)
        pods = listed[1] if listed is not None and listed[0] == observed.selector else None
        try:
            self._pods.mark(namespace=spec.ref.namespace, selector=observed.selector, loads=loads, remove=remove,
                            pods=pods)
        except KubeActuationError as exc:  # best effort: the scale-down still happens, as it would without us
            log.warning("drain_marking_failed", error=str(exc))

    def _scale_machines(self, va: VariantAutoscaling, replicas: int, *, grow: bool) -> None:
        group = va.spec.machine_set_ref
        assert group is not None
        pods = [(self._gpus_for(to_variant_spec(va)), replicas)]
        for other in (self._store.all() if self._store is not None else ()):
            if other.ref != va.ref and other.spec.machine_set_ref is not None \
                    and (other.spec.machine_set_ref.namespace, other.spec.machine_set_ref.name) \
                    == (group.namespace, group.name):
                pods.append((self._gpus_for(to_variant_spec(other)), self._known_replicas(other)))
        # The node plan's sizer (first-fit decreasing over every variant of the group), without its plan:
        # this path serves a group the node plan does not manage (nodes disabled, or a MachineDeployment).
        needed = nodes_for_pods(pods=pods, gpus_per_node=group.gpus_per_machine)
        state = self._scales.get(api_version=group.api_version, kind=group.kind, name=group.name,
                                 namespace=group.namespace)
        if (grow and needed > state.replicas) or (not grow and needed < state.replicas):
            if not self._may_write():
                raise KubeActuationError(f"not scaling {group.kind}/{group.name}: lease not held", status=None,
                                         reason="NotLeader")
            self._scales.patch(api_version=group.api_version, kind=group.kind, name=group.name,
                               namespace=group.namespace, replicas=needed, resource_version=state.resource_version)
            get_logger("scaler", variant=f"{va.namespace}/{va.name}").info(
                "machines_scaled", group=f"{group.namespace}/{group.name}", machines=needed, was=state.replicas)

    def _known_replicas(self, va: VariantAutoscaling) -> int:
        observed = self._observed.get(va.ref)
        if observed is not None:
            return observed.replicas
        candidates = [v for v in (va.status.current_replicas, va.status.desired_replicas) if v is not None]
        return max(candidates) if candidates else va.spec.min_replicas

    def _refused(self, spec: VariantSpec, exc: KubeActuationError, *, write_status: bool) -> None:
        """Record AbleToScale=False; on a transition also a Warning event (and the status, if asked)."""
        able = ConditionUpdate(ABLE_TO_SCALE, "False", exc.reason, str(exc))
        self._able[spec.ref] = able
        if not write_status or self._dry_run or spec.dry_run:
            return
        va = self._variant(spec)
        if va is None:
            return
        if _is_transition(va, able):
            self._events.record(va, type_="Warning", reason=exc.reason, action="GetScale", note=str(exc))
        self._able.pop(spec.ref, None)
        new = next_status(previous=va.status, generation=va.generation, now=self._now(), able=able)
        try:
            self._patch_status(va, new)
        except ActuationError as status_exc:
            get_logger("scaler", variant=str(spec.ref)).warning("status_write_failed", error=str(status_exc))

    def _patch_status(self, va: VariantAutoscaling, new: Any) -> None:
        body = status_patch(va.status, new)
        if not body:
            return
        if not self._may_write():
            raise KubeActuationError(f"{va.namespace}/{va.name}: not writing status: lease not held", status=None,
                                     reason="NotLeader")
        request = Request("patch", f"{PLURAL}/status", GROUP, va.namespace, va.name)
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, va.namespace, PLURAL, va.name, body, _content_type=MERGE_PATCH,
                _request_timeout=self._timeout_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise to_actuation_error(f"{va.namespace}/{va.name}: writing status", request, exc) from exc
        if self._store is not None:
            self._store.put(va.model_copy(update={"status": new}))


def _is_transition(va: VariantAutoscaling, able: ConditionUpdate) -> bool:
    previous = find_condition(va.status.conditions, ABLE_TO_SCALE)
    return previous is None or (previous.status, previous.reason) != (able.status, able.reason)


def apply_crd(api: client.ApiClient, *, path: Path = CRD_PATH, timeout_s: float = 30.0) -> None:
    """Create or update the CRD and wait until it is Established (used by the local stack and tests)."""
    body = yaml.safe_load(path.read_text())
    ext = client.ApiextensionsV1Api(api)
    name = body["metadata"]["name"]
    request = Request("create", "customresourcedefinitions", "apiextensions.k8s.io", None, name)
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise to_actuation_error(f"creating CRD {name}", request, exc) from exc
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version if current.metadata else None
        ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        conditions: Sequence[Any] = (crd.status and crd.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise ActuationError(f"CRD {name} not Established after {timeout_s:g}s")
