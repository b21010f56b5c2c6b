"""One control cycle: list variants, collect signals, decide (pure), actuate, report.

Failures are contained per variant: a variant whose target cannot be read or patched is reported and
skipped; the others go on. Nothing here decides anything: :func:`autoscaler.core.decide.decide` does.

With a :class:`NodeProvisioner`, variants on accelerators whose MachineSets it manages are scaled through
the node plan (:func:`autoscaler.core.nodes.plan_nodes`), in its order: nodes added, pods scaled down, pods
scaled up, empty nodes removed. When the pools cannot be read, the cycle scales as it would without one.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from apscheduler.schedulers.background import BackgroundScheduler
from structlog.typing import FilteringBoundLogger

from autoscaler.controller.ports import (
    Clock,
    NodeExecution,
    NodeProvisioner,
    Scaler,
    SignalSource,
    VariantInsight,
    VariantPlacement,
    VariantSource,
)
from autoscaler.core.behavior import Recommendation
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.fleet import held
from autoscaler.core.nodes import NodePlan, PodDemand, ScaleMachineSet, ScaleVariant, plan_nodes
from autoscaler.core.plan import (
    ModelOutlook,
    Plan,
    PlannerConfig,
    PlannerState,
    VariantObservation,
    plan_cycle,
    replica_gpus,
    resolve_profile,
    warm_start,
)
from autoscaler.core.policyset import PolicySet
from autoscaler.core.screen import screened
from autoscaler.core.types import (
    Condition,
    Decision,
    Freshness,
    ReplicaCounts,
    Role,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import ActuationError, AutoscalerError
from autoscaler.logs import get_logger
from autoscaler.perf.calibration import Stage
from autoscaler.perf.online import (
    CalibrationReport,
    OnlineCalibration,
    OnlineSettings,
    calibrated_profiles,
    learnt_profiles,
    observe,
    scratch_prior,
)
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "Controller",
    "CycleReport",
    "NodeOutcome",
    "VariantOutcome",
    "pod_demands",
    "seed_histories",
    "variant_insight",
]


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    spec: VariantSpec
    signals: VariantSignals | None
    decision: Decision | None
    applied: bool  # the scale was patched (False in dry-run, when unchanged, or on error)
    error: str = ""


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """The cycle's node plan and how far it got (``plan.actions[:done]`` were carried out)."""

    plan: NodePlan
    done: int = 0  # 0 in dry-run
    error: str = ""
    dry_run: bool = False

    @property
    def machineset_changes(self) -> tuple[ScaleMachineSet, ...]:
        return tuple(a for a in self.plan.actions[:self.done] if isinstance(a, ScaleMachineSet))


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
    nodes: NodeOutcome | None = None
    """The node plan, when a NodeProvisioner is set and the pools could be read."""
    calibrations: tuple[CalibrationReport, ...] = ()
    """Per profile and stage: how the profile compares with what the pods measure (online calibration)."""

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
    warm_start_s: float | None = 3600.0
    """At the first cycle, read this much history (when the signal source can) to warm the forecaster; None: as
    much as the forecaster keeps (``forecast.history_s``: days, for the daily season). One hour by default: days
    took 2.5 minutes of CPU on a 2-core machine before a new controller could act (issue 14 is open for a cheap
    days-long warm start)."""
    nodes: NodeProvisioner | None = None
    """GPU MachineSets planned with the pods; None: nodes are someone else's business."""
    calibration: OnlineSettings | None = field(default_factory=OnlineSettings)
    """Online calibration of the profiles from the signals; None: plan with the profiles as written."""
    seed_histories: bool = True
    """Seed a variant seen for the first time with its current count (:func:`seed_histories`). Off for a
    one-shot recommendation: it has no history by nature, and seeded it could never show a scale-down."""
    scratch_reference: PerformanceProfile | None = None
    """With calibration: the shape a model and accelerator without a profile are learnt from (its scale comes from
    the pods); until both stages are learnt such a variant is decided reactively. None: they stay reactive."""
    _scratch: dict[str, PerformanceProfile] = field(default_factory=dict)
    _state: PlannerState = field(default_factory=PlannerState)
    _calibration: OnlineCalibration = field(default_factory=OnlineCalibration)
    _warmed: bool = False  # this process's first cycle has caught the forecaster up
    _warmed_until: float | None = None  # end of the history the forecaster was fed by a warm-up
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

    def warm(self) -> None:
        """Feed the forecaster the history it has not seen yet, without deciding anything. A standby calls this
        while it waits for the lease, so that its first cycle as leader reads only the last minute or so
        instead of the whole ``warm_start_s`` (which took 21-23 s of a takeover on a slow Prometheus)."""
        with self._lock:
            try:
                specs, _ = self.variants.list_variants()
            except AutoscalerError as exc:
                get_logger("controller").warning("standby_warm_failed", error=str(exc)[:300])
                return
            self._catch_up(specs, self.clock.now())

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
            sig = screened(sig)  # the planner screens too; here so that the log says what was dropped
            if sig.freshness is not Freshness.FRESH:
                get_logger("controller", variant=str(spec.ref), cycle=cycle).warning(
                    "signals_unavailable", freshness=sig.freshness.value, note=sig.note, replicas=current)
            elif unknown := [n for n in _DEMAND_SIGNALS if getattr(sig, n) is None]:
                get_logger("controller", variant=str(spec.ref), cycle=cycle).warning(
                    "signals_partial", unknown=unknown, note=sig.note, replicas=current,
                    effect="decided without them: never idle, never scaled to zero")
            observations.append(VariantObservation(spec=spec, signals=sig, current=current,
                                                   replicas=self._replica_counts(spec),
                                                   last_scaled_at=self._last_scaled.get(spec.ref)))

        if not self._warmed:
            self._warmed = True  # once: after this the cycles feed the forecaster (a failed read starts cold)
            self._catch_up(specs, now)
        if self.seed_histories:
            self._state = seed_histories(self._state, observations, now=now)
        policy = self.current_policy()
        # The profile each variant is planned with; calibration keeps the names, so it holds after it too.
        priors = {o.spec.ref: resolve_profile(o.spec, self.profiles, policy) for o in observations}
        try:
            profiles, calibrations = self._calibrate(observations, priors, now)
            plan, self._state = plan_cycle(observations=observations, state=self._state, profiles=profiles,
                                           policy=policy, config=self.planner, now=now)
        except Exception as exc:
            log.exception("planning_failed", error=str(exc))
            errors.append(f"planning failed: {type(exc).__name__}: {exc}")
            calibrations = ()
            plan = Plan(tuple(held(o.spec.ref, o.current, exc) for o in observations), {})
        decisions = {o.spec.ref: plan.decision(o.spec.ref) for o in observations}
        nodes: NodeOutcome | None = None
        by_plan: dict[VariantRef, str] = {}  # variants the node plan scaled ("") or could not (why)
        if self.nodes is not None:
            gpus = {o.spec.ref: replica_gpus(o.spec, self.profiles, policy) for o in observations}
            nodes, by_plan = self._run_node_plan(self.nodes, observations, decisions, gpus, log)
        reports = {(r.profile, r.stage): r for r in calibrations}
        outcomes = [self._apply(o, decisions[o.spec.ref], now, by_plan=by_plan.get(o.spec.ref),
                                insight=variant_insight(plan.outlooks.get(o.spec.model),
                                                        _calibration_of(o.spec, priors.get(o.spec.ref), reports)))
                    for o in observations] + failed
        live = {s.ref for s in specs}
        self._last_scaled = {r: t for r, t in self._last_scaled.items() if r in live}

        node_errors = (nodes.error,) if nodes is not None and nodes.error else ()
        report = CycleReport(cycle, started_wall, time.perf_counter() - started, tuple(outcomes),
                             tuple(errors) + node_errors + tuple(o.error for o in outcomes if o.error),
                             plan.outlooks, plan.conditions + (nodes.plan.conditions if nodes else ()), nodes,
                             calibrations)
        for model, outlook in plan.outlooks.items():
            log.debug("model_outlook", model=model, observed_rps=outlook.observed_rps, demand_rps=outlook.demand_rps,
                      method=outlook.forecast_method, admission_ratio=round(outlook.admission_ratio, 3))
        log.info("cycle", duration_ms=round(report.duration_s * 1000, 1), variants=len(specs),
                 scaled=report.scaled, errors=len(report.errors), dry_run=self.dry_run)
        return report

    def _calibrate(self, observations: Sequence[VariantObservation],
                   priors: Mapping[VariantRef, PerformanceProfile | None],
                   now: float) -> tuple[Mapping[str, PerformanceProfile], tuple[CalibrationReport, ...]]:
        """Learn from this cycle's signals; the profiles corrected where there is enough to fit, and a report
        per profile and stage. Each variant's signals teach the profile it is planned with."""
        if self.calibration is None or not (self.profiles or self.scratch_reference):
            return self.profiles, ()
        state = self._calibration
        for o in observations:
            profile = priors.get(o.spec.ref)
            if profile is None and self.scratch_reference is not None:
                # No profile for this model and accelerator: learn one from its pods, from a generic shape.
                profile = scratch_prior(model=o.spec.model, accelerator=o.spec.accelerator,
                                        reference=self.scratch_reference)
                self._scratch[profile.name] = profile
            if profile is not None:
                state = observe(state, profile=profile, role=o.spec.role, signals=o.signals, now=now,
                                settings=self.calibration)
        self._calibration = state
        fitted, reports = calibrated_profiles(state, profiles={**self._scratch, **self.profiles},
                                              settings=self.calibration)
        return learnt_profiles(state, fitted, reports), reports

    def _replica_counts(self, spec: VariantSpec) -> ReplicaCounts | None:
        """Where the target's pods stand, when the scaler can tell; unknown on failure (the planner then
        goes by the replica count alone, as it did before)."""
        read = getattr(self.scaler, "replica_counts", None)
        if read is None:
            return None
        try:
            return cast(ReplicaCounts | None, read(spec))
        except AutoscalerError as exc:
            get_logger("controller", variant=str(spec.ref)).warning("replica_counts_failed", error=str(exc))
            return None

    def _catch_up(self, specs: list[VariantSpec], now: float) -> None:
        """History from the signal source since the last warm-up (at most ``warm_start_s``), if it has any to
        give; a failure means going on with what the forecaster has."""
        history = getattr(self.signals, "history", None)
        span = self.warm_start_s if self.warm_start_s is not None else self.planner.forecast.history_s
        if history is None or not self.planner.predictive or span <= 0 or not specs:
            return
        step = self.planner.forecast.interval_s
        # Prometheus answers at most 11,000 points per series: a long span is read in pieces, oldest first. A
        # standby that warmed before reads only what came since.
        piece = (WARM_START_POINTS - 1) * step
        start, last = now - span, now - step
        if self._warmed_until is not None:
            start = max(start, self._warmed_until + step)
        if start > last:
            return
        first = start
        try:
            reads = []
            while start <= last:
                end = min(start + piece, last)
                reads.append(history(specs, start=start, end=end, step=step))
                start = end + step
        except AutoscalerError as exc:
            get_logger("controller").warning("warm_start_failed", error=str(exc))
            return
        merged = _joined(reads)
        if merged is None:
            get_logger("controller").warning("warm_start_failed", error="history pieces do not line up")
            return
        self._state = warm_start(state=self._state, histories=merged, config=self.planner)
        self._warmed_until = last
        get_logger("controller").info("warm_started", variants=len(merged), seconds=round(last - first + step, 1))

    def _run_node_plan(self, provisioner: NodeProvisioner, observations: Sequence[VariantObservation],
                       decisions: Mapping[VariantRef, Decision | None], gpus: Mapping[VariantRef, int],
                       log: FilteringBoundLogger) -> tuple[NodeOutcome, dict[VariantRef, str]]:
        """Plan and (unless dry-run) execute the node plan. Returns its outcome and, per variant the plan
        scales, "" when it was scaled or why it was not."""
        try:
            seen = provisioner.observe([o.spec for o in observations])
            demands = pod_demands(observations=observations, decisions=decisions, placements=seen.placements,
                                  accelerators={ms.accelerator for ms in seen.machinesets}, gpus=gpus)
            plan = plan_nodes(pods=demands, machinesets=seen.machinesets, nodes=seen.nodes)
        except (AutoscalerError, ValueError) as exc:  # ValueError: MachineSets the planner cannot pool
            log.error("node_plan_failed", error=str(exc))
            return NodeOutcome(NodePlan(()), error=f"node plan: {exc}"), {}
        for cond in plan.conditions:
            log.warning("node_condition", reason=cond.reason.value, accelerator=cond.subject,
                        message=cond.message)
        if self.dry_run:
            for action in plan.actions:
                if isinstance(action, ScaleMachineSet):
                    log.info("would_scale_machineset", **_machineset_fields(action))
            return NodeOutcome(plan, dry_run=True), {}
        targets = {o.spec.ref: o.spec.target for o in observations}
        try:
            result = provisioner.execute(plan, targets=targets)
        except AutoscalerError as exc:  # a provisioner should not raise; if it does, nothing is known done
            result = NodeExecution(0, str(exc))
        for action in plan.actions[:result.done]:
            if isinstance(action, ScaleMachineSet):
                log.info("machineset_scaled", **_machineset_fields(action))
        by_plan = {a.variant: "" for a in plan.actions[:result.done] if isinstance(a, ScaleVariant)}
        if result.done < len(plan.actions):
            log.error("node_plan_stopped", done=result.done, actions=len(plan.actions), error=result.error)
            stopped = f"not scaled: the node plan stopped before this step: {result.error}"
            by_plan |= {a.variant: stopped for a in plan.actions[result.done:] if isinstance(a, ScaleVariant)}
        return NodeOutcome(plan, result.done, f"node plan: {result.error}" if result.error else ""), by_plan

    def _apply(self, obs: VariantObservation, decision: Decision | None, now: float, *,
               by_plan: str | None = None, insight: VariantInsight | None = None) -> VariantOutcome:
        """Scale and write status. ``by_plan``: the node plan scaled this variant ("") or failed to (why)."""
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
                if by_plan is None:
                    self.scaler.scale(spec, decision.desired)
                elif by_plan:
                    raise ActuationError(f"{spec.ref}: {by_plan}")
                applied = True
                self._last_scaled[spec.ref] = now
                vlog.info("scaled", current=current, desired=decision.desired, reason=decision.reason.value,
                          message=decision.message, node_plan=by_plan is not None)
            except AutoscalerError as exc:
                error = str(exc)
                vlog.error("scale_failed", desired=decision.desired, error=error)
        else:
            vlog.debug("held", replicas=current, reason=decision.reason.value, freshness=sig.freshness.value,
                       message=decision.message)
        if not dry:
            try:
                self.scaler.write_status(spec, decision, scaled_at=now if applied else None, insight=insight)
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


