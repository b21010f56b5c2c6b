"""Settings: YAML file < environment (``VAS_`` prefix, ``__`` between levels) < CLI flags.

The ``behavior``, ``saturation`` and ``slo`` sections are the models of :mod:`autoscaler.scaling_settings`,
which the policy file shares; that module gives the order in which the policy file and the VariantAutoscaling
override these settings, field by field.

Every field says its unit and why its default is what it is. An invalid value raises
:class:`autoscaler.errors.ConfigError` whose message names the field, e.g.
``prometheus.timeout_s: Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from autoscaler.core.decide import ScalingPolicy
from autoscaler.errors import ConfigError
from autoscaler.scaling_settings import BehaviorModel, Layers, SaturationModel, SloModel, fields_set

if TYPE_CHECKING:
    from autoscaler.perf.online import OnlineSettings

__all__ = ["ENVIRONMENT", "FLAG", "SETTINGS_FILE", "RuntimeSettings", "Settings", "format_validation_error",
           "load_settings", "runtime_environment"]

SETTINGS_FILE, ENVIRONMENT, FLAG = "settings file", "environment", "flag"
"""Where a setting came from, for ``recommend --explain`` (flags win over the environment, which wins over the
file; the order across all sources is in :mod:`autoscaler.scaling_settings`)."""

# The YAML file of the load in progress (pydantic-settings builds sources per class, not per call).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("_CONFIG_FILE", default=None)


class _Section(BaseModel):
    # allow_inf_nan=False: ``.inf``, ``.nan`` and ``1e309`` (YAML's infinity by overflow) are refused at load with
    # the field named; an infinite interval or timeout would otherwise crash the first cycle that used it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        description="TTFT and ITL quantiles read every cycle (computed from the bucket rates already read: no "
                    "query of their own); include your SLO's.",
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
    recording_rules: bool = Field(
        False,
        description="Read rates and histogram buckets from the recording rules of manifests/recording-rules/"
                    "prometheus-rule.yaml (variant:<signal>:<window>) instead of computing them per query: at "
                    "thousands of pods the bucket queries otherwise cost seconds each. The rules must be "
                    "generated for the same labels and rate_window (autoscaler.signals.rules).",
    )
    heavy_timeout_s: float = Field(
        10.0, gt=0,
        description="Timeout of the histogram bucket queries computed at query time (timeout_s covers the "
                    "others): they scan every bucket of every pod, about 3 s each at 3,000 pods on a small "
                    "Prometheus (benchmarks/bench_collection.py). Keep it within collect_budget_s.",
    )
    gateway_queue_metric: str | None = Field(
        None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="Gauge of the requests a gateway holds per model: the Gateway API Inference Extension's "
                    "endpoint picker exports inference_extension_flow_control_queue_size (llm-d's router also "
                    "llm_d_epp_flow_control_queue_size). It is the demand of a model with no replica, so a "
                    "variant at zero comes back to one within a cycle. Unset: no gateway signal, and a policy "
                    "with scale_to_zero is refused (nothing could bring a variant back from zero).",
    )
    gateway_model_label: str = Field(
        "target_model_name", min_length=1,
        description="Label of gateway_queue_metric that names the model as its pods serve it "
                    "(target_model_name on the endpoint picker's metrics).",
    )

    @model_validator(mode="after")
    def _no_plain_http_off_loopback(self) -> PrometheusSettings:
        from autoscaler.signals.transport import check_url  # the collector's own rule, checked at load time

        try:
            check_url(self.url, allow_insecure_http=self.allow_insecure_http)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return self

    @field_validator("latency_quantiles")
    @classmethod
    def _quantiles_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [q for q in value if not 0 < q < 1]
        if bad:
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {bad}")
        return value


class CalibrationSettings(_Section):
    """Online calibration of the performance profiles to what the pods measure (autoscaler.perf.online)."""

    enabled: bool = Field(True, description="Off: the profiles are used as shipped.")
    window_samples: int = Field(
        240, ge=4, le=100_000,
        description="Observations kept per profile and stage; at a 15 s interval one variant fills it in an hour.",
    )
    max_age_s: float = Field(3600.0, gt=0, description="Older observations are dropped (hardware or software "
                                                        "changes make the cluster a different one).")
    min_samples: int = Field(10, ge=4, description="Below this many observations the profile is kept as is.")
    prior_samples: float = Field(
        2.0, ge=0, description="Weight of the shipped profile, in observations: n samples count n/(n+this). "
                               "2: a profile 30% off is within 10% after 10 windows (test_learning_under_load).",
    )
    bound: float = Field(3.0, gt=1, description="Each coefficient stays within [shipped/bound, shipped*bound]; "
                                                "a profile off by more is the wrong profile.")
    aggregated: bool = Field(False, description="Also learn from aggregated (role both) pods, whose steps mix "
                                                "prefill into decode, which biases both fits.")
    max_prefill_utilisation: float = Field(
        0.3, gt=0, le=1,
        description="Prefill windows count only while pods are this lightly loaded: under load prompts share a "
                    "forward pass and each reports the whole pass as its prefill time.",
    )

    @model_validator(mode="after")
    def _window_holds_a_fit(self) -> CalibrationSettings:
        if self.min_samples > self.window_samples:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window_samples "
                             f"({self.window_samples})")
        return self

    def online(self) -> OnlineSettings:
        """As :class:`autoscaler.perf.online.OnlineSettings` (imported here: it pulls in scikit-learn)."""
        from autoscaler.perf.calibration import CalibrationSettings as Fit
        from autoscaler.perf.online import OnlineSettings

        return OnlineSettings(window_samples=self.window_samples, max_age_s=self.max_age_s,
                              fit=Fit(min_samples=self.min_samples, prior_samples=self.prior_samples,
                                      bound=self.bound),
                              aggregated=self.aggregated, max_prefill_utilisation=self.max_prefill_utilisation)


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


class ControllerSettings(_Section):
    interval_s: float = Field(15.0, gt=0, description="Seconds between cycles; vLLM metrics move on this scale.")
    dry_run: bool = Field(False, description="Decide and log, change nothing.")


class PlannerSettings(_Section):
    """Predictive sizing: forecast demand at the provisioning horizon, capacity from performance profiles."""

    predictive: bool = Field(True, description="False: reactive saturation scaling only (no forecast, no capacity).")
    policy_file: Path | None = Field(
        None, description="Policy YAML file or directory (policies/); re-read when it changes, a bad edit keeps "
                          "the last good policy. The fields it sets override this config's, field by field "
                          "(autoscaler.scaling_settings).",
    )
    models_dir: Path | None = Field(None, description="Directory holding profiles/ (default: the repo's models/).")
    forecast_lead_time_s: float = Field(
        1200.0, gt=0, description="Furthest forecast horizon; covers a GPU node start (5-15 min) plus a pod "
                                  "loading its weights, when nodes come on demand.",
    )
    nodes_on_demand: bool = Field(
        False, description="New replicas usually wait for a new GPU node (cluster autoscaler, MachineSets): size "
                           "for the node start-up too. Implied by nodes.enabled.",
    )
    gateway_enforces_admission: bool = Field(
        False, description="A gateway applies the published admission ratio (early rejection). Then the observed "
                           "rate is what was admitted and demand is sized as admitted / ratio; without a gateway "
                           "that would read a surge that is not there.",
    )
    backlog_drain_s: float = Field(60.0, gt=0, description="Waiting requests are sized to clear within this.")


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


class RuntimeSettings(_Section):
    """How this controller instance runs in the cluster (autoscaler/controller/runtime.py): leader election,
    shard, probes. Set in the file's ``runtime:`` section or per instance as ``VAS_RUNTIME_<FIELD>``
    (e.g. VAS_RUNTIME_LEASE_NAME; the Deployment sets them per shard), which wins over the file."""

    leader_elect: bool = Field(True, description="Off only for a single replica (or local runs).")
    lease_name: str | None = Field(None, min_length=1, max_length=253,
                                   description="Lease name; default variant-autoscaler[-<shard hash>].")
    lease_namespace: str | None = Field(
        None, min_length=1, max_length=63,
        description="Default: POD_NAMESPACE, then the service account's namespace, then 'default'.")
    identity: str | None = Field(None, min_length=1, max_length=253,
                                 description="Default: POD_NAME (or hostname) + '_' + a random suffix.")
    lease_duration_s: float = Field(15.0, gt=0, description="client-go default; followers wait this long.")
    renew_deadline_s: float = Field(10.0, gt=0, description="client-go default; a leader acts this long "
                                                            "without renewing.")
    retry_period_s: float = Field(2.0, gt=0, description="client-go default; between attempts.")
    health_bind: str = Field("0.0.0.0", description="Address of the probe and metrics servers.")
    health_port: int = Field(8081, ge=0, le=65535, description="Probe port (controller-runtime's); 0 = off.")
    metrics_port: int = Field(9100, ge=0, le=65535, description="Port of /metrics (autoscaler.metrics); 0 = off.")
    shard_namespaces: tuple[str, ...] = Field(
        (), description="Namespaces this instance manages (a list, or comma-separated); empty = all "
                        "(or kube.namespace).")
    shard_label_selector: str | None = Field(
        None, description="Only VariantAutoscalings matching this label selector, e.g. variant-autoscaler.io/shard=a.")
    api_timeout_s: float = Field(10.0, gt=0, description="Per Kubernetes API request.")
    stuck_cycle_s: float | None = Field(
        None, gt=0, description="Liveness fails when a leader finished no cycle for this long; "
                                "default max(5 x interval, 120 s).")
    watch: bool = Field(True, description="Keep VariantAutoscalings in a watch-backed cache instead of listing "
                                          "them every cycle (a LIST stands in while the cache is not synced).")
    watch_timeout_s: float = Field(
        300.0, ge=10, le=3600,
        description="Server-side length of one watch request; then it resumes from the last resourceVersion. "
                    "client-go informers use 5-10 minutes.")

    @field_validator("shard_namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    # Election timing as client-go requires it (autoscaler.kube.lease.ElectionTiming checks the same again);
    # each rule blames the field that follows the other, so the error names it.
    @field_validator("renew_deadline_s")
    @classmethod
    def _renew_within_lease(cls, value: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_duration_s")
        if info.data.get("leader_elect", True) and lease is not None and not lease > value:
            raise ValueError(f"must be below lease_duration_s ({lease:g}), got {value:g}: otherwise a deposed "
                             "leader may still act")
        return value

    @field_validator("retry_period_s")
    @classmethod
    def _retry_within_renew(cls, value: float, info: ValidationInfo) -> float:
        renew = info.data.get("renew_deadline_s")
        if info.data.get("leader_elect", True) and renew is not None and not renew > 1.2 * value:
            raise ValueError(f"renew_deadline_s ({renew:g}) must exceed 1.2 x retry_period_s ({value:g}), "
                             "so a renewal can be retried before the deadline")
        return value


def runtime_environment() -> dict[str, str]:
    """``VAS_RUNTIME_<FIELD>`` variables (any case) as runtime section values."""
    prefix = "VAS_RUNTIME_"
    wanted = set(RuntimeSettings.model_fields)
    found: dict[str, str] = {}
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.startswith(prefix) and not upper.startswith(prefix + "_"):
            name = upper[len(prefix):].lower()
            if name in wanted:
                found[name] = value
    return found


class _RuntimeEnvironment(PydanticBaseSettingsSource):
    """The runtime section from VAS_RUNTIME_<FIELD> (one underscore, as the manifests spell it);
    VAS_RUNTIME__<FIELD> works too, through the ordinary environment source."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found = runtime_environment()
        return {"runtime": found} if found else {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAS_", env_nested_delimiter="__", extra="forbid", frozen=True,
                                      allow_inf_nan=False)

    prometheus: PrometheusSettings = PrometheusSettings()
    labels: LabelSettings = LabelSettings()
    kube: KubeSettings = KubeSettings()
    controller: ControllerSettings = ControllerSettings()
    planner: PlannerSettings = PlannerSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    nodes: NodeSettings = NodeSettings()
    saturation: SaturationModel = SaturationModel()
    behavior: BehaviorModel = BehaviorModel()
    slo: SloModel = Field(SloModel(), description="SLO of the models no policy file or VariantAutoscaling sets.")
    runtime: RuntimeSettings = RuntimeSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON lines otherwise (in-cluster)."
    )
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)  # field path -> ENVIRONMENT or FLAG

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
        sources: list[PydanticBaseSettingsSource] = [init_settings, _RuntimeEnvironment(settings_cls),
                                                     env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def nodes_on_demand(self) -> bool:
        """New replicas wait for a GPU node to boot: said so, or implied by managed MachineSets."""
        return self.planner.nodes_on_demand or self.nodes.enabled

    def layers(self) -> Layers:
        """The behaviour, saturation and SLO fields these settings set, each with its source (settings file,
        environment or flag), over the built-in defaults."""
        fields = {**fields_set(self.behavior, "behavior"), **fields_set(self.saturation, "saturation"),
                  **fields_set(self.slo, "slo")}
        sources = {path: self._sources.get(path, SETTINGS_FILE) for path in fields}
        return Layers.defaults(nodes_on_demand=self.nodes_on_demand()).over(fields, sources)

    def scaling_policy(self) -> ScalingPolicy:
        layers = self.layers()
        return ScalingPolicy(saturation=layers.saturation(), behavior=layers.behavior())


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
            settings = Settings(**(overrides or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(format_validation_error(exc, source=source),
                              field=".".join(str(p) for p in first["loc"])) from exc
    finally:
        _CONFIG_FILE.reset(token)
    # Which source set each field the file might also set: the one pydantic-settings let win.
    settings._sources.update({path: ENVIRONMENT for path in _paths(EnvSettingsSource(Settings)())})
    settings._sources.update({path: FLAG for path in _paths(overrides or {})})
    return settings


def _paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out += _paths(value, path) if isinstance(value, Mapping) else [path]
    return out
