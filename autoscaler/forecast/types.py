"""Values of the forecaster: its settings, the methods it can use, and what it predicts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ForecastConfig",
    "Method",
    "MethodScore",
    "MixForecast",
    "MixObservation",
    "SeriesForecast",
]


class Method(StrEnum):
    """Forecasting methods, simplest first: on a tie in the back-test the simpler one is used."""

    LAST_VALUE = "last_value"
    EWMA = "ewma"
    HOLT = "holt"
    SEASONAL_NAIVE = "seasonal_naive"
    GBM = "gbm"


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    interval_s: float = 30.0
    """Sampling interval = the controller's cycle; the forecaster expects one value (or NaN) per cycle."""
    lead_time_s: float = 300.0
    """Furthest horizon. Five minutes covers a pod start with weights cached plus a few cycles of reaction."""
    quantile: float = 0.9
    """Upper quantile reported next to the point forecast; scaling sizes for it, the back-test scores it."""
    history_s: float = 3 * 86400.0
    """Samples kept per series. Three days give the regressor two earlier days for its seasonal feature."""
    season_s: float = 86400.0
    """Seasonal period for the seasonal-naive method and the regressor's time-of-day features (daily traffic)."""
    fit_window_s: float = 6 * 3600.0
    """Recent span the smoothing methods fit their parameters and residual quantiles on."""
    backtest_halflife_s: float = 3600.0
    """Half-life of the exponentially weighted back-test scores: the last hour counts most."""
    min_scored: int = 30
    """Scored predictions per horizon a method needs before the back-test may pick it (fewer is mostly noise)."""
    tie_tolerance: float = 0.02
    """A method within this fraction of the best back-test score counts as tied; the simplest tied one wins."""
    refit_every: int = 10
    """Cycles between refits of the simple methods' parameters and residual quantiles (some ms each); in
    between, their level and trend are still recomputed from the newest samples every cycle."""
    gbm_refit_every: int = 20
    """Cycles between refits of the gradient-boosting regressor (about 0.5 s of CPU on 3 days of 30 s samples);
    between refits it predicts from fresh lags with its last fit."""
    refit_share: float = 0.125
    """Once the history spans ``refit_share_after_s``, a method is refit only when the samples since its last fit
    reach this share of what it fits on (the history for the regressor, at most ``fit_window_s`` for the simple
    methods), and at least ``refit_every``/``gbm_refit_every`` cycles: a fit on hours of samples learns little
    from the next few minutes, and a controller running for days (or a two-day replay, 11,520 cycles) would
    otherwise spend most of its time refitting. Between refits the methods still predict from the newest samples."""
    refit_share_after_s: float = 7200.0
    """History span from which ``refit_share`` applies; below it, refits follow ``refit_every`` and
    ``gbm_refit_every`` alone (so a replay of one hour, warm-up included, refits as before)."""
    gbm_min_rows: int = 2000
    """Training rows (origin x horizon) below which the regressor is not fitted: 200 origins at 10 horizons.
    With less it overfits the first minutes and looks better in the back-test than it is."""
    gbm_max_rows: int = 20000
    """Training rows are thinned evenly over the history down to this many, bounding fit time."""
    methods: tuple[Method, ...] = field(default_factory=lambda: tuple(Method))
    """Methods run side by side and scored; order = preference on ties (simplest first)."""

    def __post_init__(self) -> None:
        for name in ("interval_s", "lead_time_s", "history_s", "season_s", "fit_window_s", "backtest_halflife_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.lead_time_s < self.interval_s:
            raise ValueError(f"lead_time_s ({self.lead_time_s}) must be at least one interval ({self.interval_s})")
        if self.history_s < self.lead_time_s + self.interval_s:
            raise ValueError("history_s must exceed lead_time_s by at least one interval")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be a non-empty tuple without repeats, got {self.methods}")
        if not (math.isfinite(self.refit_share) and 0 <= self.refit_share < 1):
            raise ValueError(f"refit_share must be in [0, 1), got {self.refit_share}")
        if not (math.isfinite(self.refit_share_after_s) and self.refit_share_after_s >= 0):
            raise ValueError(f"refit_share_after_s must be a finite number >= 0, got {self.refit_share_after_s}")
        for name in ("min_scored", "refit_every", "gbm_refit_every", "gbm_min_rows", "gbm_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tie_tolerance < 0:
            raise ValueError(f"tie_tolerance must be >= 0, got {self.tie_tolerance}")

    @property
    def horizon_steps(self) -> int:
        """Number of horizons: 1 cycle, 2 cycles, ... up to the lead time."""
        return max(1, math.ceil(self.lead_time_s / self.interval_s - 1e-9))

    def refit_cycles(self, history: int) -> int:
        """Cycles between refits of the simple methods with ``history`` samples (see ``refit_share``)."""
        if history * self.interval_s < self.refit_share_after_s:
            return self.refit_every
        return max(self.refit_every, math.ceil(self.refit_share * min(history, self.fit_window_steps)))

    def gbm_refit_cycles(self, history: int) -> int:
        """Cycles between refits of the regressor with ``history`` samples (see ``refit_share``)."""
        if history * self.interval_s < self.refit_share_after_s:
            return self.gbm_refit_every
        return max(self.gbm_refit_every, math.ceil(self.refit_share * history))

    @property
    def history_steps(self) -> int:
        return max(self.horizon_steps + 1, round(self.history_s / self.interval_s))

    @property
    def season_steps(self) -> int:
        return max(1, round(self.season_s / self.interval_s))

    @property
    def fit_window_steps(self) -> int:
        return max(self.horizon_steps + 8, round(self.fit_window_s / self.interval_s))

    @property
    def decay_per_step(self) -> float:
        return 0.5 ** (self.interval_s / self.backtest_halflife_s)


@dataclass(frozen=True, slots=True)
class MethodScore:
    """A method's back-test on the recent past (exponentially weighted)."""

    method: Method
    pinball: float  # at ``ForecastConfig.quantile``, mean over horizons; NaN until scored
    mape: float  # mean absolute percentage error of the point forecast, as a fraction; NaN until scored
    relative: float  # mean of pinball and APE, each over the naive last value's on the same targets; < 1 beats it
    scored: int  # fewest predictions scored at any horizon


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    """Point forecast and upper quantile of one series at horizons ``horizons_s`` (seconds from the last sample)."""

    method: Method
    horizons_s: tuple[float, ...]
    mean: tuple[float, ...]
    upper: tuple[float, ...]
    quantile: float
    scores: tuple[MethodScore, ...] = ()

    def at(self, horizon_s: float) -> tuple[float, float]:
        """(mean, upper) at the first horizon at or after ``horizon_s`` (the last one beyond the lead time)."""
        for i, h in enumerate(self.horizons_s):
            if h >= horizon_s - 1e-9:
                return self.mean[i], self.upper[i]
        return self.mean[-1], self.upper[-1]

    def peak_upper(self, within_s: float | None = None) -> float:
        """Largest upper quantile over horizons up to ``within_s`` (all when None): what capacity must cover."""
        values = [u for h, u in zip(self.horizons_s, self.upper, strict=True) if within_s is None or h <= within_s]
        return max(values) if values else self.upper[0]


@dataclass(frozen=True, slots=True)
class MixObservation:
    """One cycle's traffic for one model. ``None`` or NaN = not measured this cycle."""

    arrival_rate: float | None  # requests per second
    mean_input_tokens: float | None
    mean_output_tokens: float | None


def tokens_per_completion(tokens_per_s: float | None, completions_per_s: float | None) -> float | None:
    """Mean tokens per finished request from Prometheus-style rates (token rate over completion rate); None when
    either is unknown or nothing finished (an idle window has no mix)."""
    if tokens_per_s is None or completions_per_s is None or not completions_per_s > 0:
        return None
    return tokens_per_s / completions_per_s


@dataclass(frozen=True, slots=True)
class MixForecast:
    """Forecast of one model's traffic. ``None`` for a series with no usable history yet."""

    arrival_rate: SeriesForecast | None
    mean_input_tokens: SeriesForecast | None
    mean_output_tokens: SeriesForecast | None
