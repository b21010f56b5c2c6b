"""What one simulation runs: the model x accelerator profile, the SLOs, the delays, the cluster's shape.

A :class:`Scenario` is a frozen value reported whole in the JSON output, so a result always says what it measured.
Profiles come from ``models/profiles`` (:func:`autoscaler.perf.profiles.default_profiles`); the KV-cache bytes per
token (for the KV transfer between prefill and decode) are read from the same file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from autoscaler.errors import ConfigError
from autoscaler.perf.capacity import SloTargets
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import ProfileFile, default_models_dir, default_profiles

__all__ = [
    "AUTO_COARSE_AFTER_S",
    "COARSE",
    "DEFAULT_PROFILE",
    "ENGINE_MODES",
    "STEP",
    "WARMUP_HEAD_S",
    "Scenario",
    "engine_mode_for",
    "kv_bytes_per_token",
    "resolve_profile",
]

DEFAULT_PROFILE = "llama-3.1-8b/h100"

# KV transfer between a prefill and a decode pod: Mooncake's transfer engine moves KV over RDMA at up to
# 8 x 400 Gbps per node (Qin et al., FAST'25, section 4); one 400 Gbps NIC per GPU gives 50 GB/s. Latency: a few
# microseconds of RDMA plus the connector's per-request handshake, taken as 1 ms.
DEFAULT_KV_BANDWIDTH_BYTES_PER_S = 50e9
DEFAULT_KV_LATENCY_S = 1e-3
WARMUP_HEAD_S = 600.0
"""The warm-up replays (repeats) the trace's first this many seconds: its opening load, not what comes later."""


STEP = "step"
COARSE = "coarse"
ENGINE_MODES = (STEP, COARSE)
"""``Scenario.engine_mode``: every scheduler iteration of every pod (:class:`autoscaler.perf.engine.Engine`), or
the fluid model of days-long replays (:class:`autoscaler.perf.fluid.FluidEngine`), one control interval a tick."""

AUTO_COARSE_AFTER_S = 6 * 3600.0
"""``--engine auto`` replays traces longer than this in coarse mode (the per-step engine takes minutes per hour of
a busy trace; the shipped one-hour traces stay per step)."""


def engine_mode_for(choice: str, *, duration_s: float) -> str:
    """``--engine`` (step, coarse or auto) as a ``Scenario.engine_mode`` for a trace of ``duration_s``."""
    if choice == "auto":
        return COARSE if duration_s > AUTO_COARSE_AFTER_S else STEP
    if choice not in ENGINE_MODES:
        raise ValueError(f"--engine must be step, coarse or auto, got {choice!r}")
    return choice


