"""Warm start: the recent completion rate and traffic mix per variant, from range queries (pure part).

The planner reads the completion rate at a model's entry (prefill) as its admitted arrivals, as it does live
(:func:`autoscaler.core.plan.warm_start`).

After a restart or a leader change the forecaster would otherwise start cold; Prometheus already holds the
history. The same PromQL as a live collection is evaluated over ``[start, end]`` every ``step`` seconds, with
the rate window widened to at least one step so that no request between two points is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from autoscaler.core.types import VariantSpec
from autoscaler.signals.parse import parse_matrix
from autoscaler.signals.queries import (
    TOKEN_QUANTILE,
    Combine,
    QueryPlan,
    SeriesKey,
    quantile_query,
    recorded_name,
    variant_key,
)

__all__ = [
    "HISTORY_SIGNALS",
    "MAX_POINTS",
    "HistorySeries",
    "assemble_history",
    "duration_s",
    "grid",
    "history_queries",
]

MAX_POINTS = 11_000  # Prometheus refuses range queries of more points per series than this

_FROM_SIGNALS = ("completions_per_s", "prompt_len_sum_per_s", "prompt_len_count_per_s", "generation_len_sum_per_s",
                 "generation_len_count_per_s")
# Quantiles server-side here: bucket series times points would make a large answer for a one-off read.
_QUANTILES = {"prompt_tokens_p90": quantile_query("prompt_len", TOKEN_QUANTILE),
              "generation_tokens_p90": quantile_query("generation_len", TOKEN_QUANTILE)}
HISTORY_SIGNALS = _FROM_SIGNALS + tuple(_QUANTILES)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float:
    """A Prometheus duration (``90s``, ``1m``, ``1h30m``) in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True, slots=True)
class HistorySeries:
    """One variant's recent traffic, aligned on ``timestamps``; ``None`` where Prometheus had no value.

    Idle points (nothing finished) have completion rate 0 and mix 0; skip them when learning the mix.
    """

    timestamps: tuple[float, ...]
    completions_per_s: tuple[float | None, ...]
    prompt_tokens_mean: tuple[float | None, ...]
    prompt_tokens_p90: tuple[float | None, ...]
    generation_tokens_mean: tuple[float | None, ...]
    generation_tokens_p90: tuple[float | None, ...]

    def __len__(self) -> int:
        return len(self.timestamps)


def grid(*, start: float, end: float, step: float) -> tuple[float, ...]:
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)) or step <= 0 or end < start:
        raise ValueError(f"history needs start <= end and step > 0, got start={start}, end={end}, step={step}")
    points = math.floor((end - start) / step + 1e-9) + 1
    if points > MAX_POINTS:
        raise ValueError(f"history of {points} points exceeds Prometheus's {MAX_POINTS}; use a larger step")
    return tuple(start + i * step for i in range(points))


def history_queries(plan: QueryPlan, *, step: float) -> dict[str, str]:
    window_s = max(duration_s(plan.window), step)
    if plan.recorded and window_s == duration_s(plan.window):
        # The recording rules' series cover every point (window >= step): read them, not every pod's buckets.
        signals = {s.name: s for s in plan.signals}
        out = {name: recorded_name(signals[name], plan) for name in _FROM_SIGNALS}
        for name, metric in (("prompt_tokens_p90", "prompt_len"), ("generation_tokens_p90", "generation_len")):
            buckets = recorded_name(signals[f"{metric}_buckets"], plan)
            out[name] = f"histogram_quantile({TOKEN_QUANTILE:g}, {buckets})"
        return out
    wide = replace(plan, window=f"{math.ceil(window_s)}s", recorded=False)
    by_name = {s.name: s.build for s in wide.signals} | _QUANTILES
    return {name: by_name[name](wide, wide.labels.variant_labels) for name in HISTORY_SIGNALS}


def _mean(total: float | None, count: float | None) -> float | None:
    if total is None or count is None:
        return None
    if count == 0:
        return 0.0 if total == 0 else None
    return total / count


def assemble_history(
    *,
    variants: Sequence[VariantSpec],
    results: Mapping[str, object],
    plan: QueryPlan,
    start: float,
    step: float,
    timestamps: tuple[float, ...],
) -> dict[VariantSpec, HistorySeries]:
    columns: dict[str, dict[SeriesKey, list[float | None]]] = {}
    for name in HISTORY_SIGNALS:
        columns[name] = parse_matrix(results.get(name), key_of=plan.labels.key_of, start=start, step=step,
                                     points=len(timestamps), lower=0.0,
                                     combine=Combine.MAX if name in _QUANTILES else Combine.SUM)
    empty: list[float | None] = [None] * len(timestamps)
    out: dict[VariantSpec, HistorySeries] = {}
    for spec in variants:
        key = variant_key(spec)
        col = {name: columns[name].get(key, empty) for name in HISTORY_SIGNALS}
        p_count, g_count = col["prompt_len_count_per_s"], col["generation_len_count_per_s"]
        out[spec] = HistorySeries(
            timestamps=timestamps,
            completions_per_s=tuple(col["completions_per_s"]),
            prompt_tokens_mean=tuple(_mean(t, c) for t, c in zip(col["prompt_len_sum_per_s"], p_count)),
            prompt_tokens_p90=tuple(0.0 if c == 0 else v for v, c in zip(col["prompt_tokens_p90"], p_count)),
            generation_tokens_mean=tuple(_mean(t, c) for t, c in zip(col["generation_len_sum_per_s"], g_count)),
            generation_tokens_p90=tuple(0.0 if c == 0 else v
                                        for v, c in zip(col["generation_tokens_p90"], g_count)),
        )
    return out
