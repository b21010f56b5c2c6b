"""One control cycle: list variants, collect signals, decide (pure), actuate, report.

Failures are contained per variant: a variant whose target cannot be read or patched is reported and
skipped; the others go on. Nothing here decides anything: :func:`autoscaler.core.decide.decide` does.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler.controller.ports import Clock, Scaler, SignalSource, VariantSource
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.plan import (
    ModelOutlook,
    PlannerConfig,
    PlannerState,
    VariantObservation,
    plan_cycle,
    warm_start,
)
from autoscaler.core.policyset import PolicySet
from autoscaler.core.types import Condition, Decision, Freshness, VariantRef, VariantSignals, VariantSpec
from autoscaler.perf.profile import PerformanceProfile
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
    outlooks: Mapping[str, ModelOutlook] = field(default_factory=dict)
    """Per model: observed and forecast demand, mix, admission ratio (early rejection)."""
    conditions: tuple[Condition, ...] = ()

    @property
    def scaled(self) -> int:
        return sum(1 for o in self.outcomes if o.applied)


@dataclass
class Controller:
    """The loop over the ports. ``policy`` is a PolicySet, a callable returning the current one (a reloading
    PolicyStore), or a plain ScalingPolicy (saturation thresholds and behaviour only)."""

    variants: VariantSource
    signals: SignalSource
    scaler: Scaler
    policy: ScalingPolicy | PolicySet | Callable[[], PolicySet]
    clock: Clock
    dry_run: bool = False
    on_cycle: Callable[[CycleReport], None] | None = None
    profiles: Mapping[str, PerformanceProfile] = field(default_factory=dict)
    """Performance profiles by name; a variant with none is decided reactively."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    warm_start_s: float = 3600.0
    """At the first cycle, read this much history (when the signal source can) to warm the forecaster."""
    _state: PlannerState = field(default_factory=PlannerState)
    _warmed: bool = False
    _last_scaled: dict[VariantRef, float] = field(default_factory=dict)
    _cycle: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current_policy(self) -> PolicySet:
        policy = self.policy
        if isinstance(policy, ScalingPolicy):
            return PolicySet(saturation=policy.saturation, behavior=policy.behavior)
        if isinstance(policy, PolicySet):
            return policy
        return policy()

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

        observations: list[VariantObservation] = []
        failed: list[VariantOutcome] = []
        for spec in specs:
            sig = signals.get(spec) or VariantSignals.unknown("no entry")
            try:
                current = self.scaler.current_replicas(spec)
            except AutoscalerError as exc:
                get_logger("controller", variant=str(spec.ref), cycle=cycle).error("read_replicas_failed",
                                                                                    error=str(exc))
                failed.append(VariantOutcome(spec, sig, None, False, str(exc)))
                continue
            if sig.freshness is not Freshness.FRESH:
                get_logger("controller", variant=str(spec.ref), cycle=cycle).warning(
                    "signals_unavailable", freshness=sig.freshness.value, note=sig.note, replicas=current)
            observations.append(VariantObservation(spec=spec, signals=sig, current=current,
                                                   last_scaled_at=self._last_scaled.get(spec.ref)))

        if not self._warmed:
            self._warm_start(specs, now)
        plan, self._state = plan_cycle(observations=observations, state=self._state, profiles=self.profiles,
                                       policy=self.current_policy(), config=self.planner, now=now)
        outcomes = [self._apply(o, plan.decision(o.spec.ref), now) for o in observations] + failed
        live = {s.ref for s in specs}
        self._last_scaled = {r: t for r, t in self._last_scaled.items() if r in live}

        report = CycleReport(cycle, started_wall, time.perf_counter() - started, tuple(outcomes),
                             tuple(errors) + tuple(o.error for o in outcomes if o.error), plan.outlooks,
                             plan.conditions)
        for model, outlook in plan.outlooks.items():
            log.debug("model_outlook", model=model, observed_rps=outlook.observed_rps, demand_rps=outlook.demand_rps,
                      method=outlook.forecast_method, admission_ratio=round(outlook.admission_ratio, 3))
        log.info("cycle", duration_ms=round(report.duration_s * 1000, 1), variants=len(specs),
                 scaled=report.scaled, errors=len(report.errors), dry_run=self.dry_run)
        return report

    def _warm_start(self, specs: list[VariantSpec], now: float) -> None:
        """Once: history from the signal source, if it has any to give; any failure means starting cold."""
        self._warmed = True
        history = getattr(self.signals, "history", None)
        if history is None or not self.planner.predictive or self.warm_start_s <= 0 or not specs:
            return
        step = self.planner.forecast.interval_s
        try:
            series = history(specs, start=now - self.warm_start_s, end=now - step, step=step)
        except AutoscalerError as exc:
            get_logger("controller").warning("warm_start_failed", error=str(exc))
            return
        self._state = warm_start(state=self._state, histories=series, config=self.planner)
        get_logger("controller").info("warm_started", variants=len(series), seconds=self.warm_start_s)

    def _apply(self, obs: VariantObservation, decision: Decision | None, now: float) -> VariantOutcome:
        spec, sig, current = obs.spec, obs.signals, obs.current
        vlog = get_logger("controller", variant=str(spec.ref), role=spec.role.value, cycle=self._cycle)
        if decision is None:  # the planner decides every variant it is given; this is a bug guard
            return VariantOutcome(spec, sig, None, False, "no decision")
        applied, error = False, ""
        dry = self.dry_run or spec.dry_run
        if decision.changed and dry:
            vlog.info("would_scale", current=current, desired=decision.desired, reason=decision.reason.value,
                      message=decision.message)
        elif decision.changed:
            try:
                self.scaler.scale(spec, decision.desired)
                applied = True
                self._last_scaled[spec.ref] = now
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
