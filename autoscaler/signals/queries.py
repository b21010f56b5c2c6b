"""PromQL for every signal, batched: one query per signal for all variants, grouped by the mapped labels.

The cost of a collection is O(signals), never O(variants) or O(pods). Pure: builds strings, reads nothing.

Metric names are vLLM v1's (vllm/v1/metrics/loggers.py; labels ``model_name``, ``engine``). Older names still
in the field are accepted through :class:`MetricNames`: ``auto`` joins both names with PromQL ``or``, which
keeps one series per label set, so a pod exporting both (vLLM 0.9-0.10 export the deprecated name beside the
new one) is counted once, and a fleet mixing versions is read whole; a detect-once switch could not do that.
``auto`` also reads the underscore spelling (``vllm_num_requests_running``): prometheus-client's OpenMetrics
exposition rewrites the colons of ``vllm:`` names when the scraper does not negotiate escaping
(prometheus/client_python#1177), so a Prometheus 2.x scraping vLLM stores ``vllm_...``.

Every per-replica series is first reduced with ``max by (<variant labels>, pod, instance, engine)``: that
collapses a pod scraped twice (a ServiceMonitor and a PodMonitor, or a federated copy differing only in
``job``/``prometheus_replica``) into one, while data-parallel engines of one pod stay distinct. Non-finite
samples are dropped before any aggregation (``> -Inf < +Inf`` is false for NaN), so one pod exporting NaN
cannot turn its variant's sum into NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from autoscaler.core.accelerators import canonical_accelerator
from autoscaler.core.types import VariantSpec

__all__ = [
    "GATEWAY_MODEL_LABEL",
    "GATEWAY_QUEUE_METRIC",
    "METRICS",
    "POD_AGES",
    "REQUIRED",
    "SIGNALS",
    "TOKEN_QUANTILE",
    "Combine",
    "LabelMap",
    "Metric",
    "MetricNames",
    "ModelKey",
    "QueryPlan",
    "SeriesKey",
    "Signal",
    "build_queries",
    "by",
    "gateway_queue_query",
    "model_key_of",
    "quantile_name",
    "quantile_query",
    "recorded_name",
    "underscored",
    "variant_key",
]

SeriesKey = tuple[str, str, str, str]  # namespace, model, role, accelerator
ModelKey = tuple[str, str, str]  # namespace, model, role: one model's pool in one role, over all accelerators

POD_AGES = "pod_ages"  # outcome name of the one per-pod query (warm-up census)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))


def by(*groups: Iterable[str]) -> str:
    """Label lists joined for a ``by (...)`` clause, each label once."""
    return ", ".join(_unique(n for g in groups for n in g))


@dataclass(frozen=True, slots=True)
class LabelMap:
    """Which Prometheus label carries each identity (llm-d, KServe and plain deployments differ)."""

    namespace: str = "namespace"
    model: str = "model_name"
    role: str = "role"
    accelerator: str = "accelerator"
    pod: str = "pod"
    instance: str = "instance"  # tells pods apart where no ``pod`` label exists (plain deployments)
    engine: str = "engine"  # vLLM's data-parallel engine index; absent on other servers, which is harmless

    @property
    def variant_labels(self) -> tuple[str, ...]:
        return _unique((self.namespace, self.model, self.role, self.accelerator))

    @property
    def model_labels(self) -> tuple[str, ...]:
        return _unique((self.namespace, self.model, self.role))

    @property
    def replica_labels(self) -> tuple[str, ...]:
        """Labels of one replica's series: a variant's labels plus the pod and engine identity."""
        return _unique((*self.variant_labels, self.pod, self.instance, self.engine))

    @property
    def pod_labels(self) -> tuple[str, ...]:
        return _unique((self.namespace, self.pod, self.instance))

    @property
    def group(self) -> str:
        """The ``by (...)`` list of a per-variant query."""
        return by(self.variant_labels)

    def key_of(self, labels: Mapping[str, str]) -> SeriesKey:
        """The variant a series belongs to; the accelerator label in its canonical spelling, as every
        VariantSpec has it (series of two spellings of one GPU are one variant's, combined by the parser)."""
        accelerator = labels.get(self.accelerator, "")
        return (
            labels.get(self.namespace, ""),
            labels.get(self.model, ""),
            labels.get(self.role, ""),
            canonical_accelerator(accelerator) if isinstance(accelerator, str) else accelerator,
        )

    def model_key_of(self, labels: Mapping[str, str]) -> ModelKey:
        return (labels.get(self.namespace, ""), labels.get(self.model, ""), labels.get(self.role, ""))

    def pod_of(self, labels: Mapping[str, str]) -> str:
        return labels.get(self.pod) or labels.get(self.instance) or ""


Builder = Callable[["QueryPlan", tuple[str, ...]], str]


def variant_key(spec: VariantSpec) -> SeriesKey:
    return (spec.ref.namespace, spec.model, spec.role.value, spec.accelerator)


def model_key_of(key: SeriesKey) -> ModelKey:
    return key[:3]


class MetricNames(StrEnum):
    V1 = "v1"  # current vLLM names only
    LEGACY = "legacy"  # the deprecated names where one existed (vLLM <= 0.10 deployments)
    AUTO = "auto"  # both, joined with ``or``


def underscored(name: str) -> str:
    """``vllm:kv_cache_usage_perc`` as an OpenMetrics exposition without escaping spells it (client_python#1177)."""
    return name.replace(":", "_")


@dataclass(frozen=True, slots=True)
class Metric:
    v1: str
    legacy: str | None = None

    def names(self, mode: MetricNames) -> tuple[str, ...]:
        if self.legacy is None or mode is MetricNames.V1:
            base: tuple[str, ...] = (self.v1,)
        elif mode is MetricNames.LEGACY:
            base = (self.legacy,)
        else:
            base = (self.v1, self.legacy)
        if mode is MetricNames.AUTO:
            return _unique((*base, *(underscored(n) for n in base)))
        return base

    def expr(self, mode: MetricNames, inner: Callable[[str], str]) -> str:
        """``inner(name)`` for each accepted name, joined with ``or`` (v1 first, so it wins on overlap)."""
        parts = [inner(n) for n in self.names(mode)]
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


# Sources: vllm/v1/metrics/loggers.py (v1 names; deprecation notes for gpu_cache_usage_perc and
# gpu_prefix_cache_{queries,hits}, "deprecated in 0.9"); vLLM docs design/metrics.md for the v0 names,
# where time_per_output_token_seconds was the inter-token latency histogram.
METRICS: dict[str, Metric] = {
    "running": Metric("vllm:num_requests_running"),
    "waiting": Metric("vllm:num_requests_waiting"),
    # Waiting split by why (vLLM >= 0.11, vllm/v1/metrics/loggers.py): reason="capacity" waits for a batch slot
    # or KV blocks, reason="deferred" waits for its KV to arrive from a connector (disaggregated decode).
    "waiting_by_reason": Metric("vllm:num_requests_waiting_by_reason"),
    "kv": Metric("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prompt_tokens": Metric("vllm:prompt_tokens_total"),
    "generation_tokens": Metric("vllm:generation_tokens_total"),
    "request_success": Metric("vllm:request_success_total"),
    "preemptions": Metric("vllm:num_preemptions_total"),
    "prefix_hits": Metric("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prefix_queries": Metric("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    # Prompt tokens by where their KV came from: source="local_compute" (prefilled here), "local_cache_hit"
    # (this pod's prefix cache), "external_kv_transfer" (a KV connector: a decode pod's whole prompt).
    "prompt_tokens_by_source": Metric("vllm:prompt_tokens_by_source_total"),
    "prompt_len": Metric("vllm:request_prompt_tokens"),
    "generation_len": Metric("vllm:request_generation_tokens"),
    "ttft": Metric("vllm:time_to_first_token_seconds"),
    "itl": Metric("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    # Scheduled to first token, per request (vLLM docs design/v1/metrics.md; FinishedRequestStats.prefill_time).
    "prefill_time": Metric("vllm:request_prefill_time_seconds"),
}


class Combine(Enum):
    """How values of one signal combine across series of one key, and across variants of one model."""

    SUM = "sum"  # totals and rates: additive
    MAX = "max"
    MIN = "min"
    BUCKETS = "buckets"  # histogram bucket rates by ``le``: add per bucket, quantiles computed after


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    combine: Combine
    build: Builder = field(repr=False)  # (plan, grouping labels) -> PromQL
    lower: float | None = 0.0  # values below are nonsense (negative rates): rejected as unknown
    upper: float | None = None
    recordable: bool = False
    """A window aggregate over every pod's series (rates, bucket rates): worth a recording rule at scale.
    Instant gauges, the pod count and sample ages stay raw: cheap, and fresher than a rule's last evaluation."""


def _finite(expr: str) -> str:
    return f"({expr}) > -Inf < +Inf"


def _per_replica(plan: QueryPlan, expr: str, *extra: str) -> str:
    return f"max by ({by(plan.labels.replica_labels, extra)}) ({_finite(expr)})"


def _over_cycle(over: str, plan: QueryPlan, selector: str) -> str:
    """A gauge read over the last cycle (``over`` is ``avg`` or ``max``), or its latest sample when the cycle
    holds none (scraped less often than the controller runs): smoothing never turns a slow scrape into no data."""
    return f"({over}_over_time({selector}[{plan.gauge_window}]) or {selector})"


def _cycle_gauge(metric: str, over: str, agg: str) -> Builder:
    """A gauge that swings within a cycle, smoothed over it per replica, then aggregated.

    vLLM's queue on a full batch swings from tens to zero every few seconds (a batch finishes, the queue is
    admitted): an instant sample of it, 13 s apart on one steady load, recommended 2 replicas and then 1."""
    def build(plan: QueryPlan, g: tuple[str, ...]) -> str:
        sel = METRICS[metric].expr(plan.names, lambda n: _over_cycle(over, plan, n))
        return f"{agg} by ({by(g)}) ({_per_replica(plan, sel)})"
    return build


def _queue(plan: QueryPlan, g: tuple[str, ...]) -> str:
    """Requests waiting for capacity, the cycle's mean, per replica: ``num_requests_waiting_by_reason
    {reason="capacity"}``, else (engines without the split, vLLM < 0.11 and other servers) the total.

    The total also counts requests deferred while their KV is fetched from a prefill pod: more replicas would
    not serve those sooner, so they are not queue. The fallback is per replica (``or`` on the replica labels),
    so a fleet mixing versions is read whole. The mean, not the peak: the saturation policy sizes for the
    sustained queue (Little: mean queue = arrivals x wait), and a cycle's peak is one batch boundary."""
    capacity = METRICS["waiting_by_reason"].expr(plan.names,
                                                 lambda n: _over_cycle("avg", plan, f'{n}{{reason="capacity"}}'))
    total = METRICS["waiting"].expr(plan.names, lambda n: _over_cycle("avg", plan, n))
    return f"sum by ({by(g)}) ({_per_replica(plan, capacity)} or {_per_replica(plan, total)})"


def _rate(metric: str, suffix: str = "", *extra: str, matcher: str = "") -> Builder:
    def build(plan: QueryPlan, g: tuple[str, ...]) -> str:
        sel = METRICS[metric].expr(plan.names, lambda n: f"rate({n}{suffix}{matcher}[{plan.window}])")
        return f"sum by ({by(g)}) ({_per_replica(plan, sel, *extra)})"
    return build


# vLLM's FinishReason (vllm/v1/engine/__init__.py): stop, length and repetition end a request that was served;
# abort (client gone, cancelled) and error did not serve it, and counting them would read an outage or a
# retry storm as demand served.
SERVED = '{finished_reason!~"abort|error"}'


def _prompt_tokens_by_source(plan: QueryPlan, g: tuple[str, ...], *, sources: str, fallback: str) -> str:
    """Prompt tokens per second by source, summed over ``sources`` (a regex), per replica; else (engines
    without the by-source counter, vLLM < 0.11) the ``fallback`` prefix-cache counter.

    On a decode pod of a disaggregated pair the prompt's KV arrives by transfer: ``prompt_tokens_total`` counts
    those tokens, ``prefix_cache_hits_total`` does not (they hit ``external_prefix_cache_hits_total``), so the
    local counters alone read a decode pod as prefilling every prompt. By source, the skipped share is exact."""
    lm = plan.labels
    src = by(lm.replica_labels, ["source"])
    per_source = METRICS["prompt_tokens_by_source"].expr(
        plan.names, lambda n: f'rate({n}{{source=~"{sources}"}}[{plan.window}])')
    summed = f"sum by ({by(lm.replica_labels)}) (max by ({src}) ({_finite(per_source)}))"
    old = METRICS[fallback].expr(plan.names, lambda n: f"rate({n}[{plan.window}])")
    return f"sum by ({by(g)}) ({summed} or {_per_replica(plan, old)})"


def _prefix_hits(plan: QueryPlan, g: tuple[str, ...]) -> str:
    """Prompt tokens whose prefill was skipped: prefix-cache hits plus KV received from a connector."""
    return _prompt_tokens_by_source(plan, g, sources="local_cache_hit|external_kv_transfer", fallback="prefix_hits")


def _prefix_queries(plan: QueryPlan, g: tuple[str, ...]) -> str:
    """Every prompt token, whatever its source: the denominator of the skipped share."""
    return _prompt_tokens_by_source(plan, g, sources=".+", fallback="prefix_queries")


def _window_mean(metric: str, agg: str) -> Builder:
    """A gauge averaged over the rate window per replica, then aggregated: the level that matches the window's
    rates and latency means (an instant sample of a busy gauge is noisy)."""
    def build(plan: QueryPlan, g: tuple[str, ...]) -> str:
        sel = METRICS[metric].expr(plan.names, lambda n: f"avg_over_time({n}[{plan.window}])")
        return f"{agg} by ({by(g)}) ({_per_replica(plan, sel)})"
    return build


def _buckets(metric: str) -> Builder:
    """Bucket rates per variant and ``le``. Quantiles are computed from them client-side
    (:mod:`autoscaler.signals.histogram`): one query gives every quantile, per variant and per model, where
    ``histogram_quantile`` would cost a query (the expensive rate over every bucket of every pod) for each
    quantile and each grouping."""
    def build(plan: QueryPlan, g: tuple[str, ...]) -> str:
        sel = METRICS[metric].expr(plan.names, lambda n: f"rate({n}_bucket[{plan.window}])")
        return f"sum by ({by(g, ['le'])}) ({_per_replica(plan, sel, 'le')})"
    return build


def quantile_query(metric: str, q: float) -> Builder:
    """``histogram_quantile`` server-side: for range queries (warm start), where buckets would be too many."""
    def build(plan: QueryPlan, g: tuple[str, ...]) -> str:
        return f"histogram_quantile({q:g}, {_buckets(metric)(plan, g)})"
    return build


def _pods(plan: QueryPlan, g: tuple[str, ...]) -> str:
    running = METRICS["running"].expr(plan.names, lambda n: n)
    return f"count by ({by(g)}) (count by ({by(g, plan.labels.pod_labels)}) ({running}))"


def _sample_age(plan: QueryPlan, g: tuple[str, ...]) -> str:
    # Age on Prometheus's own clock (time() at evaluation): immune to skew between it and the controller.
    # timestamp() of each selector: applied to an ``or`` it would give the evaluation time, not the sample's.
    stamps = METRICS["waiting"].expr(plan.names, lambda n: f"timestamp({n})")
    return f"min by ({by(g)}) (time() - {stamps})"


def _pod_ages(plan: QueryPlan) -> str:
    """Per pod (the one O(pods) query): seconds since its process started, or -1 when it exports no start time.

    ``process_start_time_seconds`` comes from the same scrape target as the vLLM series (prometheus_client's
    process collector), so it shares namespace/pod/instance; it lacks ``model_name``, hence the join.
    """
    lm = plan.labels
    running = METRICS["running"].expr(plan.names, lambda n: n)
    pods = f"group by ({by(lm.variant_labels, lm.pod_labels)}) ({running})"
    started = f"max by ({by(lm.pod_labels)}) (process_start_time_seconds)"
    return f"({pods} * on ({by(lm.pod_labels)}) group_left () (time() - {started})) or ({pods} * -1)"


def quantile_name(prefix: str, q: float) -> str:
    """``ttft`` and 0.9 -> ``ttft_p90_s``; 0.995 -> ``ttft_p99.5_s``."""
    return f"{prefix}_p{q * 100:g}_s"


SIGNALS: tuple[Signal, ...] = (
    Signal("pods", Combine.SUM, _pods),
    # Gauges over the cycle: the mean for levels that size the fleet (queue, batch, KV usage; idle is the same
    # test either way, a mean of 0 is a cycle of zeros), the peak for the KV headroom (preemption risk).
    Signal("waiting", Combine.SUM, _queue),
    Signal("running", Combine.SUM, _cycle_gauge("running", "avg", "sum")),
    Signal("kv_usage_sum", Combine.SUM, _cycle_gauge("kv", "avg", "sum")),
    Signal("kv_engines", Combine.SUM, _cycle_gauge("kv", "avg", "count")),
    Signal("kv_usage_max", Combine.MAX, _cycle_gauge("kv", "max", "max"), upper=1.0 + 1e-6),
    Signal("prompt_tokens_per_s", Combine.SUM, _rate("prompt_tokens"), recordable=True),
    Signal("generation_tokens_per_s", Combine.SUM, _rate("generation_tokens"), recordable=True),
    Signal("completions_per_s", Combine.SUM, _rate("request_success", "", "finished_reason", matcher=SERVED),
           recordable=True),
    Signal("preemptions_per_s", Combine.SUM, _rate("preemptions"), recordable=True),
    Signal("prefix_hits_per_s", Combine.SUM, _prefix_hits, recordable=True),
    Signal("prefix_queries_per_s", Combine.SUM, _prefix_queries, recordable=True),
    Signal("prompt_len_sum_per_s", Combine.SUM, _rate("prompt_len", "_sum"), recordable=True),
    Signal("prompt_len_count_per_s", Combine.SUM, _rate("prompt_len", "_count"), recordable=True),
    Signal("generation_len_sum_per_s", Combine.SUM, _rate("generation_len", "_sum"), recordable=True),
    Signal("generation_len_count_per_s", Combine.SUM, _rate("generation_len", "_count"), recordable=True),
    # Online calibration: window means that match the ITL and prefill-time means.
    Signal("itl_sum_per_s", Combine.SUM, _rate("itl", "_sum"), recordable=True),
    Signal("itl_count_per_s", Combine.SUM, _rate("itl", "_count"), recordable=True),
    Signal("prefill_time_sum_per_s", Combine.SUM, _rate("prefill_time", "_sum"), recordable=True),
    Signal("prefill_time_count_per_s", Combine.SUM, _rate("prefill_time", "_count"), recordable=True),
    Signal("kv_window_sum", Combine.SUM, _window_mean("kv", "sum"), recordable=True),
    Signal("sample_age_s", Combine.MIN, _sample_age, lower=None),
    Signal("ttft_buckets", Combine.BUCKETS, _buckets("ttft"), recordable=True),
    Signal("itl_buckets", Combine.BUCKETS, _buckets("itl"), recordable=True),
    Signal("prompt_len_buckets", Combine.BUCKETS, _buckets("prompt_len"), recordable=True),
    Signal("generation_len_buckets", Combine.BUCKETS, _buckets("generation_len"), recordable=True),
)

# Without these a variant is not decided on (held where it is).
REQUIRED: frozenset[str] = frozenset({"waiting", "kv_usage_sum", "kv_engines", "sample_age_s"})

TOKEN_QUANTILE = 0.9  # of the prompt and generation lengths (the *_tokens_p90 fields)


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """Everything that shapes the queries of one collection."""

    labels: LabelMap = field(default_factory=LabelMap)
    window: str = "1m"
    names: MetricNames = MetricNames.AUTO
    latency_quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)  # computed from buckets: they cost no query
    cycle: str | None = None
    """The controller's cycle, over which swinging gauges are smoothed; None: the rate window."""
    recorded: bool = False
    """Read recordable signals from the series of :func:`autoscaler.signals.rules.recording_rules` (which
    Prometheus must evaluate with the same labels and window) instead of computing them at query time."""

    def __post_init__(self) -> None:
        bad = [q for q in self.latency_quantiles if not 0 < q < 1]
        if bad:
            raise ValueError(f"latency_quantiles must lie in (0, 1), got {bad}")

    @property
    def gauge_window(self) -> str:
        return self.cycle or self.window

    @property
    def signals(self) -> tuple[Signal, ...]:
        return SIGNALS

    def queries(self) -> dict[str, str]:
        """Name -> PromQL: one per signal, then the pod census."""
        out = {s.name: recorded_name(s, self) if self.recorded and s.recordable
               else s.build(self, self.labels.variant_labels) for s in self.signals}
        out[POD_AGES] = _pod_ages(self)
        return out


def recorded_name(signal: Signal, plan: QueryPlan) -> str:
    """The recording rule's series name, ``level:metric:operation`` as Prometheus's naming practice has it."""
    return f"variant:{signal.name}:{plan.window}"


# The endpoint picker's flow-control queue: kubernetes-sigs/gateway-api-inference-extension
# pkg/epp/metrics/metrics.go (gauge inference_extension_flow_control_queue_size, labels fairness_id, priority,
# inference_pool, model_name, target_model_name; no namespace label, WVA's internal/constants/metrics.go
# notes the same). llm-d's router renames it llm_d_epp_flow_control_queue_size.
GATEWAY_QUEUE_METRIC = "inference_extension_flow_control_queue_size"
GATEWAY_MODEL_LABEL = "target_model_name"


def gateway_queue_query(metric: str = GATEWAY_QUEUE_METRIC, *, model_label: str = GATEWAY_MODEL_LABEL) -> str:
    """Requests queued at the gateway per model, over every pool, priority and fairness flow."""
    return f"sum by ({model_label}) ({_finite(metric)})"


def build_queries(labels: LabelMap, window: str, *, names: MetricNames = MetricNames.AUTO) -> dict[str, str]:
    return QueryPlan(labels=labels, window=window, names=names).queries()
