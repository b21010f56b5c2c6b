"""Forecasting methods and the online back-test, on synthetic series whose answers are known."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from autoscaler.forecast import (
    ForecastConfig,
    Method,
    MixObservation,
    SeriesForecast,
    backtest,
    counter_increment,
    counter_increments,
    make_method,
    mape,
    new_mix,
    new_series,
    pinball_loss,
    tokens_per_completion,
    update_mix,
    update_series,
)

# One-minute cycles, five-minute lead (H = 5), a day of history: small enough for quick tests.
FAST = ForecastConfig(interval_s=60.0, lead_time_s=300.0, history_s=86400.0, fit_window_s=3 * 3600.0,
                      gbm_refit_every=50)
# Daily seasonality at 15-minute steps (96 per day), lead one hour (H = 4).
DAILY = ForecastConfig(interval_s=900.0, lead_time_s=3600.0, history_s=8 * 86400.0, fit_window_s=86400.0,
                       backtest_halflife_s=12 * 3600.0, refit_every=4, gbm_refit_every=24, gbm_min_rows=400)
DAY = 96

Series = Callable[[int], np.ndarray]


def constant(n: int) -> np.ndarray:
    return np.full(n, 10.0)


def ramp(n: int) -> np.ndarray:
    return 10.0 + 0.05 * np.arange(n)


def step(n: int) -> np.ndarray:
    return np.where(np.arange(n) < n // 2, 10.0, 20.0)


def noisy_constant(n: int) -> np.ndarray:
    return 10.0 + np.random.default_rng(7).normal(0.0, 1.0, n)


def sine(n: int) -> np.ndarray:
    return 100.0 + 50.0 * np.sin(2 * np.pi * np.arange(n) / DAY)


def noisy_sine(n: int) -> np.ndarray:
    return sine(n) + np.random.default_rng(3).normal(0.0, 5.0, n)


# --- each method on its own -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "config", "observed", "truth", "n", "tolerance"), [
    pytest.param(Method.LAST_VALUE, FAST, constant, constant, 200, 1e-12, id="last-value-constant"),
    pytest.param(Method.EWMA, FAST, noisy_constant, constant, 200, 0.06, id="ewma-averages-noise"),
    pytest.param(Method.HOLT, FAST, ramp, ramp, 200, 1e-9, id="holt-extrapolates-ramp"),
    pytest.param(Method.SEASONAL_NAIVE, DAILY, sine, sine, 3 * DAY, 1e-12, id="seasonal-repeats-sine"),
    pytest.param(Method.GBM, DAILY, noisy_sine, sine, 7 * DAY, 0.06, id="gbm-learns-noisy-sine"),
])
def test_each_method_forecasts_its_kind_of_series_accurately(
    method: Method, config: ForecastConfig, observed: Series, truth: Series, n: int, tolerance: float
) -> None:
    H = config.horizon_steps
    history = observed(n + H)[:n]
    future = truth(n + H)[n:]
    fitted = make_method(method, config).fit(history=history, end_time_s=(n - 1) * config.interval_s)
    assert fitted is not None
    prediction = fitted.predict(history=history, end_time_s=(n - 1) * config.interval_s)
    assert prediction is not None
    assert mape(actual=future, predicted=prediction.mean) <= tolerance
    assert np.all(prediction.upper >= prediction.mean)


def test_last_value_misses_a_ramp_by_the_slope_times_the_horizon() -> None:
    n, H = 100, FAST.horizon_steps
    history = ramp(n)
    prediction = make_method(Method.LAST_VALUE, FAST).fit(history=history, end_time_s=0.0)
    assert prediction is not None
    mean = prediction.predict(history=history, end_time_s=0.0)
    assert mean is not None
    np.testing.assert_allclose(ramp(n + H)[n:] - mean.mean, 0.05 * np.arange(1, H + 1))


@pytest.mark.parametrize("method", [pytest.param(m, id=m.value) for m in (Method.LAST_VALUE, Method.EWMA)])
def test_upper_quantile_covers_about_the_configured_share_of_noisy_samples(method: Method) -> None:
    config = ForecastConfig(interval_s=60.0, lead_time_s=60.0, history_s=86400.0, methods=(method,))
    result = backtest(noisy_constant(600), config=config)
    actual, _, upper = result.aligned(0, 1)
    ok = np.isfinite(actual) & np.isfinite(upper)
    ok[:100] = False  # residual quantiles need some history first
    coverage = float(np.mean(actual[ok] <= upper[ok]))
    assert 0.82 <= coverage <= 0.96, coverage


@pytest.mark.parametrize("method", [pytest.param(m, id=m.value) for m in Method])
def test_a_method_without_any_finite_history_declines_to_fit(method: Method) -> None:
    config = DAILY
    history = np.full(3 * DAY, np.nan)
    assert make_method(method, config).fit(history=history, end_time_s=0.0) is None


# --- the back-test picks the method that fits the series ----------------------------------------------------


@pytest.mark.parametrize(("series", "config", "n", "expected"), [
    pytest.param(ramp, FAST, 240, {Method.HOLT}, id="ramp-holt"),
    pytest.param(step, FAST, 240, {Method.LAST_VALUE}, id="noise-free-step-last-value"),
    pytest.param(noisy_constant, FAST, 300, {Method.EWMA}, id="noisy-level-ewma"),
    pytest.param(noisy_sine, DAILY, 6 * DAY, {Method.GBM, Method.SEASONAL_NAIVE}, id="daily-sine-seasonal"),
])
def test_the_back_test_picks_the_method_that_suits_the_series(
    series: Series, config: ForecastConfig, n: int, expected: set[Method]
) -> None:
    result = backtest(series(n), config=config)
    last_third = [m for m in result.selected[-(n // 3):]]
    assert result.selected[-1] in expected
    assert sum(m in expected for m in last_third) >= 0.8 * len(last_third)


def test_the_chosen_forecast_beats_last_value_on_a_ramp() -> None:
    result = backtest(ramp(240) + np.random.default_rng(1).normal(0, 0.1, 240), config=FAST)
    H = FAST.horizon_steps
    mean, upper = result.selected_forecast()
    actual, naive_mean, naive_upper = result.aligned(result.methods.index(Method.LAST_VALUE), H)
    warm = slice(80, None)
    chosen = pinball_loss(actual=actual[warm], upper=upper[warm, H - 1], quantile=FAST.quantile)
    naive = pinball_loss(actual=actual[warm], upper=naive_upper[warm], quantile=FAST.quantile)
    assert chosen < 0.8 * naive
    assert mape(actual=actual[warm], predicted=mean[warm, H - 1]) < mape(actual=actual[warm],
                                                                         predicted=naive_mean[warm])


def test_until_methods_are_scored_the_last_value_is_used() -> None:
    state = new_series(FAST)
    for t in range(3):
        state, forecast = update_series(state, value=5.0 + t, now=60.0 * t, config=FAST)
    assert forecast is not None
    assert forecast.method is Method.LAST_VALUE
    assert forecast.mean[0] == 7.0


# --- bad history ------------------------------------------------------------------------------------------------

GARBAGE: list[float | None] = [math.nan, None, math.inf, -math.inf, -5.0]


def test_garbage_samples_are_gaps_that_do_not_poison_the_forecast() -> None:
    state = new_series(FAST)
    rng = np.random.default_rng(5)
    forecast = None
    for t in range(200):
        garbage = t % 7 == 3 or 120 <= t < 140  # scattered bad samples and a 20-cycle stretch of them
        value = GARBAGE[t % len(GARBAGE)] if garbage else 10.0 + rng.normal(0.0, 0.2)
        state, forecast = update_series(state, value=value, now=60.0 * t, config=FAST)
        if forecast is not None:
            assert all(math.isfinite(v) and v >= 0 for v in forecast.mean + forecast.upper)
    assert np.isnan(state.values[120:140]).all()
    assert forecast is not None
    assert forecast.mean[0] == pytest.approx(10.0, abs=0.5)
    assert forecast.upper[-1] < 12.0


def test_a_series_that_was_never_measured_has_no_forecast() -> None:
    state = new_series(FAST)
    for t in range(50):
        state, forecast = update_series(state, value=None, now=60.0 * t, config=FAST)
        assert forecast is None


def test_zeros_do_not_break_percentage_errors() -> None:
    values = [0.0] * 60 + [3.0] * 60
    result = backtest(values, config=FAST)
    assert result.selected[-1] is not None
    state = new_series(FAST)
    for t, v in enumerate(values):
        state, forecast = update_series(state, value=v, now=60.0 * t, config=FAST)
    assert forecast is not None and forecast.mean[0] == pytest.approx(3.0)


def test_an_outage_becomes_a_gap_and_the_series_resumes() -> None:
    state = new_series(FAST)
    for t in range(100):
        state, _ = update_series(state, value=10.0, now=60.0 * t, config=FAST)
    state, forecast = update_series(state, value=12.0, now=60.0 * 110, config=FAST)  # ten cycles missed
    assert len(state.values) == 111
    assert np.isnan(state.values[100:110]).all()
    assert forecast is not None and forecast.mean[0] == pytest.approx(12.0, rel=0.2)


def test_a_second_sample_in_the_same_cycle_replaces_the_first() -> None:
    state = new_series(FAST)
    state, _ = update_series(state, value=1.0, now=0.0, config=FAST)
    state, _ = update_series(state, value=2.0, now=60.0, config=FAST)
    state, _ = update_series(state, value=3.0, now=65.0, config=FAST)
    assert state.values.tolist() == [1.0, 3.0]


def test_a_clock_that_moves_backwards_starts_the_history_again() -> None:
    state = new_series(FAST)
    for t in range(10):
        state, _ = update_series(state, value=1.0, now=1000.0 + 60.0 * t, config=FAST)
    state, forecast = update_series(state, value=4.0, now=0.0, config=FAST)
    assert state.values.tolist() == [4.0]
    assert forecast is not None and forecast.mean[0] == 4.0


def test_a_gap_longer_than_the_history_costs_no_more_than_the_history() -> None:
    state = new_series(FAST)
    state, _ = update_series(state, value=1.0, now=0.0, config=FAST)
    state, forecast = update_series(state, value=2.0, now=1e9, config=FAST)  # ~30 years later
    assert len(state.values) == FAST.history_steps
    assert forecast is not None and forecast.mean[0] == 2.0


def test_history_is_bounded() -> None:
    config = ForecastConfig(interval_s=60.0, lead_time_s=120.0, history_s=1800.0, fit_window_s=1800.0,
                            methods=(Method.LAST_VALUE, Method.EWMA))
    state = new_series(config)
    for t in range(100):
        state, _ = update_series(state, value=float(t), now=60.0 * t, config=config)
    assert state.values.tolist() == [float(t) for t in range(70, 100)]


def test_the_regressor_is_refitted_only_every_configured_number_of_cycles() -> None:
    config = ForecastConfig(interval_s=60.0, lead_time_s=120.0, history_s=86400.0, gbm_refit_every=10,
                            gbm_min_rows=50, methods=(Method.LAST_VALUE, Method.GBM))
    state = new_series(config)
    values = noisy_constant(80)
    fits = []
    for t, v in enumerate(values):
        before = state.fitted.get(Method.GBM)
        state, _ = update_series(state, value=v, now=60.0 * t, config=config)
        if state.fitted.get(Method.GBM) is not before:
            fits.append(t)
    assert len(fits) >= 3
    assert all(b - a == 10 for a, b in itertools.pairwise(fits))


def test_on_a_long_history_methods_are_refitted_when_a_share_of_their_samples_is_new() -> None:
    config = ForecastConfig(interval_s=60.0, lead_time_s=120.0, history_s=86400.0, gbm_refit_every=10,
                            gbm_min_rows=50, refit_share=0.25, refit_share_after_s=3600.0,
                            methods=(Method.LAST_VALUE, Method.GBM))
    assert config.gbm_refit_cycles(59) == 10  # under an hour of history: as before
    assert config.gbm_refit_cycles(200) == 50
    assert (config.refit_cycles(59), config.refit_cycles(200)) == (config.refit_every, 50)
    assert config.refit_cycles(2000) == math.ceil(0.25 * config.fit_window_steps)  # the simple ones fit a window
    state = new_series(config)
    fits = []
    for t, v in enumerate(noisy_constant(260)):
        before = state.fitted.get(Method.GBM)
        state, _ = update_series(state, value=v, now=60.0 * t, config=config)
        if state.fitted.get(Method.GBM) is not before:
            fits.append(t)
    gaps = [b - a for a, b in itertools.pairwise(fits)]
    assert gaps[0] == 10 and gaps[-1] >= 0.25 * fits[-2] - 1
    assert gaps == sorted(gaps)


# --- counters and observations -----------------------------------------------------------------------------


@pytest.mark.parametrize(("samples", "expected"), [
    pytest.param([0, 5, 12, 20], [math.nan, 5, 7, 8], id="steady"),
    pytest.param([100, 110, 4, 9], [math.nan, 10, 4, 5], id="reset-to-low-value"),
    pytest.param([10, None, 30, 35], [math.nan, math.nan, math.nan, 5], id="missing-sample"),
    pytest.param([10, math.inf, 30, -1, 40], [math.nan, math.nan, math.nan, math.nan, math.nan], id="garbage"),
])
def test_counter_increments_treat_a_drop_as_a_restart(samples: list[float | None], expected: list[float]) -> None:
    np.testing.assert_allclose(counter_increments(samples), expected)
    pairs = [counter_increment(a, b) for a, b in itertools.pairwise(samples)]
    np.testing.assert_allclose(pairs, expected[1:])


@pytest.mark.parametrize(("rates", "expected"), [
    pytest.param((2.0, 2000.0, 300.0), (1000.0, 150.0), id="busy"),
    pytest.param((0.0, 0.0, 0.0), (None, None), id="idle-has-no-mix"),
    pytest.param((None, 10.0, 10.0), (None, None), id="rate-missing"),
])
def test_the_mix_is_token_rates_divided_by_the_completion_rate(
    rates: tuple[float | None, ...], expected: tuple[float | None, ...]
) -> None:
    completions, prompt, generation = rates
    means = (tokens_per_completion(prompt, completions), tokens_per_completion(generation, completions))
    assert means == expected


def test_update_mix_forecasts_rate_and_token_means_separately() -> None:
    state = new_mix(FAST)
    for t in range(30):
        state, forecast = update_mix(
            state, observation=MixObservation(arrival_rate=2.0 + 0.1 * t, mean_input_tokens=1000.0,
                                              mean_output_tokens=None),
            now=60.0 * t, config=FAST)
    assert forecast.arrival_rate is not None and forecast.arrival_rate.mean[0] > 4.0
    assert forecast.mean_input_tokens is not None and forecast.mean_input_tokens.mean[0] == pytest.approx(1000.0)
    assert forecast.mean_output_tokens is None


# --- forecast values and settings ---------------------------------------------------------------------------

EXAMPLE = SeriesForecast(method=Method.HOLT, horizons_s=(30.0, 60.0, 90.0), mean=(1.0, 2.0, 3.0),
                         upper=(1.5, 4.0, 3.5), quantile=0.9)


@pytest.mark.parametrize(("horizon_s", "expected"), [
    pytest.param(0.0, (1.0, 1.5), id="now-is-first-horizon"),
    pytest.param(30.0, (1.0, 1.5), id="exact"),
    pytest.param(45.0, (2.0, 4.0), id="rounds-up"),
    pytest.param(600.0, (3.0, 3.5), id="beyond-lead-is-last"),
])
def test_forecast_at_a_horizon_takes_the_first_step_at_or_after_it(horizon_s: float,
                                                                     expected: tuple[float, float]) -> None:
    assert EXAMPLE.at(horizon_s) == expected


@pytest.mark.parametrize(("within_s", "expected"), [
    pytest.param(None, 4.0, id="all"), pytest.param(30.0, 1.5, id="first-only"), pytest.param(90.0, 4.0, id="lead"),
])
def test_peak_upper_is_the_largest_upper_quantile_within_the_window(within_s: float | None,
                                                                     expected: float) -> None:
    assert EXAMPLE.peak_upper(within_s) == expected


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"interval_s": 0.0}, "interval_s", id="zero-interval"),
    pytest.param({"quantile": 1.0}, "quantile", id="quantile-one"),
    pytest.param({"quantile": 0.3}, "quantile", id="quantile-below-median"),
    pytest.param({"lead_time_s": 10.0}, "lead_time_s", id="lead-below-interval"),
    pytest.param({"history_s": 60.0}, "history_s", id="history-shorter-than-lead"),
    pytest.param({"methods": ()}, "methods", id="no-methods"),
    pytest.param({"methods": (Method.HOLT, Method.HOLT)}, "methods", id="repeated-method"),
    pytest.param({"gbm_refit_every": 0}, "gbm_refit_every", id="never-refit"),
    pytest.param({"refit_share": 1.0}, "refit_share", id="refit-share-of-all"),
    pytest.param({"refit_share_after_s": -1.0}, "refit_share_after_s", id="negative-refit-share-after"),
    pytest.param({"season_s": math.nan}, "season_s", id="nan-season"),
])
def test_invalid_settings_are_refused_naming_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ForecastConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("interval_s", "lead_time_s", "steps"), [
    pytest.param(30.0, 300.0, 10, id="30s-5min"),
    pytest.param(15.0, 300.0, 20, id="15s-5min"),
    pytest.param(30.0, 45.0, 2, id="lead-not-a-multiple-rounds-up"),
    pytest.param(30.0, 30.0, 1, id="one-cycle"),
])
def test_horizons_run_from_one_cycle_to_the_lead_time(interval_s: float, lead_time_s: float, steps: int) -> None:
    assert ForecastConfig(interval_s=interval_s, lead_time_s=lead_time_s).horizon_steps == steps
