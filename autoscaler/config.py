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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
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


class LabelSettings(_Section):
    """Which Prometheus label carries each identity. llm-d, KServe and plain deployments label differently."""

    namespace: str = "namespace"
    model: str = "model_name"
    role: str = "role"
    accelerator: str = "accelerator"
    pod: str = "pod"


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAS_", env_nested_delimiter="__", extra="forbid", frozen=True)

    prometheus: PrometheusSettings = PrometheusSettings()
    labels: LabelSettings = LabelSettings()
    kube: KubeSettings = KubeSettings()
    controller: ControllerSettings = ControllerSettings()
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
