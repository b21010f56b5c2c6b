"""Gradient-boosted quantile regression on lag and time features (scikit-learn's HistGradientBoostingRegressor).

One model covers every horizon (the horizon is a feature). Targets and lag features are taken relative to the
recent level (mean of the last 4 samples), so the trees learn *changes*: a level the series never had before
does not fall outside what the trees saw, which trees could not extrapolate to. Two models are fitted: the
mean (squared error; cheap, as it needs no per-leaf percentile) and the configured upper quantile.

Features per (origin o, horizon h): h; last value, 16-sample mean and 4-sample slope, all relative to the level;
the change over the same h steps one season earlier (smoothed); the level; sin/cos of the target's phase in
the season. HistGradientBoosting takes NaN features natively, so gaps and a missing season cost nothing.

Fitting costs about a second on three days of 30 s samples, so the online forecaster refits it every
``ForecastConfig.gbm_refit_every`` cycles and predicts from fresh lags with the last fit in between.
OpenMP is held to one thread: on a shared 2-core machine its spinning threads made a fit 10-80x slower.

Predicting is every cycle, for ten rows: scikit-learn's ``predict`` spends ~2 ms of it validating the input and
calling each of the 60 trees in turn, 35,000 times in a two-day replay (the walk takes about half). So after a fit the trees of both models
are copied into flat arrays (:class:`_Forest`) and walked all at once with NumPy, with scikit-learn's arithmetic:
the same comparisons (NaN goes where the node says, else ``x <= threshold`` goes left) and the same sum (the
baseline, then each tree's leaf in order), so the predictions are the same to the last bit
(tests/core/test_forecast_regressor.py checks it). A model the copy does not understand (categorical splits, a
future scikit-learn without these attributes) is predicted by scikit-learn itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import ThreadpoolController

from autoscaler.forecast.methods import Prediction, forward_fill
from autoscaler.forecast.types import ForecastConfig, Method

__all__ = ["GradientBoosting", "lag_features"]

SHORT = 4  # samples in the level estimate
LONG = 16  # samples in the longer mean
THREADS = 1
_threadpools: ThreadpoolController | None = None


def _one_thread():  # type: ignore[no-untyped-def]
    """Context holding OpenMP to THREADS; the controller is built once (building one costs ~5 ms)."""
    global _threadpools
    if _threadpools is None:
        _threadpools = ThreadpoolController()
    return _threadpools.limit(limits=THREADS, user_api="openmp")


def _trailing_mean(y: np.ndarray, k: int) -> np.ndarray:
    """Mean of the finite samples among y[i-k+1..i] (NaN where there are none)."""
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(len(y))
    lo = np.maximum(i - k + 1, 0)
    n = counts[i + 1] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[i + 1] - sums[lo]) / np.maximum(n, 1), np.nan)


@dataclass(frozen=True, slots=True, eq=False)
class _Lags:
    """Per-sample summaries the features are cut from."""

    last: np.ndarray
    short: np.ndarray
    long: np.ndarray
    level: np.ndarray  # short mean, else last value


def _lags(y: np.ndarray) -> _Lags:
    last = forward_fill(y)
    short = _trailing_mean(y, SHORT)
    return _Lags(last=last, short=short, long=_trailing_mean(y, LONG), level=np.where(np.isfinite(short), short, last))


def lag_features(*, lags: _Lags, origins: np.ndarray, horizons: np.ndarray, end_time_s: float,
                 config: ForecastConfig) -> np.ndarray:
    """Feature rows for each (origin index, horizon steps) pair; the last sample is at ``end_time_s``."""
    n = len(lags.last)
    s = config.season_steps
    base = lags.level[origins]
    back = origins - SHORT
    slope = np.where(back >= 0, (lags.short[origins] - lags.short[np.maximum(back, 0)]) / SHORT, np.nan)
    then_origin, then_target = origins - s, origins + horizons - s
    seasonal_ok = (then_origin >= 0) & (then_target <= origins)
    seasonal = np.where(
        seasonal_ok,
        lags.short[np.clip(then_target, 0, n - 1)] - lags.short[np.clip(then_origin, 0, n - 1)],
        np.nan,
    )
    target_time = end_time_s - (n - 1 - origins) * config.interval_s + horizons * config.interval_s
    phase = 2.0 * math.pi * np.mod(target_time, config.season_s) / config.season_s
    return np.column_stack([
        horizons.astype(np.float64),
        lags.last[origins] - base,
        lags.long[origins] - base,
        slope,
        seasonal,
        base,
        np.sin(phase),
        np.cos(phase),
    ])


@dataclass(frozen=True, slots=True, eq=False)
class _Forest:
    """The trees of some fitted HistGradientBoostingRegressors as flat arrays, walked together (see the module
    docstring). ``roots[m]`` are model m's trees in boosting order; ``baselines[m]`` its starting value."""

    feature: np.ndarray
    threshold: np.ndarray
    nan_left: np.ndarray
    child: np.ndarray  # (2, nodes): left, right; a leaf points at itself, so finished walks stay put
    value: np.ndarray
    roots: tuple[np.ndarray, ...]
    baselines: tuple[float, ...]
    depth: int

    @classmethod
    def of(cls, *models: HistGradientBoostingRegressor) -> _Forest | None:
        try:
            trees = [[p.nodes for (p,) in m._predictors] for m in models]
            baselines = tuple(float(np.asarray(m._baseline_prediction).reshape(-1)[0]) for m in models)
            if any(np.asarray(m._baseline_prediction).size != 1 for m in models):
                return None
            nodes = [n for model in trees for n in model]
            if any(bool(n["is_categorical"].any()) for n in nodes):
                return None
        except (AttributeError, TypeError, ValueError, KeyError):
            return None
        offsets = np.cumsum([0] + [len(n) for n in nodes])
        flat = np.concatenate(nodes)
        own = np.arange(len(flat))
        shift = np.repeat(offsets[:-1], [len(n) for n in nodes])
        leaf = flat["is_leaf"].astype(bool)
        left = np.where(leaf, own, flat["left"].astype(np.int64) + shift)
        right = np.where(leaf, own, flat["right"].astype(np.int64) + shift)
        starts, roots, i = offsets[:-1], [], 0
        for model in trees:
            roots.append(starts[i:i + len(model)].astype(np.int64))
            i += len(model)
        return cls(feature=flat["feature_idx"].astype(np.int64), threshold=flat["num_threshold"].astype(np.float64),
                   nan_left=flat["missing_go_to_left"].astype(bool), child=np.stack([left, right]),
                   value=flat["value"].astype(np.float64), roots=tuple(roots), baselines=baselines,
                   depth=int(flat["depth"].max()))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each model's prediction for the rows of ``x`` (float64, no categorical features)."""
        x = np.asarray(x, dtype=np.float64)
        flat_x = x.ravel()
        row_start = (np.arange(len(x)) * x.shape[1])[:, None]
        node = np.broadcast_to(np.concatenate(self.roots)[None, :], (len(x), sum(len(r) for r in self.roots)))
        total = self.child.shape[1]
        flat_child = self.child.ravel()
        for _ in range(self.depth):
            v = flat_x[row_start + self.feature[node]]
            go_right = np.where(np.isnan(v), ~self.nan_left[node], ~(v <= self.threshold[node]))
            moved = flat_child[go_right * total + node]
            if np.array_equal(moved, node):  # every walk is at its leaf
                break
            node = moved
        leaves = self.value[node]
        out, start = [], 0
        for roots, baseline in zip(self.roots, self.baselines, strict=True):
            # scikit-learn's sum: the baseline, then each tree's value added in order (accumulate is sequential)
            column = np.concatenate((np.full((len(x), 1), baseline), leaves[:, start:start + len(roots)]), axis=1)
            out.append(np.add.accumulate(column, axis=1)[:, -1])
            start += len(roots)
        return tuple(out)


