"""Assemble and run the adapter mode: the controller decides, the HPA actuates.

The control loop runs as usual but changes nothing (the HPA owns ``replicas``); after each cycle its report
goes to the :class:`DecisionStore` the adapter serves from and to the controller's own metrics.

:func:`build_security` assembles TLS, authentication and authorisation, with the reloads that keep them
current (the authentication ConfigMap or ``--requestheader-ca`` file, the serving certificate files).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as kube_client

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import (
    AuthenticationConfig,
    Authenticator,
    Authorizer,
    PrivilegedGroupAuthorizer,
    SubjectAccessReviewAuthorizer,
    TokenReviewAuthenticator,
    TrustedCertAuthenticator,
    UnionAuthenticator,
    authentication_config_from_files,
    load_authentication_config,
)
from autoscaler.adapter.reload import AuthenticationReloader, Periodic
from autoscaler.adapter.server import AdapterServer
from autoscaler.adapter.store import DecisionStore
from autoscaler.adapter.tls import ServingTLS, self_signed
from autoscaler.config import Settings
from autoscaler.controller.loop import CycleReport
from autoscaler.controller.ports import WallClock
from autoscaler.errors import ConfigError
from autoscaler.logs import get_logger
from autoscaler.metrics import ControllerMetrics, serve_metrics

__all__ = ["AdapterOptions", "Security", "build_auth", "build_security", "run_adapter"]


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    host: str = "0.0.0.0"
    """Address to listen on; in a pod, all interfaces (the Service targets the pod IP)."""
    port: int = 6443
    """HTTPS port (the Service's targetPort)."""
    cert: Path | None = None
    """Serving certificate (PEM), e.g. mounted from a Secret. With ``key``; else ``self_signed`` must be set."""
    key: Path | None = None
    self_signed: bool = False
    """Generate a throwaway self-signed certificate (local runs; the APIService then needs
    insecureSkipTLSVerify or this certificate as caBundle)."""
    self_signed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    requestheader_ca: Path | None = None
    """Front-proxy CA file; unset: read ConfigMap kube-system/extension-apiserver-authentication."""
    allowed_names: tuple[str, ...] = ()
    """CNs allowed on front-proxy client certificates (with ``requestheader_ca``); empty: any."""
    stale_after_intervals: float = 3.0
    """A decision older than this many controller intervals is not served (HTTP 503: the HPA holds)."""
    metrics_port: int | None = 9100
    """Port of the controller's own /metrics; None: not served."""
    cert_dir: Path | None = None
    """Where ``self_signed`` writes its certificate; None: a fresh temporary directory, removed on exit."""
    auth_reload_s: float = 30.0
    """Seconds between re-reads of the authentication ConfigMap (or ``requestheader_ca``): a rotated
    front-proxy CA is trusted within this."""
    cert_reload_s: float = 10.0
    """Seconds between checks of the serving certificate files: a renewed certificate is served within this."""

    def __post_init__(self) -> None:
        for name in ("auth_reload_s", "cert_reload_s"):
            value = getattr(self, name)
            if not value > 0:  # also refuses NaN
                raise ConfigError(f"adapter option {name} must be > 0 seconds, got {value!r}", field=name)


def build_auth(api: kube_client.ApiClient, config: AuthenticationConfig) -> tuple[Authenticator, Authorizer]:
    """Request-header, client-certificate and bearer-token authentication; SubjectAccessReview authorisation
    (``system:masters`` without a round trip). Needs the ``system:auth-delegator`` ClusterRole."""
    authenticator, authorizer, _ = _auth(api, config)
    return authenticator, authorizer


def _auth(api: kube_client.ApiClient, config: AuthenticationConfig
          ) -> tuple[Authenticator, Authorizer, TrustedCertAuthenticator]:
    certificates = TrustedCertAuthenticator(config)
    authenticator = UnionAuthenticator([certificates, TokenReviewAuthenticator(api)])
    return authenticator, PrivilegedGroupAuthorizer(SubjectAccessReviewAuthorizer(api)), certificates


@dataclass(frozen=True, slots=True)
class Security:
    """What the server needs to let the right callers in, and the reloads that keep it current."""

    tls: ServingTLS
    authenticator: Authenticator
    authorizer: Authorizer
    certificates: TrustedCertAuthenticator
    """The certificate-based part of :attr:`authenticator`, swapped on a changed authentication config."""
    auth_reloader: AuthenticationReloader

    @contextlib.contextmanager
    def reloading(self, *, auth_interval_s: float, cert_interval_s: float) -> Iterator[None]:
        """Poll the authentication config and the certificate files while the block runs."""
        with Periodic(name="adapter-auth-reload", interval_s=auth_interval_s, task=self.auth_reloader.reload), \
                Periodic(name="adapter-cert-reload", interval_s=cert_interval_s, task=self.tls.reload):
            yield


def _authentication_loader(api: kube_client.ApiClient, options: AdapterOptions
                           ) -> Callable[[], AuthenticationConfig]:
    requestheader_ca = options.requestheader_ca
    if requestheader_ca is not None:
        return lambda: authentication_config_from_files(requestheader_ca=requestheader_ca,
                                                        allowed_names=options.allowed_names)
    return lambda: load_authentication_config(api)


def build_security(api: kube_client.ApiClient, options: AdapterOptions, *, cert: Path, key: Path) -> Security:
    """TLS from ``cert``/``key``, authentication from the ConfigMap (or ``options.requestheader_ca``), and
    SubjectAccessReview authorisation; :class:`~autoscaler.errors.ConfigError` if any cannot be read now."""
    load = _authentication_loader(api, options)
    config = load()
    authenticator, authorizer, certificates = _auth(api, config)
    tls = ServingTLS(cert=cert, key=key, client_cas_pem=config.trusted_cas_pem())
    return Security(tls=tls, authenticator=authenticator, authorizer=authorizer, certificates=certificates,
                    auth_reloader=AuthenticationReloader(load=load, authenticator=certificates, tls=tls))


def _tls_files(options: AdapterOptions, scratch: Path | None = None) -> tuple[Path, Path]:
    if options.cert is not None and options.key is not None:
        return options.cert, options.key
    if options.cert is not None or options.key is not None:
        raise ConfigError("--tls-cert and --tls-key go together", field="tls")
    if not options.self_signed:
        raise ConfigError("no serving certificate: give --tls-cert and --tls-key, or --self-signed for a local "
                          "run", field="tls")
    directory = options.cert_dir or scratch
    if directory is None:
        raise ConfigError("--self-signed needs a directory for its certificate", field="tls")
    issued = self_signed(directory, hosts=options.self_signed_hosts)
    return issued.cert, issued.key


def run_adapter(settings: Settings, options: AdapterOptions, *, api: kube_client.ApiClient | None = None,
                duration_s: float | None = None, stop: threading.Event | None = None) -> None:
    """Run the controller (actuation off) and the adapter server until ``stop`` or ``duration_s``."""
    with tempfile.TemporaryDirectory(prefix="vas-adapter-tls-") as scratch:
        _run(settings, options, scratch=Path(scratch), api=api, duration_s=duration_s, stop=stop)


def _run(settings: Settings, options: AdapterOptions, *, scratch: Path, api: kube_client.ApiClient | None,
         duration_s: float | None, stop: threading.Event | None) -> None:
    from autoscaler.controller.wiring import build_controller
    from autoscaler.kube.client import load_api_client

    log = get_logger("adapter")
    cert, key = _tls_files(options, scratch)  # configuration errors first, before any connection
    api = api or load_api_client(settings.kube.kubeconfig, settings.kube.context)
    security = build_security(api, options, cert=cert, key=key)
    interval_s = settings.controller.interval_s
    store = DecisionStore(max_age_s=options.stale_after_intervals * interval_s, clock=WallClock())
    metrics = ControllerMetrics()

    def on_cycle(report: CycleReport) -> None:
        store.record(report)
        metrics.record_cycle(report)

    controller = build_controller(settings, api_client=api, dry_run=True, on_cycle=on_cycle)
    # Not ready before the first cycle: the Service then routes to replicas that have something to serve.
    api_handler = ExternalMetricsAPI(store=store, authenticator=security.authenticator,
                                     authorizer=security.authorizer, ready=lambda: store.last_cycle_at is not None)
    metrics_server = serve_metrics(options.metrics_port, metrics=metrics) if options.metrics_port else None
    try:
        with AdapterServer(api=api_handler, ssl_context=security.tls.current, host=options.host,
                           port=options.port, observer=metrics.observe_request), \
                security.reloading(auth_interval_s=options.auth_reload_s, cert_interval_s=options.cert_reload_s):
            log.info("adapter_started", port=options.port, interval_s=interval_s,
                     stale_after_s=store.max_age_s, cert_not_after=security.tls.not_after,
                     request_header=security.certificates.config.request_header is not None)
            controller.run(interval_s=interval_s, duration_s=duration_s, stop=stop)
    finally:
        if metrics_server is not None:
            metrics_server[0].shutdown()
            metrics_server[0].server_close()
