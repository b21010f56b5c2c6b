"""The controller's own Prometheus metrics, on a registry of their own, served by :func:`serve_metrics`.

Every name starts with ``variant_autoscaler_`` and follows the Prometheus conventions (base units, ``_total``
on counters, ``_seconds`` for durations, ``_ratio`` for shares, a state-set gauge for an enumeration, an
``_info`` gauge for a name). Per-variant series carry ``namespace`` and ``variant`` and disappear when the
variant does; per-model series (``model``: forecast, admission) and per-profile series (``profile``,
``stage``: online calibration) are set afresh each cycle, and a value the cycle did not compute is removed
rather than left at an old number.

    metrics = ControllerMetrics()
    controller = Controller(..., on_cycle=metrics.record_cycle)
    server, thread = serve_metrics(9100, metrics=metrics)

Beside them, WVA's output metrics under WVA's names and labels, so that the HPAs and KEDA ScaledObjects
llm-d and KServe generate (external metric ``wva_desired_replicas``, selector on ``variant_name``) work
unchanged: ``wva_desired_replicas``, ``wva_current_replicas``, ``wva_desired_ratio`` (labels
``variant_name``, ``namespace``, ``accelerator_type``; the ratio is the desired count itself when the
current one is 0) and ``wva_replica_scaling_total`` (``variant_name``, ``namespace``, ``direction``,
``reason``). Source: llm-d/llm-d-workload-variant-autoscaler internal/constants/metrics.go and
internal/metrics/metrics.go.

The Grafana dashboard in manifests/grafana/ plots these names (tests/core/test_metrics.py checks it uses
only names defined here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from threading import Lock, Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from autoscaler.controller.loop import CycleReport, VariantOutcome
from autoscaler.core.plan import ModelOutlook
from autoscaler.core.types import Freshness, VariantRef
from autoscaler.perf.online import CalibrationReport

__all__ = ["DEFAULT_METRICS", "PREFIX", "ControllerMetrics", "error_kind", "record_cycle", "serve_metrics"]

PREFIX = "variant_autoscaler_"

# Cycle durations: one Prometheus query per signal plus one scale read per variant; 5 ms .. 60 s.
_CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Adapter requests are answered from memory: sub-millisecond to a SubjectAccessReview round trip.
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_VARIANT = ("namespace", "variant")
_VARIANT_DESCRIBED = ("namespace", "variant", "model", "role", "accelerator")
_WVA_VARIANT = ("variant_name", "namespace", "accelerator_type")


def error_kind(outcome: VariantOutcome) -> str:
    """The kind of a variant's error: its replicas could not be read (no decision), or the scale failed."""
    return "read_replicas" if outcome.decision is None else "actuation"


def _cycle_error_kind(message: str) -> str:
    # CycleReport keeps cycle-level errors as text: spec problems are prefixed by the object they are about
    # (autoscaler.kube.api.to_variant_spec); the only other cycle-level error is a failed listing.
    return "variant_spec" if message.startswith("VariantAutoscaling ") else "list_variants"


