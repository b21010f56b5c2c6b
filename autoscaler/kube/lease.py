"""Leader election over a coordination.k8s.io/v1 Lease, the algorithm of client-go's leaderelection.

Why not ``kubernetes.leaderelection``: its renew loop measures the renew deadline from the start of each retry
round rather than from the last successful renewal, issues requests without a timeout (a hung request keeps
a deposed leader "leading"), offers no way for the protected work to ask "am I still leader?" before a write,
and never releases the lease on shutdown. Here:

- a follower may take the lease only when the record it sees has not changed for the record's
  ``leaseDurationSeconds``, timed on *its own* monotonic clock from when it *saw* the change (client-go's rule,
  which needs no synchronised wall clocks);
- the leader counts ``renew_deadline`` from the moment it *sent* its last successful renewal, and
  :meth:`LeaderElector.is_leader` turns False at that instant whatever the renew thread is doing; since
  ``renew_deadline < lease_duration``, a leader that cannot renew stops acting before any follower can
  acquire (clock-rate skew aside, as in client-go);
- every request carries a timeout that ends no later than the renew deadline;
- writes use the Lease's resourceVersion, so two candidates never both win;
- :meth:`LeaderElector.release` hands the lease over on graceful shutdown (client-go's ReleaseOnCancel).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.errors import AutoscalerError
from autoscaler.logs import get_logger

__all__ = ["ElectionTiming", "KubeLeaseLock", "LeaderElector", "LeaseError", "LeaseLock", "LeaseRecord"]

_JITTER = 1.2  # client-go: RenewDeadline must exceed JitterFactor * RetryPeriod


class LeaseError(AutoscalerError):
    """The Lease could not be read or written (conflict, refusal, timeout)."""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str  # "" when released
    lease_duration_s: int
    acquire_time: str | None = None  # MicroTime text
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str = ""


class LeaseLock(Protocol):
    def get(self, *, timeout_s: float) -> LeaseRecord | None:
        """The current record, None when the Lease does not exist; LeaseError otherwise."""
        ...

    def create(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord: ...

    def update(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        """Replace, conditional on ``record.resource_version``; LeaseError on a conflict."""
        ...


def _micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseLock:
    """A Lease object in the API server."""

    def __init__(self, api: client.ApiClient, *, namespace: str, name: str) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def get(self, *, timeout_s: float) -> LeaseRecord | None:
        try:
            lease = self._leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise LeaseError(f"reading {self.describe()}: HTTP {exc.status}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LeaseError(f"reading {self.describe()}: {type(exc).__name__}") from exc
        spec = lease.spec or client.V1LeaseSpec()
        return LeaseRecord(
            holder=spec.holder_identity or "",
            lease_duration_s=int(spec.lease_duration_seconds or 0),
            acquire_time=_micro_time(spec.acquire_time) if spec.acquire_time else None,
            renew_time=_micro_time(spec.renew_time) if spec.renew_time else None,
            transitions=int(spec.lease_transitions or 0),
            resource_version=_version(lease),
        )

    def _body(self, record: LeaseRecord) -> dict[str, object]:
        spec: dict[str, object] = {"leaseDurationSeconds": record.lease_duration_s,
                                   "leaseTransitions": record.transitions}
        if record.holder:
            spec["holderIdentity"] = record.holder
        if record.acquire_time:
            spec["acquireTime"] = record.acquire_time
        if record.renew_time:
            spec["renewTime"] = record.renew_time
        metadata: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        if record.resource_version:
            metadata["resourceVersion"] = record.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def create(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        try:
            made = self._leases.create_namespaced_lease(
                self.namespace, self._body(record), _request_timeout=timeout_s)  # type: ignore[arg-type]
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise LeaseError(f"creating {self.describe()}: {getattr(exc, 'status', type(exc).__name__)}") from exc
        return replace(record, resource_version=_version(made))

    def update(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        try:
            made = self._leases.replace_namespaced_lease(
                self.name, self.namespace, self._body(record), _request_timeout=timeout_s)  # type: ignore[arg-type]
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise LeaseError(f"updating {self.describe()}: {getattr(exc, 'status', type(exc).__name__)}") from exc
        return replace(record, resource_version=_version(made))


def _version(lease: client.V1Lease) -> str:
    return str((lease.metadata.resource_version if lease.metadata is not None else None) or "")


@dataclass(frozen=True, slots=True)
class ElectionTiming:
    lease_duration_s: float = 15.0
    """How long followers wait after the last change they saw before taking over (client-go default 15 s)."""
    renew_deadline_s: float = 10.0
    """How long the leader keeps acting without a successful renewal (client-go default 10 s)."""
    retry_period_s: float = 2.0
    """Between attempts to acquire or renew (client-go default 2 s)."""

    def __post_init__(self) -> None:
        if not self.lease_duration_s > self.renew_deadline_s:
            raise ValueError(f"lease_duration_s ({self.lease_duration_s:g}) must exceed renew_deadline_s "
                             f"({self.renew_deadline_s:g}): otherwise a deposed leader may still act")
        if not self.renew_deadline_s > _JITTER * self.retry_period_s:
            raise ValueError(f"renew_deadline_s ({self.renew_deadline_s:g}) must exceed {_JITTER:g} x "
                             f"retry_period_s ({self.retry_period_s:g})")
        if self.retry_period_s <= 0:
            raise ValueError("retry_period_s must be > 0")


class LeaderElector:
    def __init__(
        self,
        lock: LeaseLock,
        *,
        identity: str,
        timing: ElectionTiming = ElectionTiming(),
        request_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._lock = lock
        self.identity = identity
        self.timing = timing
        self._request_timeout_s = request_timeout_s
        self._clock = clock
        self._wall = wall
        self._state = threading.Lock()
        self._renewed_at: float | None = None  # clock() when the last successful acquire/renew was sent
        self._record: LeaseRecord | None = None  # the record as we last wrote it
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._log = get_logger("leader", identity=identity)

    # -- the question every write asks -----------------------------------------------------------------------

    def is_leader(self) -> bool:
        with self._state:
            return self._renewed_at is not None and self._clock() - self._renewed_at < self.timing.renew_deadline_s

    def observed_holder(self) -> str:
        record = self._record
        return record.holder if record is not None else ""

    # -- one attempt -----------------------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        sent = self._clock()
        timeout = self._timeout(sent)
        now = _micro_time(self._wall())
        try:
            current = self._lock.get(timeout_s=timeout)
        except LeaseError as exc:
            self._log.debug("lease_read_failed", error=str(exc))
            return False
        if current is None:
            fresh = LeaseRecord(holder=self.identity, lease_duration_s=self._duration(), acquire_time=now,
                                renew_time=now)
            return self._write(self._lock.create, fresh, sent)
        if current.resource_version != self._observed_version:
            self._observed_version, self._observed_at = current.resource_version, self._clock()
            self._record = current
        mine = current.holder == self.identity
        if current.holder and not mine:
            with self._state:
                if self._renewed_at is not None:  # we led, and someone else took over: stop acting now
                    self._renewed_at = None
                    self._log.warning("lease_taken_over", holder=current.holder)
            if self._clock() < self._observed_at + current.lease_duration_s:
                return False  # someone else holds a lease that has not expired in our eyes
        wanted = LeaseRecord(
            holder=self.identity,
            lease_duration_s=self._duration(),
            acquire_time=current.acquire_time if mine else now,
            renew_time=now,
            transitions=current.transitions if mine else current.transitions + 1,
            resource_version=current.resource_version,
        )
        return self._write(self._lock.update, wanted, sent)

    def _write(self, write: Callable[..., LeaseRecord], record: LeaseRecord, sent: float) -> bool:
        try:
            written = write(record, timeout_s=self._timeout(sent))
        except LeaseError as exc:
            self._log.debug("lease_write_failed", error=str(exc))
            return False
        with self._state:
            self._renewed_at = sent
        self._record = written
        self._observed_version, self._observed_at = written.resource_version, self._clock()
        return True

    def _timeout(self, sent: float) -> float:
        """A request may not outlive the renew deadline of a lease we hold."""
        with self._state:
            renewed = self._renewed_at
        if renewed is None:
            return self._request_timeout_s
        left = renewed + self.timing.renew_deadline_s - sent
        return max(0.05, min(self._request_timeout_s, left))

    def _duration(self) -> int:
        return max(1, round(self.timing.lease_duration_s))

    # -- loops -----------------------------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Try every retry period until this instance leads (True) or ``stop`` is set (False)."""
        self._log.info("leader_election_started", retry_period_s=self.timing.retry_period_s)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                self._log.info("leading_started", transitions=self._record.transitions if self._record else 0)
                return True
            stop.wait(self.timing.retry_period_s)
        return False

    def hold(self, stop: threading.Event) -> bool:
        """Renew until ``stop`` (True: still leader) or until the renew deadline passes (False: lost)."""
        while not stop.wait(self.timing.retry_period_s):
            while True:
                with self._state:
                    renewed = self._renewed_at
                if renewed is None or self._clock() - renewed >= self.timing.renew_deadline_s:
                    with self._state:
                        self._renewed_at = None
                    self._log.warning("leading_lost", holder_seen=self.observed_holder(),
                                      renew_deadline_s=self.timing.renew_deadline_s)
                    return False
                if self.try_acquire_or_renew():
                    break
                if stop.wait(min(self.timing.retry_period_s / 4, 0.5)):
                    return True
        return True

    def release(self) -> None:
        """Give the lease up (if still held) so a follower can take over at once."""
        record = self._record
        if not self.is_leader() or record is None or record.holder != self.identity:
            return
        now = _micro_time(self._wall())
        released = LeaseRecord(holder="", lease_duration_s=1, acquire_time=now, renew_time=now,
                               transitions=record.transitions, resource_version=record.resource_version)
        with self._state:
            self._renewed_at = None  # stop acting before the lease is visible as free
        try:
            self._lock.update(released, timeout_s=self._request_timeout_s)
            self._log.info("lease_released")
        except LeaseError as exc:
            self._log.warning("lease_release_failed", error=str(exc))
