"""Assemble a Controller on the real adapters from Settings (the only place that knows all of them)."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from autoscaler.config import Settings
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.ports import Clock, WallClock
from autoscaler.kube.client import KubeScaler, KubeVariantSource, load_api_client
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap

__all__ = ["build_controller"]


def build_controller(
    settings: Settings,
    *,
    api_client: client.ApiClient | None = None,
    clock: Clock | None = None,
    dry_run: bool | None = None,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> Controller:
    api = api_client or load_api_client(settings.kube.kubeconfig, settings.kube.context)
    labels = settings.labels
    signals = PrometheusSignalSource(
        url=settings.prometheus.url,
        labels=LabelMap(namespace=labels.namespace, model=labels.model, role=labels.role,
                        accelerator=labels.accelerator),
        rate_window=settings.prometheus.rate_window,
        timeout_s=settings.prometheus.timeout_s,
        staleness_s=settings.prometheus.staleness_s,
    )
    return Controller(
        variants=KubeVariantSource(api, namespace=settings.kube.namespace),
        signals=signals,
        scaler=KubeScaler(api),
        policy=settings.scaling_policy(),
        clock=clock or WallClock(),
        dry_run=settings.controller.dry_run if dry_run is None else dry_run,
        on_cycle=on_cycle,
    )
