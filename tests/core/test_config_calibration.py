"""Settings: the calibration section, and the plain-HTTP guard found at load time (config-error exit 2)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from autoscaler.cli import app
from autoscaler.config import load_settings
from autoscaler.errors import ConfigError


def test_calibration_section_becomes_the_online_settings():
    settings = load_settings(None, {"calibration": {"window_samples": 60, "min_samples": 12, "prior_samples": 5,
                                                    "bound": 2, "aggregated": True}})
    online = settings.calibration.online()
    assert (online.window_samples, online.fit.min_samples, online.fit.prior_samples, online.fit.bound,
            online.aggregated) == (60, 12, 5.0, 2.0, True)


@pytest.mark.parametrize(("section", "field"), [
    pytest.param({"min_samples": 50, "window_samples": 20}, "calibration", id="window-smaller-than-a-fit"),
    pytest.param({"window_samples": 2}, "calibration.window_samples", id="window-too-small"),
    pytest.param({"bound": 1.0}, "calibration.bound", id="bound-not-above-one"),
    pytest.param({"prior_samples": -1}, "calibration.prior_samples", id="negative-prior-weight"),
    pytest.param({"max_prefill_utilisation": 1.5}, "calibration.max_prefill_utilisation", id="utilisation-over-1"),
    pytest.param({"enabled": "sometimes"}, "calibration.enabled", id="not-a-bool"),
    pytest.param({"window": 10}, "calibration.window", id="unknown-key"),
])
def test_bad_calibration_value_names_the_field(tmp_path, section, field):
    path = tmp_path / "config.yaml"
    path.write_text("calibration:\n" + "".join(f"  {k}: {v}\n" for k, v in section.items()))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == field and field in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(("url", "allowed", "refused"), [
    pytest.param("http://10.0.0.7:9090", False, True, id="pod-ip"),
    pytest.param("http://prometheus.monitoring.svc:9090", False, True, id="service-name"),
    pytest.param("http://prometheus.monitoring.svc:9090", True, False, id="explicitly-allowed"),
    pytest.param("https://prometheus.monitoring.svc:9090", False, False, id="tls"),
    pytest.param("http://127.0.0.1:9090", False, False, id="loopback"),
])
def test_plain_http_off_loopback_is_a_configuration_error_at_load(url, allowed, refused):
    overrides = {"prometheus": {"url": url, "allow_insecure_http": allowed}}
    if refused:
        with pytest.raises(ConfigError, match=r"prometheus\.url: plain HTTP") as info:
            load_settings(None, overrides)
        assert info.value.field == "prometheus"
    else:
        assert load_settings(None, overrides).prometheus.url == url


@pytest.mark.parametrize("command", ["run", "recommend"])
def test_cli_exits_with_the_config_error_code_for_plain_http_off_loopback(command):
    result = CliRunner().invoke(app, [command, "--prometheus-url", "http://10.0.0.7:9090"])
    assert result.exit_code == 2, result.output
    assert "plain HTTP" in result.output and "allow_insecure_http" in result.output
