"""The online forecaster: per series, keep history, score every method on what it predicted, forecast with the best.

Each cycle :func:`update_series` takes the new sample and the time, and

1. appends it (missed cycles become NaN gaps; a negative or non-finite sample is a gap, not data);
2. scores the predictions every method made 1..H cycles ago for this step: pinball loss at the configured
   quantile and absolute percentage error, exponentially weighted (half-life ``backtest_halflife_s``); next to
   each method's loss it accumulates the naive last value's loss *on the same targets*, so methods that started
   predicting at different times (the regressor needs more history) are compared on equal terms;
3. refits the methods (the simple ones every ``refit_every`` cycles, the regressor every ``gbm_refit_every``, less
   often once the history is long: ``ForecastConfig.refit_cycles``, ``ForecastConfig.gbm_refit_cycles``)
   and stores each method's forecast for the next H steps from the newest samples, to be scored as they arrive;
4. returns the forecast of the method with the lowest score: the mean of its pinball loss and its absolute
   percentage error, each relative to the naive's on the same targets. Both count: the upper quantile is
   what scaling uses, the point forecast is the mix the capacity model is fed (and a band that merely
   covers a lagging point forecast scores well on pinball alone). Among methods within ``tie_tolerance``
   of the best, the simplest wins. Until some method has ``min_scored`` scored predictions at every
   horizon, the last value is used.

Everything is a value: the state goes in and the new state comes out. Pure apart from scikit-learn's fitting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from autoscaler.forecast.clean import sanitize_value
from autoscaler.forecast.methods import (
    Ewma,
    Fitted,
    ForecastMethod,
    Holt,
    LastValue,
    SeasonalNaive,
    forward_fill,
)
from autoscaler.forecast.regressor import GradientBoosting
from autoscaler.forecast.types import (
    ForecastConfig,
    Method,
    MethodScore,
    MixForecast,
    MixObservation,
    SeriesForecast,
)

__all__ = [
    "MixState",
    "SeriesState",
    "make_method",
    "new_mix",
    "new_series",
    "scores",
    "select_method",
    "update_mix",
    "update_series",
]

FALLBACK = Method.LAST_VALUE
NAIVE_LOOKBACK = 256  # samples searched back for the naive reference value across a gap


def make_method(method: Method, config: ForecastConfig) -> ForecastMethod:
    factories: dict[Method, Callable[[ForecastConfig], ForecastMethod]] = {
        Method.LAST_VALUE: LastValue,
        Method.EWMA: Ewma,
        Method.HOLT: Holt,
        Method.SEASONAL_NAIVE: SeasonalNaive,
        Method.GBM: GradientBoosting,
    }
    return factories[method](config)


@dataclass(frozen=True, slots=True, eq=False)
class SeriesState:
    """Everything the forecaster remembers about one series. Arrays are indexed by method in ``methods`` order."""

    methods: tuple[Method, ...]
    values: np.ndarray  # history, oldest first, NaN for gaps
    last_time_s: float | None  # time of values[-1]
    pending_mean: np.ndarray  # (M, H + 1, H): [method, age of the origin in steps, horizon - 1]
    pending_upper: np.ndarray
    pinball: np.ndarray  # (M, H) exponentially weighted sums
    pinball_weight: np.ndarray
    naive_pinball: np.ndarray  # (M, H) last value's loss on the targets each method was scored on
    ape: np.ndarray
    naive_ape: np.ndarray
    ape_weight: np.ndarray
    scored: np.ndarray  # (M, H) int, predictions scored (not decayed)
    fitted: Mapping[Method, Fitted] = field(default_factory=dict)  # not persisted; refitted after a restart
    cycles_since_fit: int = 0
    cycles_since_gbm_fit: int = 0


def new_series(config: ForecastConfig) -> SeriesState:
    m, H = len(config.methods), config.horizon_steps
    return SeriesState(
        methods=config.methods,
        values=np.empty(0),
        last_time_s=None,
        pending_mean=np.full((m, H + 1, H), np.nan),
        pending_upper=np.full((m, H + 1, H), np.nan),
        pinball=np.zeros((m, H)),
        pinball_weight=np.zeros((m, H)),
        naive_pinball=np.zeros((m, H)),
        ape=np.zeros((m, H)),
        naive_ape=np.zeros((m, H)),
        ape_weight=np.zeros((m, H)),
        scored=np.zeros((m, H), dtype=np.int64),
    )


def _pinball(actual: float, upper: np.ndarray, q: float) -> np.ndarray:
    diff = actual - upper
    return np.where(diff >= 0, q * diff, (q - 1.0) * diff)


def _naive_by_horizon(values: np.ndarray, horizons: int) -> np.ndarray:
    """For h = 1..H, the last finite sample at or before h steps before the coming one (NaN if none)."""
    tail = forward_fill(values[-(horizons + NAIVE_LOOKBACK):])
    out = np.full(horizons, np.nan)
    available = min(horizons, len(tail))
    out[:available] = tail[::-1][:available]
    return out


@dataclass(slots=True)
class _Scratch:
    """Mutable copies used while one update is computed; frozen again before it is returned."""

    values: np.ndarray
    pending_mean: np.ndarray
    pending_upper: np.ndarray
    pinball: np.ndarray
    pinball_weight: np.ndarray
    naive_pinball: np.ndarray
    ape: np.ndarray
    naive_ape: np.ndarray
    ape_weight: np.ndarray
    scored: np.ndarray

    @classmethod
    def of(cls, state: SeriesState) -> _Scratch:
        return cls(*(np.array(getattr(state, f)) for f in (
            "values", "pending_mean", "pending_upper", "pinball", "pinball_weight", "naive_pinball", "ape", "naive_ape",
            "ape_weight", "scored")))

    def advance(self, value: float, config: ForecastConfig) -> None:
        """One step: age the pending predictions, score those that targeted this step, append the sample."""
        H = config.horizon_steps
        for pending in (self.pending_mean, self.pending_upper):
            pending[:, 1:] = pending[:, :-1].copy()
            pending[:, 0] = np.nan
        decay = config.decay_per_step
        for acc in (self.pinball, self.pinball_weight, self.naive_pinball, self.ape, self.naive_ape,
                    self.ape_weight):
            acc *= decay
        if math.isfinite(value):
            ages = np.arange(1, H + 1)
            mean = self.pending_mean[:, ages, ages - 1]  # (M, H): made h steps ago for h steps ahead
            upper = self.pending_upper[:, ages, ages - 1]
            naive = _naive_by_horizon(self.values, H)  # last value known h steps ago, no band
            has = np.isfinite(upper) & np.isfinite(mean) & np.isfinite(naive)[None, :]
            self.pinball += np.where(has, _pinball(value, upper, config.quantile), 0.0)
            self.naive_pinball += np.where(has, _pinball(value, naive, config.quantile)[None, :], 0.0)
            self.pinball_weight += has
            self.scored += has
            if value > 0:  # percentage error is undefined at zero
                self.ape += np.where(has, np.abs(value - mean) / value, 0.0)
                self.naive_ape += np.where(has, (np.abs(value - naive) / value)[None, :], 0.0)
                self.ape_weight += has
        self.values = np.append(self.values, value)[-config.history_steps:]


def scores(state: SeriesState) -> tuple[MethodScore, ...]:
    """Back-test score of each method (NaN until every horizon has been scored).

    ``pinball`` and ``mape`` are averaged over horizons; ``relative`` is the mean of the method's pinball loss
    and absolute percentage error, each summed over horizons and divided by the naive last value's on the same
    targets (below 1 = better than naive).
    """
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        pinball = np.where(state.pinball_weight > 0, state.pinball / state.pinball_weight, np.nan)
        ape = np.where(state.ape_weight > 0, state.ape / state.ape_weight, np.nan)
    for i, method in enumerate(state.methods):
        scored = bool((state.pinball_weight[i] > 0).all())
        relative = 0.5 * (_ratio(state.pinball[i], state.naive_pinball[i]) + _ratio(state.ape[i], state.naive_ape[i]))
        out.append(MethodScore(
            method=method,
            pinball=float(np.mean(pinball[i])) if scored else math.nan,
            mape=float(np.mean(ape[i])) if np.isfinite(ape[i]).all() else math.nan,
            relative=relative if scored else math.nan,
            scored=int(state.scored[i].min()),
        ))
    return tuple(out)


def _ratio(own: np.ndarray, naive: np.ndarray) -> float:
    """Sum of a method's losses over that of the naive on the same targets; 1 when both are zero (a tie)."""
    a, b = float(own.sum()), float(naive.sum())
    tiny = 1e-12 * (a + b) + 1e-300
    return (a + tiny) / (b + tiny)


