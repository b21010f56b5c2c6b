"""Settings of the transport that cannot work are refused up front, naming the setting."""

from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.signals.transport import FileSecret, HttpOptions, check_url, is_loopback, make_session


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        pytest.param("http://127.0.0.1:9090", False, True, id="http-loopback"),
        pytest.param("http://localhost:9090", False, True, id="http-localhost"),
        pytest.param("http://[::1]:9090", False, True, id="http-ipv6-loopback"),
        pytest.param("https://prometheus.monitoring.svc:9091", False, True, id="https-remote"),
        pytest.param("http://prometheus.monitoring.svc:9090", False, False, id="http-remote-refused"),
        pytest.param("http://10.0.0.7:9090", False, False, id="http-pod-ip-refused"),
        pytest.param("http://prometheus.monitoring.svc:9090", True, True, id="http-remote-allowed"),
        pytest.param("ftp://127.0.0.1", True, False, id="not-http"),
        pytest.param("http://", True, False, id="no-host"),
    ],
)
def test_plain_http_off_loopback_is_refused_unless_allowed(url, allow, ok):
    if ok:
        check_url(url, allow_insecure_http=allow)
        return
    with pytest.raises(ConfigError) as info:
        check_url(url, allow_insecure_http=allow)
    assert info.value.field == "prometheus.url" and "prometheus.url" in str(info.value)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.5", True), ("::1", True), ("LOCALHOST", True),
                                                 ("127.example.com", False), ("0.0.0.0", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def secret(tmp_path: Path, name: str = "secret", text: str = "s3cret\n") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param(lambda p: HttpOptions(ca_file=p / "nope.pem"), "prometheus.ca_file", id="missing-ca"),
        pytest.param(lambda p: HttpOptions(bearer_token_file=p / "nope"), "prometheus.bearer_token_file",
                     id="missing-token"),
        pytest.param(lambda p: HttpOptions(bearer_token_file=secret(p, text="  \n")), "prometheus.bearer_token_file",
                     id="empty-token"),
        pytest.param(lambda p: HttpOptions(cert_file=secret(p, "c.pem")), "prometheus.cert_file", id="cert-no-key"),
        pytest.param(lambda p: HttpOptions(basic_auth_username="u"), "prometheus.basic_auth_username",
                     id="user-no-password"),
        pytest.param(lambda p: HttpOptions(basic_auth_username="u", basic_auth_password_file=secret(p),
                                           bearer_token_file=secret(p, "t")), "prometheus.bearer_token_file",
                     id="two-kinds-of-auth"),
        pytest.param(lambda p: HttpOptions(bearer_token_file=secret(p), headers={"authorization": "x"}),
                     "prometheus.headers", id="authorization-header-and-token"),
    ],
)
def test_transport_settings_that_cannot_work_are_refused_naming_the_setting(tmp_path, options, field):
    with pytest.raises(ConfigError) as info:
        make_session("https://prometheus.example:9091", options(tmp_path))
    assert info.value.field == field and field in str(info.value)


def test_a_secret_file_is_read_again_only_when_it_changes(tmp_path):
    path = secret(tmp_path, text="one")
    token = FileSecret(path, what="bearer_token_file")
    assert [token.value() for _ in range(3)] == ["one"] * 3 and token.reads == 1
    path.write_text("two-rotated")  # another size: a new mtime is not needed to notice
    assert token.value() == "two-rotated" and token.reads == 2


def test_the_source_refuses_plain_http_off_loopback_before_querying_anything():
    from autoscaler.signals.prometheus import PrometheusSignalSource
    from autoscaler.signals.queries import LabelMap

    with pytest.raises(ConfigError, match="allow_insecure_http"):
        PrometheusSignalSource(url="http://prometheus.monitoring.svc:9090", labels=LabelMap())
    allowed = PrometheusSignalSource(url="http://prometheus.monitoring.svc:9090", labels=LabelMap(),
                                     http=HttpOptions(allow_insecure_http=True))
    assert allowed.url == "http://prometheus.monitoring.svc:9090"
