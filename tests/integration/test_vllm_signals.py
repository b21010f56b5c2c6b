"""Every signal the project reads, read through a real Prometheus from a real CPU vLLM under load, against the
engine's own /metrics and what the load generator measured (issue 15, test 1).

One instance serves the module (its start-up is the expensive part). Windows: rates over 20 s, gauges over a
10 s cycle. Tolerances: rates within 5%, token means exact (every request has the same prompt and, with
``ignore_eos``, the same output length), quantiles within one histogram bucket.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.types import Freshness
from autoscaler.signals.histogram import quantile
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from tests.plugins.vllm import LoadGenerator, Served, one_variant, scrape

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

WINDOW_S = 20
PROMPT, OUTPUT = 128, 32
CONCURRENCY = 8  # twice --max-num-seqs: half the requests wait for a batch slot


class Engine:
    """The engine's own /metrics, parsed: ``value(name, **labels)`` sums the matching samples."""

    def __init__(self, text: str) -> None:
        self.at = time.time()
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def buckets(self, family: str) -> dict[float, float]:
        return {float(s.labels["le"]): s.value for s in self.samples if s.name == f"{family}_bucket"}


def delta_buckets(before: Engine, after: Engine, family: str) -> dict[float, float]:
    b0, b1 = before.buckets(family), after.buckets(family)
    return {le: b1[le] - b0.get(le, 0.0) for le in b1}


def bucket_index(bounds: list[float], value: float) -> int:
    return bisect.bisect_left(bounds, value)


def within_one_bucket(bounds: list[float], a: float, b: float) -> bool:
    return abs(bucket_index(bounds, a) - bucket_index(bounds, b)) <= 1


def sample_quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def served_rate(engine_before: Engine, engine_after: Engine) -> float:
    served = sum(engine_after.value("vllm:request_success_total", finished_reason=r)
                 - engine_before.value("vllm:request_success_total", finished_reason=r)
                 for r in ("stop", "length", "repetition"))
    return served / (engine_after.at - engine_before.at)