def select_method(state: SeriesState, config: ForecastConfig) -> Method | None:
    """The method whose forecast is used: lowest loss relative to naive, simplest on a tie; None if none can."""
    ready = [i for i in range(len(state.methods))
             if np.isfinite(state.pending_upper[i, 0]).all() and np.isfinite(state.pending_mean[i, 0]).all()]
    if not ready:
        return None
    table = scores(state)
    eligible = [i for i in ready if table[i].scored >= config.min_scored and math.isfinite(table[i].relative)]
    if not eligible:
        fallback = [i for i in ready if state.methods[i] is FALLBACK]
        return state.methods[(fallback or ready)[0]]
    best = min(table[i].relative for i in eligible)
    return next(state.methods[i] for i in eligible if table[i].relative <= best * (1.0 + config.tie_tolerance))


def _steps_to_advance(state: SeriesState, now: float, config: ForecastConfig) -> int:
    if state.last_time_s is None:
        return 1
    return round((now - state.last_time_s) / config.interval_s)


def _refit_and_predict(scratch: _Scratch, state: SeriesState, *, now: float, config: ForecastConfig,
                       refit_simple: bool, refit_gbm: bool) -> tuple[dict[Method, Fitted], bool, bool]:
    """Refit what is due (or missing), then store each method's forecast at age 0 of the pending predictions."""
    fitted: dict[Method, Fitted] = dict(state.fitted)
    history = scratch.values
    gbm_fitted = False
    for i, method in enumerate(state.methods):
        is_gbm = method is Method.GBM
        if (refit_gbm if is_gbm else refit_simple) or method not in fitted:
            model = make_method(method, config).fit(history=history, end_time_s=now)
            if model is None:
                fitted.pop(method, None)
            else:
                fitted[method] = model
                gbm_fitted = gbm_fitted or is_gbm
        current = fitted.get(method)
        prediction = None if current is None else current.predict(history=history, end_time_s=now)
        if prediction is not None and np.isfinite(prediction.mean).all() and np.isfinite(prediction.upper).all():
            scratch.pending_mean[i, 0] = prediction.mean
            scratch.pending_upper[i, 0] = prediction.upper
    # The simple methods' clock restarts when their refit was due; the regressor's whenever it got a model
    # (a first fit as soon as there is enough history must not be followed by another a few cycles later).
    return fitted, refit_simple, gbm_fitted or refit_gbm


