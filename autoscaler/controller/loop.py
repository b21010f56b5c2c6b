"""One control cycle: list variants, collect signals, decide (pure), actuate, report.

Failures are contained per variant: a variant whose target cannot be read or patched is reported and
skipped; the others go on. Nothing here decides anything: :func:`autoscaler.core.decide.decide` does.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler.controller.ports import Clock, Scaler, SignalSource, VariantSource
from autoscaler.core.behavior import Recommendation
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.types import Decision, Freshness, VariantRef, VariantSignals, VariantSpec
from autoscaler.errors import AutoscalerError
from autoscaler.logs import get_logger

__all__ = ["Controller", "CycleReport", "VariantOutcome"]


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    spec: VariantSpec
    signals: VariantSignals | None
    decision: Decision | None
    applied: bool  # the scale was patched (False in dry-run, when unchanged, or on error)
    error: str = ""


@dataclass(frozen=True, slots=True)
class CycleReport:
    cycle: int
    started_at: float
    duration_s: float
    outcomes: tuple[VariantOutcome, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def scaled(self) -> int:
        return sum(1 for o in self.outcomes if o.applied)


@dataclass
class Controller:
    variants: VariantSource
    signals: SignalSource
    scaler: Scaler
    policy: ScalingPolicy
    clock: Clock
    dry_run: bool = False
    on_cycle: Callable[[CycleReport], None] | None = None
    _history: dict[VariantRef, tuple[Recommendation, ...]] = field(default_factory=dict)
    _cycle: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run_cycle(self) -> CycleReport:
        with self._lock:  # never two cycles at once, whatever the scheduler does
            self._cycle += 1
            report = self._run_cycle(self._cycle)
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    def _run_cycle(self, cycle: int) -> CycleReport:
        log = get_logger("controller", cycle=cycle)
        started_wall, started = self.clock.now(), time.perf_counter()
        errors: list[str] = []
        try:
            specs, spec_errors = self.variants.list_variants()
        except AutoscalerError as exc:
            log.error("list_variants_failed", error=str(exc))
            return CycleReport(cycle, started_wall, time.perf_counter() - started, errors=(str(exc),))
        for err in spec_errors:
            log.warning("variant_spec_invalid", error=str(err))
            errors.append(str(err))

        now = self.clock.now()
        try:
            signals = self.signals.collect(specs, now=now)
        except AutoscalerError as exc:  # a source should not raise, but unknown is the safe reading if it does
            log.error("signals_failed", error=str(exc))
            signals = {s: VariantSignals.unknown(f"collection failed: {exc}") for s in specs}

        outcomes = [self._handle(spec, signals.get(spec) or VariantSignals.unknown("no entry"), now) for spec in specs]
        # Forget history of variants that no longer exist.
        live = {s.ref for s in specs}
        for ref in list(self._history):
            if ref not in live:
                del self._history[ref]

        report = CycleReport(cycle, started_wall, time.perf_counter() - started, tuple(outcomes),
                             tuple(errors) + tuple(o.error for o in outcomes if o.error))
        log.info("cycle", duration_ms=round(report.duration_s * 1000, 1), variants=len(specs),
                 scaled=report.scaled, errors=len(report.errors), dry_run=self.dry_run)
        return report

    def _handle(self, spec: VariantSpec, sig: VariantSignals, now: float) -> VariantOutcome:
        vlog = get_logger("controller", variant=str(spec.ref), role=spec.role.value, cycle=self._cycle)
        try:
            current = self.scaler.current_replicas(spec)
        except AutoscalerError as exc:
            vlog.error("read_replicas_failed", error=str(exc))
            return VariantOutcome(spec, sig, None, False, str(exc))

        if sig.freshness is not Freshness.FRESH:
            vlog.warning("signals_unavailable", freshness=sig.freshness.value, note=sig.note, replicas=current)
        decision, self._history[spec.ref] = decide(
            spec=spec, signals=sig, current=current, history=self._history.get(spec.ref, ()),
            policy=self.policy, now=now,
        )
        applied, error = False, ""
        dry = self.dry_run or spec.dry_run
        if decision.changed and dry:
            vlog.info("would_scale", current=current, desired=decision.desired, reason=decision.reason.value,
                      message=decision.message)
        elif decision.changed:
            try:
                self.scaler.scale(spec, decision.desired)
                applied = True
                vlog.info("scaled", current=current, desired=decision.desired, reason=decision.reason.value,
                          message=decision.message)
            except AutoscalerError as exc:
                error = str(exc)
                vlog.error("scale_failed", desired=decision.desired, error=error)
        else:
            vlog.debug("held", replicas=current, reason=decision.reason.value, freshness=sig.freshness.value,
                       message=decision.message)
        if not dry:
            try:
                self.scaler.write_status(spec, decision, scaled_at=now if applied else None)
            except AutoscalerError as exc:
                vlog.warning("status_write_failed", error=str(exc))
        return VariantOutcome(spec, sig, decision, applied, error)

    def run(self, *, interval_s: float, duration_s: float | None = None,
            stop: threading.Event | None = None) -> None:
        """Run cycles every ``interval_s`` until ``stop`` is set or ``duration_s`` has passed."""
        stop = stop or threading.Event()
        scheduler = BackgroundScheduler()
        # coalesce + one instance: a slow cycle delays the next rather than stacking them up.
        scheduler.add_job(self._safe_cycle, "interval", seconds=interval_s, max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.UTC))
        scheduler.start()
        try:
            stop.wait(timeout=duration_s)
        finally:
            scheduler.shutdown(wait=True)

    def _safe_cycle(self) -> None:
        try:
            self.run_cycle()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad cycle
            get_logger("controller").exception("cycle_crashed", error=str(exc))
