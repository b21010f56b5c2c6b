"""Bad adapter configuration gets one clear error naming where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.adapter.auth import authentication_config_from_configmap, authentication_config_from_files
from autoscaler.adapter.run import AdapterOptions, _tls_files
from autoscaler.adapter.tls import Authority, server_context
from autoscaler.errors import ConfigError

CA = Authority("requestheader-ca").pem.decode()


def configmap(**overrides: str) -> dict[str, str]:
    data = {"requestheader-client-ca-file": CA, "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]'}
    data.update(overrides)
    return data


def test_parses_the_configmap_the_apiserver_writes():
    config = authentication_config_from_configmap(configmap(**{"client-ca-file": CA}))
    assert config.request_header is not None
    assert config.request_header.allowed_names == ("front-proxy-client",)
    assert len(config.request_header.client_cas) == 1 and len(config.client_cas) == 1
    assert config.trusted_cas_pem().count("BEGIN CERTIFICATE") == 2


def test_without_request_header_settings_there_is_no_request_header_authentication():
    assert authentication_config_from_configmap({"client-ca-file": CA}).request_header is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"requestheader-allowed-names": "front-proxy-client"},
                     "requestheader-allowed-names: expected a JSON list of strings", id="names-not-json"),
        pytest.param({"requestheader-group-headers": '{"a": 1}'},
                     "requestheader-group-headers: expected a JSON list of strings", id="headers-not-a-list"),
        pytest.param({"requestheader-client-ca-file": "not a certificate"},
                     "requestheader-client-ca-file: not a PEM certificate bundle", id="ca-not-pem"),
        pytest.param({"client-ca-file": "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n"},
                     "client-ca-file: not a PEM certificate bundle", id="client-ca-corrupt"),
    ],
)
def test_a_bad_configmap_value_names_the_configmap_and_key(overrides, message):
    with pytest.raises(ConfigError, match=f"ConfigMap kube-system/extension-apiserver-authentication: {message}"):
        authentication_config_from_configmap(configmap(**overrides))


def test_a_missing_requestheader_ca_file_is_named(tmp_path):
    missing = tmp_path / "front-proxy-ca.crt"
    with pytest.raises(ConfigError, match=f"requestheader-client-ca-file {missing}: cannot read"):
        authentication_config_from_files(requestheader_ca=missing)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(AdapterOptions(), "no serving certificate: give --tls-cert and --tls-key, or --self-signed",
                     id="nothing"),
        pytest.param(AdapterOptions(cert=Path("/x.crt")), "--tls-cert and --tls-key go together",
                     id="cert-without-key"),
    ],
)
def test_serving_certificate_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        _tls_files(options)


def test_self_signed_generates_a_loadable_certificate(tmp_path):
    cert, key = _tls_files(AdapterOptions(self_signed=True), tmp_path)
    assert server_context(cert=cert, key=key) is not None
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_an_unloadable_certificate_names_the_files(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("garbage")
    key.write_text("garbage")
    with pytest.raises(ConfigError, match=f"TLS certificate {cert} / key {key}: cannot load"):
        server_context(cert=cert, key=key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("auth_reload_s", 0.0, id="auth-zero"),
        pytest.param("cert_reload_s", -5.0, id="cert-negative"),
        pytest.param("cert_reload_s", float("nan"), id="cert-nan"),
    ],
)
def test_a_reload_interval_must_be_positive(field, value):
    with pytest.raises(ConfigError, match=rf"adapter option {field} must be > 0 seconds"):
        AdapterOptions(**{field: value})


@pytest.mark.parametrize("flag", [
    pytest.param("--cert-reload", id="cert-reload"),
    pytest.param("--auth-reload", id="auth-reload"),
])
def test_the_adapter_command_refuses_a_reload_interval_that_is_not_positive(flag):
    from typer.testing import CliRunner

    from autoscaler.cli import app
    result = CliRunner().invoke(app, ["adapter", "--self-signed", flag, "0", "--duration", "1"])
    assert result.exit_code == 2, result.output
    assert "reload_s must be > 0" in result.output
