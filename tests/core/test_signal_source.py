"""The Prometheus adapter over a fake HTTP transport: failure classification, short-circuit, hostile answers."""

import json
import math
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import BaseAdapter

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import POD_AGES, LabelMap

SPEC = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "d"))
METRIC = {"namespace": "ns", "model_name": "m", "role": "decode", "accelerator": "H100", "pod": "p-0"}

Handler = Callable[[str, dict], tuple[int, object]]  # (path, params) -> (status, JSON body or raw bytes)


class FakePrometheus(BaseAdapter):
    """A transport answering from a handler; counts what was sent."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.sent: list[dict] = []
        self.lock = threading.Lock()

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.sent.append(params)
        status, body = self.handler(parts.path, params)
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


def vector(value: str, **labels: str) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {**METRIC, **labels}, "value": [1.0, value]}]}}


def healthy(source_queries: dict[str, str]) -> Handler:
    names = {q: n for n, q in source_queries.items()}

    def handle(path: str, params: dict) -> tuple[int, object]:
        if params["query"] == "time()":
            return 200, {"status": "success", "data": {"resultType": "scalar", "result": [1000.0, "1000"]}}
        name = names[params["query"]]
        if name.endswith("_buckets"):  # 2 observations/s, all at most 1: the q-quantile interpolates to q
            body = vector("2", le="1")
            body["data"]["result"] += vector("2", le="+Inf")["data"]["result"]
            return 200, body
        return 200, vector({"sample_age_s": "1", "kv_engines": "1", "kv_usage_sum": "0.5"}.get(name, "2"))
    return handle


def make_source(handler_for: Callable[[dict[str, str]], Handler], **kwargs) -> tuple[PrometheusSignalSource,
                                                                                        FakePrometheus]:
    session = requests.Session()
    source = PrometheusSignalSource(url="http://prometheus.test:9090", labels=LabelMap(), session=session,
                                    **kwargs)
    fake = FakePrometheus(handler_for(source.queries))
    session.mount("http://", fake)
    return source, fake


def test_one_request_per_signal_and_fresh_values_when_prometheus_answers():
    source, fake = make_source(healthy)
    collection = source.collect_all([SPEC], now=0.0)
    sig = collection.variants[SPEC]
    assert len(fake.sent) == len(source.queries) + 1 == collection.stats.queries  # + the time() probe
    assert (sig.freshness, sig.waiting, sig.kv_usage_mean) == (Freshness.FRESH, 2.0, 0.5)
    assert collection.models[("ns", "m", "decode")].waiting == 2.0
    assert all(p["timeout"] == "5s" for p in fake.sent)  # Prometheus abandons the work too
    # One evaluation instant for the whole collection: ratios of two queries see the same rate window.
    assert {p.get("time") for p in fake.sent[1:]} == {"1000.000"}


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(requests.ConnectionError("refused"), id="connection-refused"),
        pytest.param(requests.ConnectTimeout("connect timeout"), id="connect-timeout"),
        pytest.param(requests.ReadTimeout("read timeout"), id="read-timeout"),
        pytest.param(requests.exceptions.SSLError("certificate verify failed"), id="tls"),
        pytest.param(503, id="http-503"),
        pytest.param(401, id="http-401"),
        pytest.param(429, id="http-429"),
    ],
)
def test_an_unavailable_prometheus_costs_one_request_per_cycle_not_one_per_signal(failure):
    def handler_for(_queries):
        def handle(path, params):
            if isinstance(failure, Exception):
                raise failure
            return failure, b"upstream down"
        return handle

    source, fake = make_source(handler_for, max_parallel=1)
    collection = source.collect_all([SPEC], now=0.0)
    sig = collection.variants[SPEC]
    assert len(fake.sent) == 1 and collection.stats.skipped == len(source.queries)
    assert sig.freshness is Freshness.MISSING and sig.waiting is None and "unavailable" in sig.note


def test_parallel_queries_stop_soon_after_prometheus_is_found_unavailable():
    def handler_for(queries):
        ok = healthy(queries)

        def handle(path, params):
            if params["query"] == "time()":
                return ok(path, params)  # up at the start of the cycle, gone right after
            raise requests.ConnectionError("refused")
        return handle

    source, fake = make_source(handler_for, max_parallel=4)
    collection = source.collect_all([SPEC], now=0.0)
    assert len(fake.sent) <= 1 + 4 and collection.stats.skipped >= len(source.queries) - 4


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, id="bad-query"),
        pytest.param(422, {"status": "error", "errorType": "execution", "error": "many-to-many"}, id="execution"),
        pytest.param(200, b"<html>proxy login</html>", id="not-json"),
        pytest.param(200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, id="wrong-type"),
        pytest.param(200, [1, 2, 3], id="not-an-object"),
    ],
)
def test_a_rejected_query_leaves_only_its_signal_unknown(status, body):
    def handler_for(queries):
        ok = healthy(queries)

        def handle(path, params):
            return (status, body) if params["query"] == queries["ttft_buckets"] else ok(path, params)
        return handle

    source, fake = make_source(handler_for, max_parallel=1)
    sig = source.collect([SPEC], now=0.0)[SPEC]
    assert len(fake.sent) == len(source.queries) + 1
    assert sig.freshness is Freshness.FRESH and sig.ttft_p90_s is None and math.isclose(sig.itl_p90_s, 0.9)
    assert "ttft_buckets" in sig.note


def test_queries_after_the_budget_is_spent_are_not_sent():
    def handler_for(queries):
        ok = healthy(queries)

        def handle(path, params):
            time.sleep(0.05)
            return ok(path, params)
        return handle

    source, fake = make_source(handler_for, max_parallel=1, budget_s=0.01)
    collection = source.collect_all([SPEC], now=0.0)
    assert len(fake.sent) == 2 and collection.stats.skipped == len(source.queries) - 1  # probe + first query
    assert "budget" in collection.variants[SPEC].note


def test_decision_signals_are_queried_before_the_rest():
    source, _ = make_source(healthy)
    names = list(source.queries)
    assert set(names[:5]) == {"pods", "waiting", "kv_usage_sum", "kv_engines", "sample_age_s"}
    assert all(n.endswith("_buckets") for n in names[-4:])  # the heavy ones last
    assert POD_AGES in names


def test_pods_are_counted_warm_or_warming_across_cycles():
    def handler_for(queries):
        ok = healthy(queries)

        def handle(path, params):
            if params["query"] == queries[POD_AGES]:
                body = vector("-1", pod="p-0")
                body["data"]["result"].append({"metric": {**METRIC, "pod": "p-1"}, "value": [1.0, "3600"]})
                return 200, body
            return ok(path, params)
        return handle

    source, _ = make_source(handler_for, warmup_s=60)
    first = source.collect([SPEC], now=1_000.0)[SPEC]
    later = source.collect([SPEC], now=1_100.0)[SPEC]
    assert (first.warm_pods, first.warming_pods) == (("p-1",), ("p-0",))
    assert (later.warm_pods, later.warming_pods) == (("p-0", "p-1"), ())


def range_handler(queries_for_step: Callable[[], dict[str, str]], fail: str | None = None) -> Callable:
    def handler_for(_queries):
        def handle(path, params):
            assert path == "/api/v1/query_range"
            names = {q: n for n, q in queries_for_step().items()}
            if names[params["query"]] == fail:
                return 422, {"status": "error", "errorType": "execution", "error": "boom"}
            start, step = float(params["start"]), float(params["step"])
            values = [[start + i * step, "2"] for i in range(3)]
            return 200, {"status": "success", "data": {"resultType": "matrix",
                                                       "result": [{"metric": METRIC, "values": values}]}}
        return handle
    return handler_for


def test_history_returns_rate_and_mix_per_variant():
    from autoscaler.signals.history import history_queries

    holder: dict = {}
    source, fake = make_source(range_handler(lambda: holder["q"]))
    holder["q"] = history_queries(source.plan, step=60)
    h = source.history([SPEC], start=0, end=120, step=60)[SPEC]
    assert h.timestamps == (0, 60, 120) and h.completions_per_s == (2.0, 2.0, 2.0)
    assert h.prompt_tokens_mean == (1.0, 1.0, 1.0) and len(fake.sent) == len(holder["q"])


def test_history_is_all_or_nothing():
    from autoscaler.signals.history import history_queries

    holder: dict = {}
    source, _ = make_source(range_handler(lambda: holder["q"], fail="prompt_tokens_p90"))
    holder["q"] = history_queries(source.plan, step=60)
    with pytest.raises(SignalError, match="history unavailable.*prompt_tokens_p90"):
        source.history([SPEC], start=0, end=120, step=60)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12,
)
hostile_body = st.one_of(
    st.binary(max_size=40),
    json_values,
    st.builds(lambda r: {"status": "success", "data": {"resultType": "vector", "result": r}}, json_values),
    st.builds(lambda v: vector(v), st.sampled_from(["NaN", "-Inf", "1e400", "-5", "", "0"])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([200, 200, 200, 400, 404, 422, 500, 503]), hostile_body),
                min_size=1, max_size=40))
def test_hostile_http_answers_never_crash_and_never_yield_fresh_without_required_values(answers):
    def handler_for(_queries):
        it = iter(answers)

        def handle(path, params):
            return next(it, answers[-1])
        return handle

    source, _ = make_source(handler_for, max_parallel=1)
    collection = source.collect_all([SPEC], now=0.0)
    sig = collection.variants[SPEC]
    for value in (sig.waiting, sig.kv_usage_mean, sig.completions_per_s, sig.prompt_tokens_mean):
        assert value is None or (math.isfinite(value) and value >= 0)
    if sig.freshness is Freshness.FRESH:
        assert sig.waiting is not None and sig.kv_usage_mean is not None


def test_an_impossible_history_request_is_a_signal_error_so_the_caller_starts_cold():
    source, fake = make_source(healthy)
    with pytest.raises(SignalError, match="exceeds"):
        source.history([SPEC], start=0, end=86400 * 3, step=15)
    assert fake.sent == []
