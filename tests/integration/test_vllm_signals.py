"""Every signal the project reads, read through a real Prometheus from a real CPU vLLM under load, against the
engine's own /metrics and what the load generator measured (issue 15, test 1).

One instance serves the module (its start-up is the expensive part). Windows: rates over 60 s, gauges over a
10 s cycle. Tolerances: rates within 5%, token means exact (every request has the same prompt and, with
``ignore_eos``, the same output length), quantiles within one histogram bucket.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.types import Freshness, VariantSignals
from autoscaler.signals.histogram import quantile
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from tests.plugins.vllm import LoadGenerator, Served, one_variant, scrape

# Engine start-ups (a minute or two each on a loaded 2-core machine) count against the test: more than the default.
pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(900)]

WINDOW_S = 60
"""Long enough that the edges' uncertainty (when Prometheus's scrape and the sampler's read the engine: up to a
second apart on a busy core, ~12 requests at this load) stays a few percent of the window's requests: at 20 s,
one run read 12.5 req/s against 11.3."""
CYCLE_S = 10
PROMPT, OUTPUT = 128, 64
# Three times --max-num-seqs: two requests in three wait for a batch slot, so that TTFT is mostly queueing (a
# batch's time, hundreds of ms) and the client's HTTP path (tens of ms) stays within a bucket of it.
CONCURRENCY = 12


class Engine:
    """The engine's own /metrics, parsed: ``value(name, **labels)`` sums the matching samples."""

    def __init__(self, text: str, at: float | None = None) -> None:
        self.at = time.time() if at is None else at  # when the engine answered (within the request)
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


SERVED_REASONS = ("stop", "length", "repetition")
"""(vLLM 0.32 counts no ``abort`` for a client that hangs up: that request never reaches the finished-request
stats. The served-reasons filter is checked on exported ``abort``/``error`` series in
tests/integration/test_signal_semantics.py.)"""


def served(engine: Engine) -> float:
    """Requests the engine finished for a reason that means served work, up to that scrape."""
    return sum(engine.value("vllm:request_success_total", finished_reason=r) for r in SERVED_REASONS)


def extrapolation(stamps: list[float], *, start: float, end: float) -> float:
    """What ``rate()`` multiplies the slope between a range's first and last sample by (Prometheus
    promql/functions.go, extrapolatedRate): each end is extended to the range's edge when the gap is under 1.1
    average scrape intervals, else by half an interval; the extended span is then divided by the range."""
    sampled = stamps[-1] - stamps[0]
    interval = sampled / (len(stamps) - 1)
    to_start, to_end = stamps[0] - start, end - stamps[-1]
    to_start = to_start if to_start < 1.1 * interval else interval / 2
    to_end = to_end if to_end < 1.1 * interval else interval / 2
    return (sampled + to_start + to_end) / (end - start)


def interpolated(samples: list[Engine], t: float, value: Callable[[Engine], float]) -> float:
    """``value`` of the engine at wall time ``t``, interpolated between the two samples either side of it (a
    counter steps by a batch's requests several times a second: the nearest sample alone can be a batch off)."""
    before = max((e for e in samples if e.at <= t), key=lambda e: e.at)
    after = min((e for e in samples if e.at >= t), key=lambda e: e.at)
    if after.at == before.at:
        return value(before)
    share = (t - before.at) / (after.at - before.at)
    return value(before) + share * (value(after) - value(before))


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
                                    cycle=f"{CYCLE_S}s", staleness_s=30.0, warmup_s=0.0,
                                    timeout_s=30.0, budget_s=60.0)  # a loaded machine: every query answered
    return stack, variant, instance, source


