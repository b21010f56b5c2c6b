"""Per-pod metric state and the prometheus-client Collector that serves it under vLLM's names.

The emulator's tick thread updates a :class:`PodMetrics` and publishes an immutable :class:`MetricsView`;
the HTTP server thread's :class:`VllmCollector` reads only the latest view, so no lock is shared between them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from autoscaler.emulator import vllm_metrics as vm
from autoscaler.perf.engine import Completion, EngineStats, LatencyObservations

__all__ = ["HistogramState", "MetricsView", "PodMetrics", "RequestPhases", "VllmCollector"]


@dataclass(frozen=True, slots=True)
class RequestPhases:
    """Queue and prefill seconds of the requests that finished in a tick (those the engine scheduled itself)."""

    queue_s: np.ndarray
    prefill_s: np.ndarray

    @classmethod
    def none(cls) -> RequestPhases:
        return cls(np.zeros(0), np.zeros(0))


class HistogramState:
    """Bucket counts (non-cumulative, last slot is +Inf) and the sum of observations."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self.total = 0.0

    def observe(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        if values.size == 0:
            return
        w = np.ones(values.size, dtype=np.int64) if weights is None else weights.astype(np.int64)
        # Prometheus buckets are "less than or equal": the first bound >= value.
        np.add.at(self.counts, np.searchsorted(self.bounds, values, side="left"), w)
        self.total += float(np.dot(values, w))

    def frozen(self) -> HistogramView:
        return HistogramView(bounds=self.bounds, cumulative=np.cumsum(self.counts), total=self.total)


@dataclass(frozen=True, slots=True)
class HistogramView:
    bounds: np.ndarray
    cumulative: np.ndarray
    total: float

    def buckets(self) -> list[tuple[str, float]]:
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        return list(zip(les, (float(c) for c in self.cumulative)))


@dataclass(frozen=True, slots=True)
class MetricsView:
    """Everything one scrape of one pod returns, fixed at the end of a tick."""

    stats: EngineStats
    success: Mapping[str, int]
    ttft: HistogramView
    itl: HistogramView
    e2e: HistogramView
    prompt_tokens: HistogramView
    generation_tokens: HistogramView
    queue_time: HistogramView
    prefill_time: HistogramView


class PodMetrics:
    """Accumulates one pod's engine output into vLLM-shaped metrics."""

    def __init__(self, *, model: str, max_model_len: int, cache_info: Mapping[str, str], stats: EngineStats):
        self.model = model
        self.cache_info = dict(cache_info)
        self._success = dict.fromkeys(vm.FINISHED_REASONS, 0)
        self._ttft = HistogramState(vm.TTFT_BUCKETS)
        self._itl = HistogramState(vm.ITL_BUCKETS)
        self._e2e = HistogramState(vm.REQUEST_LATENCY_BUCKETS)
        tokens = vm.token_buckets(max_model_len)
        self._prompt = HistogramState(tokens)
        self._gen = HistogramState(tokens)
        self._queue = HistogramState(vm.REQUEST_LATENCY_BUCKETS)
        self._prefill = HistogramState(vm.REQUEST_LATENCY_BUCKETS)
        self.view = self._publish(stats)

    def record(self, *, stats: EngineStats, completions: Sequence[Completion], latencies: LatencyObservations,
               phases: RequestPhases | None = None) -> None:
        if phases is not None:
            self._queue.observe(phases.queue_s)
            self._prefill.observe(phases.prefill_s)
        self._ttft.observe(latencies.ttft_s)
        self._itl.observe(latencies.itl_s, latencies.itl_count)
        if completions:
            for c in completions:
                self._success[c.finished_reason.value] += 1
            self._e2e.observe(np.fromiter((c.e2e_s for c in completions), np.float64, len(completions)))
            self._prompt.observe(
                np.fromiter((c.request.prompt_tokens for c in completions), np.float64, len(completions)))
            self._gen.observe(np.fromiter((c.generated_tokens for c in completions), np.float64, len(completions)))
        self.view = self._publish(stats)

    def _publish(self, stats: EngineStats) -> MetricsView:
        return MetricsView(
            stats=stats,
            success=dict(self._success),
            ttft=self._ttft.frozen(),
            itl=self._itl.frozen(),
            e2e=self._e2e.frozen(),
            prompt_tokens=self._prompt.frozen(),
            generation_tokens=self._gen.frozen(),
            queue_time=self._queue.frozen(),
            prefill_time=self._prefill.frozen(),
        )


class VllmCollector(Collector):
    """Yields one pod's metrics with vLLM's names, types and labels."""

    def __init__(self, metrics: PodMetrics, *, legacy_names: bool = False) -> None:
        self._metrics = metrics
        self._legacy = legacy_names

    def collect(self) -> Iterator[Metric]:
        view = self._metrics.view  # one consistent snapshot for the whole scrape
        s = view.stats
        labels = [self._metrics.model, vm.ENGINE_INDEX]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=vm.LABELS)
            g.add_metric(labels, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=vm.LABELS)
            c.add_metric(labels, value)
            return c

        def histogram(name: str, doc: str, h: HistogramView) -> HistogramMetricFamily:
            fam = HistogramMetricFamily(name, doc, labels=vm.LABELS)
            fam.add_metric(labels, h.buckets(), h.total)
            return fam

        yield gauge(vm.NUM_REQUESTS_RUNNING, "Requests in the running batch (prefilling or decoding).", s.running)
        yield gauge(vm.NUM_REQUESTS_WAITING, "Requests queued, not yet admitted.", s.waiting)
        # Every emulated wait is for capacity: the emulator has no KV connector to defer a request for.
        by_reason = GaugeMetricFamily(vm.NUM_REQUESTS_WAITING_BY_REASON, "Waiting requests by reason.",
                                      labels=[*vm.LABELS, "reason"])
        for reason in vm.WAITING_REASONS:
            by_reason.add_metric([*labels, reason], s.waiting if reason == "capacity" else 0.0)
        yield by_reason
        yield gauge(vm.KV_CACHE_USAGE_PERC, "Fraction of KV-cache blocks in use, 0 to 1.", s.kv_usage)
        if self._legacy:
            yield gauge(vm.GPU_CACHE_USAGE_PERC, "Fraction of KV-cache blocks in use (deprecated name).",
                        s.kv_usage)
        info_labels = {**self._metrics.cache_info, "engine": vm.ENGINE_INDEX}
        info = GaugeMetricFamily(vm.CACHE_CONFIG_INFO, "KV-cache configuration, as labels.",
                                 labels=list(info_labels))
        info.add_metric(list(info_labels.values()), 1.0)
        yield info

        yield counter(vm.PROMPT_TOKENS, "Prompt tokens processed.", s.prompt_tokens_total)
        yield counter(vm.GENERATION_TOKENS, "Tokens generated.", s.generation_tokens_total)
        yield counter(vm.NUM_PREEMPTIONS, "Requests preempted.", s.preemptions_total)
        yield counter(vm.PREFIX_CACHE_QUERIES, "Prompt tokens looked up in the prefix cache.",
                      s.prefix_cache_queries_total)
        yield counter(vm.PREFIX_CACHE_HITS, "Prompt tokens found in the prefix cache.",
                      s.prefix_cache_hits_total)
        by_source = CounterMetricFamily(vm.PROMPT_TOKENS_BY_SOURCE, "Prompt tokens by where their KV came from.",
                                        labels=[*vm.LABELS, "source"])
        hits = s.prefix_cache_hits_total
        for source, value in zip(vm.PROMPT_SOURCES, (s.prompt_tokens_total - hits, hits, 0.0), strict=True):
            by_source.add_metric([*labels, source], value)
        yield by_source
        success = CounterMetricFamily(vm.REQUEST_SUCCESS, "Requests finished, by reason.",
                                      labels=[*vm.LABELS, "finished_reason"])
        for reason, count in view.success.items():
            success.add_metric([*labels, reason], count)
        yield success

        yield histogram(vm.TIME_TO_FIRST_TOKEN, "Seconds from arrival to the first token.", view.ttft)
        yield histogram(vm.INTER_TOKEN_LATENCY, "Seconds between consecutive output tokens.", view.itl)
        if self._legacy:
            yield histogram(vm.TIME_PER_OUTPUT_TOKEN, "Seconds between output tokens (deprecated name).",
                            view.itl)
        yield histogram(vm.E2E_REQUEST_LATENCY, "Seconds from arrival to the last token.", view.e2e)
        yield histogram(vm.REQUEST_PROMPT_TOKENS, "Prompt tokens per finished request.", view.prompt_tokens)
        yield histogram(vm.REQUEST_GENERATION_TOKENS, "Generated tokens per finished request.",
                        view.generation_tokens)
        yield histogram(vm.REQUEST_QUEUE_TIME, "Seconds a request waited before first scheduled.", view.queue_time)
        yield histogram(vm.REQUEST_PREFILL_TIME, "Seconds from first scheduled to the first token.",
                        view.prefill_time)