def wait_until(condition, *, timeout_s: float, what: str, poll_s: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def serving(vllm_module_stack):  # type: ignore[no-untyped-def]
    stack = vllm_module_stack(one_variant(), {"tiny": 1})
    variant = stack.variants[0]
    instance = stack.pods.ready(variant)[0]
    source = PrometheusSignalSource(url=stack.prometheus.url, labels=LabelMap(), rate_window=f"{WINDOW_S}s",
                                    cycle="10s", staleness_s=30.0, warmup_s=0.0)
    return stack, variant, instance, source


def run_window(instance, *, abort_every: int = 0) -> tuple[LoadGenerator, Engine, Engine]:  # type: ignore[no-untyped-def]
    """Load for a settling period, then exactly one rate window bracketed by scrapes of the engine."""
    load = LoadGenerator(instance.url, model="tiny", concurrency=CONCURRENCY, prompt_tokens=PROMPT,
                         max_tokens=OUTPUT, abort_every=abort_every).start()
    started = time.time()
    wait_until(lambda: time.time() - started > 8 and len(load.records) >= CONCURRENCY, timeout_s=120,
               what="the load to settle")
    before = Engine(scrape(instance.url))
    wait_until(lambda: time.time() - before.at >= WINDOW_S, timeout_s=WINDOW_S + 5, what="one window")
    after = Engine(scrape(instance.url))
    return load, before, after


def test_every_signal_read_from_a_real_vllm_under_load_agrees_with_the_engine_and_the_load_generator(serving):  # type: ignore[no-untyped-def]
    stack, variant, instance, source = serving
    spec = stack.spec_of(variant)
    load, before, after = run_window(instance)
    try:
        stack.wait_for_scrape(pods=[instance.pod], after=after.at)
        signals = source.collect_all([spec], now=time.time()).variants[spec]
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    assert signals.freshness is Freshness.FRESH, signals.note
    assert signals.pods == 1

    # Rates: the engine's counters over the same window, and the requests the load generator saw finish.
    window_start = time.time() - WINDOW_S - 1  # the evaluation instant, give or take the scrape in flight
    served: list[Served] = load.served_between(after.at - WINDOW_S, after.at)
    engine_rate = served_rate(before, after)
    client_rate = len(served) / WINDOW_S
    assert signals.requests_per_s == pytest.approx(engine_rate, rel=0.05)
    assert signals.requests_per_s == pytest.approx(client_rate, rel=0.05)
    engine_gen = (after.value("vllm:generation_tokens_total") - before.value("vllm:generation_tokens_total")) / (
        after.at - before.at)
    assert signals.generation_tokens_per_s == pytest.approx(engine_gen, rel=0.05)
    assert signals.generation_tokens_per_s == pytest.approx(client_rate * OUTPUT, rel=0.05)
    assert signals.prompt_tokens_per_s == pytest.approx(client_rate * PROMPT, rel=0.05)
    del window_start

    # Token means exact: every request has the same lengths.
    assert signals.prompt_tokens_mean == PROMPT
    assert signals.generation_tokens_mean == OUTPUT
    assert all(r.tokens == OUTPUT for r in served)
    token_bounds = sorted(before.buckets("vllm:request_prompt_tokens"))
    assert within_one_bucket(token_bounds, signals.prompt_tokens_p90, PROMPT)

    # Latency quantiles within one bucket of the engine's own histogram and of what the client measured.
    ttft_bounds = sorted(before.buckets("vllm:time_to_first_token_seconds"))
    itl_bounds = sorted(before.buckets("vllm:inter_token_latency_seconds"))
    ttft_engine = delta_buckets(before, after, "vllm:time_to_first_token_seconds")
    itl_engine = delta_buckets(before, after, "vllm:inter_token_latency_seconds")
    first_tokens = [r.ttft_s for r in load.records
                    if r.first_token is not None and after.at - WINDOW_S <= r.first_token < after.at]
    gaps = [g for r in served for g in r.gaps]
    for q in (0.5, 0.9):
        ttft, itl = signals.ttft_quantile_s(q), dict(signals.itl_quantiles_s).get(q)
        assert ttft is not None and itl is not None
        assert within_one_bucket(ttft_bounds, ttft, quantile(q, ttft_engine)), (q, ttft, quantile(q, ttft_engine))
        assert within_one_bucket(ttft_bounds, ttft, sample_quantile(first_tokens, q)), (q, ttft)
        assert within_one_bucket(itl_bounds, itl, quantile(q, itl_engine)), (q, itl, quantile(q, itl_engine))
        assert within_one_bucket(itl_bounds, itl, sample_quantile(gaps, q)), (q, itl, sample_quantile(gaps, q))

    # Gauges over the cycle: half the clients wait for a batch slot, the batch is full, the KV cache in use.
    assert 0 < signals.waiting <= CONCURRENCY - 4
    assert 0 < signals.running <= 4
    assert signals.kv_usage_mean is not None and 0 < signals.kv_usage_mean <= 1
    assert signals.kv_usage_max is not None and signals.kv_usage_max >= signals.kv_usage_mean
    assert signals.prefix_cache_hit_ratio is not None and 0 <= signals.prefix_cache_hit_ratio <= 1


def test_requests_the_engine_aborted_are_not_read_as_served_demand(serving):  # type: ignore[no-untyped-def]
    stack, variant, instance, source = serving
    spec = stack.spec_of(variant)
    load, before, after = run_window(instance, abort_every=2)  # every other client hangs up after 2 tokens
    try:
        stack.wait_for_scrape(pods=[instance.pod], after=after.at)
        signals = source.collect_all([spec], now=time.time()).variants[spec]
    finally:
        load.stop()
    aborted = after.value("vllm:request_success_total", finished_reason="abort") - before.value(
        "vllm:request_success_total", finished_reason="abort")
    assert aborted > 0, "the engine counted no abort: the test would not show anything"
    assert signals.requests_per_s == pytest.approx(served_rate(before, after), rel=0.05)
    assert signals.requests_per_s == pytest.approx(len(load.served_between(after.at - WINDOW_S, after.at)) / WINDOW_S,
                                                   rel=0.05)
