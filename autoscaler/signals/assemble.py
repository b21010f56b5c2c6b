"""Turn raw per-signal query results into :class:`VariantSignals` (pure).

Rules that keep the controller safe:
- a failed query is *unknown* for every variant, never zero;
- NaN/Inf samples are unknown;
- a variant with no series at all is MISSING; with samples older than the staleness bound, STALE;
- duplicate series for one key (a mis-grouped or federated source) are summed for totals and averaged for
  ratios, rather than one silently overwriting the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autoscaler.core.types import Freshness, VariantSignals, VariantSpec, finite_or_none
from autoscaler.signals.queries import REQUIRED, SIGNALS, LabelMap, SeriesKey, variant_key

__all__ = ["parse_vector", "assemble", "QueryOutcome"]

# Signals that are per-variant ratios or maxima; duplicates for one key are combined accordingly.
_AVERAGED = {"kv_usage_mean", "ttft_p90_s", "itl_p90_s"}
_MAXED = {"kv_usage_max", "newest_sample"}

QueryOutcome = Sequence[Mapping[str, Any]] | Exception


def parse_vector(result: Sequence[Mapping[str, Any]], *, labels: LabelMap, signal: str) -> dict[SeriesKey, float]:
    """Parse an instant-vector result (``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``).

    Malformed entries are skipped, never raised: one bad series must not hide the others.
    """
    grouped: dict[SeriesKey, list[float]] = {}
    for item in result if isinstance(result, list) else []:
        try:
            metric = item["metric"]
            raw = item["value"][1]
            value = float(raw)
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not isinstance(metric, dict) or not math.isfinite(value):
            continue
        grouped.setdefault(labels.key_of(metric), []).append(value)
    out: dict[SeriesKey, float] = {}
    for key, values in grouped.items():
        if signal in _AVERAGED:
            out[key] = sum(values) / len(values)
        elif signal in _MAXED:
            out[key] = max(values)
        else:
            out[key] = sum(values)
    return out


def assemble(
    *,
    variants: Sequence[VariantSpec],
    outcomes: Mapping[str, QueryOutcome],
    labels: LabelMap,
    now: float,
    staleness_s: float,
) -> dict[VariantSpec, VariantSignals]:
    parsed: dict[str, dict[SeriesKey, float]] = {}
    failed: dict[str, str] = {}
    for signal in SIGNALS:
        outcome = outcomes.get(signal.name)
        if outcome is None:
            failed[signal.name] = "not queried"
        elif isinstance(outcome, Exception):
            failed[signal.name] = f"{type(outcome).__name__}: {outcome}"
        else:
            parsed[signal.name] = parse_vector(outcome, labels=labels, signal=signal.name)

    result: dict[VariantSpec, VariantSignals] = {}
    for spec in variants:
        key = variant_key(spec)
        values = {name: series.get(key) for name, series in parsed.items()}
        missing = tuple(sorted(n for n in (s.name for s in SIGNALS) if values.get(n) is None))
        required_failed = sorted(n for n in REQUIRED if n in failed)
        if required_failed:
            note = "; ".join(f"{n}: {failed[n]}" for n in required_failed)
            result[spec] = VariantSignals(freshness=Freshness.MISSING, missing=missing, note=f"query failed: {note}")
            continue
        if all(values.get(n) is None for n in REQUIRED):
            result[spec] = VariantSignals(freshness=Freshness.MISSING, missing=missing,
                                          note=f"no series for {labels.group}={key}")
            continue
        newest = values.get("newest_sample")
        age = None if newest is None else now - newest
        if any(values.get(n) is None for n in REQUIRED):
            freshness, note = Freshness.MISSING, f"required signals absent: {sorted(REQUIRED & set(missing))}"
        elif age is not None and age > staleness_s:
            freshness, note = Freshness.STALE, f"newest sample {age:.0f}s old > {staleness_s:g}s"
        else:
            freshness, note = Freshness.FRESH, ""
        pods = values.get("pods")
        result[spec] = VariantSignals(
            freshness=freshness,
            pods=None if pods is None else int(pods),
            waiting=finite_or_none(values.get("waiting")),
            running=finite_or_none(values.get("running")),
            kv_usage_mean=finite_or_none(values.get("kv_usage_mean")),
            kv_usage_max=finite_or_none(values.get("kv_usage_max")),
            prompt_tokens_per_s=finite_or_none(values.get("prompt_tokens_per_s")),
            generation_tokens_per_s=finite_or_none(values.get("generation_tokens_per_s")),
            requests_per_s=finite_or_none(values.get("requests_per_s")),
            ttft_p90_s=finite_or_none(values.get("ttft_p90_s")),
            itl_p90_s=finite_or_none(values.get("itl_p90_s")),
            missing=missing,
            note=note,
        )
    return result