class EngineSampler:
    """Scrapes the engine's /metrics every half second on a thread, so that the engine's counters can be read
    at the edges of the very window Prometheus evaluated (sample times differ by at most half a second)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.snapshots: list[Engine] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            asked = time.time()
            text = scrape(self.url)
            # The engine rendered its counters between the request and the answer, a second apart at times on a
            # busy core: the midpoint is the estimate nearest on average.
            self.snapshots.append(Engine(text, at=(asked + time.time()) / 2))

    def at(self, t: float) -> Engine:
        return min(self.snapshots, key=lambda e: abs(e.at - t))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Window:
    signals: VariantSignals
    load: LoadGenerator
    before: Engine  # the engine at the window's start
    after: Engine  # and at the evaluation instant
    at: float
    samples: list[Engine]  # every engine sample of the run
    cycle_gauges: dict[str, list[float]]
    """The running and capacity-waiting samples Prometheus holds in the cycle before the evaluation instant."""
    scraped: list[float]
    """When the scrapes in the rate window were taken: ``rate()`` is the counter's slope between the first and
    the last, extrapolated (:func:`extrapolation`), so the engine is compared over the same span."""


def measure_window(stack, variant, instance, source) -> Window:  # type: ignore[no-untyped-def]
    """Load for a settling period and one full rate window, then read the signals at Prometheus's now, with
    the engine's counters sampled throughout."""
    load = LoadGenerator(instance.url, model="tiny", concurrency=CONCURRENCY, prompt_tokens=PROMPT,
                         max_tokens=OUTPUT).start()
    sampler = EngineSampler(instance.url)
    try:
        started = time.time()
        wait_until(lambda: time.time() - started > 8 and len(load.records) >= CONCURRENCY, timeout_s=120,
                   what="the load to settle")
        settled = time.time()
        wait_until(lambda: time.time() - settled >= WINDOW_S + 1, timeout_s=WINDOW_S + 5, what="one window")
        stack.wait_for_scrape(pods=[instance.pod], after=time.time() - 0.5)
        at = source.server_time()
        # A scrape that started before ``at`` may still be writing its samples: wait for one taken after ``at``
        # (a target's scrapes are appended in order), so the product's queries and the test's below see the same
        # samples up to ``at`` (one run read 5 running samples and the next query 6).
        stack.wait_for_scrape(pods=[instance.pod], after=at)
        spec = stack.spec_of(variant)
        # The source evaluates at Prometheus's time() read when it collects; hold it at ``at`` so that its
        # queries and the test's see the same instant (a few milliseconds apart, a scrape at a window's edge
        # fell in one and not the other).
        source.server_time = lambda: at
        try:
            signals = source.collect_all([spec], now=at).variants[spec]
        finally:
            del source.server_time
        series = stack.prometheus.query(
            f'vllm:request_success_total{{namespace="{stack.namespace}",finished_reason="length"}}[{WINDOW_S}s]', at=at)
        stamps = [float(t) for t, _ in series[0]["values"]]
        gauges = {name: [float(v) for _, v in stack.prometheus.query(
            f'{name}{{namespace="{stack.namespace}"{extra}}}[{CYCLE_S}s]', at=at)[0]["values"]]
            for name, extra in (("vllm:num_requests_running", ""),
                                ("vllm:num_requests_waiting_by_reason", ',reason="capacity"'))}
        # One engine sample past the evaluation instant, for the interpolation.
        wait_until(lambda: any(e.at >= at for e in sampler.snapshots), timeout_s=60,
                   what="an engine sample after the evaluation instant")
    finally:
        sampler.stop()
        load.stop()
    assert not load.errors, load.errors[:3]
    assert len(stamps) >= WINDOW_S / 2 / 2, f"scrapes missed: {len(stamps)} in {WINDOW_S} s"
    return Window(signals=signals, load=load, before=sampler.at(at - WINDOW_S), after=sampler.at(at), at=at,
                  samples=list(sampler.snapshots), scraped=stamps,
                  cycle_gauges=gauges)


