"""Assemble a Controller on the real adapters from Settings (the only place that knows all of them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from kubernetes import client

from autoscaler.config import Settings
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.ports import (
    Clock,
    NodeProvisioner,
    Scaler,
    SignalSource,
    VariantSource,
    WallClock,
)
from autoscaler.core.admission import AdmissionConfig
from autoscaler.core.plan import PlannerConfig, replica_gpus
from autoscaler.core.policyset import PolicySet
from autoscaler.core.types import VariantSpec
from autoscaler.forecast import ForecastConfig
from autoscaler.kube.client import KubeScaler, KubeVariantSource, load_api_client
from autoscaler.kube.llmd_source import LlmdVariantSource, MergedVariantSource
from autoscaler.kube.nodepool import KubeNodePool
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles, load_profiles
from autoscaler.policy.store import PolicyStore, require_gateway_for_scale_to_zero
from autoscaler.signals.discover import MetricsOnlyScaler, PrometheusVariantSource
from autoscaler.signals.gateway_queue import GatewayQueueSource
from autoscaler.signals.history import duration_s
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from autoscaler.signals.transport import HttpOptions

__all__ = [
    "SCRATCH_REFERENCE",
    "assemble_controller",
    "build_controller",
    "build_metrics_only_controller",
    "gpus_counter",
    "label_map",
    "llmd_source",
    "load_planner_profiles",
    "node_provisioner",
    "planner_config",
    "policy_source",
    "scratch_reference",
    "signal_sources",
]


def build_controller(
    settings: Settings,
    *,
    api_client: client.ApiClient | None = None,
    clock: Clock | None = None,
    dry_run: bool | None = None,
    on_cycle: Callable[[CycleReport], None] | None = None,
    may_write: Callable[[], bool] | None = None,
) -> Controller:
    """``may_write``: the leader-election guard the node provisioner asks before every write."""
    api = api_client or load_api_client(settings.kube.kubeconfig, settings.kube.context)
    _, source = signal_sources(settings)
    effective_dry_run = settings.controller.dry_run if dry_run is None else dry_run
    llmd = llmd_source(settings, api, may_write=may_write or (lambda: not effective_dry_run))
    controller = assemble_controller(
        settings,
        variants=MergedVariantSource(KubeVariantSource(api, namespace=settings.kube.namespace), llmd),
        signals=source,
        scaler=KubeScaler(api, llmd=llmd),
        clock=clock or WallClock(),
        profiles=load_planner_profiles(settings),
        dry_run=effective_dry_run,
        on_cycle=on_cycle,
        nodes=node_provisioner(settings, api, may_write=may_write),
    )
    # The scaler sizes MachineSets with the planner's GPU count, which needs the controller's profiles and policy.
    return dataclasses.replace(controller, scaler=KubeScaler(api, llmd=llmd, gpus_for=gpus_counter(controller)))


def gpus_counter(controller: Controller) -> Callable[[VariantSpec], int]:
    """A variant's GPUs per replica as the controller's planner counts them (its profiles, its current policy)."""
    return lambda spec: replica_gpus(spec, controller.profiles, controller.current_policy())


def build_metrics_only_controller(settings: Settings) -> Controller:
    """A dry-run controller without a cluster: variants and their replicas from Prometheus's labels
    (:mod:`autoscaler.signals.discover`); nothing is read from or written to Kubernetes."""
    prometheus, source = signal_sources(settings)
    labels = label_map(settings)
    return assemble_controller(
        settings,
        variants=PrometheusVariantSource(query=prometheus.query, labels=labels, namespace=settings.kube.namespace),
        signals=source,
        scaler=MetricsOnlyScaler(query=prometheus.query, labels=labels),
        clock=WallClock(),
        profiles=load_planner_profiles(settings),
        dry_run=True,
    )


def label_map(settings: Settings) -> LabelMap:
    labels = settings.labels
    return LabelMap(namespace=labels.namespace, model=labels.model, role=labels.role,
                    accelerator=labels.accelerator, pod=labels.pod, instance=labels.instance, engine=labels.engine)


def signal_sources(settings: Settings) -> tuple[PrometheusSignalSource, SignalSource]:
    """The Prometheus source, and the one the loop reads (with the gateway's queue when configured)."""
    prom = settings.prometheus
    signals = PrometheusSignalSource(
        url=prom.url,
        labels=label_map(settings),
        rate_window=prom.rate_window,
        cycle=f"{round(settings.controller.interval_s * 1000)}ms",  # swinging gauges are smoothed over a cycle
        timeout_s=prom.timeout_s,
        staleness_s=prom.staleness_s,
        metric_names=prom.metric_names,
        latency_quantiles=prom.latency_quantiles,
        warmup_s=prom.warmup_s,
        max_parallel=prom.max_parallel_queries,
        budget_s=prom.collect_budget_s,
        heavy_timeout_s=prom.heavy_timeout_s,
        recorded=prom.recording_rules,
        http=HttpOptions(
            ca_file=prom.ca_file, cert_file=prom.cert_file, key_file=prom.key_file,
            insecure_skip_verify=prom.insecure_skip_verify, bearer_token_file=prom.bearer_token_file,
            basic_auth_username=prom.basic_auth_username, basic_auth_password_file=prom.basic_auth_password_file,
            headers=prom.headers, allow_insecure_http=prom.allow_insecure_http, retries=prom.retries,
            retry_backoff_s=prom.retry_backoff_s,
        ),
    )
    if not prom.gateway_queue_metric:
        return signals, signals
    return signals, GatewayQueueSource(signals, query=signals.query, metric=prom.gateway_queue_metric,
                                       model_label=prom.gateway_model_label)


def llmd_source(settings: Settings, api: client.ApiClient, *, may_write: Callable[[], bool],
                namespaces: tuple[str, ...] | None = None) -> LlmdVariantSource:
    """llm-d's ``llmd.ai`` VariantAutoscalings of this controller's shard (nothing when that CRD is not
    installed)."""
    if namespaces is None:
        namespaces = (settings.kube.namespace,) if settings.kube.namespace else ()
    return LlmdVariantSource(api, namespaces=namespaces, label_selector=settings.runtime.shard_label_selector,
                             may_write=may_write)


def assemble_controller(
    settings: Settings,
    *,
    variants: VariantSource,
    signals: SignalSource,
    scaler: Scaler,
    clock: Clock,
    profiles: Mapping[str, PerformanceProfile],
    dry_run: bool = False,
    on_cycle: Callable[[CycleReport], None] | None = None,
    nodes: NodeProvisioner | None = None,
) -> Controller:
    """The Controller the settings describe, on the given ports: the product (:func:`build_controller`) and the
    simulator's ``default`` (``autoscaler.sim.controlled``) both come from here, so they decide alike."""
    return Controller(
        variants=variants,
        signals=signals,
        scaler=scaler,
        policy=policy_source(settings),
        clock=clock,
        dry_run=dry_run,
        on_cycle=on_cycle,
        profiles=profiles,
        planner=planner_config(settings),
        nodes=nodes,
        calibration=settings.calibration.online() if settings.calibration.enabled else None,
        scratch_reference=scratch_reference() if settings.calibration.enabled else None,
    )


SCRATCH_REFERENCE = "llama-3.1-8b/h100"
"""The shipped profile whose shape a model and accelerator without a profile are learnt from."""


def scratch_reference() -> PerformanceProfile | None:
    """The shipped reference shape for learning an unprofiled variant from scratch; None when not shipped."""
    return default_profiles().get(SCRATCH_REFERENCE)


def node_provisioner(settings: Settings, api: client.ApiClient, *,
                     may_write: Callable[[], bool] | None = None) -> KubeNodePool | None:
    """The MachineSet provisioner when ``nodes.enabled``; None leaves nodes alone."""
    n = settings.nodes
    if not n.enabled:
        return None
    return KubeNodePool(api, accelerator_label=n.accelerator_label, machine_namespace=n.machine_namespace,
                        node_selector=n.node_selector, may_write=may_write or (lambda: True))


def policy_source(settings: Settings) -> PolicySet | Callable[[], PolicySet]:
    """The policy file through a reloading store, its fields over the settings' (field by field:
    :mod:`autoscaler.scaling_settings`), or the settings alone. A policy file that is bad at start-up is a
    configuration error (exit 2); a bad edit later keeps the last good policy."""
    layers = settings.layers()
    if settings.planner.policy_file is None:
        return layers.policy_set(source="settings")
    store = PolicyStore(settings.planner.policy_file, base=layers,
                        check=require_gateway_for_scale_to_zero(settings.prometheus.gateway_queue_metric))
    if not store.reload():
        assert store.error is not None
        raise store.error

    def current() -> PolicySet:
        store.reload()
        return store.current

    return current


def load_planner_profiles(settings: Settings) -> dict[str, PerformanceProfile]:
    if not settings.planner.predictive:
        return {}
    if settings.planner.models_dir is not None:
        return load_profiles(settings.planner.models_dir / "profiles")
    return default_profiles()


def planner_config(settings: Settings) -> PlannerConfig:
    p = settings.planner
    interval = settings.controller.interval_s
    return PlannerConfig(
        forecast=ForecastConfig(interval_s=interval, lead_time_s=max(p.forecast_lead_time_s, interval),
                                history_s=max(3 * 86400.0, p.forecast_lead_time_s + 2 * interval)),
        default_slo=settings.layers().slo(),
        backlog_drain_s=p.backlog_drain_s,
        predictive=p.predictive,
        nodes_on_demand=settings.nodes_on_demand(),
        admission_enforced=p.gateway_enforces_admission,
        # The admission ratio a cycle reports holds until the next cycle.
        admission=AdmissionConfig(interval_s=interval),
        rate_window_s=duration_s(settings.prometheus.rate_window),
    )
