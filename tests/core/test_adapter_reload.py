"""Keeping the adapter's trust current: the authentication config and the serving certificate, swapped whole,
with the last good one kept when a re-read fails."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from autoscaler.adapter.auth import (
    AuthenticationConfig,
    Credentials,
    RequestHeaderConfig,
    TrustedCertAuthenticator,
)
from autoscaler.adapter.reload import AuthenticationReloader, Periodic
from autoscaler.adapter.tls import ServingTLS
from autoscaler.certs import Authority, IssuedCert, self_signed
from autoscaler.errors import ConfigError

OLD_CA, NEW_CA, CLIENT_CA = Authority("front-proxy-ca-1"), Authority("front-proxy-ca-2"), Authority("client-ca")


def proxy_config(ca: Authority, *, allowed: tuple[str, ...] = ("front-proxy-client",)) -> AuthenticationConfig:
    return AuthenticationConfig(client_cas=(CLIENT_CA.cert,),
                                request_header=RequestHeaderConfig(client_cas=(ca.cert,), allowed_names=allowed))


def proxied_by(ca: Authority, *, name: str = "front-proxy-client") -> Credentials:
    from cryptography.hazmat.primitives.serialization import Encoding

    _, cert = ca.mint(common_name=name)
    return Credentials(peer_cert_der=cert.public_bytes(Encoding.DER), headers=(("X-Remote-User", "alice"),))


def user(authenticator: TrustedCertAuthenticator, credentials: Credentials) -> str | None:
    found = authenticator.authenticate(credentials)
    return found.name if found is not None else None


@pytest.fixture
def serving(tmp_path: Path) -> IssuedCert:
    return self_signed(tmp_path / "mounted", hosts=("localhost",))


# -- the authenticator -------------------------------------------------------------------------------------


def test_an_updated_trust_recognises_the_new_ca_and_forgets_the_old():
    authenticator = TrustedCertAuthenticator(proxy_config(OLD_CA))
    assert user(authenticator, proxied_by(OLD_CA)) == "alice"
    assert authenticator.update(proxy_config(NEW_CA)) is True
    assert user(authenticator, proxied_by(NEW_CA)) == "alice"
    assert user(authenticator, proxied_by(OLD_CA)) is None


def test_an_identical_trust_is_not_an_update():
    authenticator = TrustedCertAuthenticator(proxy_config(OLD_CA))
    assert authenticator.update(proxy_config(OLD_CA)) is False


# -- the reloader ------------------------------------------------------------------------------------------


class Loads:
    """A load function answering from a script: configs, or errors to raise."""

    def __init__(self, *answers: AuthenticationConfig | ConfigError) -> None:
        self.answers = list(answers)

    def __call__(self) -> AuthenticationConfig:
        answer = self.answers.pop(0)
        if isinstance(answer, ConfigError):
            raise answer
        return answer


API_DOWN = ConfigError("ConfigMap kube-system/extension-apiserver-authentication: cannot read: HTTP 503",
                       field="authentication")
BAD_PEM = ConfigError("requestheader-client-ca-file: not a PEM certificate bundle", field="authentication")


@pytest.mark.parametrize(
    ("answers", "results", "in_effect", "error"),
    [
        pytest.param([proxy_config(NEW_CA)], [True], NEW_CA, None, id="changed-ca-applied"),
        pytest.param([proxy_config(OLD_CA)], [False], OLD_CA, None, id="unchanged"),
        pytest.param([API_DOWN], [False], OLD_CA, API_DOWN, id="api-down-keeps-last-good"),
        pytest.param([BAD_PEM], [False], OLD_CA, BAD_PEM, id="bad-bundle-keeps-last-good"),
        pytest.param([API_DOWN, proxy_config(NEW_CA)], [False, True], NEW_CA, None, id="recovers-after-failure"),
    ],
)
def test_a_reload_applies_a_changed_config_and_keeps_the_last_good_one_on_failure(answers, results, in_effect,
                                                                                    error, serving):
    authenticator = TrustedCertAuthenticator(proxy_config(OLD_CA))
    tls = ServingTLS(cert=serving.cert, key=serving.key, client_cas_pem=proxy_config(OLD_CA).trusted_cas_pem())
    reloader = AuthenticationReloader(load=Loads(*answers), authenticator=authenticator, tls=tls)
    assert [reloader.reload() for _ in answers] == results
    assert authenticator.config == proxy_config(in_effect)
    assert user(authenticator, proxied_by(in_effect)) == "alice"
    assert reloader.error is error
    trusted = {c["subject"][0][0][1] for c in tls.current().get_ca_certs()}
    assert trusted == {"client-ca", in_effect.cert.subject.rfc4514_string().removeprefix("CN=")}


def test_when_the_tls_side_cannot_load_neither_side_changes(serving):
    authenticator = TrustedCertAuthenticator(proxy_config(OLD_CA))
    tls = ServingTLS(cert=serving.cert, key=serving.key, client_cas_pem=proxy_config(OLD_CA).trusted_cas_pem())
    before = tls.current()
    serving.key.unlink()  # half-way through a rotation: the key is not there
    reloader = AuthenticationReloader(load=Loads(proxy_config(NEW_CA)), authenticator=authenticator, tls=tls)
    assert reloader.reload() is False
    assert "cannot read" in str(reloader.error)
    assert (authenticator.config, tls.current()) == (proxy_config(OLD_CA), before)


# -- the serving certificate -------------------------------------------------------------------------------


def test_an_unchanged_certificate_is_not_reloaded(serving):
    tls = ServingTLS(cert=serving.cert, key=serving.key)
    before = tls.current()
    assert tls.reload() is False
    assert tls.current() is before


def test_a_rotated_certificate_gives_new_connections_a_new_context(serving, tmp_path):
    tls = ServingTLS(cert=serving.cert, key=serving.key)
    before, old_expiry = tls.current(), tls.not_after
    rotated = self_signed(tmp_path / "next", hosts=("localhost",))
    shutil.copy(rotated.cert, serving.cert)
    shutil.copy(rotated.key, serving.key)
    assert tls.reload() is True
    assert tls.current() is not before
    assert tls.not_after and tls.not_after >= old_expiry


@pytest.mark.parametrize(
    "break_files",
    [
        pytest.param(lambda s, other: shutil.copy(other.cert, s.cert), id="new-cert-old-key"),
        pytest.param(lambda s, other: s.key.write_text("not a key"), id="garbage-key"),
        pytest.param(lambda s, other: s.cert.unlink(), id="cert-missing"),
    ],
)
def test_an_invalid_new_pair_keeps_the_old_context(serving, tmp_path, break_files):
    tls = ServingTLS(cert=serving.cert, key=serving.key)
    before = tls.current()
    break_files(serving, self_signed(tmp_path / "other", hosts=("localhost",)))
    assert tls.reload() is False
    assert tls.current() is before


def test_a_pair_that_cannot_load_at_start_is_a_config_error_naming_the_files(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    key.write_text("nope")
    with pytest.raises(ConfigError, match=r"TLS certificate .*tls\.crt / key .*tls\.key: cannot load"):
        ServingTLS(cert=cert, key=key)


def test_a_client_ca_bundle_that_does_not_load_keeps_the_old_context(serving):
    tls = ServingTLS(cert=serving.cert, key=serving.key, client_cas_pem=OLD_CA.pem.decode())
    before = tls.current()
    with pytest.raises(ConfigError, match="client CA bundle: cannot load"):
        tls.set_client_cas("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    assert tls.current() is before


# -- the periodic runner -----------------------------------------------------------------------------------


def test_a_failing_task_keeps_being_called():
    calls = []
    third = threading.Event()

    def task() -> None:
        calls.append(len(calls))
        if len(calls) >= 3:
            third.set()
        raise RuntimeError("reload blew up")

    with Periodic(name="test", interval_s=0.01, task=task):
        assert third.wait(timeout=5), calls
    assert len(calls) >= 3


@pytest.mark.parametrize("interval_s", [0.0, -1.0, float("nan")])
def test_a_periodic_task_needs_a_positive_interval(interval_s):
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        Periodic(name="auth-reload", interval_s=interval_s, task=lambda: None)