def _forecast(state: SeriesState, config: ForecastConfig) -> SeriesForecast | None:
    method = select_method(state, config)
    if method is None:
        return None
    i = state.methods.index(method)
    H = config.horizon_steps
    mean = np.maximum(state.pending_mean[i, 0], 0.0)  # rates and token counts are never negative
    upper = np.maximum(state.pending_upper[i, 0], mean)
    return SeriesForecast(
        method=method,
        horizons_s=tuple(float(h * config.interval_s) for h in range(1, H + 1)),
        mean=tuple(float(v) for v in mean),
        upper=tuple(float(v) for v in upper),
        quantile=config.quantile,
        scores=scores(state),
    )


def update_series(state: SeriesState, *, value: float | None, now: float,
                  config: ForecastConfig) -> tuple[SeriesState, SeriesForecast | None]:
    """Take this cycle's sample (None/NaN = not measured) taken at ``now`` and forecast the next H steps.

    A sample in the same cycle as the previous one replaces it; a clock that moved backwards discards the history
    (its timeline no longer matches); cycles skipped since the last sample become gaps.
    """
    if state.methods != config.methods or state.pending_mean.shape[2] != config.horizon_steps:
        state = new_series(config)  # settings changed: old predictions no longer line up
    sample = sanitize_value(value)
    steps = _steps_to_advance(state, now, config)
    if steps < 0:
        state, steps = new_series(config), 1
    if steps == 0:
        if math.isfinite(sample) and len(state.values):
            values = np.array(state.values)
            values[-1] = sample
            state = replace(state, values=values)
        return state, _forecast(state, config)

    scratch = _Scratch.of(state)
    # a gap longer than history plus horizon is the same as a fresh start; do not loop over it
    steps = min(steps, config.history_steps + config.horizon_steps + 1)
    for k in range(steps):
        scratch.advance(sample if k == steps - 1 else math.nan, config)
    simple_cycles = state.cycles_since_fit + steps
    gbm_cycles = state.cycles_since_gbm_fit + steps
    fitted, simple_done, gbm_done = _refit_and_predict(
        scratch, state, now=now, config=config, refit_simple=simple_cycles >= config.refit_cycles(len(state.values)),
        refit_gbm=gbm_cycles >= config.gbm_refit_cycles(len(state.values)))
    new = SeriesState(
        methods=state.methods,
        values=scratch.values,
        last_time_s=now,
        pending_mean=scratch.pending_mean,
        pending_upper=scratch.pending_upper,
        pinball=scratch.pinball,
        pinball_weight=scratch.pinball_weight,
        naive_pinball=scratch.naive_pinball,
        ape=scratch.ape,
        naive_ape=scratch.naive_ape,
        ape_weight=scratch.ape_weight,
        scored=scratch.scored,
        fitted=fitted,
        cycles_since_fit=0 if simple_done else simple_cycles,
        cycles_since_gbm_fit=0 if gbm_done else gbm_cycles,
    )
    return new, _forecast(new, config)


