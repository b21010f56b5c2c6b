"""The controller as an in-cluster process: shard, leader election, health endpoints, graceful shutdown.

    variant-autoscaler run
      └─ ControllerRuntime.run()
           ├─ /healthz, /readyz on :8081 (liveness: no stuck cycle; readiness: the API answers)
           ├─ /metrics on :9100 (autoscaler.metrics)
           ├─ wait until the API lists this shard's VariantAutoscalings (readiness)
           ├─ LeaderElector.acquire()          standby replicas wait here, ready, warming the forecaster
           ├─ renew thread: LeaderElector.hold()  sets ``halt`` when the lease is lost
           └─ Controller.run(stop=halt)        every write first asks LeaderElector.is_leader()

Exit codes: 0 after SIGTERM/SIGINT or ``--duration`` (the lease is released, so a standby takes over at
once); 1 when the lease was lost (the process restarts clean, as controller-runtime managers do). A signal
lets the cycle in progress finish (every API call has a timeout) and starts no new one.

Runtime settings are the settings file's ``runtime:`` section (:class:`autoscaler.config.RuntimeSettings`);
``VAS_RUNTIME_<FIELD>`` variables override it, so the Deployment sets them per shard without changing the
shared file.

Dry-run (``run --dry-run``): no Lease is taken or written and nothing else is either (``may_write`` is False
for every writer); every instance decides and logs what it would do.

VariantAutoscalings come from a watch-backed cache (``runtime.watch``), started before the first cycle and
kept by standby instances too, so a new leader starts with it synced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from autoscaler.config import RuntimeSettings, Settings, format_validation_error, runtime_environment
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.wiring import build_controller, gpus_counter, llmd_source
from autoscaler.errors import AutoscalerError, ConfigError
from autoscaler.kube.client import KubeScaler, KubeVariantSource, VariantStore, load_api_client
from autoscaler.kube.drain import QueryPodLoad
from autoscaler.kube.lease import ElectionTiming, KubeLeaseLock, LeaderElector
from autoscaler.kube.llmd_source import MergedVariantSource
from autoscaler.logs import get_logger
from autoscaler.metrics import ControllerMetrics, serve_metrics

__all__ = ["ControllerRuntime", "HealthServer", "RuntimeSettings", "load_runtime_settings", "run_controller"]

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STANDBY_REFRESH_CYCLES = 4
"""A standby refreshes its forecaster every this many control intervals: a new leader's first cycle then has at
most a few points of history to catch up (each point costs a forecaster update, about 0.1 s on a busy core)."""


def load_runtime_settings(**overrides: Any) -> RuntimeSettings:
    """From ``VAS_RUNTIME_*`` alone (no settings file); ConfigError names the variable's field on bad input.
    ``variant-autoscaler run`` uses ``Settings.runtime`` instead, which adds the file."""
    try:
        return RuntimeSettings.model_validate({**runtime_environment(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(format_validation_error(exc, source="environment VAS_RUNTIME_*"),
                          field=".".join(str(p) for p in first["loc"])) from exc


class HealthServer:
    """``/healthz`` and ``/readyz`` over HTTP; each answers 200 "ok" or 503 with the failing reason."""

    def __init__(self, *, bind: str, port: int, checks: dict[str, Callable[[], str | None]]) -> None:
        self._checks = checks
        handler = self._handler()
        self._server = ThreadingHTTPServer((bind, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        checks = self._checks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                check = checks.get(self.path.split("?", 1)[0].strip("/"))
                if check is None:
                    self._answer(404, "not found")
                    return
                problem = check()
                self._answer(200 if problem is None else 503, "ok" if problem is None else problem)

            def _answer(self, code: int, text: str) -> None:
                body = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _default_identity() -> str:
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"  # unique per process: a restarted container is a new candidate


def _default_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _default_lease_name(namespaces: tuple[str, ...], selector: str | None) -> str:
    """One lease per shard, so that two shards never elect one leader between them."""
    if not namespaces and not selector:
        return "variant-autoscaler"
    digest = hashlib.sha256(f"{','.join(sorted(namespaces))}|{selector or ''}".encode()).hexdigest()[:10]
    return f"variant-autoscaler-{digest}"


class ControllerRuntime:
    def __init__(self, *, settings: Settings, runtime: RuntimeSettings, api: client.ApiClient | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.stop = stop or threading.Event()
        self.api = api or load_api_client(settings.kube.kubeconfig, settings.kube.context)
        self.identity = runtime.identity or _default_identity()
        # Who wrote what, in the API server's audit log: every request carries this instance's identity.
        self.api.user_agent = f"variant-autoscaler/{self.identity}"
        self.namespaces = runtime.shard_namespaces or ((settings.kube.namespace,) if settings.kube.namespace else ())
        self.lease_name = runtime.lease_name or _default_lease_name(self.namespaces, runtime.shard_label_selector)
        self.lease_namespace = runtime.lease_namespace or _default_namespace()
        self.dry_run = settings.controller.dry_run
        self.elector: LeaderElector | None = None
        if runtime.leader_elect and not self.dry_run:  # a dry run writes nothing, a Lease included
            lock = KubeLeaseLock(self.api, namespace=self.lease_namespace, name=self.lease_name)
            timing = ElectionTiming(runtime.lease_duration_s, runtime.renew_deadline_s, runtime.retry_period_s)
            self.elector = LeaderElector(lock, identity=self.identity, timing=timing,
                                         request_timeout_s=min(runtime.api_timeout_s, runtime.renew_deadline_s))
        self._log = get_logger("runtime", identity=self.identity)
        self._api_ok = False
        self._leading_since: float | None = None
        self._last_cycle_end: float | None = None
        self._renewer_failed = False
        interval = settings.controller.interval_s
        self._stuck_after_s = runtime.stuck_cycle_s or max(5 * interval, 120.0)
        self.metrics = ControllerMetrics()  # a registry of its own: two runtimes in one process do not clash
        self.source = KubeVariantSource(self.api, namespaces=self.namespaces,
                                        label_selector=runtime.shard_label_selector, store=VariantStore(),
                                        timeout_s=runtime.api_timeout_s, watch=runtime.watch,
                                        watch_timeout_s=runtime.watch_timeout_s,
                                        retry_s=runtime.retry_period_s)
        self.controller = self._build_controller()

    # -- assembly --------------------------------------------------------------------------------------------

    def may_write(self) -> bool:
        if self.dry_run:
            return False
        return self.elector is None or self.elector.is_leader()

    def _build_controller(self) -> Controller:
        base = build_controller(self.settings, api_client=self.api, on_cycle=self._cycle_done,
                                may_write=self.may_write)
        query = getattr(base.signals, "query", None)
        labels = self.settings.labels
        pod_load = QueryPodLoad(query, namespace_label=labels.namespace, model_label=labels.model,
                                pod_label=labels.pod) if callable(query) else None
        llmd = llmd_source(self.settings, self.api, may_write=self.may_write, namespaces=self.namespaces)
        scaler = KubeScaler(self.api, store=self.source.store, identity=self.identity, may_write=self.may_write,
                            dry_run=base.dry_run, pod_load=pod_load, timeout_s=self.runtime.api_timeout_s,
                            llmd=llmd, gpus_for=gpus_counter(base))
        return dataclasses.replace(base, variants=MergedVariantSource(self.source, llmd), scaler=scaler)

    def _cycle_done(self, report: CycleReport) -> None:
        self._last_cycle_end = time.monotonic()
        self.metrics.record_cycle(report)

    # -- probes ----------------------------------------------------------------------------------------------

    def liveness(self) -> str | None:
        if self._renewer_failed:
            return "lease renewal thread died"
        if self._leading_since is None:
            return None  # a standby is alive while it waits
        last = self._last_cycle_end or self._leading_since
        stalled = time.monotonic() - last
        if stalled > self._stuck_after_s:
            return f"no cycle finished for {stalled:.0f}s (limit {self._stuck_after_s:.0f}s)"
        return None

    def readiness(self) -> str | None:
        if self.stop.is_set():
            return "shutting down"
        return None if self._api_ok else "the Kubernetes API has not answered yet"

    # -- the process -----------------------------------------------------------------------------------------

    def run(self, *, duration_s: float | None = None) -> int:
        deadline = time.monotonic() + duration_s if duration_s is not None else None
        health = None
        if self.runtime.health_port:
            health = HealthServer(bind=self.runtime.health_bind, port=self.runtime.health_port,
                                  checks={"healthz": self.liveness, "readyz": self.readiness}).start()
        metrics_server = None
        if self.runtime.metrics_port:
            metrics_server, _ = serve_metrics(self.runtime.metrics_port, addr=self.runtime.health_bind,
                                              metrics=self.metrics)
        self._log.info("runtime_started", lease=f"{self.lease_namespace}/{self.lease_name}",
                       leader_elect=self.elector is not None, shard_namespaces=list(self.namespaces),
                       shard_selector=self.runtime.shard_label_selector, dry_run=self.controller.dry_run,
                       watch=self.runtime.watch)
        self.source.start()
        halt = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(halt, deadline), name="stop-watch", daemon=True)
        watcher.start()
        try:
            return self._run(halt, deadline)
        finally:
            halt.set()
            watcher.join(timeout=5)
            self.source.stop()
            if health is not None:
                health.stop()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            self._log.info("runtime_stopped")

    def _watch(self, halt: threading.Event, deadline: float | None) -> None:
        """Turn SIGTERM (``stop``) and the ``--duration`` deadline into ``halt``."""
        while not halt.is_set():
            if self.stop.wait(0.1) or (deadline is not None and time.monotonic() >= deadline):
                halt.set()

    def _run(self, halt: threading.Event, deadline: float | None) -> int:
        if not self._wait_for_api(halt):
            return 0
        if self.elector is None:
            self._lead(halt, deadline)
            return 0
        # Warm before campaigning: a new leader then acts in its first cycle, and a long first read of the
        # history (minutes of query_range on a slow Prometheus) never runs while a lease must be renewed.
        self._warm_standby()
        leading = threading.Event()
        warmer = threading.Thread(target=self._warm_while_standing_by, args=(halt, leading), name="standby-warm",
                                  daemon=True)
        warmer.start()
        try:
            acquired = self.elector.acquire(halt)
        finally:
            leading.set()
        if not acquired:
            return 0
        lost = threading.Event()
        led = threading.Event()  # renew until the cycle in progress is over, not merely until halt

        def renew() -> None:
            try:
                if not self.elector.hold(led):  # type: ignore[union-attr]
                    lost.set()
            except Exception:  # noqa: BLE001 - a dead renewer must not leave a leader acting unrenewed
                self._renewer_failed = True
                self._log.exception("lease_renewal_crashed")
                lost.set()
            finally:
                halt.set()

        renewer = threading.Thread(target=renew, name="lease-renew", daemon=True)
        renewer.start()
        try:
            self._lead(halt, deadline)
        finally:
            halt.set()
            led.set()
        renewer.join(timeout=self.runtime.retry_period_s + self.runtime.api_timeout_s)
        if lost.is_set():
            self._log.error("exiting_after_losing_the_lease")
            return 1
        self.elector.release()
        return 0

    def _warm_while_standing_by(self, halt: threading.Event, leading: threading.Event) -> None:
        """Keep the forecaster fed from Prometheus's history while waiting for the lease, so the first cycle as
        leader reads only the last few intervals and acts within one cycle of winning."""
        every_s = STANDBY_REFRESH_CYCLES * self.settings.controller.interval_s
        while not (leading.wait(every_s) or halt.is_set()):
            if not self._warm_standby():
                return

    def _warm_standby(self) -> bool:
        try:
            self.controller.warm()
        except Exception:  # noqa: BLE001 - a standby that cannot warm still takes over; its first cycle warms then
            self._log.exception("standby_warm_crashed")
            return False
        return True

    def _wait_for_api(self, halt: threading.Event) -> bool:
        """Ready once this shard's VariantAutoscalings can be listed (API reachable, RBAC in place)."""
        while not halt.is_set():
            try:
                self.source.list_variants()
                self._api_ok = True
                return True
            except AutoscalerError as exc:
                self._log.warning("api_not_ready", error=str(exc)[:300])
            halt.wait(self.runtime.retry_period_s)
        return False

    def _lead(self, halt: threading.Event, deadline: float | None) -> None:
        self._leading_since = time.monotonic()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.controller.run(interval_s=self.settings.controller.interval_s, duration_s=remaining, stop=halt)
        finally:
            self._leading_since = None


def run_controller(*, settings: Settings, runtime: RuntimeSettings, stop: threading.Event,
                   duration_s: float | None = None) -> int:
    """Build and run the runtime; the process exit code."""
    return ControllerRuntime(settings=settings, runtime=runtime, stop=stop).run(duration_s=duration_s)
