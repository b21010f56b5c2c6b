"""A list-then-watch cache of one collection: an informer without handlers, for objects read every cycle.

    WatchCache(list_fn=..., what="...").start()
      thread: LIST (resourceVersion R) -> WATCH from R (bookmarks on) -> apply ADDED/MODIFIED/DELETED -> ...
              watch ended by its server-side timeout: WATCH again from the last resourceVersion seen
              410 Gone (R compacted away): LIST again
              any other failure: not synced (readers LIST themselves), wait, LIST again; the wait doubles
              with each failure in a row up to a minute (a watch that RBAC refuses must not turn into a
              LIST every ``retry_s``)
    cache.items()  -> the objects, or None while not synced
    cache.stop()   -> shuts the watch's socket, joins the thread

Why: a controller that LISTs its objects every cycle costs the API server a LIST per cycle whatever changed;
a watch costs one long request per ``watch_timeout_s`` and an event per change (the client-go informer
pattern, without its handler machinery: the cycle only needs the current set).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import urllib3.exceptions
from kubernetes import watch as kube_watch
from kubernetes.client.exceptions import ApiException

from autoscaler.logs import get_logger

__all__ = ["WatchCache", "Watcher"]

_GONE = 410
_MAX_BACKOFF_S = 60.0

ListFn = Callable[..., Any]


class Watcher(Protocol):
    """What WatchCache needs of :class:`kubernetes.watch.Watch` (the seam tests replace)."""

    def stream(self, func: ListFn, *args: Any, **kwargs: Any) -> Any: ...

    def stop(self) -> None: ...


def _dict_watch() -> Watcher:
    """A Watch whose events carry plain dicts (custom objects have no generated model)."""
    return kube_watch.Watch(return_type=object)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchCache:
    """Objects (as dicts) of one LIST call, kept current by WATCH (see the module docstring).

    ``list_fn`` is a generated list method with its scope bound, e.g. ``functools.partial(custom.
    list_namespaced_custom_object, group, version, namespace, plural, label_selector=...)``; it must return
    dicts (custom objects do). It is called for the LIST and, through ``Watch.stream``, for the WATCH.
    """

    def __init__(self, *, list_fn: ListFn, what: str, request_timeout_s: float = 10.0,
                 watch_timeout_s: float = 300.0, retry_s: float = 2.0,
                 watcher: Callable[[], Watcher] = _dict_watch) -> None:
        self._list = list_fn
        self._what = what
        self._request_timeout_s = request_timeout_s
        self._watch_timeout_s = watch_timeout_s
        self._retry_s = retry_s
        self._new_watcher = watcher
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._synced = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: Watcher | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0  # in a row
        self._log = get_logger("watch", what=what)
        self.lists = 0  # LIST calls made (relists show here)
        self.watches = 0  # WATCH requests opened

    # -- readers -----------------------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced

    def items(self) -> list[dict[str, Any]] | None:
        """A snapshot of the objects; None while not synced (the caller lists instead)."""
        with self._lock:
            return list(self._items.values()) if self._synced else None

    def wait_synced(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._synced and time.monotonic() < deadline and not self._stopping.is_set():
            self._stopping.wait(0.05)
        return self._synced

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> WatchCache:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watch {self._what}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()  # shuts the socket down: a blocked read returns at once
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._synced = False

    # -- the thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - readers then LIST every cycle, as without a watch; say why
            self._synced = False
            self._log.exception("watch_crashed")

    def _loop(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch_from(version)
                self._failures = 0
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                if exc.status == _GONE:  # our resourceVersion was compacted away: start again from a LIST
                    self._log.info("watch_expired_relisting")
                    version = None
                    continue
                self._failed(exc)
                version = None
            except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
                # OSError/AttributeError/ValueError: what a socket shut down under a read raises (stop())
                if self._stopping.is_set():
                    break
                self._failed(exc)
                version = None
        self._log.debug("watch_stopped")

    def _failed(self, exc: BaseException) -> None:
        """Not synced until the next LIST succeeds: readers list themselves meanwhile."""
        self._synced = False
        delay = min(self._retry_s * 2 ** self._failures, _MAX_BACKOFF_S)
        self._failures += 1
        self._log.warning("watch_failed", error=str(exc)[:300], retry_s=delay)
        self._stopping.wait(delay)

    def _relist(self) -> str:
        listed = cast(dict[str, Any], self._list(_request_timeout=self._request_timeout_s))
        self.lists += 1
        items = {_key(obj): obj for obj in listed.get("items") or []}
        with self._lock:
            self._items = items
            self._synced = True
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch_from(self, version: str) -> str:
        """One WATCH request until its server-side timeout; the last resourceVersion seen."""
        watcher = self._new_watcher()
        self._watcher = watcher
        if self._stopping.is_set():
            return version
        self.watches += 1
        stream = watcher.stream(self._list, resource_version=version, allow_watch_bookmarks=True,
                                timeout_seconds=int(self._watch_timeout_s),
                                _request_timeout=(self._request_timeout_s, self._watch_timeout_s + 30.0))
        for event in stream:
            obj = event.get("raw_object") or {}
            kind = event.get("type")
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED"):
                with self._lock:
                    self._items[_key(obj)] = obj
            elif kind == "DELETED":
                with self._lock:
                    self._items.pop(_key(obj), None)
            # BOOKMARK: only the resourceVersion moves
            if self._stopping.is_set():
                break
        return version
