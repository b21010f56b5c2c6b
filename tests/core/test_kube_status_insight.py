"""The cycle's insight as status fields: number and duration spelling, and None keeping what the status had."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest

from autoscaler.controller.ports import VariantInsight
from autoscaler.kube.api import (
    AdmissionSummary,
    CalibrationSummary,
    ForecastSummary,
    VariantAutoscalingStatus,
)
from autoscaler.kube.status import decimal_text, duration_text, next_status, status_patch

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
DECIMAL = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")  # the CRD's pattern for decimal strings
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(12.3456, "12.3", id="three-significant-digits"),
        pytest.param(24691.2, "24700", id="large-rounds-to-hundreds"),
        pytest.param(0.000123456, "0.000123", id="small-keeps-six-places"),
        pytest.param(0.0000001, "0", id="below-six-places-is-zero"),
        pytest.param(2.0, "2", id="whole-number-without-point"),
        pytest.param(0.0, "0", id="zero"),
        pytest.param(-1.0, None, id="negative-is-unknown"),
        pytest.param(math.nan, None, id="nan-is-unknown"),
        pytest.param(math.inf, None, id="infinite-is-unknown"),
        pytest.param(None, None, id="none"),
    ],
)
def test_numbers_are_written_as_the_crds_decimal_strings(value: float | None, text: str | None) -> None:
    assert decimal_text(value) == text
    assert text is None or DECIMAL.fullmatch(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(600.0, "10m", id="minutes"),
        pytest.param(90.0, "1m30s", id="minutes-and-seconds"),
        pytest.param(5400.0, "1h30m", id="hours"),
        pytest.param(0.25, "250ms", id="sub-second"),
        pytest.param(0.0, "0ms", id="zero"),
        pytest.param(-5.0, None, id="negative"),
    ],
)
def test_horizons_are_written_as_go_durations(seconds: float, text: str | None) -> None:
    assert duration_text(seconds) == text
    assert text is None or DURATION.fullmatch(text)


def test_insight_fills_the_status_and_unknown_fields_keep_theirs() -> None:
    previous = VariantAutoscalingStatus(
        forecast=ForecastSummary(horizon="5m", requests_per_second="1", prompt_tokens_per_second="100"),
        calibration=CalibrationSummary(profile="old", samples=3), admission_ratio="0.5")
    insight = VariantInsight(forecast_rps=2.5, admission_ratio=1.2, calibration_factor=1.5)

    new = next_status(previous=previous, generation=1, now=NOW, insight=insight)

    assert new.forecast == ForecastSummary(horizon="5m", requests_per_second="2.5", prompt_tokens_per_second="100")
    assert new.calibration == CalibrationSummary(profile="old", samples=3, factor="1.5")
    assert new.admission_ratio == "1"  # clamped into [0, 1]


@pytest.mark.parametrize(
    "insight",
    [
        pytest.param(None, id="no-insight"),
        pytest.param(VariantInsight(), id="insight-knowing-nothing"),
        pytest.param(VariantInsight(forecast_rps=math.nan, admission_ratio=math.nan), id="only-nans"),
    ],
)
def test_nothing_known_writes_nothing(insight: VariantInsight | None) -> None:
    previous = VariantAutoscalingStatus(observed_generation=1, forecast=ForecastSummary(requests_per_second="3"),
                                        admission_ratio="0.9")
    new = next_status(previous=previous, generation=1, now=NOW, insight=insight)
    assert status_patch(previous, new) == {}


def test_the_admission_prediction_fills_its_block_and_unknown_loads_keep_theirs() -> None:
    previous = VariantAutoscalingStatus(observed_generation=1,
                                        admission=AdmissionSummary(rejection_threshold="1",
                                                                   predicted_prefill_load="0.2"))
    insight = VariantInsight(rejection_threshold=0.9, predicted_prefill_load=math.inf, predicted_decode_load=1.234)

    new = next_status(previous=previous, generation=1, now=NOW, insight=insight)

    assert new.admission == AdmissionSummary(rejection_threshold="0.9", predicted_prefill_load="0.2",
                                             predicted_decode_load="1.23")
    assert status_patch(previous, new) == {"status": {"admission": {"rejectionThreshold": "0.9",
                                                                    "predictedPrefillLoad": "0.2",
                                                                    "predictedDecodeLoad": "1.23"}}}


@pytest.mark.parametrize(
    ("with_admission", "expected"),
    [
        pytest.param(True, (0.9, 0.4, 1.3), id="prediction-made"),
        pytest.param(False, (None, None, None), id="no-prediction"),
    ],
)
def test_a_variants_insight_carries_the_models_admission_prediction(with_admission: bool,
                                                                      expected: tuple) -> None:
    from dataclasses import replace

    from autoscaler.controller.loop import variant_insight
    from tests.core.test_adapter_store import _outlook

    outlook = _outlook("llama")
    if not with_admission:
        outlook = replace(outlook, admission=None)
    insight = variant_insight(outlook)
    assert insight is not None
    assert (insight.rejection_threshold, insight.predicted_prefill_load, insight.predicted_decode_load) == expected
