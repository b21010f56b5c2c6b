"""The HTTPS shell around :class:`~autoscaler.adapter.api.ExternalMetricsAPI`: stdlib ``http.server``.

One thread per connection (``ThreadingHTTPServer``), HTTP/1.1 keep-alive (the aggregator reuses its
connections), the TLS handshake done in the connection's thread so a slow client cannot stall ``accept``.

    with AdapterServer(api=api, ssl_context=server_context(cert=..., key=...), port=6443) as server:
        print(server.url)

``ssl_context`` may also be a function returning the context to use (``ServingTLS.current``): it is called for
every accepted connection, so a rotated certificate or client CA applies to new connections at once.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import Credentials
from autoscaler.errors import StackError
from autoscaler.logs import get_logger

__all__ = ["AdapterServer", "ContextSource", "RequestObserver"]

RequestObserver = Callable[[str, int, float], None]
"""Called after every request with (endpoint, HTTP status, seconds)."""

ContextSource = Callable[[], ssl.SSLContext]
"""Returns the TLS context for the next accepted connection."""

_HANDSHAKE_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 90.0  # longer than Go's default idle connection timeout towards us (90 s)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, the second waits for the client's delayed ACK
    # (40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True
    server_version = "variant-autoscaler-adapter"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(_HANDSHAKE_TIMEOUT_S)
            self.request.do_handshake()  # failures end in _HTTPServer.handle_error
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_s)  # a kept-alive connection idle this long ends
        self._peer_der: bytes | None = None
        if isinstance(self.request, ssl.SSLSocket):
            self._peer_der = self.request.getpeercert(binary_form=True)

    def _serve(self) -> None:
        started = time.perf_counter()
        credentials = Credentials(peer_cert_der=self._peer_der, headers=tuple(self.headers.items()))
        response = self.server.api.handle(method=self.command, target=self.path, credentials=credentials)
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # a request body was not read: the connection cannot be reused
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        observer = self.server.observer
        if observer is not None:
            observer(response.endpoint, response.status, time.perf_counter() - started)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        get_logger("adapter.http").debug("request", client=self.client_address[0], line=format % args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, api: ExternalMetricsAPI, ssl_context: ContextSource | None,
                 observer: RequestObserver | None, idle_timeout_s: float) -> None:
        self.api = api
        self.ssl_context = ssl_context
        self.observer = observer
        self.idle_timeout_s = idle_timeout_s
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End keep-alive connections still open, so that a stopped server really stops answering."""
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Handshake failures (an untrusted client certificate) and dropped connections: not worth a traceback.
        get_logger("adapter.http").debug("connection_error", client=str(client_address))


def _fixed(context: ssl.SSLContext) -> ContextSource:
    return lambda: context


class AdapterServer:
    """Serves ``api`` on ``host:port`` (port 0: any free port; see :attr:`port`) until :meth:`stop`."""

    def __init__(self, *, api: ExternalMetricsAPI, ssl_context: ssl.SSLContext | ContextSource | None,
                 host: str = "127.0.0.1", port: int = 0, observer: RequestObserver | None = None,
                 idle_timeout_s: float = _IDLE_TIMEOUT_S) -> None:
        self._api = api
        self._ssl_context = _fixed(ssl_context) if isinstance(ssl_context, ssl.SSLContext) else ssl_context
        self._address = (host, port)
        self._observer = observer
        self._idle_timeout_s = idle_timeout_s
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise StackError("adapter server already started")
        try:
            self._server = _HTTPServer(self._address, api=self._api, ssl_context=self._ssl_context,
                                       observer=self._observer, idle_timeout_s=self._idle_timeout_s)
        except OSError as exc:
            raise StackError(f"adapter: cannot listen on {self._address[0]}:{self._address[1]}: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="adapter-server", daemon=True)
        self._thread.start()
        get_logger("adapter").info("adapter_listening", url=self.url)

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        if self._server is None:
            raise StackError("adapter server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._address[0]}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
