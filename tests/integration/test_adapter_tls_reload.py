"""Serving-certificate rotation on a running adapter: files replaced in place (as cert-manager renews a mounted
Secret), and a fresh TLS handshake on loopback sees the new certificate without a restart."""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from autoscaler.adapter.api import ExternalMetricsAPI
from autoscaler.adapter.auth import AlwaysAllowAuthorizer, UnionAuthenticator
from autoscaler.adapter.reload import Periodic
from autoscaler.adapter.server import AdapterServer
from autoscaler.adapter.tls import ServingTLS
from autoscaler.certs import Authority, IssuedCert
from tests.core.test_adapter_store import DECODE, outcome, store_with

pytestmark = pytest.mark.integration

_POLL_S = 0.05
_WAIT_S = 5.0


@dataclass
class Running:
    server: AdapterServer
    mounted: IssuedCert
    ca: Authority
    trust: Path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    ca = Authority("serving-ca")  # cert-manager's issuer: what the APIService's caBundle holds
    mounted = ca.issue(tmp_path / "secret", "tls", common_name="adapter", hosts=("localhost", "127.0.0.1"))
    tls = ServingTLS(cert=mounted.cert, key=mounted.key)
    api = ExternalMetricsAPI(store=store_with(outcome(DECODE, desired=4)), authenticator=UnionAuthenticator([]),
                             authorizer=AlwaysAllowAuthorizer())
    with AdapterServer(api=api, ssl_context=tls.current) as server, \
            Periodic(name="cert-reload", interval_s=_POLL_S, task=tls.reload):
        yield Running(server=server, mounted=mounted, ca=ca, trust=ca.write(tmp_path / "ca.crt"))


def served_serial(running: Running) -> int:
    """The serial number of the certificate a fresh handshake is given (verified against the issuing CA)."""
    context = ssl.create_default_context(cafile=str(running.trust))
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def rotate(running: Running, directory: Path) -> IssuedCert:
    """Renew in place, key first then certificate: two writes, as a non-atomic writer would."""
    renewed = running.ca.issue(directory, "tls", common_name="adapter", hosts=("localhost", "127.0.0.1"))
    shutil.copy(renewed.key, running.mounted.key)
    shutil.copy(renewed.cert, running.mounted.cert)
    return renewed


def wait_for_serial(running: Running, expected: int) -> int:
    deadline = time.monotonic() + _WAIT_S
    seen = served_serial(running)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        seen = served_serial(running)
    return seen


def test_a_fresh_handshake_sees_the_rotated_certificate(running, tmp_path):
    first = file_serial(running.mounted.cert)
    assert served_serial(running) == first
    renewed = rotate(running, tmp_path / "renewed")
    assert wait_for_serial(running, file_serial(renewed.cert)) == file_serial(renewed.cert) != first


def test_an_open_connection_keeps_working_across_a_rotation(running, tmp_path):
    import http.client

    context = ssl.create_default_context(cafile=str(running.trust))
    connection = http.client.HTTPSConnection("localhost", running.server.port, context=context, timeout=5)
    try:
        connection.request("GET", "/livez")
        assert connection.getresponse().read() == b"ok"
        renewed = rotate(running, tmp_path / "renewed")
        wait_for_serial(running, file_serial(renewed.cert))
        connection.request("GET", "/livez")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_an_invalid_new_pair_keeps_serving_the_old_certificate(running, tmp_path):
    first = file_serial(running.mounted.cert)
    stranger = Authority("other").issue(tmp_path / "other", "tls", common_name="adapter", hosts=("localhost",))
    shutil.copy(stranger.cert, running.mounted.cert)  # a certificate whose key never arrives
    time.sleep(10 * _POLL_S)  # several reload attempts
    assert served_serial(running) == first
    renewed = rotate(running, tmp_path / "renewed")  # the rotation completes: the new pair is taken
    assert wait_for_serial(running, file_serial(renewed.cert)) == file_serial(renewed.cert)