_SEED_AGE_S = 1e-3
_DEMAND_SIGNALS = ("running", "completions_per_s")
"""Optional signals without which a fresh variant is still decided, but never read as idle."""


WARM_START_POINTS = 10_000
"""Points per series in one history read (Prometheus refuses more than 11,000)."""


@dataclass(frozen=True, slots=True)
class _JoinedSeries:
    timestamps: tuple[float, ...]
    completions_per_s: tuple[float | None, ...]
    prompt_tokens_mean: tuple[float | None, ...]
    generation_tokens_mean: tuple[float | None, ...]


def _joined(reads: Sequence[Mapping[VariantSpec, Any]]) -> dict[VariantSpec, Any] | None:
    """Consecutive history reads joined per variant (one read is returned as it is); None when the pieces do not
    cover the same variants."""
    if len(reads) == 1:
        return dict(reads[0])
    if not reads or any(set(r) != set(reads[0]) for r in reads):
        return None
    return {spec: _JoinedSeries(*(tuple(v for r in reads for v in getattr(r[spec], name))
                                  for name in ("timestamps", "completions_per_s", "prompt_tokens_mean",
                                               "generation_tokens_mean")))
            for spec in reads[0]}


def seed_histories(state: PlannerState, observations: Sequence[VariantObservation], *,
                   now: float) -> PlannerState:
    """A variant this process has no history for (first cycle after a start, a crash or a leader change) gets
    its current count as if recommended now: the scale-down window must then pass before it shrinks, as it would
    have in the process that scaled it. Without this a new leader could scale everything down at once."""
    missing = [o for o in observations if o.spec.ref not in state.histories]
    if not missing:
        return state
    seeded = dict(state.histories)
    for o in missing:  # an instant before now: a zero-length scale-up window does not hold on it
        seeded[o.spec.ref] = (Recommendation(at=now - _SEED_AGE_S, replicas=o.current),)
    return replace(state, histories=seeded)


