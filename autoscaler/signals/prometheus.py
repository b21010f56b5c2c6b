"""The Prometheus adapter: runs the batched queries and hands the results to the pure assembler.

It speaks the HTTP API (``/api/v1/query``, ``/api/v1/query_range``) through a ``requests`` session rather
than prometheus-api-client, because the decision it must make per failure needs what that client hides: the
HTTP status and the API's own ``status``/``errorType``. A failure that the next query would meet too (no
connection, TLS, 401/403, 5xx, 429) marks Prometheus unavailable and skips the rest of the cycle, so a dead
Prometheus costs one timeout per cycle, not one per signal; a query Prometheus rejects (400/422, a malformed
answer) leaves only that signal unknown.

A collection first reads Prometheus's clock (``time()``) and evaluates every query at that one instant, so
that two queries whose ratio is taken (rate of a histogram's ``_sum`` over its ``_count``) see the same rate
window. Queries run a few at a time, the ones a decision needs first and the heavy histogram ones last; the
heavy ones get their own, longer timeout (``heavy_timeout_s``) unless they are read from recording rules
(``recorded=True``, :mod:`autoscaler.signals.rules`), which makes them as cheap as a gauge.

    SignalError
     ├── PrometheusUnavailable   the next query would fail too: stop this cycle's queries
     └── QueryRejected           this query's answer is unusable: only its signal is unknown
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import requests

from autoscaler.core.types import VariantSignals, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.logs import get_logger
from autoscaler.signals.assemble import QueryOutcome, assemble, assemble_models, parse_outcomes
from autoscaler.signals.history import HistorySeries, assemble_history, grid, history_queries
from autoscaler.signals.queries import (
    REQUIRED,
    LabelMap,
    MetricNames,
    ModelKey,
    QueryPlan,
    SeriesKey,
)
from autoscaler.signals.transport import HttpOptions, make_session
from autoscaler.signals.warmup import PodSighting, take_census

__all__ = ["Collection", "CollectionStats", "PrometheusSignalSource", "PrometheusUnavailable", "QueryRejected"]

_BODY_LIMIT = 300  # characters of a response body that may reach an error message (and the logs)


class PrometheusUnavailable(SignalError):
    """Prometheus cannot be reached or cannot answer now; the next query would fail the same way."""


class QueryRejected(SignalError):
    """Prometheus answered this query with an error or with something that is not a result."""


@dataclass(frozen=True, slots=True)
class CollectionStats:
    queries: int  # HTTP requests actually sent (retries not counted)
    failed: int  # of those, how many failed
    skipped: int  # not sent: Prometheus was already unavailable, or the budget ran out
    duration_s: float
    unavailable: str = ""  # why Prometheus was given up on this cycle, if it was
    timings: tuple[tuple[str, float], ...] = ()  # (query name, seconds) of each query sent, slowest first


@dataclass(frozen=True, slots=True)
class Collection:
    variants: dict[VariantSpec, VariantSignals]
    models: dict[ModelKey, VariantSignals]  # (namespace, model, role) over all accelerators
    stats: CollectionStats


def _truncate(text: str) -> str:
    return text if len(text) <= _BODY_LIMIT else text[:_BODY_LIMIT] + "..."


class PrometheusSignalSource:
    """Collects every signal for every variant with one query per signal (O(signals), not O(variants))."""

    def __init__(
        self,
        *,
        url: str,
        labels: LabelMap,
        rate_window: str = "1m",
        cycle: str | None = None,
        timeout_s: float = 5.0,
        staleness_s: float = 60.0,
        metric_names: MetricNames | str = MetricNames.AUTO,
        latency_quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        warmup_s: float = 120.0,
        max_parallel: int = 2,
        budget_s: float = 10.0,
        heavy_timeout_s: float | None = None,
        recorded: bool = False,
        http: HttpOptions | None = None,
        session: requests.Session | None = None,
    ) -> None:
        heavy = timeout_s if heavy_timeout_s is None else heavy_timeout_s
        if timeout_s <= 0 or heavy <= 0 or staleness_s <= 0 or budget_s <= 0 or warmup_s < 0 or max_parallel < 1:
            raise ValueError("timeout_s, heavy_timeout_s, staleness_s and budget_s must be > 0, warmup_s >= 0, "
                             "max_parallel >= 1")
        self.url = url.rstrip("/")
        self._session = session if session is not None else make_session(self.url, http or HttpOptions())
        self._plan = QueryPlan(labels=labels, window=rate_window, cycle=cycle, names=MetricNames(metric_names),
                               latency_quantiles=tuple(latency_quantiles), recorded=recorded)
        self._queries = self._ordered(self._plan.queries())
        self._timeout_s = timeout_s
        # Bucket queries computed at query time scan every bucket series of every pod; recorded, they do not.
        self._timeouts = {s.name: heavy for s in self._plan.signals
                          if s.name.endswith("_buckets") and not (recorded and s.recordable)}
        self._staleness_s = staleness_s
        self._warmup_s = warmup_s
        self._max_parallel = max_parallel
        self._budget_s = budget_s
        self._pods: dict[tuple[SeriesKey, str], PodSighting] = {}
        self._log = get_logger("signals", prometheus=self.url)
        self.last_stats: CollectionStats | None = None

    @staticmethod
    def _ordered(queries: dict[str, str]) -> dict[str, str]:
        """What a decision needs first, so that a budget cut or an outage mid-cycle costs the least."""
        def rank(name: str) -> int:
            if name in REQUIRED or name == "pods":
                return 0
            return 2 if name.endswith("_buckets") else 1  # rate over every bucket of every pod: the heavy ones
        return dict(sorted(queries.items(), key=lambda item: rank(item[0])))

    @property
    def queries(self) -> dict[str, str]:
        return dict(self._queries)

    @property
    def plan(self) -> QueryPlan:
        return self._plan

    def close(self) -> None:
        self._session.close()

    # --- HTTP ---------------------------------------------------------------------------------------

    def timeout_for(self, name: str) -> float:
        """Seconds the named query of a collection may take."""
        return self._timeouts.get(name, self._timeout_s)

    def _call(self, path: str, params: Mapping[str, str], *, timeout_s: float | None = None) -> dict[str, Any]:
        timeout = self._timeout_s if timeout_s is None else timeout_s
        params = {**params, "timeout": f"{timeout:g}s"}  # Prometheus stops the work too
        try:
            response = self._session.get(f"{self.url}{path}", params=params, timeout=timeout)
        except requests.RequestException as exc:  # connection, TLS, timeout, retries exhausted
            raise PrometheusUnavailable(f"Prometheus at {self.url} unavailable: {type(exc).__name__}: "
                                        f"{_truncate(str(exc))}") from exc
        except SignalError as exc:  # a credential file vanished
            raise PrometheusUnavailable(str(exc)) from exc
        status = response.status_code
        if status in (401, 403) or status == 429 or status >= 500:
            raise PrometheusUnavailable(f"Prometheus at {self.url} unavailable: HTTP {status}: "
                                        f"{_truncate(response.text)}")
        try:
            body = response.json()
        except ValueError as exc:
            raise QueryRejected(f"HTTP {status}, not JSON: {_truncate(response.text)}") from exc
        if not isinstance(body, dict):
            raise QueryRejected(f"HTTP {status}, expected a JSON object, got {type(body).__name__}")
        if body.get("status") != "success":
            raise QueryRejected(f"HTTP {status}, {body.get('errorType', 'error')}: "
                                f"{_truncate(str(body.get('error', body)))}")
        return body

    def _result(self, body: Mapping[str, Any], expected: str) -> list[Any]:
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != expected or not isinstance(
                data.get("result"), list | tuple):
            got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
            raise QueryRejected(f"expected a {expected} result, got {got!r}")
        return data["result"]  # type: ignore[no-any-return]

    def query(self, promql: str, *, at: float | None = None, timeout_s: float | None = None) -> list[Any]:
        """One instant query (at ``at``, epoch seconds, else now); the ``data.result`` vector.

        Raises a :class:`SignalError` subclass.
        """
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        return self._result(self._call("/api/v1/query", params, timeout_s=timeout_s), "vector")

    def server_time(self) -> float:
        """Prometheus's clock, from ``time()``: one cheap query that also tells whether it is there at all."""
        result = self._result(self._call("/api/v1/query", {"query": "time()"}), "scalar")
        try:
            return float(result[0])
        except (TypeError, ValueError, IndexError) as exc:
            raise QueryRejected(f"time() answered {_truncate(repr(result))}") from exc

    def query_range(self, promql: str, *, start: float, end: float, step: float) -> list[Any]:
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return self._result(self._call("/api/v1/query_range", params), "matrix")

    # --- batches --------------------------------------------------------------------------------------

    def _run(self, queries: Mapping[str, str], run: Callable[[str, str], list[Any]], *,
             budget_s: float | None) -> tuple[dict[str, QueryOutcome], CollectionStats]:
        """Run ``queries``; stop starting new ones once Prometheus is unavailable or ``budget_s`` is spent."""
        started = time.monotonic()
        deadline = started + (budget_s if budget_s is not None else float("inf"))
        down = threading.Event()
        reason: list[str] = []
        counts = {"sent": 0, "failed": 0, "skipped": 0}
        lock = threading.Lock()

        timings: list[tuple[str, float]] = []

        def one(name: str) -> QueryOutcome:
            if down.is_set() or time.monotonic() > deadline:
                with lock:
                    counts["skipped"] += 1
                why = reason[0] if reason else f"collection budget of {self._budget_s:g}s spent"
                return SignalError(f"not queried: {why}")
            with lock:
                counts["sent"] += 1
            sent = time.monotonic()
            try:
                return run(name, queries[name])
            except PrometheusUnavailable as exc:
                with lock:
                    counts["failed"] += 1
                    if not reason:
                        reason.append(str(exc))
                down.set()
                return exc
            except SignalError as exc:
                with lock:
                    counts["failed"] += 1
                return exc
            finally:
                with lock:
                    timings.append((name, time.monotonic() - sent))

        names = list(queries)
        if self._max_parallel == 1:
            results = [one(n) for n in names]
        else:
            with ThreadPoolExecutor(max_workers=self._max_parallel, thread_name_prefix="promql") as pool:
                results = list(pool.map(one, names))
        stats = CollectionStats(queries=counts["sent"], failed=counts["failed"], skipped=counts["skipped"],
                                duration_s=time.monotonic() - started, unavailable=reason[0] if reason else "",
                                timings=tuple(sorted(timings, key=lambda t: -t[1])))
        return dict(zip(names, results)), stats

    def collect_all(self, variants: Sequence[VariantSpec], *, now: float) -> Collection:
        """Signals per variant and per model pool, and what the collection cost.

        Every query is evaluated at one instant, Prometheus's ``time()`` read first: queries sent a few
        milliseconds apart would otherwise see shifted rate windows, and ratios of two of them (mean tokens,
        prefix hits) would be off. The probe also finds a dead Prometheus with one request.
        """
        started = time.monotonic()
        at: float | None = None
        down: PrometheusUnavailable | None = None
        try:
            at = self.server_time()
        except PrometheusUnavailable as exc:
            down = exc
        except QueryRejected:
            pass  # an odd proxy in front: query at "now" rather than not at all
        if down is not None:
            outcomes: dict[str, QueryOutcome] = {name: SignalError(f"not queried: {down}") for name in self._queries}
            stats = CollectionStats(queries=1, failed=1, skipped=len(outcomes),
                                    duration_s=time.monotonic() - started, unavailable=str(down))
        else:
            outcomes, stats = self._run(self._queries,
                                        lambda n, q: self.query(q, at=at, timeout_s=self.timeout_for(n)),
                                        budget_s=self._budget_s)
            stats = replace(stats, queries=stats.queries + 1, duration_s=time.monotonic() - started)
        self.last_stats = stats
        if stats.unavailable:
            self._log.warning("prometheus_unavailable", error=stats.unavailable, skipped=stats.skipped)
        elif stats.failed or stats.skipped:
            self._log.warning("queries_failed", failed=stats.failed, skipped=stats.skipped,
                              names=sorted(n for n, o in outcomes.items() if isinstance(o, Exception)))
        parsed = parse_outcomes(outcomes, plan=self._plan)
        census = None
        if parsed.pod_ages is not None:
            census, self._pods = take_census(parsed.pod_ages, memory=self._pods, now=now, warmup_s=self._warmup_s)
        variant_signals = assemble(variants=variants, parsed=parsed, plan=self._plan, census=census,
                                   staleness_s=self._staleness_s)
        models = assemble_models(variants=variants, parsed=parsed, plan=self._plan, census=census,
                                 staleness_s=self._staleness_s)
        self._log.debug("collected", variants=len(variants), queries=stats.queries,
                        duration_ms=round(stats.duration_s * 1000, 1))
        return Collection(variants=variant_signals, models=models, stats=stats)

    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        """Signals per variant (the controller's port). Never raises for Prometheus trouble: what could not
        be read is MISSING, with the reason in ``note``."""
        return self.collect_all(variants, now=now).variants

    def history(
        self, variants: Sequence[VariantSpec], *, start: float, end: float, step: float
    ) -> dict[VariantSpec, HistorySeries]:
        """Per variant, arrival rate and mix every ``step`` seconds over ``[start, end]`` (epoch seconds).

        All or nothing: if any query fails this raises :class:`SignalError` and the caller starts cold; a
        forecaster warmed on half a history would be worse than one that knows it knows nothing.
        """
        try:
            timestamps = grid(start=start, end=end, step=step)
        except ValueError as exc:  # the caller starts cold, as after any failed read
            raise SignalError(f"history not read: {exc}") from exc
        queries = history_queries(self._plan, step=step)
        results, stats = self._run(queries, lambda _, q: self.query_range(q, start=start, end=end, step=step),
                                   budget_s=None)  # once, at start-up: no cycle to protect
        failures = {n: o for n, o in results.items() if isinstance(o, Exception)}
        if failures:
            name, exc = next(iter(failures.items()))
            raise SignalError(f"history unavailable ({len(failures)} of {len(queries)} queries failed; "
                              f"{name}: {exc})") from exc if isinstance(exc, BaseException) else None
        self._log.info("history_loaded", variants=len(variants), points=len(timestamps),
                       duration_ms=round(stats.duration_s * 1000, 1))
        return assemble_history(variants=variants, results=results, plan=self._plan, start=start, step=step,
                                timestamps=timestamps)
