"""Turning what monitoring hands over into series a forecaster can trust.

Rates and mean token counts cannot be negative and cannot be infinite: such samples are gaps (NaN), not data.
Cumulative counters are turned into per-step increments with Prometheus's reset rule: a drop means the
counter restarted from zero, so the increment is the new value itself.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["counter_increment", "counter_increments", "sanitize", "sanitize_value"]


def sanitize_value(value: float | None) -> float:
    """A non-negative finite sample, or NaN for a gap."""
    if value is None:
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) and number >= 0 else math.nan


def sanitize(values: np.ndarray | list[float | None]) -> np.ndarray:
    """Float64 copy with NaN in place of missing, infinite or negative samples."""
    array = np.array([math.nan if v is None else v for v in values], dtype=np.float64) if isinstance(
        values, list) else np.array(values, dtype=np.float64)
    array[~np.isfinite(array) | (array < 0)] = np.nan
    return array


def counter_increment(previous: float | None, current: float | None) -> float:
    """Increment of a cumulative counter between two samples; NaN when either is missing."""
    prev, cur = sanitize_value(previous), sanitize_value(current)
    if math.isnan(prev) or math.isnan(cur):
        return math.nan
    return cur - prev if cur >= prev else cur  # a drop is a restart from zero


def counter_increments(counter: np.ndarray | list[float | None]) -> np.ndarray:
    """Per-step increments of a sampled counter (first step NaN: nothing to compare with)."""
    values = sanitize(counter)
    out = np.full(values.shape, np.nan)
    if len(values) > 1:
        prev, cur = values[:-1], values[1:]
        with np.errstate(invalid="ignore"):
            out[1:] = np.where(cur >= prev, cur - prev, cur)
        out[1:][np.isnan(prev) | np.isnan(cur)] = np.nan
    return out
