"""Quantiles from Prometheus histogram buckets, computed as PromQL's ``histogram_quantile`` does (pure).

Prometheus's documented algorithm (promql/quantile.go, ``bucketQuantile``): buckets are cumulative counts (or
rates) by upper bound ``le``; the quantile is interpolated linearly inside the bucket where the rank falls,
the lowest bucket starting at 0; a rank in the +Inf bucket answers the highest finite bound; a histogram
without a +Inf bucket, with fewer than two buckets, or with no observations has no quantile. Cumulative
counts that decrease (buckets scraped at different moments, histograms of different layouts added together)
are first made monotonic, as Prometheus does.

Computing this here lets one bucket query per histogram serve every quantile, per variant and per model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["add_buckets", "bucket_moments", "parse_le", "quantile"]

Buckets = Mapping[float, float]  # upper bound (math.inf for "+Inf") -> cumulative count or rate


def parse_le(raw: object) -> float | None:
    """An ``le`` label value as a bound; None if it is not one (``+Inf`` is math.inf)."""
    if not isinstance(raw, str):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def add_buckets(histograms: Iterable[Buckets]) -> dict[float, float]:
    """Bucket-wise sum, as ``sum by (le)`` over several histograms."""
    total: dict[float, float] = {}
    for buckets in histograms:
        for le, value in buckets.items():
            total[le] = total.get(le, 0.0) + value
    return total


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q``-quantile (0 < q < 1) of a histogram; None where Prometheus would answer NaN."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {q}")
    ordered = sorted((le, count) for le, count in buckets.items() if math.isfinite(count))
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    bounds = [le for le, _ in ordered]
    counts, highest = [], 0.0
    for _, count in ordered:
        highest = max(highest, count)
        counts.append(highest)
    observations = counts[-1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def bucket_moments(buckets: Buckets) -> tuple[float, float] | None:
    """(E[x], E[x^2]) of a histogram's observations (x >= 0) taken as spread evenly within their bucket
    (the +Inf bucket at its lower bound); None without observations.

    Coarse on its own (vLLM's 1-2-5 token buckets put 1,024-token prompts at 1,500 on average); a caller with
    the exact mean (``_sum / _count``) rescales E[x^2] by (exact / E[x])^2, which leaves a few percent.
    """
    ordered = sorted((le, count) for le, count in buckets.items() if math.isfinite(count) and le > 0)
    if not ordered or ordered[-1][0] != math.inf:
        return None
    lower = below = total = first = second = 0.0
    for le, cumulative in ordered:
        count = max(cumulative - below, 0.0)
        below = max(below, cumulative)
        upper = lower if le == math.inf else le
        total += count
        first += count * (lower + upper) / 2
        second += count * (lower * lower + lower * upper + upper * upper) / 3
        lower = upper
    if total <= 0 or first <= 0:
        return None
    return first / total, second / total