def _calibration_of(spec: VariantSpec, profile: PerformanceProfile | None,
                    reports: Mapping[tuple[str, Stage], CalibrationReport]) -> CalibrationReport | None:
    if profile is None:
        return None
    stage = Stage.PREFILL if spec.role is Role.PREFILL else Stage.DECODE
    return reports.get((profile.name, stage))


def variant_insight(outlook: ModelOutlook | None,
                    calibration: CalibrationReport | None = None) -> VariantInsight | None:
    """The model's outlook as one of its variants' status shows it (the forecast is the model's, at entry),
    with the calibration of the profile stage the variant runs."""
    if outlook is None and calibration is None:
        return None
    insight = VariantInsight()
    if outlook is not None:
        per_s, mean_in, mean_out = outlook.demand_rps, outlook.mean_input_tokens, outlook.mean_output_tokens
        insight = VariantInsight(
            forecast_horizon_s=outlook.horizon_s,
            forecast_rps=per_s,
            forecast_prompt_tokens_per_s=per_s * mean_in if per_s is not None and mean_in is not None else None,
            forecast_generation_tokens_per_s=per_s * mean_out if per_s is not None and mean_out is not None
            else None,
            admission_ratio=outlook.admission_ratio,
        )
        if outlook.admission is not None:
            insight = replace(insight, rejection_threshold=outlook.admission.reject_threshold,
                              predicted_prefill_load=outlook.admission.prefill_load,
                              predicted_decode_load=outlook.admission.decode_load_at_horizon)
    if calibration is not None:
        insight = replace(insight, profile=calibration.profile, calibration_samples=calibration.samples,
                          calibration_factor=calibration.factor,
                          calibration_relative_error=calibration.relative_error)
    return insight


