"""Emulates vLLM Deployments: pods that follow a replica count, receive traffic and serve vLLM's metrics.

Each tick (``tick_s`` of wall time, times ``speedup`` in emulated time) the emulator

1. draws Poisson arrivals from each variant's ``load(t)`` and routes them to the least-loaded ready pod;
2. advances every ready pod's engine; in disaggregated serving what a prefill pod finished goes to the decode
   pods of the same namespace and model;
3. rewrites the Prometheus ``file_sd`` list when the set of ready pods changed.

Replica counts come from ``replicas_of(variant)``, polled at most once per ``poll_interval_s`` (>= 1 s) of
wall time. New pods become ready after the variant's start-up delay (pods present at the first poll are ready
at once: the Deployment already existed); removed pods stop serving and their unfinished requests go to the
other pods. Requests with no ready pod to go to wait in the variant's backlog, as at a gateway.

The emulator can run in a background thread (:meth:`Emulator.start`) or be driven by hand with
:meth:`Emulator.step`, which tests use to make every value they compare exact.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import structlog

from autoscaler.core.types import Role
from autoscaler.emulator.file_sd import write_targets
from autoscaler.emulator.pod import EmulatedPod
from autoscaler.emulator.variant import EmulatedVariant, TrafficSampler
from autoscaler.perf.engine import EngineStats, Request

__all__ = ["Emulator", "PodView"]

log = structlog.get_logger(__name__)

_ROLE_ORDER = {Role.PREFILL: 0, Role.BOTH: 1, Role.DECODE: 2}  # prefill output feeds decode in the same tick


@dataclass(frozen=True, slots=True)
class PodView:
    """One pod as the emulator sees it; ``stats`` is what its /metrics served after the last tick."""

    namespace: str
    deployment: str
    pod: str
    model: str
    role: Role
    accelerator: str
    ready: bool
    address: str | None
    stats: EngineStats | None


class _VariantState:
    def __init__(self, variant: EmulatedVariant) -> None:
        self.variant = variant
        self.sampler = TrafficSampler(variant)
        self.pods: list[EmulatedPod] = []
        self.desired: int | None = None  # None until the first successful poll
        self.names = itertools.count()


class _Pool:
    """Pods that share one queue of requests: one variant, or every decode variant fed by prefill."""

    def __init__(self, members: Sequence[_VariantState], *, own_traffic: bool) -> None:
        self.members = list(members)
        self.own_traffic = own_traffic
        self.backlog: deque[Request] = deque()
        self.role = members[0].variant.role

    def ready_pods(self) -> list[EmulatedPod]:
        return [p for m in self.members for p in m.pods if p.ready]

    def route(self) -> None:
        """Send the backlog to the least-loaded ready pods (waiting + running + just sent)."""
        pods = self.ready_pods()
        if not pods or not self.backlog:
            return
        loads = np.array([_queue_and_batch(p) for p in pods], dtype=np.int64)
        while self.backlog:
            i = int(np.argmin(loads))  # ties go to the first, which keeps routing deterministic
            pods[i].submit(self.backlog.popleft())
            loads[i] += 1


def _queue_and_batch(pod: EmulatedPod) -> int:
    assert pod.engine is not None
    stats = pod.engine.snapshot()
    return stats.waiting + stats.running


class Emulator:
    """Emulated vLLM pods for ``variants``; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        *,
        variants: Sequence[EmulatedVariant],
        replicas_of: Callable[[EmulatedVariant], int],
        file_sd_path: Path,
        tick_s: float = 0.1,
        speedup: float = 1.0,
        legacy_names: bool = False,
        openmetrics: bool = False,
        host: str = "127.0.0.1",
        poll_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not variants:
            raise ValueError("variants must not be empty")
        keys = [v.key for v in variants]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"variants: duplicate namespace/deployment {', '.join('/'.join(k) for k in duplicates)}")
        if not tick_s > 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        if not poll_interval_s >= 1.0:
            raise ValueError(f"poll_interval_s must be >= 1 (the API server is polled at most once a second), "
                             f"got {poll_interval_s}")
        self._replicas_of = replicas_of
        self.file_sd_path = Path(file_sd_path)
        self.tick_s = tick_s
        self.speedup = speedup
        self.legacy_names = legacy_names
        self.openmetrics = openmetrics  # serve what the scraper negotiates (renamed ``vllm_`` names included)
        self.host = host
        self.poll_interval_s = poll_interval_s
        self._clock = clock

        self._states = [_VariantState(v) for v in variants]
        self._pools = self._make_pools(self._states)
        self._pool_of = {id(m): pool for pool in self._pools for m in pool.members}
        self._feeds = {  # (namespace, model) -> pool that receives what prefill pods finished
            (p.members[0].variant.namespace, p.members[0].variant.model): p
            for p in self._pools if not p.own_traffic
        }
        self._ids = itertools.count()
        self._t = 0.0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: list[tuple[str, dict[str, str]]] | None = None
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Poll replicas once, then tick in a background thread until :meth:`close`."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self.sync_replicas()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vllm-emulator", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop ticking, stop every pod's server, and leave an empty target list behind."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            for state in self._states:
                for pod in state.pods:
                    pod.stop()
                state.pods.clear()
            self._write_targets()

    def _run(self) -> None:
        last = last_poll = self._clock()
        while not self._stop.wait(self.tick_s):
            now = self._clock()
            try:
                if now - last_poll >= self.poll_interval_s:
                    self.sync_replicas()
                    last_poll = now
                self.step((now - last) * self.speedup)
            except Exception as exc:  # keep serving; the failure is visible on the object and in the log
                self.failure = exc
                log.exception("emulator tick failed")
            last = now

    # ------------------------------------------------------------------ replicas

    def sync_replicas(self) -> None:
        """Ask ``replicas_of`` for every variant and add or remove pods to match."""
        for state in self._states:
            try:
                n = int(self._replicas_of(state.variant))
                if n < 0:
                    raise ValueError(f"replicas_of returned {n}")
            except Exception as exc:  # noqa: BLE001 (any failure of the poll keeps the last known count)
                log.warning("replica poll failed", deployment=state.variant.deployment,
                            namespace=state.variant.namespace, error=str(exc))
                continue
            with self._lock:
                first = state.desired is None
                state.desired = n
                self._reconcile(state, initial=first)
        with self._lock:
            self._write_targets()

    def _reconcile(self, state: _VariantState, *, initial: bool) -> None:
        v = state.variant
        desired = state.desired or 0
        while len(state.pods) < desired:
            name = f"{v.deployment}-{next(state.names)}"
            ready_at = self._t if initial else self._t + v.ready_after_s
            state.pods.append(EmulatedPod(variant=v, name=name, created_s=self._t, ready_at_s=ready_at))
            log.info("pod created", namespace=v.namespace, pod=name, ready_at_s=round(ready_at, 3))
        if len(state.pods) > desired:
            # As a ReplicaSet does: pods not yet ready go first, then the newest.
            age = {id(p): i for i, p in enumerate(state.pods)}  # creation order
            order = sorted(state.pods, key=lambda p: (p.ready, -age[id(p)]))
            for pod in order[: len(state.pods) - desired]:
                state.pods.remove(pod)
                orphans = pod.stop()
                self._pool_of[id(state)].backlog.extendleft(reversed(orphans))
                log.info("pod removed", namespace=v.namespace, pod=pod.name, rerouted=len(orphans))
        self._promote(state)

    def _promote(self, state: _VariantState) -> None:
        for pod in state.pods:
            if not pod.ready and pod.ready_at_s <= self._t:
                pod.start(now_s=self._t, host=self.host, legacy_names=self.legacy_names, openmetrics=self.openmetrics)
                log.info("pod ready", namespace=state.variant.namespace, pod=pod.name, address=pod.address)

    # ------------------------------------------------------------------ time

    @property
    def now_s(self) -> float:
        """Emulated seconds since the emulator was made."""
        return self._t

    def step(self, dt: float) -> None:
        """Advance emulated time by ``dt`` seconds: arrivals, routing, engines, targets."""
        if not dt >= 0:
            raise ValueError(f"dt must be >= 0, got {dt}")
        with self._lock:
            t0, t1 = self._t, self._t + dt
            for state in self._states:
                self._promote(state)
            for pool in self._pools:
                if pool.own_traffic:
                    for member in pool.members:
                        pool.backlog.extend(self._arrivals(member, t0, t1))
            for pool in self._pools:
                pool.route()
                for pod in pool.ready_pods():
                    done = pod.advance(dt)
                    feed = self._feeds.get((pod.variant.namespace, pod.variant.model))
                    if pod.variant.role is Role.PREFILL and feed is not None:
                        feed.backlog.extend(
                            Request(id=c.request.id, prompt_tokens=c.request.prompt_tokens,
                                    output_tokens=c.request.output_tokens, arrival_s=c.finish_s)
                            for c in done
                        )
            self._t = t1
            self._write_targets()

    def _arrivals(self, state: _VariantState, t0: float, t1: float) -> Iterable[Request]:
        times = state.sampler.arrivals(t0, t1)
        prompts, outputs = state.sampler.lengths(times.size)
        for t, p, o in zip(times.tolist(), prompts.tolist(), outputs.tolist()):
            yield Request(id=next(self._ids), prompt_tokens=p, output_tokens=o, arrival_s=t)

    # ------------------------------------------------------------------ views

    def pods(self) -> list[PodView]:
        with self._lock:
            return [
                PodView(namespace=s.variant.namespace, deployment=s.variant.deployment, pod=p.name,
                        model=s.variant.model, role=s.variant.role, accelerator=s.variant.accelerator,
                        ready=p.ready, address=p.address, stats=p.stats())
                for s in self._states for p in s.pods
            ]

    def backlog(self, variant: EmulatedVariant) -> int:
        """Requests for ``variant``'s pool that wait for a ready pod."""
        with self._lock:
            state = next(s for s in self._states if s.variant.key == variant.key)
            return len(self._pool_of[id(state)].backlog)

    # ------------------------------------------------------------------ discovery

    def _write_targets(self) -> None:
        targets = [
            (p.address, {"namespace": s.variant.namespace, "pod": p.name, "role": s.variant.role.value,
                         "accelerator": s.variant.accelerator, "deployment": s.variant.deployment})
            for s in self._states for p in s.pods if p.address is not None
        ]
        if targets != self._written:
            write_targets(self.file_sd_path, targets)
            self._written = targets

    @staticmethod
    def _make_pools(states: Sequence[_VariantState]) -> list[_Pool]:
        prefilled = {(s.variant.namespace, s.variant.model) for s in states if s.variant.role is Role.PREFILL}
        pools = [_Pool([s], own_traffic=True) for s in states
                 if not (s.variant.role is Role.DECODE and (s.variant.namespace, s.variant.model) in prefilled)]
        fed: dict[tuple[str, str], list[_VariantState]] = {}
        for s in states:
            key = (s.variant.namespace, s.variant.model)
            if s.variant.role is Role.DECODE and key in prefilled:
                fed.setdefault(key, []).append(s)
        pools += [_Pool(members, own_traffic=False) for members in fed.values()]
        return sorted(pools, key=lambda p: _ROLE_ORDER[p.role])
