"""Online calibration: fit a profile's latency coefficients to what the replicas are observed to do.

Pure (numpy). Decode observations (ITL against running batch and mean context) fit
``alpha, beta, gamma``; prefill observations (prefill seconds against prompt tokens) fit ``a, b, c``.

How, and why:

- **Relative to the prior, scale first.** Each feature column is scaled by its prior coefficient, so the
  regression estimates *multipliers* ``theta`` (1 = the profile is right) on comparable scales. The common
  multiplier is the median of observed over predicted; the fit is then of the residual against the prior
  scaled by it, and a ridge penalty pulls each term toward that common scale where the data say little
  (collinear batch and context, one operating point: a loaded pool sits at one). An unpenalised fit there
  pushed the terms to opposite bounds (a at 3x, b and c at 1/3x) and mispredicted by 2x off the operating point.
- **Robust.** Huber weights (iteratively reweighted least squares) down-weight outliers (preemption storms,
  GC pauses, scrape glitches) instead of chasing them.
- **Bounded and blended.** Each multiplier is clipped to ``[1/3, 3]`` (a profile off by more than 3x is a
  wrong profile, not a calibration job), then blended with the prior by sample count:
  ``theta = w*fit + (1-w)*1`` with ``w = n / (n + prior_samples)`` (toward the observed common scale instead of
  1 when the prior's scale is no information: a scratch profile's).
- **Warm-up excluded.** Samples flagged ``warming_up`` (first requests after start: CUDA graph capture,
  torch.compile, cold caches) are dropped, as Dynamo's planner learned the hard way (ai-dynamo/dynamo#12430).

The :class:`Calibration` also carries the correction factor at the operating point (the median of
observed / prior-predicted latency), which a caller can use directly when it does not want new coefficients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "Calibration",
    "CalibrationSettings",
    "DecodeObservation",
    "PrefillObservation",
    "Stage",
    "calibrate_decode",
    "calibrate_prefill",
]


class Stage(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


def _finite(name: str, value: float, *, low: float, strict: bool) -> None:
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {low:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class DecodeObservation:
    """One window of decode: ``itl_s`` observed with ``batch`` running sequences of ``mean_context`` tokens."""

    batch: float
    mean_context: float
    itl_s: float
    warming_up: bool = False

    def __post_init__(self) -> None:
        _finite("batch", self.batch, low=0, strict=True)
        _finite("mean_context", self.mean_context, low=0, strict=False)
        _finite("itl_s", self.itl_s, low=0, strict=True)


@dataclass(frozen=True, slots=True)
class PrefillObservation:
    """One prefill: ``prefill_s`` for ``prompt_tokens`` tokens (sum over the batch's prompts).

    ``sum_squared_tokens`` is the sum of squared prompt lengths of the batch; a single prompt (the default)
    has ``prompt_tokens**2``.
    """

    prompt_tokens: float
    prefill_s: float
    sum_squared_tokens: float | None = None
    warming_up: bool = False
    passes: float | None = None
    """Forward passes behind ``prefill_s`` (each pays ``a``); None: one per token budget of ``prompt_tokens``."""

    def __post_init__(self) -> None:
        _finite("prompt_tokens", self.prompt_tokens, low=0, strict=True)
        _finite("prefill_s", self.prefill_s, low=0, strict=True)
        if self.sum_squared_tokens is not None:
            _finite("sum_squared_tokens", self.sum_squared_tokens, low=0, strict=False)
        if self.passes is not None:
            _finite("passes", self.passes, low=0, strict=True)


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    prior_samples: float = 2.0
    """Weight of the prior, in samples: with n samples the fit counts n / (n + prior_samples)."""
    min_samples: int = 10
    """Below this many usable samples the prior is kept (a fit would be noise)."""
    bound: float = 3.0
    """Each coefficient stays within [prior / bound, prior * bound]."""
    huber_epsilon: float = 1.35
    """Residuals beyond epsilon * scale count linearly, not quadratically (95% efficiency on Gaussian noise)."""
    min_design_spread: float = 0.01
    """Smallest over largest eigenvalue of the column-normalised design below which the terms are not told
    apart and only their common scale is fitted. Loaded pools sit at one operating point, far below: Mooncake
    prefill windows (14k-token prompts) at 2e-4, where a fit of the shape put ``a`` at 2.9x and ``b`` at 0.37x
    the prior and mispredicted a single prompt by 32%; its decode windows at 6e-3, where the shape fit tripled
    ``beta``, cut ``gamma`` and the early rejection it fed cost 4 points of attainment. Windows over prompts of
    16-16,000 tokens sit at 1.5e-2, over decode batches of 1-256 at 3e-2: there the terms are told apart."""
    prior_scale_known: bool = True
    """Whether the prior's scale is information: a shipped profile's is (the blend pulls toward it), a scratch
    profile's is not (a generic shape borrowed from another model and accelerator, off by up to an order of
    magnitude): then the blend pulls toward the observed common scale and only the prior's shape is kept. Pulled
    toward a scale 7x too slow, 40 windows of a CPU vLLM left the fit 30% slow (issue 15)."""
    shape_shrinkage: float = 0.001
    """Ridge penalty on the shape correction (term multipliers apart from their common scale), relative to each
    term's weight in the data: directions the data barely span keep the prior's shape."""

    def __post_init__(self) -> None:
        _finite("prior_samples", self.prior_samples, low=0, strict=False)
        if self.min_samples < 4:
            raise ValueError(f"min_samples must be >= 4 (three coefficients and a scale), got {self.min_samples}")
        _finite("bound", self.bound, low=1, strict=True)
        _finite("huber_epsilon", self.huber_epsilon, low=1, strict=True)
        _finite("shape_shrinkage", self.shape_shrinkage, low=0, strict=False)
        _finite("min_design_spread", self.min_design_spread, low=0, strict=False)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Coefficients fitted for one stage of one profile, named as :class:`PerformanceProfile` fields.

    ``correction`` is observed / prior-predicted latency at the operating point (median over the samples);
    ``residual_s`` is the median absolute error of the calibrated model (``None`` without samples);
    ``relative_error`` the mean of |observed - fitted prediction| / observed (``None`` until fitted).
    """

    stage: Stage
    names: tuple[str, ...]
    prior: tuple[float, ...]
    fitted: tuple[float, ...]
    correction: float
    samples: int
    excluded: int
    residual_s: float | None
    relative_error: float | None = None

    @property
    def coefficients(self) -> dict[str, float]:
        return dict(zip(self.names, self.fitted, strict=True))

    def apply(self, profile: PerformanceProfile) -> PerformanceProfile:
        """``profile`` with the calibrated coefficients."""
        changes: dict[str, Any] = self.coefficients
        return dataclasses.replace(profile, **changes)