def pod_demands(
    *, observations: Sequence[VariantObservation], decisions: Mapping[VariantRef, Decision | None],
    placements: Mapping[VariantRef, VariantPlacement], accelerators: Collection[str],
    gpus: Mapping[VariantRef, int],
) -> tuple[PodDemand, ...]:
    """The decided replicas as the node planner needs them: only variants with a placement, a decision and
    an accelerator some managed MachineSet provides. A dry-run variant will not change: it demands its own.
    ``gpus``: each variant's GPUs per replica as the planner counts them."""
    demands = []
    for obs in observations:
        ref = obs.spec.ref
        place, decision = placements.get(ref), decisions.get(ref)
        if place is None or decision is None or obs.spec.accelerator not in accelerators:
            continue
        desired = obs.current if obs.spec.dry_run else decision.desired
        demands.append(PodDemand(ref, obs.spec.accelerator, gpus[ref], obs.current, desired,
                                 place.unschedulable))
    return tuple(demands)


def _machineset_fields(action: ScaleMachineSet) -> dict[str, Any]:
    return {"machineset": f"{action.namespace}/{action.machineset}", "was": action.from_replicas,
            "replicas": action.to_replicas, "reason": action.reason.value, "message": action.message,
            "delete_machines": list(action.delete_machines)}
