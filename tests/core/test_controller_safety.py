"""The loop's part in issue 16: unknown demand is logged, a planning failure holds every variant with a status,
a standby warms its forecaster before it leads (items 3 and 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from autoscaler.controller import loop
from autoscaler.core.types import Freshness, Reason, VariantSignals
from tests.core.test_controller_cycle import Clock, Scaler, Variants, controller, spec

LOADED = VariantSignals(freshness=Freshness.FRESH, pods=1, waiting=0.0, running=3.0, completions_per_s=5.5,
                        kv_usage_mean=0.35)


@dataclass
class Signals:
    by_spec: dict
    history_ranges: list = field(default_factory=list)

    def collect(self, variants, *, now):
        return {v: self.by_spec[v] for v in variants}

    def history(self, variants, *, start, end, step):
        self.history_ranges.append((start, end))
        return {}


@pytest.mark.parametrize("unknown", ["running", "completions_per_s"])
def test_a_fresh_variant_whose_running_or_rate_is_unknown_is_logged(unknown):
    s = spec("a")
    signals = Signals({s: VariantSignals(**{**{f: getattr(LOADED, f) for f in (
        "freshness", "pods", "waiting", "running", "completions_per_s", "kv_usage_mean")}, unknown: None})})
    with capture_logs() as logs:
        controller([s], Scaler({"a": 1}), signals=signals).run_cycle()
    partial = [e for e in logs if e["event"] == "signals_partial"]
    assert len(partial) == 1 and partial[0]["unknown"] == [unknown]


def test_an_implausible_value_is_logged_with_the_value():
    s = spec("a")
    signals = Signals({s: VariantSignals(Freshness.FRESH, pods=1, waiting=1e308, running=3.0, completions_per_s=5.5,
                                         kv_usage_mean=0.35)})
    with capture_logs() as logs:
        report = controller([s], Scaler({"a": 3}), signals=signals).run_cycle()
    warned = [e for e in logs if e["event"] == "signals_unavailable"]
    assert len(warned) == 1 and "waiting=1e+308" in warned[0]["note"]
    assert report.outcomes[0].decision.desired == 3


def test_a_cycle_whose_planning_fails_holds_every_variant_and_writes_their_status(monkeypatch):
    def broken(**_):
        raise RuntimeError("planner bug")

    monkeypatch.setattr(loop, "plan_cycle", broken)
    a, b = spec("a"), spec("b")
    scaler = Scaler({"a": 2, "b": 3})
    report = controller([a, b], scaler, signals=Signals({a: LOADED, b: LOADED})).run_cycle()
    assert {(o.spec.ref.name, o.decision.desired, o.decision.reason) for o in report.outcomes} == {
        ("a", 2, Reason.SIGNALS_INVALID), ("b", 3, Reason.SIGNALS_INVALID)}
    assert sorted(scaler.statuses) == [("a", 2), ("b", 3)]
    assert any("planner bug" in e for e in report.errors)


def test_a_standby_warm_up_leaves_the_first_cycle_only_the_gap_to_read():
    s = spec("a")
    signals = Signals({s: LOADED})
    clock = Clock()
    ctl = controller([s], Scaler({"a": 1}), signals=signals)
    ctl.clock = clock
    ctl.warm_start_s = 3600.0  # one read: the default (the forecaster's days) comes in pieces
    ctl.warm()  # while standing by, at t=1000
    clock.t += 100.0
    ctl.warm()  # a later refresh reads only what is new
    clock.t += 40.0
    ctl.run_cycle()  # the lease is won: the first cycle catches up the last 40 s
    step = ctl.planner.forecast.interval_s
    assert signals.history_ranges == [
        (1000.0 - ctl.warm_start_s, 1000.0 - step),
        (1000.0 - step + step, 1100.0 - step),
        (1100.0 - step + step, 1140.0 - step),
    ]


def test_without_a_warm_up_the_first_cycle_reads_the_whole_window_once():
    s = spec("a")
    signals = Signals({s: LOADED})
    ctl = controller([s], Scaler({"a": 1}), signals=signals)
    ctl.warm_start_s = 3600.0
    ctl.run_cycle()
    ctl.clock.t += 15.0
    ctl.run_cycle()
    assert len(signals.history_ranges) == 1
    assert signals.history_ranges[0][0] == pytest.approx(1000.0 - ctl.warm_start_s)


def test_variants_fake_lists_what_it_was_given():  # keeps the shared fakes honest
    assert Variants([spec("a")]).list_variants()[0][0].ref.name == "a"


def test_a_one_shot_recommendation_can_recommend_a_scale_down(monkeypatch):
    from typer.testing import CliRunner

    from autoscaler import cli
    from autoscaler.controller import wiring
    from autoscaler.kube import client as kube_client

    monkeypatch.setattr(kube_client, "cluster_configured", lambda kubeconfig: True)  # the cluster path
    s = spec("a")
    low = VariantSignals(Freshness.FRESH, pods=4, waiting=0.0, running=1.0, completions_per_s=1.0, kv_usage_mean=0.02)
    monkeypatch.setattr(wiring, "build_controller",
                        lambda settings, dry_run: controller([s], Scaler({"a": 4}), signals=Signals({s: low}),
                                                             dry_run=dry_run))
    result = CliRunner().invoke(cli.app, ["recommend", "--prometheus-url", "http://127.0.0.1:9", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"desired": 3' in result.stdout
