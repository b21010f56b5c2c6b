"""The one helper that mints throwaway CAs and certificates (local control plane, adapter, tests)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from autoscaler.certs import Authority, self_signed

CA = Authority("test-ca")


def usages(cert: x509.Certificate) -> list:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def alt_names(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in names}


@pytest.mark.parametrize(
    ("hosts", "server", "usage", "sans"),
    [
        pytest.param((), None, ExtendedKeyUsageOID.CLIENT_AUTH, set(), id="client-by-default"),
        pytest.param(("localhost", "127.0.0.1"), None, ExtendedKeyUsageOID.SERVER_AUTH, {"localhost", "127.0.0.1"},
                     id="serving-when-hosts"),
        pytest.param(("127.0.0.1",), False, ExtendedKeyUsageOID.CLIENT_AUTH, {"127.0.0.1"}, id="client-forced"),
        pytest.param((), True, ExtendedKeyUsageOID.SERVER_AUTH, set(), id="serving-forced"),
    ],
)
def test_mints_serving_or_client_certificates_signed_by_the_ca(hosts, server, usage, sans):
    _, cert = CA.mint(common_name="x", organizations=("system:masters",), hosts=hosts, server=server)
    cert.verify_directly_issued_by(CA.cert)
    assert usages(cert) == [usage]
    assert alt_names(cert) == sans
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]


def test_ip_hosts_become_ip_address_names():
    _, cert = CA.mint(common_name="x", hosts=("127.0.0.1", "localhost"))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_issued_files_keep_the_key_private(tmp_path):
    issued = CA.issue(tmp_path / "d", "client", common_name="admin")
    assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificate(issued.cert.read_bytes()).subject.rfc4514_string() == "CN=admin"


@pytest.mark.parametrize("days", [30, 365])
def test_validity_covers_clock_skew_and_the_requested_span(days):
    ca = Authority("short", validity=dt.timedelta(days=days))
    _, cert = ca.mint(common_name="x")
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc < now - dt.timedelta(minutes=30)
    assert cert.not_valid_after_utc - now == pytest.approx(dt.timedelta(days=days), abs=dt.timedelta(minutes=5))


def test_a_self_signed_serving_certificate_is_its_own_ca(tmp_path):
    issued = self_signed(tmp_path, hosts=("adapter.ns.svc", "127.0.0.1"))
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    cert.verify_directly_issued_by(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert alt_names(cert) == {"adapter.ns.svc", "127.0.0.1"}
