"""Screening a variant's signals before anything is decided from them: a value that cannot be true is unknown.

Prometheus can answer NaN, +-Inf, 1e308, negative rates (a counter reset read badly) or a KV-cache use of 7.0
(a wrong label set summed twice). None of these is an observation; each becomes ``None``, named in ``missing``
and in the note, and the variant is MISSING for the cycle: held where it is (a predictive target may still
scale it up), never scaled down. A source that answers one impossible number for a variant has told us nothing
reliable about it this cycle (a wrong label set, a counter read across a reset), so the rest of its values are
not trusted for a scale-down either. The signal source already drops NaN and +-Inf samples (they arrive here
as ``None``: unknown, not implausible); this screen is the core's own guard, whatever the source.

The bounds are far beyond any real deployment (a million requests waiting per variant, ten million tokens per
request) and only there to keep arithmetic on them finite: capacity and queue sizing multiply these values.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

from autoscaler.core.types import Freshness, VariantSignals

__all__ = ["screened"]

_FRACTIONS = frozenset({"kv_usage_mean", "kv_usage_max", "kv_usage_window_mean", "prefix_cache_hit_ratio"})
_UPPER: dict[str, float] = {
    "waiting": 1e6, "running": 1e6, "decoding": 1e6,
    "completions_per_s": 1e6, "preemptions_per_s": 1e6,
    "prompt_tokens_per_s": 1e10, "generation_tokens_per_s": 1e10,
    "prompt_tokens_mean": 1e7, "prompt_tokens_p90": 1e7, "generation_tokens_mean": 1e7,
    "generation_tokens_p90": 1e7, "prompt_tokens_sq_mean": 1e14,
    "ttft_p90_s": 1e5, "itl_p90_s": 1e5, "itl_mean_s": 1e5, "prefill_time_mean_s": 1e5,
}
_DEFAULT_UPPER = 1e12
_SKIP = frozenset({"freshness", "missing", "note", "pods", "warm_pods", "warming_pods"})


def _plausible(name: str, value: float) -> bool:
    if not math.isfinite(value) or value < 0:
        return False
    return value <= (1.0 if name in _FRACTIONS else _UPPER.get(name, _DEFAULT_UPPER))


def _pairs_ok(pairs: tuple[tuple[float, float], ...]) -> bool:
    return all(math.isfinite(q) and 0 < q < 1 and _plausible("latency", v) for q, v in pairs)


def screened(signals: VariantSignals) -> VariantSignals:
    """``signals`` with every implausible value made unknown (the same object when all are plausible)."""
    dropped: dict[str, object] = {}
    for f in fields(signals):
        if f.name in _SKIP:
            continue
        value = getattr(signals, f.name)
        if isinstance(value, tuple):
            if value and not _pairs_ok(value):
                dropped[f.name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and not _plausible(f.name, value):
            dropped[f.name] = value
    pods = signals.pods
    if pods is not None and not 0 <= pods <= 100_000:
        dropped["pods"] = pods
    if not dropped:
        return signals
    changes: dict[str, object] = {name: () if isinstance(v, tuple) else None for name, v in dropped.items()}
    shown = ", ".join(f"{n}={v!r}" if not isinstance(v, tuple) else n for n, v in dropped.items())
    note = "; ".join(filter(None, (signals.note, f"implausible values dropped: {shown}")))
    freshness = Freshness.MISSING if signals.freshness is Freshness.FRESH else signals.freshness
    missing = tuple(sorted(set(signals.missing) | set(dropped)))
    return replace(signals, freshness=freshness, missing=missing, note=note, **changes)  # type: ignore[arg-type]