OBSERVE_S = 300.0
"""The HPA's default scale-down window: what a policy's history must span to be in steady state."""


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Scenario:
    """The simulated cluster and its targets. Times in seconds.

    >>> Scenario(profile=DEFAULT_PROFILE).slo.ttft_s
    1.0
    """

    profile: str = DEFAULT_PROFILE
    """Name of the model x accelerator profile serving both prefill and decode (``variant-autoscaler profiles``)."""
    slo_ttft_s: float = 1.0
    """A request attains the TTFT SLO when its own time to first token is within this."""
    slo_itl_s: float = 0.05
    """A request attains the ITL SLO when its mean inter-token latency is within this."""
    slo_percentile: float = 0.9
    """Percentile of TTFT/ITL the capacity model sizes for (clairvoyant model, static, warm start, the default's
    planner), as the product's ``planner.slo_percentile``. Attainment is measured per request whatever this is. (At 0.99 the
    capacity model's prefill rate for heavy-tailed prompts collapses: 0.012 req/s per 70B replica for the Azure
    mix at TTFT 1 s, where 3.0 at 0.9 keeps 99.9% of simulated requests within the SLO.)"""
    node_delay_s: float | None = None
    """GPU node request to ready; None = the profile's ``startup.node_s``."""
    pod_delay_s: float | None = None
    """Pod start (on a ready node) to ready, weights loaded; None = the profile's ``startup.pod_s``."""
    gpus_per_node: int | None = None
    """GPUs per node; None = one replica per node (cloud VMs sized to the replica, e.g. 1x H100 for 8B)."""
    node_release_delay_s: float = 0.0
    """An empty node is released after this long (0: at once, as the MachineSet scaler removes it)."""
    interval_s: float = 15.0
    """Control-loop interval (the controller's default, and the HPA's sync period); the clairvoyant model's
    interval too."""
    tick_s: float = 0.5
    """Simulation step: routing decisions and pod life-cycle changes happen on this grid."""
    rate_window_s: float = 60.0
    """Window of the simulated Prometheus ``rate()`` and histogram quantiles (the controller's default 1m)."""
    drain_grace_s: float = 120.0
    """A pod being removed finishes its requests for up to this long (terminationGracePeriodSeconds), then the
    rest are evicted and retried elsewhere from the start."""
    warmup_s: float | None = None
    """Replayed before the trace (a copy of its start) so every policy enters it in steady state; unmeasured.
    Policies observe for the first part (dry-run) and act for the rest. None: long enough for capacity asked
    for when policies go live to arrive and settle (:meth:`warmup`)."""
    tail_s: float = 300.0
    """Simulated time after the last arrival; requests unfinished by then count as missing both SLOs."""
    kv_bandwidth_bytes_per_s: float = DEFAULT_KV_BANDWIDTH_BYTES_PER_S
    kv_latency_s: float = DEFAULT_KV_LATENCY_S
    min_replicas: int = 1
    max_replicas: int = 64
    """Per variant (prefill, decode): the VariantAutoscaling's bounds."""
    speed_up: float = 1.0
    """The trace was played this many times as fast: its rate times this, its duration over it (``--speed-up``;
    reported, applied by the caller to the trace)."""
    load_scale: float = 1.0
    """The trace's requests were multiplied by this over the same duration (``--load-scale``; reported, applied
    by the caller with :func:`autoscaler.traces.load_scale`)."""
    resample: int = 0
    """Block-bootstrap resamples each policy also ran on (``--resample``; 0: the trace only; reported)."""
    engine_prefill_error: float = 1.0
    """The simulated engine's prefill times are the profile's times this much (``--engine-error prefill=F``):
    the truth the pods run, while every policy, the controller's calibration included, starts from the profile."""
    engine_decode_error: float = 1.0
    """The simulated engine's decode step times are the profile's times this much (``--engine-error decode=G``)."""
    seed: int = 0
    """Seeds what is random: the ``--load-scale`` copies, the ``--resample`` draws, and policies that draw."""
    block_size: int = 16
    engine_mode: str = STEP
    """``step``: the per-step engine, a tick of ``tick_s``; ``coarse``: the fluid engine, a tick of ``interval_s``
    (validated against ``step`` on the shipped one-hour traces; for traces of days)."""
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    """Free-form facts about how the trace was transformed (``time_stretch``, ``window``...), reported as given."""

    def __post_init__(self) -> None:
        for name in ("slo_ttft_s", "slo_itl_s", "interval_s", "tick_s", "rate_window_s", "kv_bandwidth_bytes_per_s",
                     "speed_up", "load_scale", "engine_prefill_error", "engine_decode_error"):
            _positive(name, getattr(self, name))
        for name in ("node_release_delay_s", "drain_grace_s", "tail_s", "kv_latency_s"):
            _positive(name, getattr(self, name), allow_zero=True)
        for name in ("node_delay_s", "pod_delay_s", "warmup_s"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), allow_zero=True)
        if self.resample < 0:
            raise ValueError(f"resample must be >= 0, got {self.resample}")
        if not 0.5 <= self.slo_percentile < 1:
            raise ValueError(f"slo_percentile must be in [0.5, 1), got {self.slo_percentile}")
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise ValueError(f"gpus_per_node must be >= 1, got {self.gpus_per_node}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas >= 1, got {self.min_replicas}, "
                             f"{self.max_replicas}")
        if self.engine_mode not in ENGINE_MODES:
            raise ValueError(f"engine_mode must be one of {', '.join(ENGINE_MODES)}, got {self.engine_mode!r}")
        ratio = self.interval_s / self.tick_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"interval_s ({self.interval_s}) must be a multiple of tick_s ({self.tick_s})")

    @property
    def run_tick_s(self) -> float:
        """The simulation step the runner takes: ``tick_s`` per step, the control interval in coarse mode."""
        return self.interval_s if self.engine_mode == COARSE else self.tick_s

    @property
    def slo(self) -> SloTargets:
        return SloTargets(ttft_s=self.slo_ttft_s, itl_s=self.slo_itl_s, percentile=self.slo_percentile)

    def node_delay(self, profile: PerformanceProfile) -> float:
        return profile.node_startup_s if self.node_delay_s is None else self.node_delay_s

    def pod_delay(self, profile: PerformanceProfile) -> float:
        return profile.startup_s if self.pod_delay_s is None else self.pod_delay_s

    def warmup(self, profile: PerformanceProfile, *, observe_s: float) -> float:
        """Seconds of warm-up: as set, else the first rate window, ``observe_s`` of observing, the node and pod
        start-up (what a policy asks for when it goes live arrives) and a scale-down window (it settles).
        Shorter, a policy that sizes for a lead time enters the trace still waiting for nodes."""
        if self.warmup_s is not None:
            return self.warmup_s
        return self.rate_window_s + 2 * observe_s + self.node_delay(profile) + self.pod_delay(profile)

    def node_gpus(self, profile: PerformanceProfile) -> int:
        return max(profile.gpus_per_replica, self.gpus_per_node or profile.gpus_per_replica)

    def true_profile(self, profile: PerformanceProfile) -> PerformanceProfile:
        """What the simulated engines run: ``profile`` (the belief) with its prefill times scaled by
        ``engine_prefill_error`` and its decode step times by ``engine_decode_error``."""
        f, g = self.engine_prefill_error, self.engine_decode_error
        if f == 1.0 and g == 1.0:
            return profile
        return replace(profile, prefill_a=profile.prefill_a * f, prefill_b=profile.prefill_b * f,
                       prefill_c=profile.prefill_c * f, decode_alpha=profile.decode_alpha * g,
                       decode_beta=profile.decode_beta * g, decode_gamma=profile.decode_gamma * g)

    def without_delays(self) -> Scenario:
        """The same cluster where capacity arrives at once (the clairvoyant model's world)."""
        return replace(self, node_delay_s=0.0, pod_delay_s=0.0)

    def to_json(self, profile: PerformanceProfile) -> dict[str, Any]:
        """The scenario as reported: every field, with the delays resolved from the profile."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["slo_ttft_s"], out["slo_itl_s"] = self.slo_ttft_s, self.slo_itl_s
        out["node_delay_s"], out["pod_delay_s"] = self.node_delay(profile), self.pod_delay(profile)
        out["warmup_s"] = self.warmup(profile, observe_s=OBSERVE_S)
        out["gpus_per_node"] = self.node_gpus(profile)
        out["gpus_per_replica"] = profile.gpus_per_replica
        out["usd_per_gpu_hour"] = profile.cost_per_gpu_hour
        out["model"] = profile.model
        out["accelerator"] = profile.accelerator
        out.update(dict(self.extra))
        return out


def resolve_profile(name: str, *, profiles: dict[str, PerformanceProfile] | None = None) -> PerformanceProfile:
    """The profile called ``name``; a ConfigError lists the known names otherwise."""
    known = default_profiles() if profiles is None else profiles
    if name not in known:
        raise ConfigError(f"profile: unknown profile {name!r}; known: {', '.join(sorted(known))}", field="profile")
    return known[name]


def kv_bytes_per_token(profile_name: str, *, models_dir: Path | None = None) -> int | None:
    """``kv_cache.bytes_per_token`` of the profile file that defines ``profile_name`` (None when not given).

    The files were validated when the profile was resolved; only the matching one is validated again here."""
    directory = (models_dir or default_models_dir()) / "profiles"
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and raw.get("name") == profile_name:
            return ProfileFile.model_validate(raw).kv_cache.bytes_per_token
    return None
