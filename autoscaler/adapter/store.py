"""The latest decision per variant, as the adapter serves it, with the time it was made.

The controller hands every :class:`~autoscaler.controller.loop.CycleReport` to :meth:`DecisionStore.record`
(its ``on_cycle`` hook); the HTTP server calls :meth:`DecisionStore.lookup` from many threads. A value older
than ``max_age_s`` is never served: the lookup fails with :class:`ValueUnavailable` (HTTP 503), which the HPA
treats as "metric unavailable" and so holds the replicas, rather than acting on an old number.

    store = DecisionStore(max_age_s=3 * interval_s, clock=WallClock())
    controller = Controller(..., on_cycle=store.record)
    store.lookup(namespace="llm", metric="variant_desired_replicas", selector=parse_selector("variant=decode"))

Errors, all :class:`MetricError` (an :class:`~autoscaler.errors.AutoscalerError`) carrying an HTTP status:

    MetricError
     ├── UnknownMetric       404  the metric name is not in the catalog
     ├── NoMatchingVariant   404  no variant in the namespace matches the selector
     └── ValueUnavailable    503  no decision yet, the decision is stale, or the value was not computed
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from autoscaler.adapter.catalog import METRICS_BY_NAME, MetricSource, metric_values, variant_labels
from autoscaler.adapter.selectors import Selector
from autoscaler.controller.loop import CycleReport
from autoscaler.controller.ports import Clock
from autoscaler.core.types import VariantRef
from autoscaler.errors import AutoscalerError

__all__ = [
    "DecisionStore",
    "ExternalValue",
    "MetricError",
    "NoMatchingVariant",
    "UnknownMetric",
    "ValueUnavailable",
    "VariantValues",
]


class MetricError(AutoscalerError):
    """An external-metric lookup that cannot be answered with values; ``status`` and ``reason`` are what the
    Kubernetes ``Status`` answer carries."""

    status = 500
    reason = "InternalError"


class UnknownMetric(MetricError):
    status = 404
    reason = "NotFound"


class NoMatchingVariant(MetricError):
    status = 404
    reason = "NotFound"


class ValueUnavailable(MetricError):
    status = 503
    reason = "ServiceUnavailable"


@dataclass(frozen=True, slots=True)
class VariantValues:
    """What one decision says about one variant: its selector labels and metric values, and when."""

    ref: VariantRef
    labels: Mapping[str, str]
    values: Mapping[str, float]
    decided_at: float  # seconds since the epoch, the start of the cycle that decided

    def __post_init__(self) -> None:
        # Read-only views: entries are shared between threads without copying.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


@dataclass(frozen=True, slots=True)
class ExternalValue:
    """One item of an ExternalMetricValueList."""

    metric: str
    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass
class DecisionStore:
    """Thread-safe: one writer (the controller) replaces an immutable snapshot; readers take no lock."""

    max_age_s: float
    clock: Clock
    _entries: Mapping[VariantRef, VariantValues] = field(default_factory=dict)
    _sorted: tuple[VariantValues, ...] = ()  # _entries' values in ref order, rebuilt on write (reads are hot)
    _last_cycle_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")

    def record(self, report: CycleReport) -> None:
        """Take the decisions of one cycle.

        A variant whose decision failed this cycle keeps its previous values, which then age into
        staleness; a variant no longer listed is forgotten, unless listing itself failed (then nothing is
        known and everything is kept, to go stale).
        """
        fresh = [
            VariantValues(ref=o.spec.ref, labels=variant_labels(o.spec),
                          values=metric_values(MetricSource(o.decision, o.signals, o.spec.role,
                                                            report.outlooks.get(o.spec.model))),
                          decided_at=report.started_at)
            for o in report.outcomes if o.decision is not None
        ]
        listing_failed = not report.outcomes and bool(report.errors)
        live = None if listing_failed else {o.spec.ref for o in report.outcomes}
        self.put(fresh, live=live, cycle_at=report.started_at)

    def put(self, entries: Iterable[VariantValues], *, live: Iterable[VariantRef] | None = None,
            cycle_at: float | None = None) -> None:
        """Replace the entries of ``entries``' variants; when ``live`` is given, forget every other variant
        not in it. ``cycle_at`` marks a completed cycle (the "no decision yet" state ends)."""
        with self._lock:
            merged = dict(self._entries)
            if live is not None:
                keep = set(live)
                merged = {ref: entry for ref, entry in merged.items() if ref in keep}
            for entry in entries:
                merged[entry.ref] = entry
            self._entries = MappingProxyType(merged)
            self._sorted = tuple(sorted(merged.values(), key=lambda e: e.ref))
            if cycle_at is not None:
                self._last_cycle_at = cycle_at

    def entries(self) -> tuple[VariantValues, ...]:
        return self._sorted

    @property
    def last_cycle_at(self) -> float | None:
        return self._last_cycle_at

    def lookup(self, *, namespace: str, metric: str, selector: Selector) -> tuple[ExternalValue, ...]:
        """The values of ``metric`` for every variant of ``namespace`` matching ``selector``, one item per
        variant; all or nothing: one stale or missing value fails the whole answer, because the HPA sums the
        items and a partial sum would be a number nobody decided."""
        if metric not in METRICS_BY_NAME:
            raise UnknownMetric(f"external metric {metric!r} is not served; known: {sorted(METRICS_BY_NAME)}")
        if self._last_cycle_at is None:
            raise ValueUnavailable(f"external metric {metric!r}: no decision yet (the controller has not "
                                   "completed a cycle)")
        now = self.clock.now()
        matched = [e for e in self.entries() if e.ref.namespace == namespace and selector.matches(e.labels)]
        if not matched:
            raise NoMatchingVariant(f"external metric {metric!r}: no variant in namespace {namespace!r} "
                                    "matches the selector")
        items = []
        for entry in matched:
            age = now - entry.decided_at
            if age > self.max_age_s:
                raise ValueUnavailable(f"external metric {metric!r}: the decision for {entry.ref} is {age:.0f}s "
                                       f"old (limit {self.max_age_s:g}s); not serving a stale value")
            if metric not in entry.values:
                raise ValueUnavailable(f"external metric {metric!r}: no value for {entry.ref} in its latest "
                                       "decision (not computed, or its signals were not fresh)")
            items.append(ExternalValue(metric=metric, labels=entry.labels, value=entry.values[metric],
                                       timestamp=entry.decided_at))
        return tuple(items)
