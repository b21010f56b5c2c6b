"""The loop over in-memory ports (the seam the simulator also uses): failures stay with their variant."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autoscaler.controller.loop import Controller
from autoscaler.core.behavior import Behavior
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.types import (
    Decision,
    Freshness,
    ReplicaCounts,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import ActuationError, SignalError, SpecError


def spec(name: str, role: Role = Role.DECODE) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", name), model="m", role=role, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=1, max_replicas=10)


SATURATED = VariantSignals(freshness=Freshness.FRESH, waiting=40.0, running=10.0, kv_usage_mean=0.9)


@dataclass
class Variants:
    specs: list[VariantSpec]
    errors: list[SpecError] = field(default_factory=list)

    def list_variants(self):
        return list(self.specs), list(self.errors)


@dataclass
class Signals:
    by_spec: dict
    history_error: Exception | None = None
    history_calls: int = 0

    def collect(self, variants, *, now):
        return {v: self.by_spec.get(v, VariantSignals.unknown("none")) for v in variants}

    def history(self, variants, *, start, end, step):
        self.history_calls += 1
        if self.history_error:
            raise self.history_error
        return {}


@dataclass
class Scaler:
    replicas: dict
    broken_read: set = field(default_factory=set)
    broken_patch: set = field(default_factory=set)
    statuses: list = field(default_factory=list)

    def current_replicas(self, s):
        if s.ref.name in self.broken_read:
            raise ActuationError(f"{s.ref}: HTTP 404", status=404)
        return self.replicas[s.ref.name]

    def scale(self, s, n):
        if s.ref.name in self.broken_patch:
            raise ActuationError(f"{s.ref}: HTTP 403 forbidden", status=403)
        self.replicas[s.ref.name] = n

    def write_status(self, s, decision: Decision, *, scaled_at, insight=None):
        self.statuses.append((s.ref.name, decision.desired))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def controller(specs, scaler, signals=None, **kw) -> Controller:
    return Controller(variants=Variants(specs), signals=signals or Signals({s: SATURATED for s in specs}),
                      scaler=scaler, policy=ScalingPolicy(behavior=Behavior(max_step_up=1)), clock=Clock(), **kw)


def test_a_variant_whose_target_cannot_be_read_does_not_stop_the_others():
    a, b = spec("a"), spec("b")
    scaler = Scaler({"a": 1, "b": 1}, broken_read={"a"})
    report = controller([a, b], scaler).run_cycle()
    by_name = {o.spec.ref.name: o for o in report.outcomes}
    assert by_name["a"].decision is None and "404" in by_name["a"].error
    assert by_name["b"].applied and scaler.replicas["b"] == 2


def test_a_refused_patch_is_reported_and_the_loop_goes_on():
    a = spec("a")
    scaler = Scaler({"a": 1}, broken_patch={"a"})
    c = controller([a], scaler)
    first, second = c.run_cycle(), c.run_cycle()
    for report in (first, second):
        [o] = report.outcomes
        assert not o.applied and "403" in o.error and o.decision is not None and o.decision.desired == 2
    assert scaler.replicas["a"] == 1


def test_a_failed_history_read_starts_cold_once():
    a = spec("a")
    signals = Signals({a: SATURATED}, history_error=SignalError("query_range: connection refused"))
    c = controller([a], Scaler({"a": 1}), signals=signals)
    reports = [c.run_cycle() for _ in range(3)]
    assert signals.history_calls == 1
    assert all(r.outcomes[0].decision is not None for r in reports)


def test_invalid_specs_are_reported_without_stopping_the_cycle():
    a = spec("a")
    c = controller([a], Scaler({"a": 1}))
    c.variants.errors.append(SpecError("VariantAutoscaling ns/bad: spec: role: Input should be 'prefill'"))
    report = c.run_cycle()
    assert report.outcomes[0].applied
    assert any("ns/bad" in e for e in report.errors)


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_writes_neither_scale_nor_status(dry_run):
    a = spec("a")
    scaler = Scaler({"a": 1})
    controller([a], scaler, dry_run=dry_run).run_cycle()
    assert (scaler.replicas["a"], bool(scaler.statuses)) == ((1, False) if dry_run else (2, True))


IDLE_LOW = VariantSignals(freshness=Freshness.FRESH, waiting=0.0, running=1.0, kv_usage_mean=0.05, pods=8,
                          completions_per_s=0.5)


@pytest.mark.parametrize(("elapsed_s", "expected"), [
    pytest.param(0.0, 8, id="first-cycle-after-start-holds"),
    pytest.param(120.0, 8, id="within-the-scale-down-window-holds"),
    pytest.param(330.0, 7, id="after-the-window-scales-down-one-step"),
])
def test_a_new_controller_does_not_scale_down_before_its_window_passes(elapsed_s, expected):
    # A restart or a leader change loses the stabilisation history; the current count counts as recommended.
    a = spec("a")
    scaler = Scaler({"a": 8})
    ctl = Controller(variants=Variants([a]), signals=Signals({a: IDLE_LOW}), scaler=scaler,
                     policy=ScalingPolicy(behavior=Behavior(max_step_down=1, scale_down_window_s=300.0)),
                     clock=Clock())
    ctl.run_cycle()
    if elapsed_s:
        ctl.clock.t += elapsed_s  # type: ignore[attr-defined]
        ctl.run_cycle()
    assert scaler.replicas["a"] == expected


def test_a_new_controller_scales_up_at_once_with_a_zero_scale_up_window():
    a = spec("a")
    scaler = Scaler({"a": 1})
    ctl = controller([a], scaler)
    ctl.run_cycle()
    assert scaler.replicas["a"] == 2


def _decoding(itl_s: float, *, batch: float = 32.0, kv: float = 0.3, pods: int = 2) -> VariantSignals:
    # A decode window as the Prometheus source reports it, every pod past its warm-up.
    return VariantSignals(freshness=Freshness.FRESH, pods=pods, waiting=0.0, running=batch * pods,
                          kv_usage_mean=kv, completions_per_s=5.0, itl_mean_s=itl_s, decoding=batch * pods,
                          kv_usage_window_mean=kv, warm_pods=tuple(f"p{i}" for i in range(pods)))


@pytest.mark.parametrize("scale", [
    pytest.param(1.0, id="profile-right"),
    pytest.param(1.3, id="pods-30pct-slower"),
    pytest.param(0.8, id="pods-20pct-faster"),
])
def test_the_loop_calibrates_the_profile_and_reports_the_factor_in_status(scale):
    from autoscaler.perf.profiles import default_profiles
    profile = default_profiles()["llama-3.1-8b/h100"]
    d = VariantSpec(ref=VariantRef("ns", "dec"), model=profile.model, role=Role.DECODE, accelerator="H100",
                    target=ScaleTarget("apps/v1", "Deployment", "dec"), min_replicas=1, max_replicas=10)
    kv_tokens = 0.3 * profile.kv_capacity_tokens
    truth = scale * profile.decode_step_time(32.0, kv_tokens / 32.0)
    insights: list = []

    @dataclass
    class Recording(Scaler):
        def write_status(self, s, decision, *, scaled_at, insight=None):
            insights.append(insight)

    ctl = Controller(variants=Variants([d]), signals=Signals({d: _decoding(truth)}), scaler=Recording({"dec": 2}),
                     policy=ScalingPolicy(), clock=Clock(), profiles={profile.name: profile})
    for _ in range(30):
        report = ctl.run_cycle()
        ctl.clock.t += 15.0  # type: ignore[attr-defined]
    (cal,) = report.calibrations
    assert (cal.profile, cal.stage.value, cal.samples) == (profile.name, "decode", 30)
    assert cal.factor == pytest.approx(scale, rel=0.02)
    assert insights[-1].profile == profile.name and insights[-1].calibration_factor == pytest.approx(scale, rel=0.02)


def test_the_loop_plans_with_the_profiles_as_written_when_calibration_is_off():
    from autoscaler.perf.profiles import default_profiles
    profile = default_profiles()["llama-3.1-8b/h100"]
    d = VariantSpec(ref=VariantRef("ns", "dec"), model=profile.model, role=Role.DECODE, accelerator="H100",
                    target=ScaleTarget("apps/v1", "Deployment", "dec"), min_replicas=1, max_replicas=10)
    ctl = Controller(variants=Variants([d]), signals=Signals({d: _decoding(0.05)}), scaler=Scaler({"dec": 2}),
                     policy=ScalingPolicy(), clock=Clock(), profiles={profile.name: profile}, calibration=None)
    assert ctl.run_cycle().calibrations == ()


@pytest.mark.parametrize(("counts", "expected"), [
    pytest.param(None, 5, id="counts-unknown-reactive-step"),
    pytest.param(ReplicaCounts(ready=4), 5, id="all-ready-reactive-step"),
    pytest.param(ReplicaCounts(ready=2, unschedulable=2), 4, id="pending-for-gpus-no-stacking"),
    pytest.param(ReplicaCounts(ready=2, starting=2), 4, id="starting-no-stacking"),
])
def test_the_loop_does_not_stack_scale_ups_on_pods_that_have_not_started(counts, expected):
    # AIBrix #2670: saturated ready pods and Pending ones make a cascade unless the loop passes the pod counts.
    a = spec("a")

    @dataclass
    class Counting(Scaler):
        def replica_counts(self, s):
            return counts

    scaler = Counting({"a": 4})
    controller([a], scaler).run_cycle()
    assert scaler.replicas["a"] == expected
