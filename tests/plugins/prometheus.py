"""Fixtures for a real Prometheus (``autoscaler.localstack.prometheus``) scraping the vLLM emulator.

``prometheus_binary`` requires the Debian ``prometheus`` binary. ``emulated_stack`` is a factory: each call
starts an :class:`~autoscaler.emulator.Emulator` (not ticking: tests drive it with ``step`` or call
``start``) and a Prometheus scraping its pods every second; both are torn down after the test. Replica counts
come from ``stack.replicas`` (deployment name -> count); change it, then call ``stack.emulator.sync_replicas()``.

Prometheus applies service-discovery changes at most every 5 s, so a new or vanished pod shows up there
5-6 s after the emulator lists or drops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from autoscaler.emulator import EmulatedVariant, Emulator
from autoscaler.localstack import prometheus
from tests.plugins.require import require

T = TypeVar("T")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of the ``prometheus`` executable."""
    found = prometheus.find_binary()
    require(found is not None, f"prometheus binary (install: {prometheus.INSTALL_COMMAND})")
    assert found is not None
    return found


@dataclass
class EmulatedStack:
    emulator: Emulator
    prometheus: prometheus.PrometheusServer
    replicas: dict[str, int] = field(default_factory=dict)

    def wait_until(self, probe: Callable[[], T | None], *, timeout_s: float, what: str) -> T:
        """Poll ``probe`` until it returns something truthy; on timeout fail with its last answer and the tail
        of Prometheus's log (a loaded machine is slow, not broken, so callers give generous deadlines)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            last = probe()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"not within {timeout_s:g}s: {what}; last: {last!r}\n"
                                     f"prometheus log:\n{self.prometheus.log_tail()}")
            time.sleep(0.2)

    def wait_for_scrape_of_every_pod(self, *, after: float, timeout_s: float = 15.0) -> None:
        """Wait until Prometheus holds a sample taken after wall time ``after`` from every ready pod, and
        from no other pod (a vanished pod's series must have gone stale)."""
        ready = {p.pod for p in self.emulator.pods() if p.ready}
        self.prometheus.wait_for_series(
            "timestamp(vllm:num_requests_waiting)",
            timeout_s=timeout_s,
            until=lambda result: {s["metric"].get("pod") for s in result} == ready
            and all(float(s["value"][1]) > after for s in result),
        )


@pytest.fixture
def emulated_stack(prometheus_binary: str, tmp_path: Path) -> Iterator[Callable[..., EmulatedStack]]:
    made: list[EmulatedStack] = []

    def make(
        *,
        variants: Sequence[EmulatedVariant],
        replicas: Mapping[str, int],
        legacy_names: bool = False,
        tick_s: float = 0.1,
        speedup: float = 1.0,
        openmetrics: bool = False,
        rule_files: Sequence[Path] = (),
    ) -> EmulatedStack:
        counts = dict(replicas)
        emulator = Emulator(
            variants=variants,
            replicas_of=lambda v: counts[v.deployment],
            file_sd_path=tmp_path / f"targets-{len(made)}.json",
            tick_s=tick_s,
            speedup=speedup,
            legacy_names=legacy_names,
            openmetrics=openmetrics,
        )
        server = prometheus.PrometheusServer(file_sd_path=emulator.file_sd_path, binary=prometheus_binary,
                                             rule_files=rule_files)
        stack = EmulatedStack(emulator=emulator, prometheus=server, replicas=counts)
        made.append(stack)
        emulator.sync_replicas()  # pods listed before Prometheus reads the file
        server.start()
        return stack

    yield make
    for stack in reversed(made):
        stack.emulator.close()
        stack.prometheus.stop()


def wall_clock() -> float:
    """Wall time in seconds since the epoch, the clock of Prometheus sample timestamps."""
    return time.time()
