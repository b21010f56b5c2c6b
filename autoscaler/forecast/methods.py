"""Forecasting methods behind one interface, and the simple ones: last value, EWMA, Holt, seasonal naive.

Every method sees the same input: a history of samples one interval apart, oldest first, NaN for gaps, and the
time of the last sample. ``fit`` learns what the method needs (smoothing parameters, residual quantiles, a
regressor) and ``predict`` returns the point forecast and the upper quantile for horizons 1..H steps.

Upper quantiles of the simple methods are empirical: the q-quantile of the method's own h-step residuals over
the fit window, added to the point forecast (never below it), so a noisy series gets a wider band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from autoscaler.forecast.types import ForecastConfig, Method

__all__ = [
    "Ewma",
    "Fitted",
    "ForecastMethod",
    "Holt",
    "LastValue",
    "Prediction",
    "SeasonalNaive",
    "forward_fill",
]

EWMA_ALPHAS = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0])
HOLT_ALPHAS = np.array([0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
HOLT_BETAS = np.array([0.01, 0.05, 0.1, 0.2, 0.4])
HOLT_PHIS = np.array([0.8, 0.9, 0.98, 1.0])  # trend damping; 1 = undamped
MIN_RESIDUALS = 5  # fewer than this and a quantile says nothing; the band is then zero-width
TREND_INIT_POINTS = 8
MIN_FIT_SAMPLES = 30  # finite samples before smoothing parameters are fitted rather than defaulted


@dataclass(frozen=True, slots=True, eq=False)
class Prediction:
    mean: np.ndarray  # (H,) point forecast for horizons 1..H
    upper: np.ndarray  # (H,) upper quantile


class Fitted(Protocol):
    def predict(self, *, history: np.ndarray, end_time_s: float) -> Prediction | None:
        """Forecast from the end of ``history``; None when the history gives nothing to go on."""
        ...


class ForecastMethod(Protocol):
    @property
    def method(self) -> Method: ...

    def fit(self, *, history: np.ndarray, end_time_s: float) -> Fitted | None:
        """Fit on ``history`` (NaN = gap); None when there is too little of it."""
        ...


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Each sample replaced by the last finite value at or before it (NaN before the first)."""
    idx = np.where(np.isfinite(values), np.arange(len(values)), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.where(idx >= 0, values[np.maximum(idx, 0)], np.nan)
    return out


def residual_offsets(*, actual: np.ndarray, predicted: list[np.ndarray], quantile: float) -> np.ndarray:
    """q-quantile of (actual - predicted) per horizon; ``predicted[h-1][t]`` targets ``actual[t + h]``."""
    offsets = np.zeros(len(predicted))
    for i, pred in enumerate(predicted):
        h = i + 1
        resid = actual[h:h + len(pred)] - pred[: max(0, len(actual) - h)]
        resid = resid[np.isfinite(resid)]
        if len(resid) >= MIN_RESIDUALS:
            offsets[i] = np.quantile(resid, quantile)
    return offsets


def _band(mean: np.ndarray, offsets: np.ndarray) -> Prediction:
    return Prediction(mean=mean, upper=np.maximum(mean, mean + offsets))


# --- last value ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FittedLastValue:
    offsets: np.ndarray

    def predict(self, *, history: np.ndarray, end_time_s: float) -> Prediction | None:
        finite = history[np.isfinite(history)]
        if not len(finite):
            return None
        return _band(np.full(len(self.offsets), finite[-1]), self.offsets)


@dataclass(frozen=True, slots=True)
class LastValue:
    """Naive forecast: the last observed value at every horizon. The baseline every other method must beat."""

    config: ForecastConfig

    @property
    def method(self) -> Method:
        return Method.LAST_VALUE

    def fit(self, *, history: np.ndarray, end_time_s: float) -> Fitted | None:
        y = history[-self.config.fit_window_steps:]
        if not np.isfinite(y).any():
            return None
        filled = forward_fill(y)
        H = self.config.horizon_steps
        offsets = residual_offsets(actual=y, predicted=[filled] * H, quantile=self.config.quantile)
        return _FittedLastValue(offsets=offsets)


# --- exponential smoothing (EWMA = level only, Holt = level + trend) ----------------------------------------


def _initial_trend(y: np.ndarray) -> float:
    """Least-squares slope over the first few finite samples (per step); 0 with fewer than two."""
    idx = np.flatnonzero(np.isfinite(y))[:TREND_INIT_POINTS]
    if len(idx) < 2:
        return 0.0
    return float(np.polyfit(idx.astype(np.float64), y[idx], 1)[0])


@dataclass(frozen=True, slots=True, eq=False)
class SmoothingGrid:
    """Parameter sets of exponential smoothing, one per entry (all arrays the same length).

    Damped-trend Holt (Gardner and McKenzie): the trend is multiplied by ``phi`` each step ahead, so a trend
    fitted on noise fades instead of running away over a five-minute horizon; ``phi = 1`` is plain Holt.
    Simple exponential smoothing (EWMA) is ``beta = phi = 0`` with no initial trend.
    """

    alpha: np.ndarray
    beta: np.ndarray
    phi: np.ndarray
    trend: bool

    def __len__(self) -> int:
        return len(self.alpha)

    def pick(self, i: int) -> SmoothingGrid:
        return SmoothingGrid(self.alpha[i:i + 1], self.beta[i:i + 1], self.phi[i:i + 1], self.trend)


def ewma_grid() -> SmoothingGrid:
    zeros = np.zeros(len(EWMA_ALPHAS))
    return SmoothingGrid(EWMA_ALPHAS, zeros, zeros, trend=False)


def holt_grid() -> SmoothingGrid:
    alpha, beta, phi = (g.ravel() for g in np.meshgrid(HOLT_ALPHAS, HOLT_BETAS, HOLT_PHIS, indexing="ij"))
    return SmoothingGrid(alpha, beta, phi, trend=True)


def smooth(y: np.ndarray, *, grid: SmoothingGrid) -> tuple[np.ndarray, np.ndarray] | None:
    """Run exponential smoothing for every parameter set of ``grid`` at once.

    Returns level and trend, each (n, G), after the update at each step (NaN before the first finite sample).
    A missing sample is replaced by the forecast (the level moves on by the damped trend), the usual
    treatment of gaps in state-space smoothing.
    """
    finite = np.flatnonzero(np.isfinite(y))
    if not len(finite):
        return None
    n, g = len(y), len(grid)
    first = int(finite[0])
    level_out = np.full((n, g), np.nan)
    trend_out = np.full((n, g), np.nan)
    level = np.full(g, y[first])
    trend = np.full(g, _initial_trend(y) if grid.trend else 0.0)
    alpha, beta, phi = grid.alpha, grid.beta, grid.phi
    level_out[first], trend_out[first] = level, trend
    values = y.tolist()
    present = np.isfinite(y).tolist()
    for t in range(first + 1, n):
        damped = phi * trend
        forecast = level + damped
        if present[t]:
            yt = values[t]
            new_level = forecast + alpha * (yt - forecast)
            trend = damped + beta * (new_level - level - damped)
            level = new_level
        else:
            level, trend = forecast, damped
        level_out[t], trend_out[t] = level, trend
    return level_out, trend_out


def damped_sums(phi: np.ndarray, horizons: int) -> np.ndarray:
    """(H, G): phi + phi^2 + ... + phi^h for h = 1..H, how much of the current trend is added h steps ahead."""
    powers = np.asarray(phi, dtype=np.float64)[None, :] ** np.arange(1, horizons + 1)[:, None]
    return np.cumsum(powers, axis=0)


def final_state(y: np.ndarray, *, alpha: float, beta: float, phi: float, trend: bool) -> tuple[float, float] | None:
    """Level and trend after the last sample for one parameter set (a scalar loop: far faster than G=1 arrays)."""
    values = y.tolist()
    present = np.isfinite(y).tolist()
    start = next((i for i, ok in enumerate(present) if ok), None)
    if start is None:
        return None
    level = values[start]
    slope = _initial_trend(y) if trend else 0.0
    for yt, ok in zip(values[start + 1:], present[start + 1:], strict=True):
        damped = phi * slope
        forecast = level + damped
        if ok:
            new_level = forecast + alpha * (yt - forecast)
            slope = damped + beta * (new_level - level - damped)
            level = new_level
        else:
            level, slope = forecast, damped
    return level, slope


@dataclass(frozen=True, slots=True)
class _FittedSmoothing:
    alpha: float
    beta: float
    phi: float
    trend: bool
    window: int
    offsets: np.ndarray

    def predict(self, *, history: np.ndarray, end_time_s: float) -> Prediction | None:
        state = final_state(history[-self.window:], alpha=self.alpha, beta=self.beta, phi=self.phi,
                            trend=self.trend)
        if state is None:
            return None
        level, slope = state
        H = len(self.offsets)
        steps = damped_sums(np.array([self.phi]), H)[:, 0]
        return _band(level + slope * steps, self.offsets)


def _fit_smoothing(y: np.ndarray, *, grid: SmoothingGrid, config: ForecastConfig,
                   window: int) -> _FittedSmoothing | None:
    """Pick the parameters minimising the mean squared h-step error over horizons 1..H (what we forecast)."""
    states = smooth(y, grid=grid)
    if states is None:
        return None
    level, trend = states
    H = config.horizon_steps
    burn_in = min(10, len(y) // 4)
    steps = damped_sums(grid.phi, H)  # (H, G)
    errors = np.zeros(len(grid))
    counted = 0
    for h in range(1, H + 1):
        if len(y) - h <= burn_in:
            break
        pred = level[burn_in:-h] + steps[h - 1] * trend[burn_in:-h]
        err = y[burn_in + h:, None] - pred
        ok = np.isfinite(err).all(axis=1)
        if ok.any():
            errors += np.mean(err[ok] ** 2, axis=0)
            counted += 1
    # with too little to judge by, take the most reactive set (close to the last value): parameters picked on a
    # handful of samples were seen to lag badly behind the first level shift
    enough = counted and np.isfinite(y).sum() >= MIN_FIT_SAMPLES
    best = int(np.argmin(errors)) if enough else int(np.argmax(grid.alpha))
    chosen = [level[burn_in:, best] + steps[h - 1][best] * trend[burn_in:, best] for h in range(1, H + 1)]
    offsets = residual_offsets(actual=y[burn_in:], predicted=chosen, quantile=config.quantile)
    return _FittedSmoothing(alpha=float(grid.alpha[best]), beta=float(grid.beta[best]), phi=float(grid.phi[best]),
                            trend=grid.trend, window=window, offsets=offsets)


@dataclass(frozen=True, slots=True)
class Ewma:
    """Simple exponential smoothing: a level that follows the series, its reactivity fitted on the recent past."""

    config: ForecastConfig

    @property
    def method(self) -> Method:
        return Method.EWMA

    def fit(self, *, history: np.ndarray, end_time_s: float) -> Fitted | None:
        window = self.config.fit_window_steps
        return _fit_smoothing(history[-window:], grid=ewma_grid(), config=self.config, window=window)


@dataclass(frozen=True, slots=True)
class Holt:
    """Holt's linear method with a damped trend: ramps are extrapolated rather than chased, and a trend
    that was only noise fades over the horizon."""

    config: ForecastConfig

    @property
    def method(self) -> Method:
        return Method.HOLT

    def fit(self, *, history: np.ndarray, end_time_s: float) -> Fitted | None:
        window = self.config.fit_window_steps
        return _fit_smoothing(history[-window:], grid=holt_grid(), config=self.config, window=window)


# --- seasonal naive -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FittedSeasonal:
    season: int
    offsets: np.ndarray

    def predict(self, *, history: np.ndarray, end_time_s: float) -> Prediction | None:
        n, H = len(history), len(self.offsets)
        source = n - 1 + np.arange(1, H + 1) - self.season  # same time one season before each target
        if source[0] < 0:
            return None
        mean = forward_fill(history)[source]  # a gap one season ago falls back to the value before it
        if not np.isfinite(mean).all():
            return None
        return _band(mean, self.offsets)


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """The value at the same time one season (a day) earlier. Needs a full season of history."""

    config: ForecastConfig

    @property
    def method(self) -> Method:
        return Method.SEASONAL_NAIVE

    def fit(self, *, history: np.ndarray, end_time_s: float) -> Fitted | None:
        s, H = self.config.season_steps, self.config.horizon_steps
        if H > s or len(history) <= s or not np.isfinite(history).any():
            return None
        window = min(len(history), self.config.fit_window_steps + s)
        y = history[-window:]
        filled = forward_fill(y)
        # prediction made at origin t for t+h is the sample at t+h-s
        predicted = [np.concatenate([np.full(s - h, np.nan), filled[: len(y) - s + h]])
                     for h in range(1, H + 1)]
        offsets = residual_offsets(actual=y, predicted=predicted, quantile=self.config.quantile)
        return _FittedSeasonal(season=s, offsets=offsets)
