"""WatchCache's protocol with a scripted list and watch: events applied, bookmarks, 410 Gone, failures, stop.

(tests/integration/test_kube_watch.py runs it against a real API server; a 410 cannot be provoked there on
demand, so the relist paths are proved here.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from autoscaler.kube.watch import WatchCache


def obj(name: str, version: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}, "spec": spec}


def event(type_: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "raw_object": item, "object": item}


class ScriptedApi:
    """``lists``: what each LIST returns, in turn (the last repeats). ``watches``: per WATCH request, a list of
    events or an exception to raise; after the script, a WATCH blocks until stopped."""

    def __init__(self, *, lists: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]] | Exception]):
        self.lists = lists
        self.watches = watches
        self.list_calls = 0
        self.watched_from: list[str] = []
        self.done = threading.Event()  # set when the script is exhausted
        self.stopped = threading.Event()

    def list(self, **kwargs: Any) -> dict[str, Any]:
        items = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        return {"metadata": {"resourceVersion": f"list-{self.list_calls}"}, "items": items}

    def watcher(self) -> ScriptedWatch:
        return ScriptedWatch(self)


class ScriptedWatch:
    def __init__(self, api: ScriptedApi) -> None:
        self._api = api

    def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        assert kwargs["allow_watch_bookmarks"] is True and kwargs["timeout_seconds"] > 0
        self._api.watched_from.append(kwargs["resource_version"])
        if not self._api.watches:
            self._api.done.set()
            self._api.stopped.wait(10)
            return
        step = self._api.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def stop(self) -> None:
        self._api.stopped.set()


def run_script(api: ScriptedApi) -> WatchCache:
    cache = WatchCache(list_fn=api.list, what="test", retry_s=0.01, watcher=api.watcher).start()
    assert api.done.wait(10), "the cache did not get through the script"
    return cache


def names(cache: WatchCache) -> dict[str, Any]:
    items = cache.items()
    assert items is not None
    return {o["metadata"]["name"]: o["spec"] for o in items}


def test_applies_events_in_order_and_resumes_from_the_last_version_after_a_timeout() -> None:
    api = ScriptedApi(lists=[[obj("a", "1", n=1)]], watches=[
        [event("ADDED", obj("b", "5", n=2)), event("MODIFIED", obj("a", "6", n=3))],  # ends: server timeout
        [event("BOOKMARK", {"metadata": {"resourceVersion": "9"}}), event("DELETED", obj("b", "10"))],
    ])
    cache = run_script(api)
    try:
        assert names(cache) == {"a": {"n": 3}}
        assert api.watched_from == ["list-1", "6", "10"]  # bookmarks and events move the version
        assert api.list_calls == 1  # a watch that ends normally resumes; it does not relist
    finally:
        cache.stop()


@pytest.mark.parametrize(
    ("failure", "relists"),
    [
        pytest.param(ApiException(status=410, reason="Expired: too old resource version"), 2, id="gone-410"),
        pytest.param(ApiException(status=500, reason="etcd unavailable"), 2, id="server-error"),
        pytest.param(urllib3.exceptions.ProtocolError("connection reset"), 2, id="connection-reset"),
    ],
)
def test_a_broken_watch_is_followed_by_a_fresh_list(failure: Exception, relists: int) -> None:
    # The second LIST no longer has "a": it was deleted while no watch was open, and only a LIST can tell.
    api = ScriptedApi(lists=[[obj("a", "1")], [obj("b", "7")]], watches=[failure])
    cache = run_script(api)
    try:
        assert api.list_calls == relists
        assert names(cache) == {"b": {}}
        assert api.watched_from == ["list-1", "list-2"]
    finally:
        cache.stop()


def test_is_not_synced_until_the_first_list_succeeds_and_after_a_failure() -> None:
    gate = threading.Event()
    attempts: list[int] = []

    def failing_list(**kwargs: Any) -> dict[str, Any]:
        attempts.append(1)
        gate.set()
        raise urllib3.exceptions.MaxRetryError(None, "/", "connection refused")  # type: ignore[arg-type]

    cache = WatchCache(list_fn=failing_list, what="test", retry_s=0.01).start()
    try:
        assert gate.wait(5)
        assert cache.items() is None and not cache.synced
        assert not cache.wait_synced(0.2)
        assert len(attempts) >= 2  # it keeps trying
    finally:
        cache.stop()


def test_stop_ends_a_blocked_watch_at_once() -> None:
    api = ScriptedApi(lists=[[obj("a", "1")]], watches=[])
    cache = run_script(api)
    threads_before = [t for t in threading.enumerate() if t.name == "watch test"]
    cache.stop(timeout_s=2)
    assert threads_before and not any(t.is_alive() for t in threads_before)
    assert cache.items() is None
