"""TLS for the adapter: the serving context, reloaded when its certificate files or client CAs change.

In a cluster the serving certificate comes from a mounted Secret (cert-manager, or the service CA of
OpenShift), which is rotated in place: :class:`ServingTLS` re-reads the files (:meth:`ServingTLS.reload`,
called periodically) and swaps in a new ``SSLContext``; new connections get the new certificate, open ones keep
theirs. A pair that does not load (a key not yet matching its certificate half-way through a rotation) keeps
the old context and is logged once. :func:`self_signed` and :class:`Authority` (from :mod:`autoscaler.certs`)
are for local runs (``--self-signed``) and tests.

    tls = ServingTLS(cert=Path("/var/run/serving-cert/tls.crt"), key=Path(".../tls.key"), client_cas_pem=cas)
    AdapterServer(api=api, ssl_context=tls.current)   # a fresh context per accepted connection
    tls.reload()                                      # from a Periodic
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from autoscaler.certs import Authority, IssuedCert, self_signed
from autoscaler.errors import ConfigError
from autoscaler.logs import get_logger

__all__ = ["Authority", "IssuedCert", "ServingTLS", "self_signed", "server_context"]


def server_context(*, cert: Path, key: Path, client_cas_pem: str = "") -> ssl.SSLContext:
    """TLS 1.2+ serving context. With ``client_cas_pem`` a client certificate is asked for and, if sent,
    must chain to one of those CAs (else the handshake fails); sending none is allowed (bearer tokens)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS certificate {cert} / key {key}: cannot load: {exc}", field="tls") from exc
    # Go's client offers h2 first; we speak HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    if client_cas_pem:
        try:
            context.load_verify_locations(cadata=client_cas_pem)
        except ssl.SSLError as exc:
            raise ConfigError(f"client CA bundle: cannot load: {exc}", field="client_cas") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass(frozen=True, slots=True)
class _Loaded:
    context: ssl.SSLContext
    fingerprint: str  # of the certificate and key files' bytes
    client_cas_pem: str
    not_after: str


def _fingerprint(cert: Path, key: Path) -> str:
    digest = hashlib.sha256()
    for path in (cert, key):
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _not_after(cert: Path) -> str:
    try:
        return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.isoformat()
    except (OSError, ValueError):
        return ""


class ServingTLS:
    """The serving context in effect; thread-safe (readers take no lock, a reload replaces one reference).

    Raises :class:`~autoscaler.errors.ConfigError` at construction when the files do not load: at start there
    is no good context to keep."""

    def __init__(self, *, cert: Path, key: Path, client_cas_pem: str = "") -> None:
        self.cert, self.key = cert, key
        self._log = get_logger("adapter.tls")
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self._failed: str | None = None  # fingerprint of the last pair refused, so it is logged once
        try:
            fingerprint = _fingerprint(cert, key)
        except OSError as exc:
            raise ConfigError(f"TLS certificate {cert} / key {key}: cannot read: {exc}", field="tls") from exc
        self._loaded = _Loaded(server_context(cert=cert, key=key, client_cas_pem=client_cas_pem), fingerprint,
                               client_cas_pem, _not_after(cert))

    def current(self) -> ssl.SSLContext:
        """The context for the next connection (pass this method as the server's ``ssl_context``)."""
        return self._loaded.context

    @property
    def not_after(self) -> str:
        """Expiry (ISO 8601, UTC) of the certificate in use."""
        return self._loaded.not_after

    def reload(self) -> bool:
        """Load the certificate files again if their bytes changed. True when a new pair is now in use."""
        with self._lock:
            loaded = self._loaded
            try:
                fingerprint = _fingerprint(self.cert, self.key)
            except OSError as exc:  # a Secret volume swaps its files through a symlink: a moment without them
                self._refuse(f"cannot read: {exc}", f"unreadable:{exc}")
                return False
            if fingerprint == loaded.fingerprint:
                return False
            try:
                context = server_context(cert=self.cert, key=self.key, client_cas_pem=loaded.client_cas_pem)
            except ConfigError as exc:
                self._refuse(str(exc), fingerprint)
                return False
            self._loaded = _Loaded(context, fingerprint, loaded.client_cas_pem, _not_after(self.cert))
            self._failed = None
        self._log.info("serving_cert_reloaded", cert=str(self.cert), not_after=self._loaded.not_after)
        return True

    def set_client_cas(self, client_cas_pem: str) -> bool:
        """Trust these CAs for client certificates on new connections (the request-header CA changed).
        True when the context was replaced; on a bundle that does not load, the old one stays and this raises
        :class:`~autoscaler.errors.ConfigError`."""
        with self._lock:
            loaded = self._loaded
            if client_cas_pem == loaded.client_cas_pem:
                return False
            # An SSLContext loads its pair from files only, so the files are read again (and their
            # fingerprint taken with them); half-way through a rotation this fails and the caller retries.
            try:
                fingerprint = _fingerprint(self.cert, self.key)
            except OSError as exc:
                raise ConfigError(f"TLS certificate {self.cert} / key {self.key}: cannot read: {exc}",
                                  field="tls") from exc
            context = server_context(cert=self.cert, key=self.key, client_cas_pem=client_cas_pem)
            self._loaded = _Loaded(context, fingerprint, client_cas_pem, _not_after(self.cert))
            return True

    def _refuse(self, reason: str, failed: str) -> None:
        if failed != self._failed:
            self._log.warning("serving_cert_reload_failed", cert=str(self.cert), key=str(self.key),
                              error=reason, keeping_not_after=self._loaded.not_after)
        self._failed = failed
