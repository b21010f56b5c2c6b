"""Forecasting each model's traffic: arrival rate and mix (mean prompt and output tokens) per cycle.

Pure (values in, values out). Nothing is saved between runs: a new or restarted controller rebuilds each model's
history from Prometheus (``Controller.warm``, through the signal port), so a crash or a leader change loses
nothing.

    state = new_mix(config)
    state, forecast = update_mix(state, observation=MixObservation(...), now=t, config=config)
    forecast.arrival_rate.peak_upper(within_s=config.lead_time_s)   # what capacity should cover

Owns the traffic forecasters and their state. May import: errors.
"""

from autoscaler.forecast.clean import counter_increment, counter_increments, sanitize, sanitize_value
from autoscaler.forecast.evaluation import BacktestResult, backtest, mape, pinball_loss
from autoscaler.forecast.methods import (
    Ewma,
    Fitted,
    ForecastMethod,
    Holt,
    LastValue,
    Prediction,
    SeasonalNaive,
)
from autoscaler.forecast.online import (
    MixState,
    SeriesState,
    make_method,
    new_mix,
    new_series,
    prime_mix,
    prime_series,
    scores,
    select_method,
    update_mix,
    update_series,
)
from autoscaler.forecast.regressor import GradientBoosting
from autoscaler.forecast.types import (
    ForecastConfig,
    Method,
    MethodScore,
    MixForecast,
    MixObservation,
    SeriesForecast,
    tokens_per_completion,
)

__all__ = [
    "BacktestResult",
    "Ewma",
    "Fitted",
    "ForecastConfig",
    "ForecastMethod",
    "GradientBoosting",
    "Holt",
    "LastValue",
    "Method",
    "MethodScore",
    "MixForecast",
    "MixObservation",
    "MixState",
    "Prediction",
    "SeasonalNaive",
    "SeriesForecast",
    "SeriesState",
    "backtest",
    "counter_increment",
    "counter_increments",
    "make_method",
    "mape",
    "new_mix",
    "new_series",
    "pinball_loss",
    "prime_mix",
    "prime_series",
    "sanitize",
    "sanitize_value",
    "scores",
    "select_method",
    "tokens_per_completion",
    "update_mix",
    "update_series",
]
