import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.config import load_settings
from autoscaler.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_vas_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("VAS_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags_take_precedence(tmp_path, monkeypatch):
    cfg = write(tmp_path, "prometheus:\n  url: https://file:9090\n  timeout_s: 3\ncontroller:\n  interval_s: 7\n")
    monkeypatch.setenv("VAS_PROMETHEUS__TIMEOUT_S", "4")
    settings = load_settings(cfg, {"controller": {"interval_s": 2}})
    assert settings.prometheus.url == "https://file:9090"  # only in the file
    assert settings.prometheus.timeout_s == 4  # env beats file
    assert settings.controller.interval_s == 2  # flag beats file


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("prometheus:\n  timeout_s: -1\n", "prometheus.timeout_s", id="negative-timeout"),
        pytest.param("controller:\n  interval_s: soon\n", "controller.interval_s", id="not-a-number"),
        pytest.param("saturation:\n  kv_low: 0.9\n  kv_high: 0.8\n", "saturation", id="inverted-thresholds"),
        pytest.param("prometheus:\n  url: ftp://x\n", "prometheus.url", id="bad-scheme"),
        pytest.param("promethus:\n  url: http://x\n", "promethus", id="misspelt-section"),
        pytest.param("log_format: fancy\n", "log_format", id="unknown-enum"),
    ],
)
def test_invalid_file_value_names_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.field.startswith(field)
    assert field in str(info.value)
    assert str(tmp_path / "config.yaml") in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [", "not valid YAML", id="broken-yaml"),
        pytest.param("- 1\n- 2\n", "mapping", id="list-at-top"),
    ],
)
def test_unreadable_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.yaml")


def test_environment_value_is_validated(monkeypatch):
    monkeypatch.setenv("VAS_BEHAVIOR__SCALE_DOWN__MAX_STEP", "-2")
    with pytest.raises(ConfigError, match="behavior.scale_down.max_step"):
        load_settings()


def test_cli_exits_2_with_one_line_naming_the_field(tmp_path):
    cfg = write(tmp_path, "controller:\n  interval_s: 0\n")
    proc = subprocess.run([sys.executable, "-m", "autoscaler.cli", "recommend", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "controller.interval_s" in lines[0] and "greater than 0" in lines[0]


@pytest.mark.parametrize(
    ("overrides", "window"),
    [
        pytest.param({}, 0.0, id="free-gpus-react-at-once"),
        pytest.param({"planner": {"nodes_on_demand": True}}, 120.0, id="nodes-on-demand-hold-a-rise-two-minutes"),
        pytest.param({"nodes": {"enabled": True}}, 120.0, id="managed-machinesets-imply-nodes-on-demand"),
        pytest.param({"planner": {"nodes_on_demand": True}, "behavior": {"scale_up": {"stabilization_window_s": 0}}},
                     0.0,
                     id="an-explicit-window-wins"),
        pytest.param({"behavior": {"scale_up": {"stabilization_window_s": 45}}}, 45.0, id="explicit-without-nodes"),
    ],
)
def test_the_scale_up_window_defaults_by_how_capacity_arrives(overrides, window):
    settings = load_settings(None, overrides)
    assert settings.scaling_policy().behavior.scale_up_window_s == window


def test_a_negative_scale_up_window_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="behavior.scale_up.stabilization_window_s"):
        load_settings(None, {"behavior": {"scale_up": {"stabilization_window_s": -1}}})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("controller:\n  interval_s: .inf\n", "controller.interval_s", id="interval-inf"),
        pytest.param("prometheus:\n  timeout_s: .inf\n", "prometheus.timeout_s", id="timeout-inf"),
        pytest.param("prometheus:\n  timeout_s: 1e309\n", "prometheus.timeout_s", id="timeout-overflows-to-inf"),
        pytest.param("behavior:\n  scale_down:\n    stabilization_window_s: .nan\n",
                     "behavior.scale_down.stabilization_window_s", id="window-nan"),
        pytest.param("runtime:\n  lease_duration_s: .inf\n", "runtime.lease_duration_s", id="lease-inf"),
        pytest.param("planner:\n  backlog_drain_s: .inf\n", "planner.backlog_drain_s", id="planner-inf"),
    ],
)
def test_non_finite_settings_are_refused_at_load_naming_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.field.startswith(field)
    assert field in str(info.value)


def test_a_bad_policy_file_exits_2_with_one_line_naming_the_file(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("behavior:\n  max_step_down: -1\n")
    cfg = write(tmp_path, f"planner:\n  policy_file: {policy}\n")
    proc = subprocess.run([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(cfg), "--dry-run",
                           "--no-leader-elect", "--duration", "1", "--health-port", "0", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(policy) in proc.stderr and "Traceback" not in proc.stderr