class ControllerMetrics:
    """The metric families and the code that updates them from a cycle report. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycle_duration = Histogram(
            f"{PREFIX}cycle_duration_seconds", "Wall time of one control cycle.", buckets=_CYCLE_BUCKETS,
            registry=r)
        self.cycles = Counter(f"{PREFIX}cycles_total", "Control cycles run.", registry=r)
        self.cycle_errors = Counter(
            f"{PREFIX}cycle_errors_total",
            "Errors met in control cycles, by kind: list_variants, variant_spec, read_replicas, actuation.",
            ["kind"], registry=r)
        self.last_cycle = Gauge(f"{PREFIX}last_cycle_timestamp_seconds",
                                "Unix time at which the last control cycle started.", registry=r)
        self.variants = Gauge(f"{PREFIX}variants", "Variants managed in the last cycle.", registry=r)
        self.desired = Gauge(f"{PREFIX}desired_replicas", "Replicas decided for the variant in the last cycle.",
                             _VARIANT_DESCRIBED, registry=r)
        self.current = Gauge(f"{PREFIX}current_replicas",
                             "Replicas of the variant's scale target when the last decision was made.",
                             _VARIANT_DESCRIBED, registry=r)
        self.freshness = Gauge(f"{PREFIX}signal_freshness",
                               "1 for the freshness state of the variant's signals in the last cycle, 0 for "
                               "the others (fresh, stale, missing).", (*_VARIANT, "state"), registry=r)
        self.decisions = Counter(f"{PREFIX}decisions_total", "Decisions, by the reason that set the value.",
                                 (*_VARIANT, "reason"), registry=r)
        self.scale_actions = Counter(
            f"{PREFIX}scale_actions_total",
            "Replica changes decided, by direction (up, down) and result (applied, dry_run, failed).",
            (*_VARIANT, "direction", "result"), registry=r)
        # WVA's names and labels (see the module docstring).
        self.wva_desired = Gauge("wva_desired_replicas", "Desired number of replicas for each variant",
                                 _WVA_VARIANT, registry=r)
        self.wva_current = Gauge("wva_current_replicas", "Current number of replicas for each variant",
                                 _WVA_VARIANT, registry=r)
        self.wva_ratio = Gauge("wva_desired_ratio", "Ratio of the desired number of replicas and the current "
                               "number of replicas for each variant", _WVA_VARIANT, registry=r)
        self.wva_scaling = Counter("wva_replica_scaling", "Total number of replica scaling operations",
                                   ("variant_name", "namespace", "direction", "reason"), registry=r)
        self.adapter_requests = Counter(
            f"{PREFIX}adapter_requests_total", "Requests to the external metrics adapter, by endpoint and code.",
            ["endpoint", "code"], registry=r)
        self.adapter_request_duration = Histogram(
            f"{PREFIX}adapter_request_duration_seconds", "Time to answer an external metrics adapter request.",
            ["endpoint"], buckets=_REQUEST_BUCKETS, registry=r)
        self.model_demand = Gauge(f"{PREFIX}model_demand_requests_per_second",
                                  "Requests/s the model's variants are sized for (forecast upper quantile over the "
                                  "provisioning lead time plus the waiting backlog).", ["model"], registry=r)
        self.model_observed = Gauge(f"{PREFIX}model_observed_requests_per_second",
                                    "Requests/s observed where the model's requests enter.", ["model"], registry=r)
        self.forecast_horizon = Gauge(f"{PREFIX}model_forecast_horizon_seconds",
                                      "Provisioning lead time the model's demand was forecast over.", ["model"],
                                      registry=r)
        self.forecast_error = Gauge(f"{PREFIX}model_forecast_error_ratio",
                                    "Recent relative error of the model's arrival-rate forecast (back-test of the "
                                    "method in use; 0.1 = 10 %).", ["model"], registry=r)
        self.forecast_method = Gauge(f"{PREFIX}model_forecast_method_info",
                                     "1 for the forecast method in use for the model.", ["model", "method"],
                                     registry=r)
        self.mean_input_tokens = Gauge(f"{PREFIX}model_mean_input_tokens",
                                       "Mean prompt length of the model's requests.", ["model"], registry=r)
        self.mean_output_tokens = Gauge(f"{PREFIX}model_mean_output_tokens",
                                        "Mean generated length of the model's requests.", ["model"], registry=r)
        self.admission_ratio = Gauge(f"{PREFIX}admission_ratio",
                                     "Share of the model's new requests to admit (early rejection, cost bounds).",
                                     ["model"], registry=r)
        self.predicted_prefill_load = Gauge(f"{PREFIX}predicted_prefill_load",
                                            "Predicted TTFT of a request arriving now over the TTFT SLO (1 = at "
                                            "the SLO).", ["model"], registry=r)
        self.predicted_decode_load = Gauge(f"{PREFIX}predicted_decode_load",
                                           "Predicted decode step time over the ITL SLO when a request admitted "
                                           "now reaches decode (1 = at the SLO).", ["model"], registry=r)
        self.rejection_threshold = Gauge(f"{PREFIX}rejection_threshold",
                                         "Predicted load (latency over its SLO) above which the gateway rejects "
                                         "the model's new requests.", ["model"], registry=r)
        calibration = ("profile", "stage")
        self.calibration_factor = Gauge(f"{PREFIX}calibration_factor",
                                        "Observed over profile-predicted latency at the operating point (1 = the "
                                        "profile is right).", calibration, registry=r)
        self.calibration_samples = Gauge(f"{PREFIX}calibration_samples",
                                         "Samples behind the profile stage's online calibration.", calibration,
                                         registry=r)
        self.calibration_error = Gauge(f"{PREFIX}calibration_relative_error_ratio",
                                       "Mean |observed - calibrated prediction| / observed over the samples.",
                                       calibration, registry=r)
        self.calibration_coefficient = Gauge(f"{PREFIX}calibration_coefficient",
                                             "A latency-model coefficient in use after calibration (units as in "
                                             "the profile).", (*calibration, "coefficient"), registry=r)
        self._model_gauges = (self.model_demand, self.model_observed, self.forecast_horizon, self.forecast_error,
                              self.forecast_method, self.mean_input_tokens, self.mean_output_tokens,
                              self.admission_ratio, self.predicted_prefill_load, self.predicted_decode_load,
                              self.rejection_threshold)
        self._calibration_gauges = (self.calibration_factor, self.calibration_samples, self.calibration_error,
                                    self.calibration_coefficient)
        self._per_cycle = {g: _SetEachCycle(g) for g in (*self._model_gauges, *self._calibration_gauges)}
        self._labels: dict[VariantRef, tuple[str, ...]] = {}
        # Every per-variant child created, so that a variant's series can be removed when it goes away.
        self._children: dict[VariantRef, set[tuple[Any, tuple[str, ...]]]] = {}
        self._lock = Lock()

    def record_cycle(self, report: CycleReport) -> None:
        """Update every metric from one cycle's report (use as the controller's ``on_cycle``)."""
        with self._lock:
            self._record_cycle(report)

    def _record_cycle(self, report: CycleReport) -> None:
        self.cycles.inc()
        self.cycle_duration.observe(report.duration_s)
        self.last_cycle.set(report.started_at)
        outcome_errors = {o.error for o in report.outcomes if o.error}
        for message in report.errors:
            if message not in outcome_errors:
                self.cycle_errors.labels(kind=_cycle_error_kind(message)).inc()
        listing_failed = not report.outcomes and bool(report.errors)
        if not listing_failed:
            self.variants.set(len(report.outcomes))
            self._forget({o.spec.ref for o in report.outcomes})
        for outcome in report.outcomes:
            self._record_variant(outcome)
        if not listing_failed:
            self._record_models(report.outlooks)
            self._record_calibrations(report.calibrations)

    def _record_models(self, outlooks: Mapping[str, ModelOutlook]) -> None:
        series: dict[Gauge, dict[tuple[str, ...], float | None]] = {g: {} for g in self._model_gauges}
        for model, o in outlooks.items():
            key = (model,)
            admission = o.admission
            series[self.model_demand][key] = o.demand_rps
            series[self.model_observed][key] = o.observed_rps
            series[self.forecast_horizon][key] = o.horizon_s
            series[self.forecast_error][key] = o.forecast_error
            if o.forecast_method:
                series[self.forecast_method][(model, o.forecast_method)] = 1.0
            series[self.mean_input_tokens][key] = o.mean_input_tokens
            series[self.mean_output_tokens][key] = o.mean_output_tokens
            series[self.admission_ratio][key] = o.computed_admission_ratio
            series[self.predicted_prefill_load][key] = admission.prefill_load if admission is not None else None
            series[self.predicted_decode_load][key] = admission.decode_load_at_horizon if admission is not None else None
            series[self.rejection_threshold][key] = admission.reject_threshold if admission is not None else None
        self._set_each_cycle(series)

    def _record_calibrations(self, reports: Iterable[CalibrationReport]) -> None:
        series: dict[Gauge, dict[tuple[str, ...], float | None]] = {g: {} for g in self._calibration_gauges}
        for c in reports:
            key = (c.profile, str(c.stage))
            series[self.calibration_factor][key] = c.factor
            series[self.calibration_samples][key] = float(c.samples)
            series[self.calibration_error][key] = c.relative_error
            for name, coefficient in c.coefficients.items():
                series[self.calibration_coefficient][(*key, name)] = coefficient
        self._set_each_cycle(series)

    def _set_each_cycle(self, series: Mapping[Gauge, Mapping[tuple[str, ...], float | None]]) -> None:
        for gauge, values in series.items():
            self._per_cycle[gauge].set(values)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """An :data:`autoscaler.adapter.server.RequestObserver`."""
        self.adapter_requests.labels(endpoint=endpoint, code=str(code)).inc()
        self.adapter_request_duration.labels(endpoint=endpoint).observe(seconds)

    def _record_variant(self, outcome: VariantOutcome) -> None:
        spec, decision = outcome.spec, outcome.decision
        ref = (spec.ref.namespace, spec.ref.name)
        described = (*ref, spec.model, spec.role.value, spec.accelerator)
        previous = self._labels.get(spec.ref)
        if previous is not None and previous != described:  # the spec changed model/role/accelerator
            self._remove_described(previous)
        self._labels[spec.ref] = described
        if outcome.error:
            self.cycle_errors.labels(kind=error_kind(outcome)).inc()
        children = self._children.setdefault(spec.ref, set())

        def child(family: Any, *labels: str) -> Any:
            children.add((family, labels))
            return family.labels(*labels)

        if outcome.signals is not None:
            for state in Freshness:
                child(self.freshness, *ref, state.value).set(1.0 if outcome.signals.freshness is state else 0.0)
        if decision is None:
            return
        child(self.desired, *described).set(decision.desired)
        child(self.current, *described).set(decision.current)
        wva = _wva_labels(described)
        child(self.wva_desired, *wva).set(decision.desired)
        child(self.wva_current, *wva).set(decision.current)
        child(self.wva_ratio, *wva).set(decision.desired / decision.current if decision.current
                                        else float(decision.desired))
        child(self.decisions, *ref, decision.reason.value).inc()
        if decision.changed:
            direction = "up" if decision.desired > decision.current else "down"
            result = "applied" if outcome.applied else ("failed" if outcome.error else "dry_run")
            child(self.scale_actions, *ref, direction, result).inc()
            if outcome.applied:
                child(self.wva_scaling, spec.ref.name, spec.ref.namespace, direction, decision.reason.value).inc()

    def _forget(self, live: Iterable[VariantRef]) -> None:
        keep = set(live)
        for ref in [r for r in self._labels if r not in keep]:
            del self._labels[ref]
            for family, labels in self._children.pop(ref, set()):
                _remove(family, labels)

    def _remove_described(self, described: tuple[str, ...]) -> None:
        ref = VariantRef(namespace=described[0], name=described[1])
        children = self._children.get(ref, set())
        for gauge in (self.desired, self.current):
            _remove(gauge, described)
            children.discard((gauge, described))
        for gauge in (self.wva_desired, self.wva_current, self.wva_ratio):
            _remove(gauge, _wva_labels(described))
            children.discard((gauge, _wva_labels(described)))


def _wva_labels(described: tuple[str, ...]) -> tuple[str, str, str]:
    namespace, name, _, _, accelerator = described
    return name, namespace, accelerator


class _SetEachCycle:
    """A gauge whose series are all set again every cycle: a series not set (or set to None or NaN: no sample)
    is removed, so that a model or profile that went away, or a value not computed, leaves no old number."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._live: set[tuple[str, ...]] = set()

    def set(self, series: Mapping[tuple[str, ...], float | None]) -> None:
        live = {labels for labels, value in series.items() if value is not None and not math.isnan(value)}
        for labels in self._live - live:
            _remove(self._gauge, labels)
        for labels in live:
            value = series[labels]
            assert value is not None
            self._gauge.labels(*labels).set(value)
        self._live = live


def _remove(family: Any, labels: tuple[str, ...]) -> None:
    try:
        family.remove(*labels)
    except KeyError:
        pass


DEFAULT_METRICS = ControllerMetrics()
"""The process's metrics; tests make their own :class:`ControllerMetrics` instead."""


def record_cycle(report: CycleReport, *, metrics: ControllerMetrics = DEFAULT_METRICS) -> None:
    metrics.record_cycle(report)


def serve_metrics(port: int, *, addr: str = "0.0.0.0", metrics: ControllerMetrics = DEFAULT_METRICS
                  ) -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; ``server.shutdown()`` stops it."""
    return start_http_server(port, addr=addr, registry=metrics.registry)
