"""Replaying a whole series through the online forecaster, keeping every method's predictions for scoring.

Used by the forecast benchmark and by tests: the predictions are exactly those the online forecaster made (each
from data before its target, with the same refit schedule), so the scores are honest out-of-sample scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoscaler.forecast.online import new_series, update_series
from autoscaler.forecast.types import ForecastConfig, Method

__all__ = ["BacktestResult", "backtest", "mape", "pinball_loss"]


def pinball_loss(*, actual: np.ndarray, upper: np.ndarray, quantile: float) -> float:
    """Mean pinball (quantile) loss of ``upper`` as the ``quantile`` forecast, over pairs where both are finite."""
    ok = np.isfinite(actual) & np.isfinite(upper)
    if not ok.any():
        return float("nan")
    diff = actual[ok] - upper[ok]
    return float(np.mean(np.where(diff >= 0, quantile * diff, (quantile - 1.0) * diff)))


def mape(*, actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error as a fraction, over pairs where both are finite and the actual is > 0."""
    ok = np.isfinite(actual) & np.isfinite(predicted) & (actual > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(actual[ok] - predicted[ok]) / actual[ok]))


@dataclass(frozen=True, slots=True, eq=False)
class BacktestResult:
    methods: tuple[Method, ...]
    actual: np.ndarray  # (n,) the sanitized series
    mean: np.ndarray  # (M, n, H): method's point forecast made after sample t for sample t + h
    upper: np.ndarray  # (M, n, H)
    selected: tuple[Method | None, ...]  # method the online forecaster used after each sample
    quantile: float

    def aligned(self, method_index: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actual, mean, upper) pairs for predictions ``horizon`` steps ahead, by origin."""
        n = len(self.actual)
        actual = np.full(n, np.nan)
        actual[: n - horizon] = self.actual[horizon:]
        return actual, self.mean[method_index, :, horizon - 1], self.upper[method_index, :, horizon - 1]

    def selected_forecast(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, upper), (n, H), of the method the online back-test picked at each origin."""
        n, H = self.mean.shape[1], self.mean.shape[2]
        mean, upper = np.full((n, H), np.nan), np.full((n, H), np.nan)
        for t, method in enumerate(self.selected):
            if method is not None:
                i = self.methods.index(method)
                mean[t], upper[t] = self.mean[i, t], self.upper[i, t]
        return mean, upper


def backtest(values: Sequence[float | None] | np.ndarray, *, config: ForecastConfig, start_time_s: float = 0.0,
             progress: Callable[[int], None] | None = None) -> BacktestResult:
    """Feed ``values`` (one per interval from ``start_time_s``) through the online forecaster."""
    series = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    n, H, m = len(series), config.horizon_steps, len(config.methods)
    mean = np.full((m, n, H), np.nan)
    upper = np.full((m, n, H), np.nan)
    selected: list[Method | None] = []
    state = new_series(config)
    for t in range(n):
        state, forecast = update_series(state, value=float(series[t]), now=start_time_s + t * config.interval_s,
                                        config=config)
        mean[:, t] = state.pending_mean[:, 0]
        upper[:, t] = state.pending_upper[:, 0]
        selected.append(None if forecast is None else forecast.method)
        if progress is not None:
            progress(t)
    clean = np.where(np.isfinite(series) & (series >= 0), series, np.nan)
    return BacktestResult(methods=config.methods, actual=clean, mean=mean, upper=upper, selected=tuple(selected),
                          quantile=config.quantile)
