"""An HTTP proxy in front of a real Prometheus that answers the way a broken one does.

    proxy = PrometheusFaultProxy(upstream="http://127.0.0.1:9090").start()
    proxy.fault = "nan"            # every sample value of every query becomes NaN
    proxy.fault = "nan:running,request_success"   # only queries naming one of these metrics
    proxy.fault = None             # pass through

Faults: ``malformed`` (a 200 whose JSON is cut short), ``http500``/``http503``, ``nan``, ``inf``, ``-inf``,
``huge`` (1e308), ``negative``, ``wrong_labels`` (every label renamed), ``duplicate`` (every series twice),
``empty`` (no series), ``slow`` (each answer delayed ``slow_s``). Value faults leave the scalar ``time()``
answer alone, so the controller's clock still reads. ``injected`` counts the answers altered.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FAULTS", "PrometheusFaultProxy"]

FAULTS = ("malformed", "http500", "http503", "nan", "inf", "-inf", "huge", "negative", "wrong_labels",
          "duplicate", "empty", "slow")
_VALUES = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf", "huge": "1e308", "negative": "-5"}


class PrometheusFaultProxy:
    def __init__(self, *, upstream: str, slow_s: float = 1.5) -> None:
        self.upstream = upstream.rstrip("/")
        self.slow_s = slow_s
        self.fault: str | None = None
        self.injected = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PrometheusFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- what one answer becomes ---------------------------------------------------------------------------------

    def _applies(self, fault: str, query: str) -> tuple[str, bool]:
        """The fault's name, and whether it applies to ``query`` (``name:metric,metric`` narrows it)."""
        name, _, only = fault.partition(":")
        return name, not only or any(m in query for m in only.split(","))

    def answer(self, path: str, query: str, fetch: Any) -> tuple[int, bytes]:
        fault = self.fault
        name, applies = self._applies(fault, query) if fault else ("", False)
        if applies and name == "slow":
            time.sleep(self.slow_s)
        if applies and name in ("http500", "http503"):
            self._count()
            body = {"status": "error", "errorType": "internal", "error": f"injected {name}"}
            return (500 if name == "http500" else 503), json.dumps(body).encode()
        status, body = fetch()
        if not applies or status != 200 or name == "slow":
            self._count(altered=applies and name == "slow")
            return status, body
        if name == "malformed":
            self._count()
            return 200, body[: max(1, len(body) // 2)]
        try:
            doc = json.loads(body)
            result = doc["data"]["result"]
            kind = doc["data"]["resultType"]
        except (ValueError, KeyError, TypeError):
            return status, body
        if kind not in ("vector", "matrix"):
            self._count(altered=False)
            return status, body  # time() and other scalars: the clock stays readable
        doc["data"]["result"] = _mutate(name, result, kind)
        self._count()
        return 200, json.dumps(doc).encode()

    def _count(self, *, altered: bool = True) -> None:
        with self._lock:
            self.answered += 1
            self.injected += altered

    # -- HTTP ------------------------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                query = " ".join(parse_qs(urlsplit(self.path).query).get("query", []))
                if data:
                    query += " " + " ".join(parse_qs(data.decode(errors="replace")).get("query", []))

                def fetch() -> tuple[int, bytes]:
                    request = urllib.request.Request(proxy.upstream + self.path, data=data, method=method)
                    if data:
                        request.add_header("Content-Type", self.headers.get("Content-Type", ""))
                    try:
                        with urllib.request.urlopen(request, timeout=30) as response:
                            return response.status, response.read()
                    except urllib.error.HTTPError as exc:
                        return exc.code, exc.read()

                status, body = proxy.answer(self.path, query, fetch)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its timeout); nothing to tell it

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def _mutate(name: str, result: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    if name == "empty":
        return []
    if name == "duplicate":
        return result + result
    if name == "wrong_labels":
        return [{**s, "metric": {f"{k}_x": v for k, v in s["metric"].items()}} for s in result]
    value = _VALUES[name]
    if kind == "vector":
        return [{**s, "value": [s["value"][0], value]} for s in result]
    return [{**s, "values": [[t, value] for t, _ in s["values"]]} for s in result]
