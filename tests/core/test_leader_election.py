"""The election rules over an in-memory Lease and a fake clock (the real API server: tests/integration)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from autoscaler.errors import ConfigError
from autoscaler.kube.lease import ElectionTiming, LeaderElector, LeaseError, LeaseRecord

TIMING = ElectionTiming(lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class MemoryLease:
    """A Lease with resourceVersion semantics: an update with a stale version is a conflict."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False

    def get(self, *, timeout_s: float) -> LeaseRecord | None:
        if self.down:
            raise LeaseError("unreachable")
        return self.record

    def create(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        if self.down or self.record is not None:
            raise LeaseError("exists")
        return self._store(record)

    def update(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        if self.down or self.record is None or record.resource_version != self.record.resource_version:
            raise LeaseError("conflict")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = dataclasses.replace(record, resource_version=str(self.version))
        return self.record


@pytest.fixture
def world() -> tuple[MemoryLease, Clock]:
    return MemoryLease(), Clock()


def elector(lease: MemoryLease, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(lease, identity=identity, timing=TIMING, clock=clock)


def test_first_candidate_creates_the_lease_and_leads(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a = elector(lease, clock, "a")
    assert a.try_acquire_or_renew() and a.is_leader()
    assert lease.record is not None and (lease.record.holder, lease.record.lease_duration_s) == ("a", 15)


def test_a_follower_waits_the_full_lease_duration_after_the_last_change_it_saw(
    world: tuple[MemoryLease, Clock],
) -> None:
    lease, clock = world
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b sees a's record now
    clock.t += 14.9
    assert not b.try_acquire_or_renew()
    clock.t += 0.2
    assert b.try_acquire_or_renew() and b.is_leader()
    assert lease.record is not None and (lease.record.holder, lease.record.transitions) == ("b", 1)


def test_a_renewal_restarts_the_followers_wait(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.t += 10
    a.try_acquire_or_renew()
    clock.t += 6  # 16 s after b first saw a, but only 6 s after the renewal
    assert not b.try_acquire_or_renew()


@pytest.mark.parametrize(
    ("elapsed", "leading"),
    [
        pytest.param(9.9, True, id="within-renew-deadline"),
        pytest.param(10.0, False, id="at-renew-deadline"),
        pytest.param(14.0, False, id="before-any-follower-may-acquire"),
    ],
)
def test_a_leader_that_cannot_renew_stops_leading_at_the_renew_deadline(
    world: tuple[MemoryLease, Clock], elapsed: float, leading: bool,
) -> None:
    lease, clock = world
    a = elector(lease, clock, "a")
    a.try_acquire_or_renew()
    lease.down = True
    clock.t += elapsed
    assert not a.try_acquire_or_renew()
    assert a.is_leader() is leading


def test_the_old_leader_stops_before_the_new_one_can_start(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    stopped_at = started_at = None
    for _ in range(200):  # a is cut off; step time in small increments
        clock.t += 0.1
        if stopped_at is None and not a.is_leader():
            stopped_at = clock.t
        if started_at is None and b.try_acquire_or_renew():
            started_at = clock.t
    assert stopped_at is not None and started_at is not None and stopped_at < started_at


def test_a_leader_that_sees_another_holder_stops_at_once(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a = elector(lease, clock, "a")
    a.try_acquire_or_renew()
    assert lease.record is not None
    lease.record = dataclasses.replace(lease.record, holder="intruder")  # e.g. an operator took it over
    assert not a.try_acquire_or_renew()
    assert not a.is_leader()


class StaleReads(MemoryLease):
    """Every read returns the same record: two candidates that read before either wrote."""

    def __init__(self, inner: MemoryLease, seen: LeaseRecord) -> None:
        self._inner, self._seen = inner, seen

    def get(self, *, timeout_s: float) -> LeaseRecord | None:
        return self._seen

    def update(self, record: LeaseRecord, *, timeout_s: float) -> LeaseRecord:
        return self._inner.update(record, timeout_s=timeout_s)


def test_two_candidates_that_read_the_same_version_cannot_both_win(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a = elector(lease, clock, "a")
    a.try_acquire_or_renew()
    a.release()
    assert lease.record is not None
    stale = StaleReads(lease, lease.record)
    results = [elector(stale, clock, name).try_acquire_or_renew() for name in ("b", "c")]
    assert results == [True, False]
    assert lease.record.holder == "b"


def test_release_frees_the_lease_for_an_immediate_takeover(world: tuple[MemoryLease, Clock]) -> None:
    lease, clock = world
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader()
    assert lease.record is not None and lease.record.holder == ""
    assert b.try_acquire_or_renew()


def test_hold_returns_false_when_renewal_keeps_failing() -> None:
    lease = MemoryLease()
    fast = ElectionTiming(lease_duration_s=0.6, renew_deadline_s=0.4, retry_period_s=0.1)
    a = LeaderElector(lease, identity="a", timing=fast)
    assert a.try_acquire_or_renew()
    lease.down = True
    assert a.hold(threading.Event()) is False
    assert not a.is_leader()


def test_hold_returns_true_when_asked_to_stop() -> None:
    lease = MemoryLease()
    a = LeaderElector(lease, identity="a", timing=ElectionTiming(0.6, 0.4, 0.1))
    a.try_acquire_or_renew()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert a.hold(stop) is True
    assert a.is_leader()


@pytest.mark.parametrize(
    ("lease_s", "renew_s", "retry_s", "complaint"),
    [
        pytest.param(10, 10, 2, "must exceed renew_deadline_s", id="renew-equal-to-lease"),
        pytest.param(15, 2, 2, "must exceed 1.2 x retry_period_s", id="retry-too-slow"),
    ],
)
def test_unsafe_timings_are_refused_with_the_reason(lease_s: float, renew_s: float, retry_s: float,
                                                    complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ElectionTiming(lease_s, renew_s, retry_s)


def test_runtime_settings_name_the_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscaler.controller.runtime import load_runtime_settings

    monkeypatch.setenv("VAS_RUNTIME_RENEW_DEADLINE_S", "20")
    with pytest.raises(ConfigError, match="VAS_RUNTIME_.*renew_deadline_s"):
        load_runtime_settings()


def test_runtime_settings_read_the_shard_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscaler.controller.runtime import load_runtime_settings

    monkeypatch.setenv("VAS_RUNTIME_SHARD_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("VAS_RUNTIME_SHARD_LABEL_SELECTOR", "variant-autoscaler.io/shard=1")
    settings = load_runtime_settings()
    assert (settings.shard_namespaces, settings.shard_label_selector) == (("team-a", "team-b"),
                                                                          "variant-autoscaler.io/shard=1")


@pytest.mark.parametrize(
    ("namespaces", "selector", "expected"),
    [
        pytest.param((), None, "variant-autoscaler", id="whole-cluster"),
        pytest.param(("a",), None, "variant-autoscaler-", id="namespace-shard"),
        pytest.param((), "shard=1", "variant-autoscaler-", id="label-shard"),
    ],
)
def test_each_shard_gets_its_own_lease_name(namespaces: tuple[str, ...], selector: str | None,
                                            expected: str) -> None:
    from autoscaler.controller.runtime import _default_lease_name

    name = _default_lease_name(namespaces, selector)
    assert name.startswith(expected)
    assert name != _default_lease_name(("other",), "shard=2")