_DECODE_NAMES = ("decode_alpha", "decode_beta", "decode_gamma")
_PREFILL_NAMES = ("prefill_a", "prefill_b", "prefill_c")


def calibrate_decode(*, profile: PerformanceProfile, observations: Sequence[DecodeObservation],
                     settings: CalibrationSettings = CalibrationSettings()) -> Calibration:
    """Fit ``decode_alpha/beta/gamma`` to ITL observations (step time = ITL)."""
    used = [o for o in observations if not o.warming_up]
    features = np.array([[1.0, o.batch, o.batch * o.mean_context] for o in used]).reshape(-1, 3)
    observed = np.array([o.itl_s for o in used])
    prior = tuple(getattr(profile, n) for n in _DECODE_NAMES)
    return _calibrate(Stage.DECODE, _DECODE_NAMES, prior, features, observed,
                      excluded=len(observations) - len(used), settings=settings)


def calibrate_prefill(*, profile: PerformanceProfile, observations: Sequence[PrefillObservation],
                      settings: CalibrationSettings = CalibrationSettings()) -> Calibration:
    """Fit ``prefill_a/b/c`` to prefill-time observations (a batch over the token budget pays ``a`` per chunk)."""
    used = [o for o in observations if not o.warming_up]
    rows = []
    for o in used:
        chunks = o.passes if o.passes is not None else max(1, math.ceil(o.prompt_tokens /
                                                                        profile.max_num_batched_tokens))
        squares = o.prompt_tokens**2 if o.sum_squared_tokens is None else o.sum_squared_tokens
        rows.append([float(chunks), o.prompt_tokens, squares])
    features = np.array(rows).reshape(-1, 3)
    observed = np.array([o.prefill_s for o in used])
    prior = tuple(getattr(profile, n) for n in _PREFILL_NAMES)
    return _calibrate(Stage.PREFILL, _PREFILL_NAMES, prior, features, observed,
                      excluded=len(observations) - len(used), settings=settings)


