"""Assemble a Controller on the real adapters from Settings (the only place that knows all of them)."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from autoscaler.config import Settings
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.ports import Clock, WallClock
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.plan import PlannerConfig
from autoscaler.core.policyset import PolicySet
from autoscaler.forecast import ForecastConfig
from autoscaler.kube.client import KubeScaler, KubeVariantSource, load_api_client
from autoscaler.kube.nodepool import KubeNodePool
from autoscaler.perf.capacity import SloTargets
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles, load_profiles
from autoscaler.policy.store import PolicyStore
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from autoscaler.signals.transport import HttpOptions

__all__ = ["build_controller", "load_planner_profiles", "node_provisioner", "planner_config", "policy_source"]


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
    labels, prom = settings.labels, settings.prometheus
    signals = PrometheusSignalSource(
        url=prom.url,
        labels=LabelMap(namespace=labels.namespace, model=labels.model, role=labels.role,
                        accelerator=labels.accelerator, pod=labels.pod, instance=labels.instance,
                        engine=labels.engine),
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
    return Controller(
        variants=KubeVariantSource(api, namespace=settings.kube.namespace),
        signals=signals,
        scaler=KubeScaler(api),
        policy=policy_source(settings),
        clock=clock or WallClock(),
        dry_run=settings.controller.dry_run if dry_run is None else dry_run,
        on_cycle=on_cycle,
        profiles=load_planner_profiles(settings),
        planner=planner_config(settings),
        nodes=node_provisioner(settings, api, may_write=may_write),
        calibration=settings.calibration.online() if settings.calibration.enabled else None,
    )


def node_provisioner(settings: Settings, api: client.ApiClient, *,
                     may_write: Callable[[], bool] | None = None) -> KubeNodePool | None:
    """The MachineSet provisioner when ``nodes.enabled``; None leaves nodes alone."""
    n = settings.nodes
    if not n.enabled:
        return None
    return KubeNodePool(api, accelerator_label=n.accelerator_label, machine_namespace=n.machine_namespace,
                        node_selector=n.node_selector, may_write=may_write or (lambda: True))


def policy_source(settings: Settings) -> ScalingPolicy | Callable[[], PolicySet]:
    """The policy file through a reloading store, or the thresholds of the settings. A policy file that is bad
    at start-up is a configuration error (exit 2); a bad edit later keeps the last good policy."""
    if settings.planner.policy_file is None:
        return settings.scaling_policy()
    store = PolicyStore(settings.planner.policy_file)
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
        default_slo=SloTargets(ttft_s=p.slo_ttft_s, itl_s=p.slo_itl_s, percentile=p.slo_percentile),
        backlog_drain_s=p.backlog_drain_s,
        predictive=p.predictive,
        nodes_on_demand=settings.nodes_on_demand(),
        admission_enforced=p.gateway_enforces_admission,
    )
