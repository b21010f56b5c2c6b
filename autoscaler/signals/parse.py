"""Parse Prometheus API results into keyed floats (pure).

Malformed entries are skipped, never raised: one bad series must not hide the others. A value that is not a
finite number, or lies outside the signal's domain (a negative rate, a KV usage of 45), is unknown. Several
series for one key (a federated or mis-grouped source) are combined the way the signal combines, rather than
one silently overwriting the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from autoscaler.signals.histogram import parse_le
from autoscaler.signals.queries import Combine, LabelMap, SeriesKey

__all__ = ["parse_buckets", "parse_matrix", "parse_pod_ages", "parse_vector", "to_float"]

K = TypeVar("K", bound=Hashable)


def to_float(raw: object, *, lower: float | None = None, upper: float | None = None) -> float | None:
    """A sample value as Prometheus encodes it (a string), or None when it carries no usable number."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(value):
        return None
    if (lower is not None and value < lower) or (upper is not None and value > upper):
        return None
    return value


def _combine(values: Sequence[float], how: Combine) -> float:
    if how is Combine.SUM:
        return math.fsum(values)
    if how is Combine.MIN:
        return min(values)
    return max(values)


def _labels(item: object) -> Mapping[str, str] | None:
    if not isinstance(item, Mapping):
        return None
    metric = item.get("metric")
    return metric if isinstance(metric, Mapping) else None


def _key(key_of: Callable[[Mapping[str, str]], K], metric: Mapping[str, str]) -> K | None:
    """The series' key, or None when a label value cannot be one (a list where a string belongs).

    Label values that are not strings are not checked one by one (that is most of the parsing time at a
    thousand variants): a key built from them matches no variant, and an unhashable one is refused here.
    """
    key = key_of(metric)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def parse_vector(
    result: object,
    *,
    key_of: Callable[[Mapping[str, str]], K],
    combine: Combine = Combine.SUM,
    lower: float | None = None,
    upper: float | None = None,
) -> dict[K, float]:
    """Parse an instant-vector result (``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``)."""
    grouped: dict[K, list[float]] = {}
    for item in result if isinstance(result, list) else ():
        metric = _labels(item)
        if metric is None:
            continue
        sample = item.get("value")
        if not isinstance(sample, list | tuple) or len(sample) != 2:
            continue
        value = to_float(sample[1], lower=lower, upper=upper)
        key = _key(key_of, metric) if value is not None else None
        if key is not None and value is not None:
            grouped.setdefault(key, []).append(value)
    return {key: _combine(values, combine) for key, values in grouped.items()}


def parse_buckets(
    result: object, *, key_of: Callable[[Mapping[str, str]], K]
) -> dict[K, dict[float, float]]:
    """Parse bucket rates (``sum by (..., le) (rate(x_bucket[w]))``) into ``{key: {le: rate}}``.

    A series whose ``le`` is not a number, or whose rate is not a finite non-negative number, is left out;
    series repeated for one key and bound are added, as ``sum by (le)`` would.
    """
    out: dict[K, dict[float, float]] = {}
    for item in result if isinstance(result, list) else ():
        metric = _labels(item)
        sample = item.get("value") if metric is not None else None
        if metric is None or not isinstance(sample, list | tuple) or len(sample) != 2:
            continue
        le, value = parse_le(metric.get("le")), to_float(sample[1], lower=0.0)
        key = _key(key_of, metric) if le is not None and value is not None else None
        if key is None or le is None or value is None:
            continue
        buckets = out.setdefault(key, {})
        buckets[le] = buckets.get(le, 0.0) + value
    return out


def parse_matrix(
    result: object,
    *,
    key_of: Callable[[Mapping[str, str]], K],
    start: float,
    step: float,
    points: int,
    combine: Combine = Combine.SUM,
    lower: float | None = None,
    upper: float | None = None,
) -> dict[K, list[float | None]]:
    """Parse a range-query result onto the grid ``start + i*step``, i < points; gaps stay None."""
    cells: dict[K, list[list[float]]] = {}
    for item in result if isinstance(result, list) else ():
        metric = _labels(item)
        samples = item.get("values") if metric is not None else None
        if metric is None or not isinstance(samples, list):
            continue
        key = _key(key_of, metric)
        if key is None:
            continue
        row = cells.setdefault(key, [[] for _ in range(points)])
        for sample in samples:
            if not isinstance(sample, list | tuple) or len(sample) != 2:
                continue
            ts = to_float(sample[0])
            value = to_float(sample[1], lower=lower, upper=upper)
            if ts is None or value is None:
                continue
            index = round((ts - start) / step)
            if 0 <= index < points and math.isclose(start + index * step, ts, abs_tol=step / 4):
                row[index].append(value)
    return {key: [_combine(c, combine) if c else None for c in row] for key, row in cells.items()}


def parse_pod_ages(result: object, *, labels: LabelMap) -> dict[SeriesKey, dict[str, float | None]]:
    """Per variant, each reporting pod and its age in seconds (None: the pod exports no start time)."""
    out: dict[SeriesKey, dict[str, float | None]] = {}
    for item in result if isinstance(result, list) else ():
        metric = _labels(item)
        sample = item.get("value") if metric is not None else None
        if metric is None or not isinstance(sample, list | tuple) or len(sample) != 2:
            continue
        pod, key = labels.pod_of(metric), _key(labels.key_of, metric)
        value = to_float(sample[1])
        if not pod or not isinstance(pod, str) or key is None:
            continue
        pods = out.setdefault(key, {})
        age = value if value is not None and value >= 0 else None
        previous = pods.get(pod)
        # Duplicates of one pod: keep the youngest known age (the cautious reading for warm-up).
        pods[pod] = age if previous is None else (previous if age is None else min(previous, age))
    return out

