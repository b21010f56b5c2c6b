"""Keeping the adapter's trust current without a restart: the authentication ConfigMap and the serving cert.

Aggregated API servers re-read ``kube-system/extension-apiserver-authentication`` when it changes (the
request-header CA, allowed names and header names rotate with the cluster's front-proxy CA) and reload their
serving certificate when its files change (cert-manager renews it in place). Here both are polled by a
:class:`Periodic`: a GET of one ConfigMap and a read of two small files are cheap, and polling also sees a
Secret volume's symlink swap, which file-change notifications can miss.

    reloader = AuthenticationReloader(load=lambda: load_authentication_config(api), authenticator=certs, tls=tls)
    with Periodic(name="auth-reload", interval_s=30, task=reloader.reload), \\
         Periodic(name="cert-reload", interval_s=10, task=tls.reload):
        ...

A re-read that fails (API error, a CA bundle that does not parse) keeps the last good trust and is logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from autoscaler.adapter.auth import AuthenticationConfig, TrustedCertAuthenticator
from autoscaler.adapter.tls import ServingTLS
from autoscaler.errors import ConfigError
from autoscaler.logs import get_logger

__all__ = ["AuthenticationReloader", "Periodic"]


class AuthenticationReloader:
    """Re-reads the authentication config and applies a changed one to the TLS context (which client CAs a
    handshake accepts) and then to the authenticator (what a verified certificate proves)."""

    def __init__(self, *, load: Callable[[], AuthenticationConfig], authenticator: TrustedCertAuthenticator,
                 tls: ServingTLS | None) -> None:
        self._load = load
        self._authenticator = authenticator
        self._tls = tls
        self._log = get_logger("adapter.auth")
        self.error: ConfigError | None = None
        """Why the last re-read was not applied; None after a good one."""

    def reload(self) -> bool:
        """True when a changed config is now in use; False when unchanged or refused (see :attr:`error`)."""
        try:
            config = self._load()
            if config == self._authenticator.config:
                self.error = None
                return False
            # TLS first: were the authenticator switched alone, clients of the new CA would still fail the
            # handshake. If the TLS side fails, neither changes and the next poll tries again.
            if self._tls is not None:
                self._tls.set_client_cas(config.trusted_cas_pem())
        except ConfigError as exc:
            if self.error is None or str(exc) != str(self.error):
                self._log.warning("authentication_reload_failed", error=str(exc))
            self.error = exc
            return False
        self._authenticator.update(config)
        self.error = None
        header = config.request_header
        self._log.info("authentication_reloaded", client_cas=len(config.client_cas),
                       requestheader_cas=len(header.client_cas) if header else 0,
                       allowed_names=list(header.allowed_names) if header else [])
        return True


class Periodic:
    """Calls ``task`` every ``interval_s`` seconds in a daemon thread, from :meth:`start` to :meth:`stop`.

    An exception from the task is logged and the next call happens as planned: a reload must never stop
    reloading."""

    def __init__(self, *, name: str, interval_s: float, task: Callable[[], object]) -> None:
        if not interval_s > 0:
            raise ValueError(f"{name}: interval_s must be > 0, got {interval_s!r}")
        self.name = name
        self.interval_s = interval_s
        self._task = task
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._task()
            except Exception as exc:  # noqa: BLE001 - logged; the next tick runs anyway
                get_logger("adapter.reload").error("periodic_task_failed", task=self.name, error=repr(exc))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
