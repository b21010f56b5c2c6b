"""Signals through a real Prometheus scraping hand-written exporters: what the emulator cannot produce on purpose.

NaN gauges, a pod scraped twice, a target that never answers, a counter reset, an old vLLM that only has the
legacy names beside a new one, and pods that export ``process_start_time_seconds``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.localstack.ports import free_port
from autoscaler.localstack.prometheus import PrometheusServer
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap

pytestmark = pytest.mark.integration

RESET_AFTER_S = 12.0  # the "reset" pod restarts (counters back to 0) this long after the exporters start
_started: list[float] = []  # when the exporters started (set by the fixture, not at import: tests run later)


def t0() -> float:
    return _started[0]
ITL_LE = ("0.01", "0.025", "0.05", "0.1", "+Inf")


class TextExporter:
    """Serves whatever ``render()`` returns, in the Prometheus text format, on a free loopback port."""

    def __init__(self, render: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lines(metrics: dict[str, float | str], model: str = "m") -> str:
    out = []
    for name, value in metrics.items():
        labels = f'model_name="{model}",engine="0"'
        if "{" in name:  # extra labels given inline, e.g. 'x_bucket{le="0.1"}'
            name, extra = name[:-1].split("{", 1)
            labels += "," + extra
        out.append(f"{name}{{{labels}}} {value}")
    return "\n".join(out) + "\n"


def itl(name: str, counts: tuple[int, ...], total: float) -> dict[str, float | str]:
    out: dict[str, float | str] = {f'{name}_bucket{{le="{le}"}}': c for le, c in zip(ITL_LE, counts)}
    out[f"{name}_sum"], out[f"{name}_count"] = total, counts[-1]
    return out


def tokens() -> int:
    """A counter rising by 1000 a second since the module started."""
    return math.floor(1000 * (time.time() - t0()))


def reset_pod() -> str:
    """10 finished requests/s of 500 prompt tokens each; the process restarts at RESET_AFTER_S."""
    elapsed = time.time() - t0()
    since = elapsed if elapsed < RESET_AFTER_S else elapsed - RESET_AFTER_S
    done = math.floor(10 * since)
    return lines({"vllm:num_requests_waiting": 0, "vllm:num_requests_running": 4, "vllm:kv_cache_usage_perc": 0.3,
                  'vllm:request_success_total{finished_reason="stop"}': done,
                  "vllm:request_prompt_tokens_sum": 500 * done, "vllm:request_prompt_tokens_count": done})


PODS: dict[str, tuple[dict[str, str], Callable[[], str]]] = {
    # namespace "odd": a healthy pod, a pod answering NaN, the healthy pod listed twice, a dead target.
    "ok": ({"namespace": "odd"}, lambda: lines({"vllm:num_requests_waiting": 3, "vllm:num_requests_running": 2,
                                                 "vllm:kv_cache_usage_perc": 0.4})),
    "nan": ({"namespace": "odd"}, lambda: lines({"vllm:num_requests_waiting": "NaN", "vllm:num_requests_running": 1,
                                                  "vllm:kv_cache_usage_perc": "NaN"})),
    # namespace "mixed": an old vLLM with only the deprecated names (every prompt token a prefix hit), and a new
    # one (no hits).
    "old": ({"namespace": "mixed"}, lambda: lines({
        "vllm:num_requests_waiting": 1, "vllm:num_requests_running": 1, "vllm:gpu_cache_usage_perc": 0.2,
        "vllm:gpu_prefix_cache_queries_total": tokens(), "vllm:gpu_prefix_cache_hits_total": tokens(),
        **itl("vllm:time_per_output_token_seconds", (0, 0, 0, 0, 0), 0.0)})),
    "new": ({"namespace": "mixed"}, lambda: lines({
        "vllm:num_requests_waiting": 1, "vllm:num_requests_running": 1, "vllm:kv_cache_usage_perc": 0.6,
        "vllm:prefix_cache_queries_total": tokens(), "vllm:prefix_cache_hits_total": 0,
        **itl("vllm:inter_token_latency_seconds", (0, 0, 0, 0, 0), 0.0)})),
    "reset": ({"namespace": "restart"}, reset_pod),
    # namespace "ages": pods that export their process start time, and one that does not.
    "young": ({"namespace": "ages"}, lambda: lines({"vllm:num_requests_waiting": 0, "vllm:num_requests_running": 0,
                                                     "vllm:kv_cache_usage_perc": 0})
              + f"process_start_time_seconds {t0() - 10}\n"),
    "aged": ({"namespace": "ages"}, lambda: lines({"vllm:num_requests_waiting": 0, "vllm:num_requests_running": 0,
                                                    "vllm:kv_cache_usage_perc": 0})
             + f"process_start_time_seconds {t0() - 10_000}\n"),
    "unknown-age": ({"namespace": "ages"}, lambda: lines({"vllm:num_requests_waiting": 0,
                                                          "vllm:num_requests_running": 0,
                                                          "vllm:kv_cache_usage_perc": 0})),
}


def spec(namespace: str) -> VariantSpec:
    return VariantSpec(ref=VariantRef(namespace, "v"), model="m", role=Role.DECODE, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", "v"))


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    _started[:] = [time.time()]
    exporters = {name: TextExporter(render) for name, (_, render) in PODS.items()}
    targets = [{"targets": [exporters[name].address],
                "labels": {**labels, "pod": name, "role": "decode", "accelerator": "H100"}}
               for name, (labels, _) in PODS.items()]
    # The "ok" pod once more under another label: two scrapes of one pod, as with a PodMonitor beside a
    # ServiceMonitor. And a pod that is listed but never answers.
    targets.append({"targets": [exporters["ok"].address], "labels": {**targets[0]["labels"], "monitor": "second"}})
    targets.append({"targets": [f"127.0.0.1:{free_port()}"],
                    "labels": {"namespace": "odd", "pod": "dead", "role": "decode", "accelerator": "H100"}})
    path: Path = tmp_path_factory.mktemp("exporters") / "targets.json"
    path.write_text(json.dumps(targets))
    server = PrometheusServer(file_sd_path=path, binary=prometheus_binary)
    server.start()
    try:
        server.wait_for_series("count(up == 1)", timeout_s=20,
                               until=lambda r: bool(r) and float(r[0]["value"][1]) == len(PODS) + 1)
        time.sleep(3)  # a few scrapes of every target, for rate() windows
        yield server
    finally:
        server.stop()
        for exporter in exporters.values():
            exporter.close()


def source(prometheus: PrometheusServer, **kwargs: object) -> PrometheusSignalSource:
    return PrometheusSignalSource(url=prometheus.url, labels=LabelMap(), rate_window="10s",
                                  **kwargs)  # type: ignore[arg-type]


def test_nan_gauges_a_duplicate_scrape_and_a_dead_target_do_not_spoil_a_variant(prometheus: PrometheusServer):
    sig = source(prometheus).collect([spec("odd")], now=time.time())[spec("odd")]
    assert sig.freshness is Freshness.FRESH, sig.note
    assert sig.pods == 2  # ok and nan report; the dead target has no series; the duplicate is one pod
    assert sig.waiting == 3.0  # ok counted once; nan's NaN dropped rather than turning the sum into NaN
    assert sig.running == 3.0 and sig.kv_usage_mean == 0.4


@pytest.mark.parametrize(
    ("names", "kv_mean", "hit_ratio"),
    [
        pytest.param("auto", 0.4, 0.5, id="auto-reads-old-and-new-pods"),
        pytest.param("v1", 0.6, 0.0, id="v1-reads-the-new-pod-only"),
        pytest.param("legacy", 0.2, 1.0, id="legacy-reads-the-old-pod-only"),
    ],
)
def test_a_fleet_mixing_vllm_versions_is_read_whole_in_auto_mode(prometheus: PrometheusServer, names: str,
                                                                  kv_mean: float, hit_ratio: float):
    sig = source(prometheus, metric_names=names).collect([spec("mixed")], now=time.time())[spec("mixed")]
    assert sig.freshness is Freshness.FRESH, sig.note
    assert math.isclose(sig.kv_usage_mean, kv_mean)
    assert math.isclose(sig.prefix_cache_hit_ratio, hit_ratio, abs_tol=0.05)  # two pods scraped at two offsets


def test_a_counter_reset_reads_as_a_normal_rate(prometheus: PrometheusServer):
    """rate() handles resets in PromQL; nothing client-side takes deltas that a reset would turn negative."""
    wait = t0() + RESET_AFTER_S + 5 - time.time()
    if wait > 0:
        time.sleep(wait)
    sig = source(prometheus).collect([spec("restart")], now=time.time())[spec("restart")]
    assert sig.freshness is Freshness.FRESH, sig.note
    assert 7.0 < sig.completions_per_s < 13.0
    assert math.isclose(sig.prompt_tokens_mean, 500.0)


def test_process_start_time_tells_warming_pods_from_warm_ones(prometheus: PrometheusServer):
    sig = source(prometheus, warmup_s=60.0).collect([spec("ages")], now=time.time())[spec("ages")]
    # "unknown-age" exports no start time: first seen just now, so warming too.
    assert (sig.warm_pods, sig.warming_pods) == (("aged",), ("unknown-age", "young"))
    assert not sig.calibration_ready