def _calibrate(stage: Stage, names: tuple[str, ...], prior: tuple[float, ...], features: np.ndarray,
               observed: np.ndarray, *, excluded: int, settings: CalibrationSettings) -> Calibration:
    n = len(observed)
    if n == 0:
        return Calibration(stage, names, prior, prior, 1.0, 0, excluded, None)
    prior_arr = np.asarray(prior, dtype=float)
    # Column j holds the prior's contribution of term j, so the coefficient on it is a multiplier of the prior.
    contributions = features * prior_arr
    predicted = contributions.sum(axis=1)
    correction = float(np.median(observed / predicted))
    if n < settings.min_samples:
        residual = float(np.median(np.abs(observed - predicted)))
        return Calibration(stage, names, prior, prior, correction, n, excluded, residual)

    theta = _multipliers(contributions, observed, scale=correction, settings=settings)
    theta = np.clip(theta, 1.0 / settings.bound, settings.bound)
    weight = n / (n + settings.prior_samples)
    anchor = 1.0 if settings.prior_scale_known else min(max(correction, 1.0 / settings.bound), settings.bound)
    theta = weight * theta + (1.0 - weight) * anchor
    fitted = prior_arr * theta
    errors = np.abs(observed - features @ fitted)
    return Calibration(stage, names, prior, tuple(float(x) for x in fitted), correction, n, excluded,
                       float(np.median(errors)), float(np.mean(errors / observed)))


def _multipliers(contributions: np.ndarray, observed: np.ndarray, *, scale: float,
                 settings: CalibrationSettings) -> np.ndarray:
    """Per-term multipliers of the prior: the common ``scale`` (observed over predicted at the operating point),
    times a shape correction fitted by Huber-weighted ridge regression that pulls toward no correction.

    Windows from one operating point cannot tell the terms apart (the columns are nearly collinear): there the
    ridge keeps the prior's shape, scaled, which predicts the operating point and its neighbourhood right. Only
    a spread of batches and prompt lengths moves the terms apart. Iteratively reweighted least squares with
    Huber weights: a handful of small solves per fit, cheap enough to refit every cycle."""
    base = contributions * scale
    usable = base.sum(axis=0) > 0  # a zero prior term (e.g. c = 0) carries no scale to fit a multiplier on
    typical = float(np.median(observed))  # fit in units of a typical latency: well conditioned for any model
    x = base[:, usable] / typical
    y = (observed - base.sum(axis=1)) / typical
    n, k = x.shape
    theta = np.full(len(usable), scale)
    if _design_spread(x) < settings.min_design_spread:
        return theta
    delta = np.zeros(k)
    weights = np.ones(n)
    for _ in range(8):
        xw = x * weights[:, None]
        gram = xw.T @ x
        # Each term's penalty in proportion to its own weight in the data: a small term is not held harder.
        ridge = settings.shape_shrinkage * np.diag(np.diag(gram)) + 1e-12 * np.eye(k)
        delta = np.linalg.solve(gram + ridge, xw.T @ y)
        residual = y - x @ delta
        sigma = 1.4826 * float(np.median(np.abs(residual))) or 1e-12
        cut = settings.huber_epsilon * sigma
        weights = np.minimum(1.0, cut / np.maximum(np.abs(residual), 1e-300))
    theta[usable] = scale * (1.0 + delta)
    return theta


def _design_spread(x: np.ndarray) -> float:
    """Smallest over largest eigenvalue of the design with unit-norm columns: 0 when the terms move together."""
    norms = np.linalg.norm(x, axis=0)
    if x.shape[1] < 2 or not np.all(norms > 0):
        return 0.0
    unit = x / norms
    eigen = np.linalg.eigvalsh(unit.T @ unit)
    return float(eigen[0] / eigen[-1]) if eigen[-1] > 0 else 0.0
