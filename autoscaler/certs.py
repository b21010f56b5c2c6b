"""Throwaway certificate authorities and certificates, for local runs and tests (never for production trust).

One helper for every place that mints certificates: the local control plane (``autoscaler.localstack.kube``:
cluster CA, apiserver serving, admin and front-proxy client certificates) and the HPA adapter
(``autoscaler.adapter.tls``: ``--self-signed`` serving certificates, test CAs).

    ca = Authority("front-proxy-ca")
    client = ca.issue(directory, "proxy", common_name="front-proxy-client")        # files, client auth
    serving = ca.issue(directory, "serving", common_name="adapter", hosts=("localhost", "127.0.0.1"))
    key, cert = ca.mint(common_name="admin", organizations=("system:masters",))   # in memory

Keys are ECDSA P-256: quick to generate and accepted by Go's TLS stack (kube-apiserver, etcd, the aggregator).
Certificates are back-dated an hour, so that a little clock skew between processes cannot make one "not yet
valid". Key files are created with mode 0600 before any key byte is written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_VALIDITY", "Authority", "IssuedCert", "self_signed", "write_cert", "write_key"]

DEFAULT_VALIDITY = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """Where a certificate and its key were written (PEM)."""

    cert: Path
    key: Path


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch keeps the mode of a file that already existed
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _write_pair(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> IssuedCert:
    return IssuedCert(cert=write_cert(directory / f"{stem}.crt", cert), key=write_key(directory / f"{stem}.key", key))


def _builder(*, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             validity: dt.timedelta) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - _BACKDATE)
            .not_valid_after(now + validity))


def _alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                     + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations])


_CA_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)


class Authority:
    """A certificate authority held in memory; ``validity`` applies to the CA and everything it issues."""

    def __init__(self, common_name: str, *, validity: dt.timedelta = DEFAULT_VALIDITY) -> None:
        self.validity = validity
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        self.cert = (_builder(subject=name, issuer=name, public_key=self.key.public_key(), validity=validity)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(_CA_USAGE, critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        """Write the CA certificate (not its key) as PEM."""
        return write_cert(path, self.cert)

    def mint(self, *, common_name: str, organizations: Sequence[str] = (), hosts: Sequence[str] = (),
             server: bool | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and a leaf certificate for it: for TLS serving when ``server`` (default: when ``hosts``
        are given), else for client authentication. ``hosts`` (DNS names or IP addresses) become SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        serving = bool(hosts) if server is None else server
        usage = ExtendedKeyUsageOID.SERVER_AUTH if serving else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (_builder(subject=_name(common_name, organizations), issuer=self.cert.subject,
                            public_key=key.public_key(), validity=self.validity)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(_alt_names(hosts), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def issue(self, directory: Path, stem: str, *, common_name: str, organizations: Sequence[str] = (),
              hosts: Sequence[str] = (), server: bool | None = None) -> IssuedCert:
        """:meth:`mint`, written to ``directory/stem.crt`` and ``directory/stem.key``."""
        key, cert = self.mint(common_name=common_name, organizations=organizations, hosts=hosts, server=server)
        return _write_pair(directory, stem, key, cert)


def self_signed(directory: Path, *, hosts: Sequence[str] = ("localhost", "127.0.0.1"), stem: str = "serving",
                validity: dt.timedelta = DEFAULT_VALIDITY) -> IssuedCert:
    """A self-signed serving certificate for ``hosts``; it is its own CA (path length 0), so it can be a
    client's trust root or an APIService ``caBundle`` as it is."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(hosts[0] if hosts else "variant-autoscaler")
    cert = (_builder(subject=name, issuer=name, public_key=key.public_key(), validity=validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_alt_names(hosts), critical=False)
            .sign(key, hashes.SHA256()))
    return _write_pair(directory, stem, key, cert)
