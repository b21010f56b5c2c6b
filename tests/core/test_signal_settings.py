"""The signal settings load from YAML and refuse bad values naming the field."""

from pathlib import Path

import pytest

from autoscaler.config import load_settings
from autoscaler.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_transport_and_collection_settings_load_from_yaml(tmp_path):
    cfg = write(tmp_path, """
prometheus:
  url: https://thanos-query.monitoring.svc:9091
  metric_names: legacy
  latency_quantiles: [0.9, 0.95]
  bearer_token_file: /var/run/secrets/tokens/prometheus
  headers: {X-Scope-OrgID: team-a}
  warmup_s: 300
labels:
  pod: kubernetes_pod_name
""")
    settings = load_settings(cfg)
    prom = settings.prometheus
    assert (prom.metric_names, prom.latency_quantiles, prom.headers) == ("legacy", (0.9, 0.95),
                                                                         {"X-Scope-OrgID": "team-a"})
    assert prom.bearer_token_file == Path("/var/run/secrets/tokens/prometheus") and prom.warmup_s == 300
    assert (settings.labels.pod, settings.labels.instance, settings.labels.engine) == (
        "kubernetes_pod_name", "instance", "engine")


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        pytest.param("prometheus:\n  metric_names: v2\n", "prometheus.metric_names", id="unknown-naming"),
        pytest.param("prometheus:\n  latency_quantiles: [0.9, 1.5]\n", "prometheus.latency_quantiles",
                     id="quantile-above-one"),
        pytest.param("prometheus:\n  latency_quantiles: []\n", "prometheus.latency_quantiles", id="no-quantiles"),
        pytest.param("prometheus:\n  max_parallel_queries: 0\n", "prometheus.max_parallel_queries", id="no-workers"),
        pytest.param("prometheus:\n  retries: -1\n", "prometheus.retries", id="negative-retries"),
        pytest.param("prometheus:\n  headers: [a, b]\n", "prometheus.headers", id="headers-not-a-map"),
        pytest.param("prometheus:\n  collect_budget_s: 0\n", "prometheus.collect_budget_s", id="no-budget"),
    ],
)
def test_bad_signal_settings_name_the_field(tmp_path, yaml_text, field):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml_text))
    assert info.value.field == field and field in str(info.value)
