"""The settings file's ``runtime:`` section: file < VAS_RUNTIME_* (or VAS_RUNTIME__*) < flags, validated by field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import load_settings
from autoscaler.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_vas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("VAS_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


FILE = """\
runtime:
  lease_name: from-file
  lease_namespace: file-ns
  lease_duration_s: 30
  renew_deadline_s: 20
  retry_period_s: 4
  health_port: 18081
  shard_namespaces: [team-a, team-b]
"""


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        pytest.param({}, {}, {"lease_name": "from-file", "lease_namespace": "file-ns", "lease_duration_s": 30.0,
                              "health_port": 18081, "shard_namespaces": ("team-a", "team-b")}, id="file-alone"),
        pytest.param({"VAS_RUNTIME_LEASE_NAME": "from-env", "VAS_RUNTIME_SHARD_NAMESPACES": "team-c, team-d"}, {},
                     {"lease_name": "from-env", "lease_namespace": "file-ns",
                      "shard_namespaces": ("team-c", "team-d")}, id="env-over-file"),
        pytest.param({"VAS_RUNTIME__LEASE_NAME": "nested-env"}, {}, {"lease_name": "nested-env"},
                     id="nested-env-spelling"),
        pytest.param({"vas_runtime_health_port": "9999"}, {}, {"health_port": 9999}, id="env-any-case"),
        pytest.param({"VAS_RUNTIME_LEASE_NAME": "from-env"}, {"lease_name": "from-flag", "health_port": 0},
                     {"lease_name": "from-flag", "health_port": 0}, id="flags-over-env"),
    ],
)
def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                          flags: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runtime = load_settings(write(tmp_path, FILE), {"runtime": flags} if flags else None).runtime
    assert {key: getattr(runtime, key) for key in expected} == expected


def test_defaults_without_a_file_are_client_go_timings() -> None:
    runtime = load_settings().runtime
    assert (runtime.leader_elect, runtime.lease_duration_s, runtime.renew_deadline_s, runtime.retry_period_s,
            runtime.watch) == (True, 15.0, 10.0, 2.0, True)


@pytest.mark.parametrize(
    ("section", "field", "complaint"),
    [
        pytest.param("lease_duration_s: 10\n  renew_deadline_s: 10", "runtime.renew_deadline_s",
                     "must be below lease_duration_s", id="renew-not-below-lease"),
        pytest.param("renew_deadline_s: 3\n  retry_period_s: 3", "runtime.retry_period_s", "1.2 x retry_period_s",
                     id="retry-too-slow-to-renew"),
        pytest.param("health_port: 70000", "runtime.health_port", "less than or equal to 65535", id="port-range"),
        pytest.param("lease_duration_s: -1", "runtime.lease_duration_s", "greater than 0", id="negative-duration"),
        pytest.param("lease_nmae: x", "runtime.lease_nmae", "Extra inputs", id="misspelt-field"),
        pytest.param("watch_timeout_s: 1", "runtime.watch_timeout_s", "greater than or equal to 10",
                     id="watch-too-short"),
    ],
)
def test_invalid_runtime_value_names_the_field_and_file(tmp_path: Path, section: str, field: str,
                                                        complaint: str) -> None:
    path = write(tmp_path, f"runtime:\n  {section}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == field
    assert f"{path}: {field}: " in str(info.value) and complaint in str(info.value)


def test_an_invalid_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAS_RUNTIME_RETRY_PERIOD_S", "soon")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "runtime.retry_period_s" and "valid number" in str(info.value)


def test_timings_are_not_checked_without_leader_election(tmp_path: Path) -> None:
    path = write(tmp_path, "runtime:\n  leader_elect: false\n  lease_duration_s: 1\n  renew_deadline_s: 5\n")
    assert load_settings(path).runtime.leader_elect is False


def test_environment_can_break_a_timing_the_file_made_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAS_RUNTIME_RENEW_DEADLINE_S", "40")  # beyond the file's lease of 30 s
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, FILE))
    assert info.value.field == "runtime.renew_deadline_s"


def _shipped_configs() -> list[Any]:
    import yaml

    manifests = Path(__file__).resolve().parents[2] / "manifests"
    base = yaml.safe_load((manifests / "base" / "config.yaml").read_text())["data"]["config.yaml"]
    overlay = yaml.safe_load((manifests / "overlays" / "openshift" / "kustomization.yaml").read_text())
    [patch] = [p for p in overlay["patches"] if p["target"]["name"] == "variant-autoscaler-config"]
    [replaced] = [op["value"] for op in yaml.safe_load(patch["patch"]) if op["path"] == "/data/config.yaml"]
    return [pytest.param(base, id="base"), pytest.param(replaced, id="openshift")]


@pytest.mark.parametrize("text", _shipped_configs())
def test_the_shipped_config_maps_are_valid_settings_files(tmp_path: Path, text: str) -> None:
    runtime = load_settings(write(tmp_path, text)).runtime
    assert (runtime.lease_duration_s, runtime.renew_deadline_s, runtime.retry_period_s) == (15.0, 10.0, 2.0)
