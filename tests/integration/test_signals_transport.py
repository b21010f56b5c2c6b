"""TLS, auth, headers and retries against a small local HTTPS stand-in that checks what it receives.

The stand-in answers the Prometheus API with empty results: these tests are about how the collector reaches
Prometheus, not about PromQL (the tests with a real Prometheus cover that).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.localstack.ports import free_port
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from autoscaler.signals.transport import HttpOptions

pytestmark = pytest.mark.integration

SPEC = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "d"))
EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
TIME = {"status": "success", "data": {"resultType": "scalar", "result": [1000.0, "1000"]}}


class StandIn:
    """An HTTP(S) server answering /api/v1/query; records each request's headers; ``status`` may refuse."""

    def __init__(self, *, tls: ssl.SSLContext | None = None,
                 status: Callable[[dict[str, str]], int] = lambda headers: 200) -> None:
        self.requests: list[dict[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    outer.requests.append(headers)
                code = status(headers)
                query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                body = json.dumps(TIME if query == "time()" else EMPTY if code == 200 else {
                    "status": "error", "errorType": "unavailable", "error": "no"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_tls(ca: trustme.CA, *, client_certs: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    if client_certs:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def stand_in() -> Iterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def make(**kwargs: object) -> StandIn:
        made.append(StandIn(**kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for server in made:
        server.close()


def collect(url: str, **http: object):
    source = PrometheusSignalSource(url=url, labels=LabelMap(), http=HttpOptions(retry_backoff_s=0.01, **http),
                                    max_parallel=1)  # type: ignore[arg-type]
    return source, source.collect_all([SPEC], now=0.0)


def test_verifies_the_server_with_the_ca_bundle_and_sends_the_token_and_extra_headers(stand_in, ca, ca_file,
                                                                                       tmp_path):
    server = stand_in(tls=server_tls(ca))
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    _, collection = collect(server.url, ca_file=ca_file, bearer_token_file=token,
                                 headers={"X-Scope-OrgID": "tenant-a"})
    assert collection.stats.failed == 0 and len(server.requests) == collection.stats.queries
    assert {r["authorization"] for r in server.requests} == {"Bearer tok-1"}
    assert {r["x-scope-orgid"] for r in server.requests} == {"tenant-a"}


def test_a_rotated_token_is_picked_up_without_a_restart(stand_in, ca, ca_file, tmp_path):
    server = stand_in(tls=server_tls(ca))
    token = tmp_path / "token"
    token.write_text("tok-1")
    source = PrometheusSignalSource(url=server.url, labels=LabelMap(),
                                    http=HttpOptions(ca_file=ca_file, bearer_token_file=token))
    source.collect([SPEC], now=0.0)
    sent = len(server.requests)
    token.write_text("tok-2")
    stat = token.stat()
    os.utime(token, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a rotation, as kubelet's swap
    source.collect([SPEC], now=15.0)
    assert {r["authorization"] for r in server.requests[:sent]} == {"Bearer tok-1"}
    assert {r["authorization"] for r in server.requests[sent:]} == {"Bearer tok-2"}


def test_sends_basic_auth_from_a_password_file(stand_in, ca, ca_file, tmp_path):
    server = stand_in(tls=server_tls(ca))
    password = tmp_path / "password"
    password.write_text("pa:ss\n")
    collect(server.url, ca_file=ca_file, basic_auth_username="reader", basic_auth_password_file=password)
    expected = "Basic " + base64.b64encode(b"reader:pa:ss").decode()
    assert server.requests and {r["authorization"] for r in server.requests} == {expected}


@pytest.mark.parametrize(
    ("trust", "ok"),
    [
        pytest.param("ca", True, id="ca-bundle"),
        pytest.param("system", False, id="system-trust-refuses-a-private-ca"),
        pytest.param("skip", True, id="insecure-skip-verify",
                     marks=pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")),
    ],
)
def test_server_certificate_verification(stand_in, ca, ca_file, trust, ok):
    server = stand_in(tls=server_tls(ca))
    options = {"ca": {"ca_file": ca_file}, "system": {}, "skip": {"insecure_skip_verify": True}}[trust]
    _, collection = collect(server.url, **options)
    if ok:
        assert collection.stats.failed == 0
    else:  # one failed handshake (and its retries) for the whole cycle, not one per signal
        assert collection.stats.queries == 1 and "SSL" in collection.stats.unavailable
        assert collection.variants[SPEC].freshness is Freshness.MISSING


@pytest.mark.parametrize("with_cert", [pytest.param(True, id="client-cert"), pytest.param(False, id="none")])
def test_mutual_tls(stand_in, ca, ca_file, tmp_path, with_cert):
    server = stand_in(tls=server_tls(ca, client_certs=True))
    options: dict[str, object] = {"ca_file": ca_file}
    if with_cert:
        client = ca.issue_cert("autoscaler@example.com")
        cert, key = tmp_path / "client.pem", tmp_path / "client.key"
        client.cert_chain_pems[0].write_to_path(str(cert))
        client.private_key_pem.write_to_path(str(key))
        options |= {"cert_file": cert, "key_file": key}
    _, collection = collect(server.url, **options)
    assert (collection.stats.failed == 0) is with_cert


def test_refused_credentials_stop_the_cycle_after_one_request(stand_in):
    server = stand_in(status=lambda headers: 401)
    _, collection = collect(server.url)
    assert len(server.requests) == 1 and "HTTP 401" in collection.stats.unavailable
    assert collection.variants[SPEC].freshness is Freshness.MISSING


def test_overload_is_retried_with_backoff_and_then_succeeds(stand_in):
    answers = iter([503, 503])
    server = stand_in(status=lambda headers: next(answers, 200))
    _, collection = collect(server.url, retries=2)
    assert collection.stats.failed == 0 and len(server.requests) == collection.stats.queries + 2


def test_retries_are_bounded(stand_in):
    server = stand_in(status=lambda headers: 503)
    _, collection = collect(server.url, retries=2)
    assert len(server.requests) == 3 and collection.stats.queries == 1  # the probe, tried three times


def test_a_prometheus_that_is_not_there_costs_one_connection_attempt_per_cycle():
    url = f"http://127.0.0.1:{free_port()}"
    _, collection = collect(url, retries=0)
    assert collection.stats.queries == 1 and collection.variants[SPEC].freshness is Freshness.MISSING
    assert "unavailable" in collection.variants[SPEC].note