def _regressor(loss: str, quantile: float | None = None) -> HistGradientBoostingRegressor:
    kwargs: dict[str, object] = {"loss": loss, "max_iter": 60, "learning_rate": 0.15, "max_leaf_nodes": 15,
                                 "min_samples_leaf": 20, "early_stopping": False, "random_state": 0}
    if quantile is not None:
        kwargs["quantile"] = quantile
    return HistGradientBoostingRegressor(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, eq=False)
class _FittedGradientBoosting:
    config: ForecastConfig
    mean_model: HistGradientBoostingRegressor
    upper: HistGradientBoostingRegressor
    empty_columns: np.ndarray  # features with no value in training (e.g. no season yet): fed as 0
    forest: _Forest | None = None  # both models' trees, walked at once (None: scikit-learn predicts)

    def predict(self, *, history: np.ndarray, end_time_s: float) -> Prediction | None:
        if not np.isfinite(history).any():
            return None
        lags = _lags(history)
        H = self.config.horizon_steps
        horizons = np.arange(1, H + 1)
        origins = np.full(H, len(history) - 1)
        x = lag_features(lags=lags, origins=origins, horizons=horizons, end_time_s=end_time_s, config=self.config)
        x[:, self.empty_columns] = 0.0
        base = lags.level[-1]
        if self.forest is not None:
            mean_change, upper_change = self.forest.predict(x)
            mean, upper = base + mean_change, base + upper_change
        else:
            with _one_thread():
                mean = base + self.mean_model.predict(x)
                upper = base + self.upper.predict(x)
        return Prediction(mean=mean, upper=np.maximum(mean, upper))


@dataclass(frozen=True, slots=True)
class GradientBoosting:
    config: ForecastConfig

    @property
    def method(self) -> Method:
        return Method.GBM

    def training_rows(self, *, history: np.ndarray, end_time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets (change from the level) over the history, thinned to ``gbm_max_rows``."""
        n, H = len(history), self.config.horizon_steps
        lags = _lags(history)
        candidates = max(0, n - 1) * H
        stride = max(1, math.ceil(candidates / self.config.gbm_max_rows))
        # newest origins are kept: count back from the last usable one
        origin_list = np.arange(n - 2, -1, -stride)[::-1]
        origins = np.repeat(origin_list, H)
        horizons = np.tile(np.arange(1, H + 1), len(origin_list))
        keep = origins + horizons <= n - 1
        origins, horizons = origins[keep], horizons[keep]
        target = history[origins + horizons] - lags.level[origins]
        x = lag_features(lags=lags, origins=origins, horizons=horizons, end_time_s=end_time_s, config=self.config)
        ok = np.isfinite(target)
        return x[ok], target[ok]

    def fit(self, *, history: np.ndarray, end_time_s: float) -> _FittedGradientBoosting | None:
        x, y = self.training_rows(history=history, end_time_s=end_time_s)
        if len(y) < self.config.gbm_min_rows:
            return None
        # scikit-learn's binning fails on a column without a single value (1.9), so such columns become 0
        empty = ~np.isfinite(x).any(axis=0)
        x[:, empty] = 0.0
        with _one_thread():
            mean_model = _regressor("squared_error").fit(x, y)
            upper = _regressor("quantile", self.config.quantile).fit(x, y)
        return _FittedGradientBoosting(config=self.config, mean_model=mean_model, upper=upper, empty_columns=empty,
                                       forest=_Forest.of(mean_model, upper))
