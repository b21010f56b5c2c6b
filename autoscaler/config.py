"""Settings: YAML file < environment (``VAS_`` prefix, ``__`` between levels) < CLI flags.

Every field says its unit and why its default is what it is. An invalid value raises
:class:`autoscaler.errors.ConfigError` whose message names the field, e.g.
``prometheus.timeout_s: Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from autoscaler.core.behavior import Behavior
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.saturation import SaturationThresholds
from autoscaler.errors import ConfigError

__all__ = ["Settings", "load_settings", "format_validation_error"]

# The YAML file of the load in progress (pydantic-settings builds sources per class, not per call).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("_CONFIG_FILE", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusSettings(_Section):
    url: str = Field("http://127.0.0.1:9090", pattern=r"^https?://", description="Base URL of the Prometheus API.")
    timeout_s: float = Field(5.0, gt=0, description="Per-query timeout; a cycle makes one query per signal.")
    rate_window: str = Field(
        "1m", pattern=r"^[0-9]+(ms|s|m|h)$",
        description="Window of rate()/histogram_quantile(); >= 4 scrape intervals so rate() has samples.",
    )
    staleness_s: float = Field(
        60.0, gt=0, description="A variant whose newest sample is older than this is stale and is held."
    )
    metric_names: Literal["v1", "legacy", "auto"] = Field(
        "auto",
        description="vLLM metric names to read: v1 (kv_cache_usage_perc, inter_token_latency_seconds, ...), "
                    "legacy (gpu_cache_usage_perc, time_per_output_token_seconds, gpu_prefix_cache_*), or "
                    "auto: both joined with PromQL `or`, which also reads a fleet mixing vLLM versions.",
    )
    latency_quantiles: tuple[float, ...] = Field(
        (0.5, 0.9, 0.99), min_length=1, max_length=6,
        description="TTFT and ITL quantiles read every cycle (each costs two queries); include your SLO's.",
    )
    warmup_s: float = Field(
        120.0, ge=0,
        description="Pods younger than this (process start, else first seen) are 'warming' and kept out of "
                    "calibration: their first requests hit cold caches and their rate windows straddle the start.",
    )
    max_parallel_queries: int = Field(
        2, ge=1, le=32,
        description="Queries in flight at once. 2: on a small Prometheus more heavy histogram queries at once "
                    "slow each other down (measured by benchmarks/bench_collection.py); raise it on a large one.",
    )
    collect_budget_s: float = Field(
        10.0, gt=0,
        description="Seconds after which a collection starts no more queries (their signals are unknown); "
                    "keep it below controller.interval_s.",
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a query on connection errors and 429/502/503/504.")
    retry_backoff_s: float = Field(0.25, ge=0, le=10, description="First retry delay; doubles each retry.")
    ca_file: Path | None = Field(None, description="PEM CA bundle to verify Prometheus's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mTLS; needs key_file.")
    key_file: Path | None = Field(None, description="Client key (PEM) for mTLS; needs cert_file.")
    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate (testing only).")
    bearer_token_file: Path | None = Field(
        None, description="File holding a bearer token, re-read when it changes (projected tokens rotate)."
    )
    basic_auth_username: str | None = Field(None, description="Basic-auth user; needs basic_auth_password_file.")
    basic_auth_password_file: Path | None = Field(None, description="File holding the basic-auth password.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers on every query, e.g. X-Scope-OrgID for Mimir/Cortex."
    )
    allow_insecure_http: bool = Field(
        False, description="Allow plain http:// to a non-loopback host (credentials and data travel in clear)."
    )

    @field_validator("latency_quantiles")
    @classmethod
    def _quantiles_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [q for q in value if not 0 < q < 1]
        if bad:
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {bad}")
        return value


class LabelSettings(_Section):
    """Which Prometheus label carries each identity. llm-d, KServe and plain deployments label differently."""

    namespace: str = "namespace"
    model: str = "model_name"
    role: str = "role"
    accelerator: str = "accelerator"
    pod: str = "pod"
    instance: str = Field("instance", description="Tells pods apart where no pod label exists (plain hosts).")
    engine: str = Field("engine", description="vLLM's data-parallel engine index; series of one pod per engine.")


class KubeSettings(_Section):
    kubeconfig: Path | None = Field(None, description="Path to a kubeconfig; unset = in-cluster, then ~/.kube/config.")
    context: str | None = None
    namespace: str | None = Field(None, description="Only manage VariantAutoscalings here; unset = all namespaces.")


class SaturationSettings(_Section):
    queue_per_replica_high: float = Field(2.0, ge=0)
    queue_per_replica_low: float = Field(0.25, ge=0)
    kv_high: float = Field(0.80, gt=0, le=1)
    kv_low: float = Field(0.40, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SaturationSettings":
        if self.kv_low >= self.kv_high:
            raise ValueError(f"kv_low ({self.kv_low}) must be below kv_high ({self.kv_high})")
        if self.queue_per_replica_low >= self.queue_per_replica_high:
            raise ValueError("queue_per_replica_low must be below queue_per_replica_high")
        return self


class BehaviorSettings(_Section):
    scale_up_window_s: float = Field(0.0, ge=0, description="HPA default 0: react to bursts at once.")
    scale_down_window_s: float = Field(300.0, ge=0, description="HPA default 300 s: one quiet sample never drops capacity.")
    max_step_up: int = Field(1, ge=0, description="Replicas added per cycle (0 = unbounded).")
    max_step_down: int = Field(1, ge=0, description="Replicas removed per cycle (0 = unbounded).")


class ControllerSettings(_Section):
    interval_s: float = Field(15.0, gt=0, description="Seconds between cycles; vLLM metrics move on this scale.")
    dry_run: bool = Field(False, description="Decide and log, change nothing.")


class PlannerSettings(_Section):
    """Predictive sizing: forecast demand at the provisioning horizon, capacity from performance profiles."""

    predictive: bool = Field(True, description="False: reactive saturation scaling only (no forecast, no capacity).")
    policy_file: Path | None = Field(
        None, description="Policy YAML file or directory (policies/); re-read when it changes, a bad edit keeps "
                          "the last good policy. Unset: thresholds and behaviour from this config.",
    )
    models_dir: Path | None = Field(None, description="Directory holding profiles/ (default: the repo's models/).")
    forecast_lead_time_s: float = Field(
        600.0, gt=0, description="Furthest forecast horizon; covers a pod start with weights to load.",
    )
    backlog_drain_s: float = Field(60.0, gt=0, description="Waiting requests are sized to clear within this.")
    slo_ttft_s: float = Field(1.0, gt=0, description="TTFT target for models the policy does not name.")
    slo_itl_s: float = Field(0.05, gt=0, description="ITL target for models the policy does not name.")
    slo_percentile: float = Field(0.9, gt=0.5, lt=1.0, description="Percentile both targets apply at.")


class NodeSettings(_Section):
    """GPU nodes planned with the pods: OpenShift MachineSets scaled up before the pods that need them and
    down, idle machines named, after the pods leave (autoscaler.kube.nodepool says which MachineSets)."""

    enabled: bool = Field(False, description="Off: MachineSets are left to whatever manages them (a variant's "
                                             "machineSetRef is still sized per variant by the scaler).")
    accelerator_label: str = Field(
        "variant-autoscaler.io/accelerator", min_length=1,
        description="MachineSets with this label are managed; its value is the accelerator as "
                    "VariantAutoscalings spell spec.accelerator.",
    )
    machine_namespace: str = Field("openshift-machine-api", min_length=1,
                                   description="Where labelled MachineSets are looked for.")
    node_selector: str | None = Field(
        None, description="Label selector of the Nodes read for readiness and GPUs; unset: the accelerator label."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAS_", env_nested_delimiter="__", extra="forbid", frozen=True)

    prometheus: PrometheusSettings = PrometheusSettings()
    labels: LabelSettings = LabelSettings()
    kube: KubeSettings = KubeSettings()
    controller: ControllerSettings = ControllerSettings()
    planner: PlannerSettings = PlannerSettings()
    nodes: NodeSettings = NodeSettings()
    saturation: SaturationSettings = SaturationSettings()
    behavior: BehaviorSettings = BehaviorSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON lines otherwise (in-cluster)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier wins; pydantic-settings deep-merges nested sections across sources.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def scaling_policy(self) -> ScalingPolicy:
        s, b = self.saturation, self.behavior
        return ScalingPolicy(
            saturation=SaturationThresholds(
                queue_per_replica_high=s.queue_per_replica_high, kv_high=s.kv_high,
                queue_per_replica_low=s.queue_per_replica_low, kv_low=s.kv_low,
            ),
            behavior=Behavior(
                scale_up_window_s=b.scale_up_window_s, scale_down_window_s=b.scale_down_window_s,
                max_step_up=b.max_step_up, max_step_down=b.max_step_down,
            ),
        )


def format_validation_error(exc: ValidationError, *, source: str = "config") -> str:
    """One line per problem: ``source: a.b.c: message (got X)``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"{source}: {where}: {err['msg']}{got}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from a YAML file, the environment and explicit overrides (highest first: overrides)."""
    source = "config"
    token = _CONFIG_FILE.set(None)
    try:
        if config_file is not None:
            source = str(config_file)
            try:
                loaded = yaml.safe_load(Path(config_file).read_text())
            except FileNotFoundError as exc:
                raise ConfigError(f"{config_file}: no such file", field="config") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"{config_file}: not valid YAML: {exc}", field="config") from exc
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{config_file}: expected a mapping at the top level", field="config")
            _CONFIG_FILE.set(Path(config_file))
        try:
            return Settings(**(overrides or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(format_validation_error(exc, source=source),
                              field=".".join(str(p) for p in first["loc"])) from exc
    finally:
        _CONFIG_FILE.reset(token)
