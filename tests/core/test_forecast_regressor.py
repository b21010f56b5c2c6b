"""The regressor's own tree walk predicts what scikit-learn predicts, bit for bit (it exists only for speed)."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.forecast.regressor import GradientBoosting, _Forest, _lags, lag_features
from autoscaler.forecast.types import ForecastConfig


def _series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 20 + 8 * np.sin(2 * np.pi * t / 240) + rng.gamma(2.0, 1.5, n)
    y[rng.random(n) < 0.03] = np.nan  # gaps: NaN features take the side each node says
    return y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_tree_walk_predicts_exactly_what_scikit_learn_predicts(seed: int) -> None:
    config = ForecastConfig(interval_s=15.0, season_s=3600.0)
    history = _series(1500, seed)
    fitted = GradientBoosting(config).fit(history=history, end_time_s=1500 * 15.0)
    assert fitted is not None and fitted.forest is not None
    lags = _lags(history)
    rng = np.random.default_rng(seed)
    origins = rng.integers(0, len(history), 400)
    horizons = rng.integers(1, config.horizon_steps + 1, 400)
    x = lag_features(lags=lags, origins=origins, horizons=horizons, end_time_s=1500 * 15.0, config=config)
    x[:, fitted.empty_columns] = 0.0
    x[rng.random(x.shape) < 0.05] = np.nan
    mean, upper = fitted.forest.predict(x)
    assert np.array_equal(mean, fitted.mean_model.predict(x))
    assert np.array_equal(upper, fitted.upper.predict(x))


def test_a_model_the_walk_does_not_understand_is_left_to_scikit_learn() -> None:
    assert _Forest.of(object()) is None  # type: ignore[arg-type]