def prime_series(state: SeriesState, *, values: np.ndarray, end_s: float, config: ForecastConfig) -> SeriesState:
    """``state`` with an older stretch of history (one value per interval, oldest first, NaN for gaps, the last
    at ``end_s``) taken in without predicting or scoring each step: what seasonal methods need of the past
    (the value a day ago) at the cost of one append. Only for a fresh series (a warm start), and followed by
    :func:`update_series` over the recent past, so that the back-test scores methods on it."""
    if len(state.values) or state.last_time_s is not None:
        raise ValueError("prime_series takes history into a fresh series only")
    kept = np.asarray([sanitize_value(v) for v in values], dtype=float)[-config.history_steps:]
    return replace(state, values=kept, last_time_s=end_s if len(kept) else None)


@dataclass(frozen=True, slots=True, eq=False)
class MixState:
    """Forecaster state of one model's traffic: arrival rate and mean prompt/output tokens."""

    arrival_rate: SeriesState
    mean_input_tokens: SeriesState
    mean_output_tokens: SeriesState


def new_mix(config: ForecastConfig) -> MixState:
    return MixState(new_series(config), new_series(config), new_series(config))


def update_mix(state: MixState, *, observation: MixObservation, now: float,
               config: ForecastConfig) -> tuple[MixState, MixForecast]:
    """One cycle for one model: update its three series and forecast each."""
    rate, rate_fc = update_series(state.arrival_rate, value=observation.arrival_rate, now=now, config=config)
    inp, inp_fc = update_series(state.mean_input_tokens, value=observation.mean_input_tokens, now=now, config=config)
    out, out_fc = update_series(state.mean_output_tokens, value=observation.mean_output_tokens, now=now,
                                config=config)
    return MixState(rate, inp, out), MixForecast(rate_fc, inp_fc, out_fc)


def prime_mix(state: MixState, *, rates: np.ndarray, inputs: np.ndarray, outputs: np.ndarray, end_s: float,
              config: ForecastConfig) -> MixState:
    """A fresh mix's three series primed with older history (see :func:`prime_series`)."""
    return MixState(prime_series(state.arrival_rate, values=rates, end_s=end_s, config=config),
                    prime_series(state.mean_input_tokens, values=inputs, end_s=end_s, config=config),
                    prime_series(state.mean_output_tokens, values=outputs, end_s=end_s, config=config))
