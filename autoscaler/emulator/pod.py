"""One emulated vLLM pod: an engine model, its metrics, and a /metrics server on its own loopback port."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from autoscaler.emulator.collector import PodMetrics, RequestPhases, VllmCollector
from autoscaler.emulator.variant import EmulatedVariant
from autoscaler.perf.engine import Completion, Engine, EngineStats, Request

__all__ = ["EmulatedPod", "SchedulingEngine"]


_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _classic_text_format(app: _App) -> _App:
    """Serve the Prometheus text format whatever the scraper asks for.

    Asked for OpenMetrics without an ``escaping`` parameter (as Prometheus 2.x asks), prometheus-client
    0.2x rewrites the colons of ``vllm:...`` sample names to underscores (prometheus/client_python#1177).
    The text format keeps vLLM's names as Prometheus 3 stores them. (``openmetrics=True`` on the pod serves
    what the scraper negotiates, renamed names included, to test that the collector reads both spellings.)
    """
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return app({k: v for k, v in environ.items() if k != "HTTP_ACCEPT"}, start_response)
    return wrapped


class SchedulingEngine(Engine):
    """The engine, noting when it first schedules each request (admission to the running batch), which
    vLLM's queue-time and prefill-time histograms need and :class:`Completion` does not carry."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scheduled_s: dict[int, float] = {}

    def _admit_head(self) -> Any:
        seq = super()._admit_head()
        # Admission happens at the start of the iteration that takes the first chunk; a preempted request
        # keeps its first scheduling time, as vLLM's scheduled_ts does.
        self.scheduled_s.setdefault(seq.request.id, self._now)
        return seq

    def phases(self, completions: list[Completion]) -> RequestPhases:
        """Queue and prefill times of ``completions`` (those admitted here: not a decode pod's handovers)."""
        pairs = [(s, c) for c in completions if (s := self.scheduled_s.pop(c.request.id, None)) is not None]
        queue = np.fromiter((s - c.request.arrival_s for s, c in pairs), np.float64, len(pairs))
        prefill = np.fromiter((c.first_token_s - s for s, c in pairs), np.float64, len(pairs))
        return RequestPhases(queue_s=np.maximum(queue, 0.0), prefill_s=prefill)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every second would flood stderr."""


class EmulatedPod:
    """Starting until :meth:`start` (the start-up delay has passed), then serving until :meth:`stop`."""

    def __init__(self, *, variant: EmulatedVariant, name: str, created_s: float, ready_at_s: float) -> None:
        self.variant = variant
        self.name = name
        self.created_s = created_s
        self.ready_at_s = ready_at_s
        self.engine: SchedulingEngine | None = None
        self.metrics: PodMetrics | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None

    def start(self, *, now_s: float, host: str, legacy_names: bool, openmetrics: bool = False) -> None:
        """Load the "weights" (create the engine) and serve /metrics on a port the OS picks."""
        v = self.variant
        self.engine = SchedulingEngine(
            profile=v.profile,
            role=v.role,
            start_s=now_s,
            block_size=v.block_size,
            prefix_cache_hit_rate=v.prefix_cache_hit_rate,
            record_latencies=True,
        )
        stats = self.engine.snapshot()
        self.metrics = PodMetrics(
            model=v.model,
            max_model_len=v.max_model_len,
            cache_info={
                "block_size": str(v.block_size),
                "cache_dtype": "auto",
                "enable_prefix_caching": str(v.prefix_cache_hit_rate > 0),
                "gpu_memory_utilization": "0.9",
                "num_gpu_blocks": str(stats.kv_blocks_total),
            },
            stats=stats,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(VllmCollector(self.metrics, legacy_names=legacy_names))
        # Port 0: the OS picks a free port while binding, so there is no race with other processes.
        app = make_wsgi_app(registry)
        if not openmetrics:
            app = _classic_text_format(app)
        self._server = make_server(host, 0, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        # A short poll interval bounds how long stop() waits for the serving loop to notice the shutdown.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"metrics-{self.name}", daemon=True)
        self._thread.start()
        self.address = f"{host}:{self._server.server_address[1]}"

    def submit(self, request: Request) -> None:
        assert self.engine is not None, f"pod {self.name} is not ready"
        self.engine.submit(request)

    def advance(self, dt: float) -> list[Completion]:
        assert self.engine is not None and self.metrics is not None, f"pod {self.name} is not ready"
        completions = self.engine.advance(dt)
        self.metrics.record(
            stats=self.engine.snapshot(), completions=completions, latencies=self.engine.drain_latencies(),
            phases=self.engine.phases(completions),
        )
        return completions

    def stats(self) -> EngineStats | None:
        return self.metrics.view.stats if self.metrics is not None else None

    def stop(self) -> list[Request]:
        """Stop serving and hand back the requests it had not finished."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self.address = None
        return self.engine.evict_all() if self.engine is not None else []
