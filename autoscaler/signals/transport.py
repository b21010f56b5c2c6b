"""How the collector reaches Prometheus: TLS, auth, extra headers, bounded retries, and the insecure-HTTP guard.

Real deployments put Prometheus behind TLS and auth (kube-rbac-proxy, an OAuth proxy) or use Thanos/Mimir,
which want a tenant header (``X-Scope-OrgID``). Credentials come from files, as Kubernetes mounts them; a
bearer token file is re-read when it changes (projected service-account tokens rotate every hour or so).

Plain HTTP to a host other than loopback is refused unless explicitly allowed: a bearer token or password sent
in clear over the pod network is readable by anything on the path.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from autoscaler.errors import ConfigError, SignalError
from autoscaler.logs import get_logger

__all__ = [
    "BasicAuthFile",
    "BearerTokenFileAuth",
    "FileSecret",
    "HttpOptions",
    "check_url",
    "is_loopback",
    "make_session",
]

RETRY_STATUSES = (429, 502, 503, 504)  # overload or a proxy in front restarting: worth one more try


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Transport settings; every credential is a file path, read (and re-read) by the session."""

    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate (mTLS), with key_file
    key_file: Path | None = None
    insecure_skip_verify: bool = False
    bearer_token_file: Path | None = None
    basic_auth_username: str | None = None
    basic_auth_password_file: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_insecure_http: bool = False
    retries: int = 2
    retry_backoff_s: float = 0.25


def is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure_http: bool) -> None:
    """Raise :class:`ConfigError` for a URL that is not http(s), or plain HTTP off loopback when not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"prometheus.url: expected http(s)://host[:port][/path], got {url!r}",
                          field="prometheus.url")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ConfigError(
            f"prometheus.url: plain HTTP to {parts.hostname!r} is refused (credentials and data would cross the "
            "network in clear); use https:// or set prometheus.allow_insecure_http: true",
            field="prometheus.url",
        )


class FileSecret:
    """A secret kept in a file, re-read whenever the file's mtime or size changes (rotation)."""

    def __init__(self, path: Path, *, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._value = ""
        self.reads = 0  # how many times the file was actually read (observability and tests)
        self.value()  # a missing or empty file is a configuration error, found at start-up

    def value(self) -> str:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise self._error(f"cannot read {self.path}: {exc.strerror}") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    text = self.path.read_text().strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise self._error(f"cannot read {self.path}: {exc}") from exc
                if not text:
                    raise self._error(f"{self.path} is empty")
                self._value, self._stamp = text, stamp
                self.reads += 1
            return self._value

    def _error(self, message: str) -> SignalError:
        return SignalError(f"prometheus.{self.what}: {message}")


class BearerTokenFileAuth(requests.auth.AuthBase):
    def __init__(self, path: Path) -> None:
        self.token = FileSecret(path, what="bearer_token_file")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token.value()}"
        return request


class BasicAuthFile(requests.auth.AuthBase):
    def __init__(self, username: str, password_file: Path) -> None:
        self.username = username
        self.password = FileSecret(password_file, what="basic_auth_password_file")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return requests.auth.HTTPBasicAuth(self.username, self.password.value())(request)


def _existing(path: Path | None, name: str) -> str | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"prometheus.{name}: no such file: {path}", field=f"prometheus.{name}")
    return str(path)


def make_session(url: str, options: HttpOptions) -> requests.Session:
    """A session that speaks to ``url`` with the given TLS, auth, headers and retry policy.

    Raises :class:`ConfigError` naming the setting when the options cannot work (missing file, half a
    credential, two kinds of auth at once, plain HTTP off loopback).
    """
    check_url(url, allow_insecure_http=options.allow_insecure_http)
    session = requests.Session()
    session.trust_env = False  # an HTTPS_PROXY meant for image pulls must not capture metric queries
    ca = _existing(options.ca_file, "ca_file")
    session.verify = False if options.insecure_skip_verify else (ca or True)
    if options.insecure_skip_verify:
        get_logger("signals").warning("tls_verification_disabled", url=url,
                                      hint="prometheus.insecure_skip_verify is for testing only")
    cert, key = _existing(options.cert_file, "cert_file"), _existing(options.key_file, "key_file")
    if (cert is None) != (key is None):
        raise ConfigError("prometheus.cert_file and prometheus.key_file go together (mTLS)",
                          field="prometheus.cert_file")
    if cert is not None and key is not None:
        session.cert = (cert, key)

    basic = options.basic_auth_username is not None or options.basic_auth_password_file is not None
    if basic and options.bearer_token_file is not None:
        raise ConfigError("prometheus.bearer_token_file: set it or basic auth (basic_auth_username), not both",
                          field="prometheus.bearer_token_file")
    if any(h.lower() == "authorization" for h in options.headers) and (basic or options.bearer_token_file):
        raise ConfigError("prometheus.headers: an Authorization header conflicts with the configured auth",
                          field="prometheus.headers")
    try:
        if options.bearer_token_file is not None:
            _existing(options.bearer_token_file, "bearer_token_file")
            session.auth = BearerTokenFileAuth(options.bearer_token_file)
        elif basic:
            if not options.basic_auth_username or options.basic_auth_password_file is None:
                raise ConfigError("prometheus.basic_auth_username: basic auth needs both basic_auth_username "
                                  "and basic_auth_password_file", field="prometheus.basic_auth_username")
            _existing(options.basic_auth_password_file, "basic_auth_password_file")
            session.auth = BasicAuthFile(options.basic_auth_username, options.basic_auth_password_file)
    except SignalError as exc:  # an unreadable secret at start-up is a configuration problem
        raise ConfigError(str(exc), field=str(exc).split(":", 1)[0]) from exc
    session.headers.update(dict(options.headers))

    # Bounded retries: connection failures and overload statuses only; never a read timeout (that would
    # multiply the wait). Retry-After is not obeyed: a cycle cannot wait minutes for an answer.
    retry = Retry(
        total=options.retries, connect=options.retries, read=0, status=options.retries, other=0,
        backoff_factor=options.retry_backoff_s, backoff_max=max(options.retry_backoff_s * 8, 0.0),
        status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=False, raise_on_status=True,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
