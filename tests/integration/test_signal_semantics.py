"""The signals as vLLM defines them, read through a real Prometheus from hand-written expositions: the queue is
what waits for capacity, gauges are read over the cycle, the request rate counts served work, and a decode
pod's transferred prompt is not prefill work. One pod speaks vLLM 0.32 (by-reason and by-source series), one an
older vLLM without them; both are read whole.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.emulator.file_sd import write_targets
from autoscaler.localstack.prometheus import PrometheusServer
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap

pytestmark = pytest.mark.integration

Exposition = Callable[[int, float], str]  # (scrape number, seconds since start) -> text


def new_vllm(scrape: int, elapsed: float) -> str:
    """vLLM 0.32 on a decode pod: 6 waiting of which 4 deferred for their KV; 2 req/s served, 1 aborted."""
    tokens = 100.0 * elapsed
    return "\n".join([
        'vllm:num_requests_running{model_name="m",engine="0"} 4',
        'vllm:num_requests_waiting{model_name="m",engine="0"} 6',
        'vllm:num_requests_waiting_by_reason{model_name="m",engine="0",reason="capacity"} 2',
        'vllm:num_requests_waiting_by_reason{model_name="m",engine="0",reason="deferred"} 4',
        'vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.5',
        f'vllm:request_success_total{{model_name="m",engine="0",finished_reason="stop"}} {1.5 * elapsed}',
        f'vllm:request_success_total{{model_name="m",engine="0",finished_reason="length"}} {0.5 * elapsed}',
        f'vllm:request_success_total{{model_name="m",engine="0",finished_reason="abort"}} {1.0 * elapsed}',
        f'vllm:request_success_total{{model_name="m",engine="0",finished_reason="error"}} {0.25 * elapsed}',
        f'vllm:prompt_tokens_total{{model_name="m",engine="0"}} {tokens}',
        f'vllm:prompt_tokens_by_source_total{{model_name="m",engine="0",source="local_compute"}} {0.1 * tokens}',
        f'vllm:prompt_tokens_by_source_total{{model_name="m",engine="0",source="local_cache_hit"}} {0.0}',
        (f'vllm:prompt_tokens_by_source_total{{model_name="m",engine="0",source="external_kv_transfer"}} '
        f'{0.9 * tokens}'),
        f'vllm:prefix_cache_queries_total{{model_name="m",engine="0"}} {0.1 * tokens}',
        'vllm:prefix_cache_hits_total{model_name="m",engine="0"} 0',
        "",
    ])


def old_vllm(scrape: int, elapsed: float) -> str:
    """An older vLLM: no by-reason or by-source series. Its queue swings 0, 8, 0, 8 from scrape to scrape."""
    return "\n".join([
        'vllm:num_requests_running{model_name="m",engine="0"} 4',
        f'vllm:num_requests_waiting{{model_name="m",engine="0"}} {8 if scrape % 2 else 0}',
        f'vllm:kv_cache_usage_perc{{model_name="m",engine="0"}} {0.9 if scrape % 2 else 0.3}',
        f'vllm:request_success_total{{model_name="m",engine="0",finished_reason="stop"}} {1.0 * elapsed}',
        f'vllm:prompt_tokens_total{{model_name="m",engine="0"}} {100.0 * elapsed}',
        f'vllm:prefix_cache_queries_total{{model_name="m",engine="0"}} {100.0 * elapsed}',
        f'vllm:prefix_cache_hits_total{{model_name="m",engine="0"}} {25.0 * elapsed}',
        "",
    ])


class Exporter:
    """Serves ``exposition(scrape number, elapsed)`` on /metrics from a loopback port."""

    def __init__(self, exposition: Exposition) -> None:
        started, counter = time.monotonic(), [0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                counter[0] += 1
                body = exposition(counter[0], time.monotonic() - started).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def spec(deployment: str, role: Role) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", deployment), model="m", role=role, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", deployment))


NEW, OLD = spec("new", Role.DECODE), spec("old", Role.BOTH)


@pytest.fixture(scope="module")
def collected(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    exporters = [Exporter(new_vllm), Exporter(old_vllm)]
    sd = Path(tmp_path_factory.mktemp("sd")) / "targets.json"
    write_targets(sd, [(e.address, {"namespace": "ns", "pod": name, "role": s.role.value, "accelerator": "H100"})
                       for e, name, s in zip(exporters, ("new-0", "old-0"), (NEW, OLD), strict=True)])
    try:
        with PrometheusServer(file_sd_path=sd, binary=prometheus_binary) as prom:
            # Scrapes once a second of both pods, begun more than a rate window (10 s) before now: rate() over a
            # series that starts inside its window extrapolates only half an interval back from the first
            # sample, so a series 9 s old reads 2/s as about 1.85/s (seen as 1.74-1.76 on a loaded machine).
            prom.wait_for_series("count(count_over_time(vllm:num_requests_running[14s]) >= 12) == 2", timeout_s=90)
            source = PrometheusSignalSource(url=prom.url, labels=LabelMap(), rate_window="10s", cycle="8s",
                                            staleness_s=30.0, warmup_s=0.0)
            yield source.collect_all([NEW, OLD], now=time.time()).variants
    finally:
        for e in exporters:
            e.close()


def test_the_queue_is_what_waits_for_capacity_not_what_waits_for_its_kv(collected):  # type: ignore[no-untyped-def]
    assert collected[NEW].freshness is Freshness.FRESH, collected[NEW].note
    assert collected[NEW].waiting == 2  # of 6 waiting, 4 are deferred until their KV arrives


def test_an_engine_without_the_by_reason_split_is_read_by_its_total_smoothed_over_the_cycle(collected):  # type: ignore[no-untyped-def]
    old = collected[OLD]
    assert old.freshness is Freshness.FRESH, old.note
    # Scrapes alternate 0 and 8: an instant read says 0 or 8, the cycle's mean about 4.
    assert 3 <= old.waiting <= 5
    assert 0.5 <= old.kv_usage_mean <= 0.7  # the mean of 0.3 and 0.9
    assert old.kv_usage_max == pytest.approx(0.9)  # the cycle's peak: the KV headroom decision's view


def test_the_request_rate_counts_only_the_reasons_that_mean_served_work(collected):  # type: ignore[no-untyped-def]
    # stop + length: 2/s; with abort it would read 3/s, with error too 3.25/s. (10%: a loaded machine delays
    # the exporter's answer past the scrape's timestamp.)
    assert collected[NEW].completions_per_s == pytest.approx(2.0, rel=0.1)
    assert collected[OLD].completions_per_s == pytest.approx(1.0, rel=0.1)


def test_a_decode_pods_transferred_prompt_is_read_as_not_prefilled_there(collected):  # type: ignore[no-untyped-def]
    # The local prefix-cache counters say 0 hits; by source, 90% of the prompt arrived by KV transfer.
    assert collected[NEW].prefix_cache_hit_ratio == pytest.approx(0.9, rel=0.01)
    assert collected[OLD].prefix_cache_hit_ratio == pytest.approx(0.25, rel=0.01)  # the fallback counters