def test_every_signal_read_from_a_real_vllm_under_load_agrees_with_the_engine_and_the_load_generator(serving):  # type: ignore[no-untyped-def]
    w = measure_window(*serving)
    signals, load, before, after = w.signals, w.load, w.before, w.after
    assert signals.freshness is Freshness.FRESH, signals.note
    assert signals.pods == 1

    # Rates: the engine's counters between the window's first and last scrape (what rate() measures), and the
    # requests the load generator saw finish between them.
    t0, t1 = w.scraped[0], w.scraped[-1]
    span = t1 - t0
    stretch = extrapolation(w.scraped, start=w.at - WINDOW_S, end=w.at)

    def engine_rate(value: Callable[[Engine], float]) -> float:
        return (interpolated(w.samples, t1, value) - interpolated(w.samples, t0, value)) / span * stretch
    finished: list[Served] = load.served_between(t0, t1)
    client_rate = len(finished) / span * stretch
    assert signals.completions_per_s == pytest.approx(engine_rate(served), rel=0.05)
    assert signals.completions_per_s == pytest.approx(client_rate, rel=0.05)
    assert signals.generation_tokens_per_s == pytest.approx(
        engine_rate(lambda e: e.value("vllm:generation_tokens_total")), rel=0.05)
    assert signals.generation_tokens_per_s == pytest.approx(client_rate * OUTPUT, rel=0.05)
    assert signals.prompt_tokens_per_s == pytest.approx(
        engine_rate(lambda e: e.value("vllm:prompt_tokens_total")), rel=0.05)
    assert signals.prompt_tokens_per_s == pytest.approx(client_rate * PROMPT, rel=0.05)

    # Token means exact: every request has the same lengths.
    in_window = load.served_between(w.at - WINDOW_S, w.at)
    assert signals.prompt_tokens_mean == PROMPT
    assert signals.generation_tokens_mean == OUTPUT
    assert all(r.tokens == OUTPUT for r in in_window)
    token_bounds = sorted(before.buckets("vllm:request_prompt_tokens"))
    assert within_one_bucket(token_bounds, signals.prompt_tokens_p90, PROMPT)

    # Latency quantiles within one bucket of the engine's own histogram and of what the client measured.
    ttft_bounds = sorted(before.buckets("vllm:time_to_first_token_seconds"))
    itl_bounds = sorted(before.buckets("vllm:inter_token_latency_seconds"))
    ttft_engine = delta_buckets(before, after, "vllm:time_to_first_token_seconds")
    itl_engine = delta_buckets(before, after, "vllm:inter_token_latency_seconds")
    first_tokens = [r.ttft_s for r in load.records
                    if r.first_token is not None and w.at - WINDOW_S <= r.first_token < w.at]
    gaps = [g for r in in_window for g in r.gaps]
    for q in (0.5, 0.9):
        ttft, itl = signals.ttft_quantile_s(q), dict(signals.itl_quantiles_s).get(q)
        assert ttft is not None and itl is not None
        assert within_one_bucket(ttft_bounds, ttft, quantile(q, ttft_engine)), (q, ttft, quantile(q, ttft_engine))
        # The client's TTFT also holds the HTTP front end's own wait (a second on a starved core): never less.
        assert bucket_index(ttft_bounds, ttft) <= bucket_index(ttft_bounds, sample_quantile(first_tokens, q)) + 1
        assert within_one_bucket(itl_bounds, itl, quantile(q, itl_engine)), (q, itl, quantile(q, itl_engine))
        assert within_one_bucket(itl_bounds, itl, sample_quantile(gaps, q)), (q, itl, sample_quantile(gaps, q))

    # Gauges over the cycle: exactly the mean of the samples Prometheus scraped from the engine in it (capacity
    # waiting only, not the deferred), and near the engine's own gauges sampled every half second over the same
    # cycle. Near, not equal: the batch swings 0-4 and the queue 0-8 within a second, and Prometheus's five
    # samples and the sampler's dozen catch different instants (means 2.5 and 1.4 running in one run).
    running, waiting = (w.cycle_gauges[n] for n in ("vllm:num_requests_running", "vllm:num_requests_waiting_by_reason"))
    assert signals.running == pytest.approx(sum(running) / len(running), abs=1e-9)
    assert signals.waiting == pytest.approx(sum(waiting) / len(waiting), abs=1e-9)
    # The sampler reads the engine's /metrics every half second, but on a starved core one read can take seconds:
    # widen its span (the load is steady) until it holds a few reads, never beyond the rate window.
    span = next((s for s in range(CYCLE_S, WINDOW_S + 1, CYCLE_S)
                 if sum(1 for e in w.samples if w.at - s <= e.at <= w.at) >= 4), WINDOW_S)
    cycle = [e for e in w.samples if w.at - span <= e.at <= w.at]
    assert len(cycle) >= 4, f"the engine sampler stalled: {len(cycle)} reads in the last {span} s"
    engine_waiting = sum(e.value("vllm:num_requests_waiting_by_reason", reason="capacity") for e in cycle) / len(cycle)
    engine_running = sum(e.value("vllm:num_requests_running") for e in cycle) / len(cycle)
    assert 0 <= signals.waiting <= CONCURRENCY - 4
    assert signals.waiting == pytest.approx(engine_waiting, abs=3.0)
    assert 0 <= signals.running <= 4
    assert signals.running == pytest.approx(engine_running, abs=2.0)
    assert signals.kv_usage_mean is not None and 0 <= signals.kv_usage_mean <= 1
    assert signals.kv_usage_max is not None and signals.kv_usage_max >= signals.kv_usage_mean
    assert signals.prefix_cache_hit_ratio is not None and 0 <= signals.prefix_cache_hit_ratio <= 1
