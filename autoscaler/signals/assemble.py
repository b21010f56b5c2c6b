"""Turn raw per-signal query results into :class:`VariantSignals`, per variant and per model (pure).

Rules that keep the controller safe:
- a failed query is *unknown* for every variant, never zero (Dynamo #14765);
- zero traffic is zero demand: a ratio of rates 0/0 (mean tokens, prefix-hit ratio) is 0 and the variant
  stays FRESH, rather than NaN or "no data" (Dynamo #6985);
- NaN/Inf and out-of-domain samples are unknown;
- a variant with no series at all is MISSING; with its newest sample older than the staleness bound, STALE;
- model-level values are combined from the per-variant components (sums of rates, ratios of summed rates,
  quantiles of summed bucket rates), so they are exact and cost no query of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.core.types import Freshness, VariantSignals, VariantSpec
from autoscaler.signals.histogram import add_buckets, bucket_moments, quantile
from autoscaler.signals.parse import parse_buckets, parse_pod_ages, parse_vector
from autoscaler.signals.queries import (
    POD_AGES,
    TOKEN_QUANTILE,
    Combine,
    ModelKey,
    QueryPlan,
    SeriesKey,
    by,
    model_key_of,
    quantile_name,
    variant_key,
)
from autoscaler.signals.warmup import PodCensus

__all__ = ["REQUIRED_VALUES", "Parsed", "QueryOutcome", "assemble", "assemble_models", "parse_outcomes"]

QueryOutcome = object  # the decoded ``data.result`` of a query (anything, if Prometheus misbehaves) or an Exception

# What a decision cannot do without; absent -> MISSING, the variant is held.
REQUIRED_VALUES = ("waiting", "kv_usage_mean", "sample_age_s")
_REQUIRED_QUERIES = {"waiting": ("waiting",), "kv_usage_mean": ("kv_usage_sum", "kv_engines"),
                     "sample_age_s": ("sample_age_s",)}
_KV_UPPER = 1.0 + 1e-6  # vLLM reports 0..1; allow float rounding, reject percent-scaled exporters


@dataclass(frozen=True, slots=True)
class Parsed:
    """Every query's result, parsed: per-variant values and bucket rates, failures, pod ages."""

    values: dict[str, dict[SeriesKey, float]] = field(default_factory=dict)
    buckets: dict[str, dict[SeriesKey, dict[float, float]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    pod_ages: dict[SeriesKey, dict[str, float | None]] | None = None


def _failure(outcome: QueryOutcome | None) -> str | None:
    if outcome is None:
        return "not queried"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {str(outcome)[:300]}"
    return None


def parse_outcomes(outcomes: Mapping[str, QueryOutcome], *, plan: QueryPlan) -> Parsed:
    labels = plan.labels
    values: dict[str, dict[SeriesKey, float]] = {}
    buckets: dict[str, dict[SeriesKey, dict[float, float]]] = {}
    failed: dict[str, str] = {}
    for signal in plan.signals:
        outcome = outcomes.get(signal.name)
        reason = _failure(outcome)
        if reason is not None:
            failed[signal.name] = reason
        elif signal.combine is Combine.BUCKETS:
            buckets[signal.name] = parse_buckets(outcome, key_of=labels.key_of)
        else:
            values[signal.name] = parse_vector(outcome, key_of=labels.key_of, combine=signal.combine,
                                               lower=signal.lower, upper=signal.upper)
    outcome = outcomes.get(POD_AGES)
    reason = _failure(outcome)
    if reason is not None:
        failed[POD_AGES] = reason
    pod_ages = None if reason is not None else parse_pod_ages(outcome, labels=labels)
    return Parsed(values=values, buckets=buckets, failed=failed, pod_ages=pod_ages)


def _quantiles(histograms: Mapping[str, Mapping[float, float] | None], plan: QueryPlan) -> dict[str, float | None]:
    """Every quantile a signal carries, from the bucket rates of one variant or one model."""
    out: dict[str, float | None] = {}

    def of(name: str, q: float) -> float | None:
        buckets = histograms.get(name)
        return None if not buckets else quantile(q, buckets)

    for q in sorted(set(plan.latency_quantiles) | {0.9}):  # p90 always: the ttft_p90_s/itl_p90_s fields
        out[quantile_name("ttft", q)] = of("ttft_buckets", q)
        out[quantile_name("itl", q)] = of("itl_buckets", q)
    out["prompt_tokens_p90"] = of("prompt_len_buckets", TOKEN_QUANTILE)
    out["generation_tokens_p90"] = of("generation_len_buckets", TOKEN_QUANTILE)
    prompts = histograms.get("prompt_len_buckets")
    moments = bucket_moments(prompts) if prompts else None
    out[_PROMPT_BUCKET_MEAN], out[_PROMPT_BUCKET_SQ] = moments if moments else (None, None)
    return out


_PROMPT_BUCKET_MEAN, _PROMPT_BUCKET_SQ = "prompt_len_bucket_mean", "prompt_len_bucket_sq"


def _mean(total: float | None, count: float | None) -> float | None:
    """Mean of observations from summed rates: None when nothing was observed (a latency of no request is
    not 0, it is not measured)."""
    if total is None or count is None or count <= 0:
        return None
    return total / count


def _prompt_sq_mean(raw: Mapping[str, float | None], mean: float | None) -> float | None:
    """E[N^2] of prompt lengths: the buckets' estimate rescaled to the exact mean (histogram.bucket_moments)."""
    bucket_mean, bucket_sq = raw.get(_PROMPT_BUCKET_MEAN), raw.get(_PROMPT_BUCKET_SQ)
    if bucket_sq is None or mean is None or mean <= 0 or not bucket_mean:
        return None
    return bucket_sq * (mean / bucket_mean) ** 2


def _ratio(num: float | None, den: float | None) -> float | None:
    """num/den of two rates; 0/0 is an idle window (0), x/0 with x > 0 is inconsistent (unknown)."""
    if num is None or den is None:
        return None
    if den == 0:
        return 0.0 if num == 0 else None
    return num / den


def _build(
    raw: Mapping[str, float | None],
    *,
    plan: QueryPlan,
    failed: Mapping[str, str],
    census: PodCensus | None,
    staleness_s: float,
    where: str,
) -> VariantSignals:
    """One variant's (or model's) signals from ``raw``: the value of every scalar signal by name, each
    histogram signal as a presence flag (1.0) and its quantiles by name (``ttft_p90_s``, ``prompt_tokens_p90``)."""
    kv_mean = _ratio(raw.get("kv_usage_sum"), raw.get("kv_engines"))
    if kv_mean is not None and kv_mean > _KV_UPPER:
        kv_mean = None
    age = raw.get("sample_age_s")
    age = None if age is None else max(age, 0.0)
    derived = {"waiting": raw.get("waiting"), "kv_usage_mean": kv_mean, "sample_age_s": age}

    names = [s.name for s in plan.signals]
    missing = sorted({n for n in names if raw.get(n) is None} | ({"pod_ages"} if census is None else set()))
    required_failed = sorted({q for r in REQUIRED_VALUES for q in _REQUIRED_QUERIES[r] if q in failed})
    optional_failed = sorted(n for n in failed if n not in required_failed)
    if required_failed:
        return VariantSignals(freshness=Freshness.MISSING, missing=tuple(missing),
                              note=f"query failed: {_grouped(required_failed, failed)}")
    if all(v is None for v in derived.values()):
        return VariantSignals(freshness=Freshness.MISSING, missing=tuple(missing), note=f"no series for {where}")
    absent = [n for n, v in derived.items() if v is None]
    if absent:
        freshness, note = Freshness.MISSING, f"required signals absent for {where}: {absent}"
    elif age is not None and age > staleness_s:
        freshness, note = Freshness.STALE, f"newest sample {age:.0f}s old > {staleness_s:g}s"
    else:
        freshness, note = Freshness.FRESH, ""
    if optional_failed:
        note = "; ".join(filter(None, (note, f"queries failed (values unknown): {', '.join(optional_failed)}")))

    prompt_count, generation_count = raw.get("prompt_len_count_per_s"), raw.get("generation_len_count_per_s")
    hit_ratio = _ratio(raw.get("prefix_hits_per_s"), raw.get("prefix_queries_per_s"))
    if hit_ratio is not None and hit_ratio > 1 + 1e-9:
        hit_ratio = None  # more hits than queries: the counters disagree, trust neither
    quantiles = sorted(set(plan.latency_quantiles))
    pods = raw.get("pods")
    prompt_mean = _ratio(raw.get("prompt_len_sum_per_s"), prompt_count)
    kv_window = _ratio(raw.get("kv_window_sum"), raw.get("kv_engines"))
    return VariantSignals(
        freshness=freshness,
        pods=None if pods is None else round(pods),
        waiting=raw.get("waiting"),
        running=raw.get("running"),
        kv_usage_mean=kv_mean,
        kv_usage_max=raw.get("kv_usage_max"),
        prompt_tokens_per_s=raw.get("prompt_tokens_per_s"),
        generation_tokens_per_s=raw.get("generation_tokens_per_s"),
        completions_per_s=raw.get("completions_per_s"),
        ttft_p90_s=raw.get(quantile_name("ttft", 0.9)),
        itl_p90_s=raw.get(quantile_name("itl", 0.9)),
        missing=tuple(missing),
        note=note,
        prompt_tokens_mean=prompt_mean,
        prompt_tokens_p90=0.0 if prompt_count == 0 else raw.get("prompt_tokens_p90"),
        generation_tokens_mean=_ratio(raw.get("generation_len_sum_per_s"), generation_count),
        generation_tokens_p90=0.0 if generation_count == 0 else raw.get("generation_tokens_p90"),
        preemptions_per_s=raw.get("preemptions_per_s"),
        prefix_cache_hit_ratio=None if hit_ratio is None else min(hit_ratio, 1.0),
        ttft_quantiles_s=_pairs(raw, "ttft", quantiles),
        itl_quantiles_s=_pairs(raw, "itl", quantiles),
        warm_pods=census.warm if census else (),
        warming_pods=census.warming if census else (),
        itl_mean_s=_mean(raw.get("itl_sum_per_s"), raw.get("itl_count_per_s")),
        decoding=raw.get("itl_sum_per_s"),
        kv_usage_window_mean=None if kv_window is None or kv_window > _KV_UPPER else kv_window,
        prefill_time_mean_s=_mean(raw.get("prefill_time_sum_per_s"), raw.get("prefill_time_count_per_s")),
        prompt_tokens_sq_mean=_prompt_sq_mean(raw, prompt_mean),
    )


def _grouped(names: Sequence[str], failed: Mapping[str, str]) -> str:
    """``a, b: reason; c: other reason``: one outage reads once, not once per query."""
    by_reason: dict[str, list[str]] = {}
    for name in names:
        by_reason.setdefault(failed[name], []).append(name)
    return "; ".join(f"{', '.join(ns)}: {reason}" for reason, ns in by_reason.items())


def _pairs(raw: Mapping[str, float | None], prefix: str, quantiles: Sequence[float]) -> tuple[tuple[float, float], ...]:
    out = []
    for q in quantiles:
        value = raw.get(quantile_name(prefix, q))
        if value is not None:
            out.append((q, value))
    return tuple(out)


def assemble(
    *,
    variants: Sequence[VariantSpec],
    outcomes: Mapping[str, QueryOutcome] | None = None,
    parsed: Parsed | None = None,
    plan: QueryPlan | None = None,
    census: Mapping[SeriesKey, PodCensus] | None = None,
    staleness_s: float,
) -> dict[VariantSpec, VariantSignals]:
    """Signals per variant. Pass ``outcomes`` (raw) or ``parsed`` (already parsed, shared with models)."""
    plan = plan or QueryPlan()
    parsed = parsed or parse_outcomes(outcomes or {}, plan=plan)
    result: dict[VariantSpec, VariantSignals] = {}
    for spec in variants:
        key = variant_key(spec)
        raw: dict[str, float | None] = {name: series.get(key) for name, series in parsed.values.items()}
        raw |= _histogram_values({name: series.get(key) for name, series in parsed.buckets.items()}, plan)
        result[spec] = _build(raw, plan=plan, failed=parsed.failed, census=_census_for([key], census, parsed),
                              staleness_s=staleness_s, where=f"{plan.labels.group}={key}")
    return result


def _histogram_values(histograms: Mapping[str, Mapping[float, float] | None],
                      plan: QueryPlan) -> dict[str, float | None]:
    presence: dict[str, float | None] = {name: 1.0 if b else None for name, b in histograms.items()}
    return presence | _quantiles(histograms, plan)


def _census_for(keys: Sequence[SeriesKey], census: Mapping[SeriesKey, PodCensus] | None,
                parsed: Parsed) -> PodCensus | None:
    if parsed.pod_ages is None or census is None:
        return None
    warm = sorted(p for k in keys for p in census.get(k, PodCensus()).warm)
    warming = sorted(p for k in keys for p in census.get(k, PodCensus()).warming)
    return PodCensus(warm=tuple(warm), warming=tuple(warming))


def _model_raw(parsed: Parsed, plan: QueryPlan, keys: Sequence[SeriesKey]) -> dict[str, float | None]:
    """A model's values from those of its variants (``keys``): sums, extremes, and summed bucket rates."""
    raw: dict[str, float | None] = {}
    for signal in plan.signals:
        if signal.combine is Combine.BUCKETS:
            continue
        series = parsed.values.get(signal.name, {})
        values = [series[k] for k in keys if k in series]
        if not values:
            raw[signal.name] = None
        elif signal.combine is Combine.SUM:
            raw[signal.name] = sum(values)
        elif signal.combine is Combine.MIN:
            raw[signal.name] = min(values)
        else:
            raw[signal.name] = max(values)
    histograms = {name: add_buckets(series[k] for k in keys if k in series)
                  for name, series in parsed.buckets.items()}
    return raw | _histogram_values(histograms, plan)


def _keys_by_model(parsed: Parsed) -> dict[ModelKey, list[SeriesKey]]:
    """Every variant key any answer mentions, grouped by model: one pass, not one per model."""
    keys: set[SeriesKey] = set()
    for values in parsed.values.values():
        keys.update(values)
    for buckets in parsed.buckets.values():
        keys.update(buckets)
    keys.update(parsed.pod_ages or ())
    grouped: dict[ModelKey, list[SeriesKey]] = {}
    for key in sorted(keys):
        grouped.setdefault(model_key_of(key), []).append(key)
    return grouped


def assemble_models(
    *,
    variants: Sequence[VariantSpec],
    parsed: Parsed,
    plan: QueryPlan,
    census: Mapping[SeriesKey, PodCensus] | None = None,
    staleness_s: float,
) -> dict[ModelKey, VariantSignals]:
    """Signals per model pool (namespace, model, role) over all its accelerators, for the given variants' models.

    Every accelerator Prometheus reports for the pool counts, managed by a VariantAutoscaling or not. Roles are
    not summed: in disaggregated serving each request passes through a prefill and a decode pool, so a sum over
    roles would count it twice.
    """
    grouped = _keys_by_model(parsed)
    out: dict[ModelKey, VariantSignals] = {}
    for model in sorted({model_key_of(variant_key(s)) for s in variants}):
        keys = grouped.get(model, [])
        out[model] = _build(_model_raw(parsed, plan, keys), plan=plan, failed=parsed.failed,
                            census=_census_for(keys, census, parsed), staleness_s=staleness_s,
                            where=f"{by(plan.labels.model_labels)}={model}")
    return out
