"""TLS for the adapter: the server's SSL context, and throwaway certificates for local runs and tests.

In a cluster the serving certificate comes from a mounted Secret (cert-manager, or the service CA of
OpenShift); :func:`self_signed` is only for local runs (``--self-signed``) and tests. Keys are ECDSA P-256:
quick to generate and accepted by Go's TLS stack, which is what dials us (the aggregator).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from autoscaler.errors import ConfigError

__all__ = ["Authority", "IssuedCert", "self_signed", "server_context"]

_VALIDITY = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(hours=1)  # a little clock skew between processes must not make it "not yet valid"


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert: Path
    key: Path


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> IssuedCert:
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return IssuedCert(cert=cert_path, key=key_path)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY))


def _alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class Authority:
    """A certificate authority in memory, for local runs and tests (front-proxy CA, client CA)."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (_builder(name, name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.pem)
        return path

    def issue(self, directory: Path, stem: str, *, common_name: str, organizations: Sequence[str] = (),
              hosts: Sequence[str] = ()) -> IssuedCert:
        """A serving certificate when ``hosts`` are given, else a client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                            + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (_builder(subject, self.cert.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(_alt_names(hosts), critical=False)
        return _write(directory, stem, key, builder.sign(self.key, hashes.SHA256()))


def self_signed(directory: Path, *, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> IssuedCert:
    """A self-signed serving certificate for ``hosts`` (it is its own CA: usable as an APIService caBundle).

    For an APIService with a caBundle the aggregator checks the name ``<service>.<namespace>.svc``, so
    include that in ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "variant-autoscaler")])
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_alt_names(hosts), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(directory, "serving", key, cert)


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
        context.load_verify_locations(cadata=client_cas_pem)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context
