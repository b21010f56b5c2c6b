"""The controller's own /metrics: what one cycle report turns into."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from autoscaler.core.types import Freshness, Reason, VariantSignals
from autoscaler.metrics import PREFIX, ControllerMetrics
from tests.core.test_adapter_store import DECODE, PREFILL, T0, outcome, report

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "grafana" / "variant-autoscaler.json"
DESCRIBED = {"namespace": "llm", "variant": "llama-decode", "model": "meta-llama/Llama-3.1-8B", "role": "decode",
             "accelerator": "H100"}
DECODE_REF = {"namespace": "llm", "variant": "llama-decode"}


def value(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_records_desired_and_current_replicas_per_variant():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=5, current=2)))
    assert value(m, f"{PREFIX}desired_replicas", **DESCRIBED) == 5
    assert value(m, f"{PREFIX}current_replicas", **DESCRIBED) == 2


def test_records_cycle_duration_count_and_start_time():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=2), at=T0))
    m.record_cycle(report(outcome(DECODE, desired=2), at=T0 + 15))
    assert value(m, f"{PREFIX}cycles_total") == 2
    assert value(m, f"{PREFIX}cycle_duration_seconds_count") == 2
    assert value(m, f"{PREFIX}cycle_duration_seconds_sum") == pytest.approx(0.1)
    assert value(m, f"{PREFIX}last_cycle_timestamp_seconds") == T0 + 15


@pytest.mark.parametrize(
    ("outcomes", "errors", "kind"),
    [
        pytest.param((), ("listing VariantAutoscalings: HTTP 503: down",), "list_variants", id="listing"),
        pytest.param((), ("VariantAutoscaling llm/x: spec: role: Input should be ...",), "variant_spec",
                     id="spec"),
        pytest.param((outcome(DECODE, desired=None, error="reading scale: HTTP 404"),), (), "read_replicas",
                     id="read-replicas"),
        pytest.param((outcome(DECODE, desired=5, error="patching scale: HTTP 409"),), (), "actuation",
                     id="actuation"),
    ],
)
def test_counts_cycle_errors_by_kind(outcomes, errors, kind):
    m = ControllerMetrics()
    m.record_cycle(report(*outcomes, errors=errors))
    assert value(m, f"{PREFIX}cycle_errors_total", kind=kind) == 1
    total = sum(s.value for f in m.registry.collect() if f.name == f"{PREFIX}cycle_errors"
                for s in f.samples if s.name.endswith("_total"))
    assert total == 1


@pytest.mark.parametrize("freshness", list(Freshness))
def test_signal_freshness_is_a_state_set(freshness):
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=2, signals=VariantSignals(freshness=freshness))))
    states = {s.value: value(m, f"{PREFIX}signal_freshness", **DECODE_REF, state=s.value) for s in Freshness}
    assert states == {s.value: (1.0 if s is freshness else 0.0) for s in Freshness}


@pytest.mark.parametrize(
    ("desired", "applied", "error", "direction", "result"),
    [
        pytest.param(5, True, "", "up", "applied", id="up-applied"),
        pytest.param(1, True, "", "down", "applied", id="down-applied"),
        pytest.param(5, False, "", "up", "dry_run", id="up-dry-run"),
        pytest.param(5, False, "patching scale: HTTP 403", "up", "failed", id="up-failed"),
    ],
)
def test_counts_scale_actions_by_direction_and_result(desired, applied, error, direction, result):
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=desired, current=2, applied=applied, error=error)))
    assert value(m, f"{PREFIX}scale_actions_total", **DECODE_REF, direction=direction, result=result) == 1


def test_an_unchanged_decision_is_no_scale_action_but_a_decision_with_its_reason():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=2, current=2, reason=Reason.WITHIN_TOLERANCE)))
    assert f"{PREFIX}scale_actions_total{{" not in generate_latest(m.registry).decode()
    assert value(m, f"{PREFIX}decisions_total", **DECODE_REF, reason="WithinTolerance") == 1


def test_a_variant_that_goes_away_takes_its_series_with_it():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=5, current=2, applied=True), outcome(PREFILL, desired=3)))
    m.record_cycle(report(outcome(PREFILL, desired=3), at=T0 + 15))
    text = generate_latest(m.registry).decode()
    assert 'variant="llama-decode"' not in text
    assert 'variant="llama-prefill"' in text
    assert value(m, f"{PREFIX}variants") == 1


def test_a_failed_listing_keeps_the_last_known_series():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=5)))
    m.record_cycle(report(at=T0 + 15, errors=("listing VariantAutoscalings: HTTP 503",)))
    assert value(m, f"{PREFIX}desired_replicas", **DESCRIBED) == 5


def test_records_adapter_requests():
    m = ControllerMetrics()
    m.observe_request("metric", 200, 0.002)
    m.observe_request("metric", 503, 0.001)
    assert value(m, f"{PREFIX}adapter_requests_total", endpoint="metric", code="200") == 1
    assert value(m, f"{PREFIX}adapter_request_duration_seconds_count", endpoint="metric") == 2


def metric_families(m: ControllerMetrics):
    return [f for f in m.registry.collect()]


WVA_NAMES = {"wva_desired_replicas", "wva_current_replicas", "wva_desired_ratio", "wva_replica_scaling"}


def test_names_follow_prometheus_conventions():
    for family in metric_families(ControllerMetrics()):
        assert family.name.startswith(PREFIX) or family.name in WVA_NAMES, family.name
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", family.name), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), "prometheus-client appends _total itself"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


def test_the_grafana_dashboard_uses_only_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    used = set(re.findall(rf"\b{PREFIX}[a-z0-9_]+", " ".join(exprs)))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    families = metric_families(ControllerMetrics())
    exposed = {f.name + suffix for f in families for suffix in suffixes[f.type]}
    assert used <= exposed, f"dashboard queries unknown series: {sorted(used - exposed)}"
    plotted = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    # WVA's names repeat desired/current replicas for llm-d's HPAs; the dashboard plots ours.
    assert {f.name for f in families if f.name not in WVA_NAMES} <= plotted, "a metric is not on the dashboard"


def test_records_the_models_outlook_and_drops_values_not_computed():
    from autoscaler.controller.loop import CycleReport
    from tests.core.test_adapter_store import _outlook

    m = ControllerMetrics()
    rep = report(outcome(DECODE, desired=4))
    with_outlook = CycleReport(rep.cycle, rep.started_at, rep.duration_s, rep.outcomes, rep.errors,
                               outlooks={DECODE.model: _outlook(DECODE.model)})
    m.record_cycle(with_outlook)
    assert value(m, f"{PREFIX}admission_ratio", model=DECODE.model) == pytest.approx(0.6)
    assert value(m, f"{PREFIX}predicted_decode_load", model=DECODE.model) == pytest.approx(1.3)
    assert value(m, f"{PREFIX}rejection_threshold", model=DECODE.model) == pytest.approx(0.9)
    assert value(m, f"{PREFIX}model_demand_requests_per_second", model=DECODE.model) == pytest.approx(12.0)

    m.record_cycle(report(outcome(DECODE, desired=4), cycle=2))  # the model's outlook is gone this cycle
    assert value(m, f"{PREFIX}admission_ratio", model=DECODE.model) is None
    assert value(m, f"{PREFIX}rejection_threshold", model=DECODE.model) is None


# -- forecast and calibration ------------------------------------------------------------------------------

MODEL = DECODE.model


def with_extras(*, outlooks=None, calibrations=(), at: float = T0, cycle: int = 1):
    from dataclasses import replace

    return replace(report(outcome(DECODE, desired=4), at=at, cycle=cycle), outlooks=outlooks or {},
                   calibrations=tuple(calibrations))


def outlook(**changes):
    from dataclasses import replace

    from tests.core.test_adapter_store import _outlook

    return replace(_outlook(MODEL), **changes)


def calibration(profile: str = "llama-3.1-8b/h100", stage: str = "decode", **changes):
    from dataclasses import replace

    from autoscaler.perf.calibration import Stage
    from autoscaler.perf.online import CalibrationReport

    report = CalibrationReport(profile=profile, stage=Stage(stage), samples=40, factor=1.15, relative_error=0.04,
                               coefficients={"alpha": 6.5, "beta": 0.012, "gamma": 0.0003})
    return replace(report, **changes)


@pytest.mark.parametrize(
    ("changes", "name", "expected"),
    [
        pytest.param({"horizon_s": 95.0}, "model_forecast_horizon_seconds", 95.0, id="horizon"),
        pytest.param({"forecast_error": 0.18}, "model_forecast_error_ratio", 0.18, id="forecast-error"),
        pytest.param({}, "model_mean_input_tokens", 1000.0, id="mean-input-tokens"),
        pytest.param({}, "model_mean_output_tokens", 200.0, id="mean-output-tokens"),
        pytest.param({}, "model_observed_requests_per_second", 10.0, id="observed"),
        pytest.param({}, "predicted_prefill_load", 0.4, id="prefill-load"),
        pytest.param({"demand_rps": 30.5}, "model_demand_requests_per_second", 30.5, id="demand"),
    ],
)
def test_exports_each_models_forecast(changes, name, expected):
    m = ControllerMetrics()
    m.record_cycle(with_extras(outlooks={MODEL: outlook(**changes)}))
    assert value(m, f"{PREFIX}{name}", model=MODEL) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        pytest.param({"horizon_s": None}, "model_forecast_horizon_seconds", id="horizon-not-filled"),
        pytest.param({"forecast_error": None}, "model_forecast_error_ratio", id="error-not-scored-yet"),
        pytest.param({"forecast_error": float("nan")}, "model_forecast_error_ratio", id="error-nan"),
        pytest.param({"mean_input_tokens": None}, "model_mean_input_tokens", id="no-input-mix"),
        pytest.param({"observed_rps": None}, "model_observed_requests_per_second", id="not-observed"),
        pytest.param({"admission": None}, "predicted_prefill_load", id="no-admission-control"),
    ],
)
def test_a_forecast_value_without_a_sample_loses_its_series(changes, name):
    m = ControllerMetrics()
    m.record_cycle(with_extras(outlooks={MODEL: outlook(horizon_s=95.0, forecast_error=0.18)}))
    assert value(m, f"{PREFIX}{name}", model=MODEL) is not None
    m.record_cycle(with_extras(outlooks={MODEL: outlook(**{"horizon_s": 95.0, "forecast_error": 0.18} | changes)},
                               at=T0 + 15, cycle=2))
    assert value(m, f"{PREFIX}{name}", model=MODEL) is None


def test_the_forecast_method_series_names_only_the_method_in_use():
    m = ControllerMetrics()
    m.record_cycle(with_extras(outlooks={MODEL: outlook(forecast_method="holt")}))
    m.record_cycle(with_extras(outlooks={MODEL: outlook(forecast_method="seasonal")}, at=T0 + 15, cycle=2))
    assert value(m, f"{PREFIX}model_forecast_method_info", model=MODEL, method="seasonal") == 1
    assert value(m, f"{PREFIX}model_forecast_method_info", model=MODEL, method="holt") is None


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        pytest.param("calibration_factor", {}, 1.15, id="factor"),
        pytest.param("calibration_samples", {}, 40, id="samples"),
        pytest.param("calibration_relative_error_ratio", {}, 0.04, id="relative-error"),
        pytest.param("calibration_coefficient", {"coefficient": "alpha"}, 6.5, id="alpha"),
        pytest.param("calibration_coefficient", {"coefficient": "gamma"}, 0.0003, id="gamma"),
    ],
)
def test_exports_calibration_per_profile_and_stage(name, labels, expected):
    m = ControllerMetrics()
    m.record_cycle(with_extras(calibrations=[calibration(), calibration(stage="prefill", factor=0.9)]))
    decode = {"profile": "llama-3.1-8b/h100", "stage": "decode"}
    assert value(m, f"{PREFIX}{name}", **decode, **labels) == pytest.approx(expected)
    assert value(m, f"{PREFIX}calibration_factor", profile="llama-3.1-8b/h100", stage="prefill") == 0.9


@pytest.mark.parametrize(
    ("second", "gone"),
    [
        pytest.param([], {"calibration_factor": {}, "calibration_samples": {},
                          "calibration_coefficient": {"coefficient": "beta"}}, id="profile-vanishes"),
        pytest.param([calibration(relative_error=None)], {"calibration_relative_error_ratio": {}},
                     id="not-fitted-yet"),
        pytest.param([calibration(coefficients={"alpha": 6.0})], {"calibration_coefficient": {"coefficient": "beta"}},
                     id="coefficient-dropped"),
    ],
)
def test_calibration_series_not_reported_again_go_away(second, gone):
    m = ControllerMetrics()
    decode = {"profile": "llama-3.1-8b/h100", "stage": "decode"}
    m.record_cycle(with_extras(calibrations=[calibration()]))
    for name, labels in gone.items():
        assert value(m, f"{PREFIX}{name}", **decode, **labels) is not None
    m.record_cycle(with_extras(calibrations=second, at=T0 + 15, cycle=2))
    for name, labels in gone.items():
        assert value(m, f"{PREFIX}{name}", **decode, **labels) is None, name


def test_a_failed_listing_keeps_the_last_forecast_and_calibration():
    m = ControllerMetrics()
    m.record_cycle(with_extras(outlooks={MODEL: outlook(forecast_error=0.2)}, calibrations=[calibration()]))
    m.record_cycle(report(at=T0 + 15, errors=("listing VariantAutoscalings: HTTP 503",), cycle=2))
    assert value(m, f"{PREFIX}model_forecast_error_ratio", model=MODEL) == 0.2
    assert value(m, f"{PREFIX}calibration_factor", profile="llama-3.1-8b/h100", stage="decode") == 1.15


WVA_DECODE = {"variant_name": "llama-decode", "namespace": "llm", "accelerator_type": "H100"}


@pytest.mark.parametrize(("desired", "current", "ratio"), [(5, 2, 2.5), (1, 0, 1.0), (0, 3, 0.0)])
def test_wvas_output_metrics_carry_wvas_names_and_labels(desired: int, current: int, ratio: float):
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=desired, current=current, applied=True)))
    assert value(m, "wva_desired_replicas", **WVA_DECODE) == desired
    assert value(m, "wva_current_replicas", **WVA_DECODE) == current
    assert value(m, "wva_desired_ratio", **WVA_DECODE) == pytest.approx(ratio)  # WVA: 0 -> N gives N
    direction = "up" if desired > current else "down"
    assert value(m, "wva_replica_scaling_total", variant_name="llama-decode", namespace="llm",
                 direction=direction, reason="Saturated") == 1


def test_wvas_metrics_of_a_variant_that_went_away_are_removed():
    m = ControllerMetrics()
    m.record_cycle(report(outcome(DECODE, desired=3, applied=True), outcome(PREFILL, desired=1)))
    m.record_cycle(report(outcome(PREFILL, desired=1)))
    assert value(m, "wva_desired_replicas", **WVA_DECODE) is None
