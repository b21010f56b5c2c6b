"""The HPA external-metrics adapter: serves the controller's decisions as ``external.metrics.k8s.io/v1beta1``.

Modules: ``selectors`` (label selectors), ``quantity`` (Kubernetes quantities), ``catalog`` (the metrics
served), ``store`` (latest decision per variant), ``documents`` (JSON shapes), ``auth`` (authentication and
authorisation as aggregated API servers do them), ``api`` (routing without HTTP), ``server`` (HTTPS),
``tls`` (the serving context, reloaded on rotation), ``reload`` (re-reading the trust ConfigMap and the
certificate files), ``run`` (the ``variant-autoscaler adapter`` command).

The names below are the public surface; submodules import without pulling in the HTTP server.

Owns the external-metrics API and its TLS and auth. May import: certs, config, controller, core, errors, kube, logs,
metrics.
"""

from autoscaler.adapter.api import ExternalMetricsAPI, Response
from autoscaler.adapter.catalog import DESIRED_REPLICAS, METRICS, ExternalMetric
from autoscaler.adapter.selectors import Selector, SelectorError, parse_selector
from autoscaler.adapter.store import (
    DecisionStore,
    ExternalValue,
    MetricError,
    NoMatchingVariant,
    UnknownMetric,
    ValueUnavailable,
    VariantValues,
)

__all__ = [
    "DESIRED_REPLICAS",
    "METRICS",
    "DecisionStore",
    "ExternalMetric",
    "ExternalMetricsAPI",
    "ExternalValue",
    "MetricError",
    "NoMatchingVariant",
    "Response",
    "Selector",
    "SelectorError",
    "UnknownMetric",
    "ValueUnavailable",
    "VariantValues",
    "parse_selector",
]
