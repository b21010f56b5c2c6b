"""One control cycle's planning, pure: signals in, decisions and per-model outlooks out.

For each model:
1. observe its traffic (arrival rate where requests enter: prefill or aggregated variants; the prompt mix there,
   the output mix at decode) and feed the forecaster;
2. size for the forecast's upper quantile over the provisioning lead time of its variants, plus the queue
   already waiting (cleared within ``backlog_drain_s``);
3. price each variant's replica capacity under the model's SLO with the capacity model of its profile;
4. predict the decode load a request admitted now meets when it reaches decode (Mooncake's prediction-based
   early rejection): an admission ratio, and a decode floor when that load crosses the threshold in time.
Then :func:`autoscaler.core.fleet.decide_fleet` allocates across variants and runs each variant's pipeline.

State (forecasters, stabilisation histories) goes in and comes out as values; the shell keeps it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from autoscaler.core.admission import (
    AdmissionConfig,
    AdmissionDecision,
    DecodePool,
    LatencySLO,
    PrefillPool,
    assess_admission,
)
from autoscaler.core.admission import TrafficMix as AdmissionMix
from autoscaler.core.behavior import Recommendation
from autoscaler.core.fleet import FleetDecision, VariantInput, decide_fleet
from autoscaler.core.policyset import PolicySet
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    Condition,
    Decision,
    Freshness,
    Reason,
    ReplicaCounts,
    Role,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.forecast import (
    ForecastConfig,
    MixForecast,
    MixObservation,
    MixState,
    SeriesForecast,
    new_mix,
    update_mix,
)
from autoscaler.perf.capacity import SloTargets, TrafficMix, estimate_capacity
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "ModelOutlook",
    "Plan",
    "PlannerConfig",
    "PlannerState",
    "TrafficHistory",
    "VariantObservation",
    "plan_cycle",
    "resolve_profile",
    "warm_start",
]


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    default_slo: SloTargets = field(default_factory=lambda: SloTargets(ttft_s=1.0, itl_s=0.05, percentile=0.9))
    """SLO for models the policy does not name."""
    backlog_drain_s: float = 60.0
    """Requests already waiting are sized to clear within this, on top of the forecast arrivals."""
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    predictive: bool = True
    """False: decide reactively only (saturation), as a baseline or when no profile applies."""


@dataclass(frozen=True, slots=True)
class VariantObservation:
    spec: VariantSpec
    signals: VariantSignals
    current: int
    replicas: ReplicaCounts | None = None
    last_scaled_at: float | None = None


@dataclass(frozen=True, slots=True)
class PlannerState:
    mixes: Mapping[str, MixState] = field(default_factory=dict)
    histories: Mapping[VariantRef, tuple[Recommendation, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelOutlook:
    """What the planner believes about one model's traffic this cycle (status, metrics, the adapter)."""

    model: str
    observed_rps: float | None
    demand_rps: float | None  # what capacity is sized for (forecast upper quantile + backlog)
    forecast_method: str | None
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    unserved_rps: float = 0.0
    admission: AdmissionDecision | None = None
    horizon_s: float | None = None
    """The provisioning lead time the demand was forecast over."""
    forecast_error: float | None = None
    """Recent relative error (back-test) of the arrival-rate forecast method in use; None until scored."""

    @property
    def admission_ratio(self) -> float:
        """Share of new requests to admit: early rejection's, lowered further by any unserved demand."""
        ratio = self.admission.admission_ratio if self.admission is not None else 1.0
        if self.unserved_rps > 0 and self.demand_rps:
            ratio = min(ratio, max(0.0, 1.0 - self.unserved_rps / self.demand_rps))
        return ratio


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: tuple[Decision, ...]
    outlooks: Mapping[str, ModelOutlook]
    conditions: tuple[Condition, ...] = ()
    fleet: FleetDecision | None = None

    def decision(self, ref: VariantRef) -> Decision | None:
        return next((d for d in self.decisions if d.variant == ref), None)


def resolve_profile(spec: VariantSpec, profiles: Mapping[str, PerformanceProfile],
                    policy: PolicySet) -> PerformanceProfile | None:
    """The profile named by the policy, else the one whose model and accelerator match the spec's.

    Accelerators match case-insensitively on the profile's accelerator or the part of its name after the
    slash (``llama-3.1-8b/h100`` matches ``H100``), since clusters label GPUs in many spellings.
    """
    named = policy.variant_policy(spec)
    if named is not None and named.profile:
        return profiles.get(named.profile)
    want = spec.accelerator.lower()
    for profile in profiles.values():
        if profile.model.lower() != spec.model.lower() and profile.name.split("/")[0] != spec.model.lower():
            continue
        short = profile.name.split("/")[-1].lower()
        if want in (profile.accelerator.lower(), short) or short.split("-")[0] == want:
            return profile
    return None


def _fresh(sig: VariantSignals) -> bool:
    return sig.freshness is Freshness.FRESH


def _weighted_mean(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    """Mean of values weighted by rates; None when nothing is known, 0-rate windows ignored."""
    total = weight = 0.0
    for value, rate in pairs:
        if value is None or rate is None or rate <= 0 or not math.isfinite(value):
            continue
        total += value * rate
        weight += rate
    return total / weight if weight > 0 else None


def _entry_and_exit(items: Sequence[_T], role: Callable[[_T], Role]) -> tuple[list[_T], list[_T]]:
    """Where a model's requests enter (prefill or aggregated variants; decode when there is nothing else) and
    where they leave (decode or aggregated; the entry when there is nothing else)."""
    entry = [i for i in items if role(i) in (Role.PREFILL, Role.BOTH)] or \
        [i for i in items if role(i) is Role.DECODE]
    exit_ = [i for i in items if role(i) in (Role.DECODE, Role.BOTH)] or entry
    return entry, exit_


def _sum_known(values: Sequence[float | None]) -> float | None:
    """The sum, or None if any part is unknown (one unreadable variant makes the model's total unknown)."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _tokens_mean(sig: VariantSignals, *, prompt: bool) -> float | None:
    """Mean tokens per request: from the histogram when read, else token rate over request rate."""
    mean = sig.prompt_tokens_mean if prompt else sig.generation_tokens_mean
    if mean is not None:
        return mean
    rates = MixObservation.from_token_rates(requests_per_s=sig.requests_per_s,
                                            prompt_tokens_per_s=sig.prompt_tokens_per_s,
                                            generation_tokens_per_s=sig.generation_tokens_per_s)
    return rates.mean_input_tokens if prompt else rates.mean_output_tokens


def _observe(model_obs: Sequence[VariantObservation]) -> tuple[MixObservation, float]:
    """The model's traffic this cycle, and the requests waiting at its entry."""
    entry, exit_ = _entry_and_exit(model_obs, lambda o: o.spec.role)
    if not entry or not all(_fresh(o.signals) for o in entry):
        return MixObservation(None, None, None), 0.0  # unknown: never read as zero demand
    rate = _sum_known([o.signals.requests_per_s for o in entry])
    waiting = sum(o.signals.waiting or 0.0 for o in entry)
    prompt = _weighted_mean([(_tokens_mean(o.signals, prompt=True), o.signals.requests_per_s) for o in entry])
    output = _weighted_mean([(_tokens_mean(o.signals, prompt=False), o.signals.requests_per_s)
                             for o in exit_ if _fresh(o.signals)])
    return MixObservation(rate, prompt, output), waiting


def _p90_input(model_obs: Sequence[VariantObservation], mean: float) -> float:
    values = [o.signals.prompt_tokens_p90 for o in model_obs
              if o.spec.role in (Role.PREFILL, Role.BOTH) and o.signals.prompt_tokens_p90]
    return max(max(values), mean) if values else 2.0 * mean


def _lead_time(model_obs: Sequence[VariantObservation], profiles: Mapping[str, PerformanceProfile | None],
               config: PlannerConfig) -> float:
    """How far ahead capacity must be sized: the slowest pod start-up among the model's variants, plus a cycle."""
    starts = [p.startup_s for o in model_obs if (p := profiles.get(str(o.spec.ref))) is not None]
    lead = (max(starts) if starts else 0.0) + config.forecast.interval_s
    return min(max(lead, config.forecast.interval_s), config.forecast.lead_time_s)


def _admission(model_obs: Sequence[VariantObservation], profiles: Mapping[str, PerformanceProfile | None],
               mix: AdmissionMix, slo: SloTargets, config: PlannerConfig) -> AdmissionDecision | None:
    prefill = [o for o in model_obs if o.spec.role is Role.PREFILL and profiles.get(str(o.spec.ref))]
    decode = [o for o in model_obs if o.spec.role is Role.DECODE and profiles.get(str(o.spec.ref))]
    if not prefill or not decode or not all(_fresh(o.signals) for o in prefill + decode):
        return None
    p_prof = profiles[str(prefill[0].spec.ref)]
    d_prof = profiles[str(decode[0].spec.ref)]
    assert p_prof is not None and d_prof is not None
    queued = sum((o.signals.waiting or 0.0) + (o.signals.running or 0.0) for o in prefill)
    running = sum(o.signals.running or 0.0 for o in decode)
    pool_p = PrefillPool(replicas=max(1, sum(o.current for o in prefill)), profile=p_prof,
                         queued_requests=queued, queued_tokens=queued * mix.mean_input_tokens)
    pool_d = DecodePool(replicas=max(1, sum(o.current for o in decode)), profile=d_prof, running=running,
                        mean_context_tokens=mix.mean_input_tokens + mix.mean_output_tokens / 2)
    return assess_admission(prefill=pool_p, decode=pool_d, mix=mix,
                            slo=LatencySLO(ttft_s=slo.ttft_s, tbt_s=slo.itl_s), config=config.admission)


def plan_cycle(
    *,
    observations: Sequence[VariantObservation],
    state: PlannerState,
    profiles: Mapping[str, PerformanceProfile],
    policy: PolicySet,
    config: PlannerConfig,
    now: float,
) -> tuple[Plan, PlannerState]:
    by_model: dict[str, list[VariantObservation]] = defaultdict(list)
    for o in observations:
        by_model[o.spec.model].append(o)
    variant_profiles = {str(o.spec.ref): resolve_profile(o.spec, profiles, policy) for o in observations}

    mixes = dict(state.mixes)
    demands: dict[str, float | None] = {}
    capacity: dict[VariantRef, float | None] = {}
    floors: dict[VariantRef, Prediction] = {}
    partial: dict[str, ModelOutlook] = {}
    for model, obs in by_model.items():
        observed, waiting = _observe(obs)
        mix_state, forecast = update_mix(mixes.get(model) or new_mix(config.forecast), observation=observed,
                                         now=now, config=config.forecast)
        mixes[model] = mix_state
        lead = _lead_time(obs, variant_profiles, config)
        demand, method = _demand(observed, forecast, waiting=waiting, lead_s=lead, config=config)
        mean_in = _known(forecast.mean_input_tokens, observed.mean_input_tokens, lead)
        mean_out = _known(forecast.mean_output_tokens, observed.mean_output_tokens, lead)
        model_policy = policy.model(model)
        slo = (model_policy.slo if model_policy and model_policy.slo else None) or config.default_slo
        admission = None
        if config.predictive and demand is not None and mean_in and mean_out:
            demands[model] = demand
            hit = max((o.signals.prefix_cache_hit_ratio or 0.0 for o in obs), default=0.0)
            mix = TrafficMix(mean_input_tokens=mean_in * (1 - hit), p90_input_tokens=_p90_input(obs, mean_in),
                             mean_output_tokens=max(mean_out, 1.0), request_rate_rps=demand)
            for o in obs:
                profile = variant_profiles[str(o.spec.ref)]
                if profile is None:
                    continue
                est = estimate_capacity(profile=profile, role=o.spec.role, mix=mix, slo=slo)
                capacity[o.spec.ref] = est.max_rate_rps if est.feasible and est.max_rate_rps > 0 else None
            admission = _admission(obs, variant_profiles,
                                   AdmissionMix(arrival_rate=observed.arrival_rate or demand,
                                                mean_input_tokens=mean_in, mean_output_tokens=mean_out),
                                   slo, config)
            decode = [o for o in obs if o.spec.role is Role.DECODE]
            if admission is not None and admission.prescale_decode and len(decode) == 1:
                floors[decode[0].spec.ref] = Prediction(
                    replicas=admission.decode_replicas_needed, reason=Reason.FORECAST,
                    message=f"decode load at admission horizon {admission.decode_load_at_horizon:.2f}")
        partial[model] = ModelOutlook(model=model, observed_rps=observed.arrival_rate, demand_rps=demand,
                                      forecast_method=method, mean_input_tokens=mean_in,
                                      mean_output_tokens=mean_out, admission=admission)

    inputs = []
    for o in observations:
        profile = variant_profiles[str(o.spec.ref)]
        inputs.append(VariantInput(
            spec=o.spec, signals=o.signals, current=o.current, history=state.histories.get(o.spec.ref, ()),
            replicas=o.replicas, last_scaled_at=o.last_scaled_at, capacity_rps=capacity.get(o.spec.ref),
            gpus_per_replica=profile.gpus_per_replica if profile else 1,
            cost_per_replica_hour=profile.cost_per_replica_hour if profile else 0.0,
        ))
    fleet = decide_fleet(variants=inputs, demands=demands, policy=policy, now=now, predictive_floors=floors)
    outlooks = {m: _with_unserved(o, fleet.unserved_rate(m)) for m, o in partial.items()}
    new_state = PlannerState(mixes=mixes, histories=dict(fleet.histories))
    return Plan(fleet.decisions, outlooks, fleet.conditions, fleet), new_state


def _known(forecast: SeriesForecast | None, observed: float | None, lead_s: float) -> float | None:
    if forecast is not None:
        mean, _ = forecast.at(lead_s)
        if math.isfinite(mean) and mean > 0:
            return mean
    return observed if observed and observed > 0 else None


def _demand(observed: MixObservation, forecast: MixForecast, *, waiting: float, lead_s: float,
            config: PlannerConfig) -> tuple[float | None, str | None]:
    """Req/s to provision for: the forecast's upper quantile over the lead time (the observed rate until the
    forecaster has history), plus the waiting queue cleared within ``backlog_drain_s``; None when unknown."""
    backlog = waiting / config.backlog_drain_s
    rate_fc = forecast.arrival_rate
    if rate_fc is not None:
        upper = rate_fc.peak_upper(within_s=lead_s)
        if math.isfinite(upper):
            if observed.arrival_rate is not None:
                upper = max(upper, observed.arrival_rate)
            return max(upper, 0.0) + backlog, rate_fc.method.value
    if observed.arrival_rate is None:
        return None, None
    return observed.arrival_rate + backlog, "observed"


def _with_unserved(outlook: ModelOutlook, unserved: float) -> ModelOutlook:
    if unserved <= 0:
        return outlook
    return replace(outlook, unserved_rps=unserved)


class TrafficHistory(Protocol):
    """One variant's recent traffic on a time grid (``autoscaler.signals.history.HistorySeries`` is one)."""

    @property
    def timestamps(self) -> tuple[float, ...]: ...
    @property
    def requests_per_s(self) -> tuple[float | None, ...]: ...
    @property
    def prompt_tokens_mean(self) -> tuple[float | None, ...]: ...
    @property
    def generation_tokens_mean(self) -> tuple[float | None, ...]: ...


def warm_start(*, state: PlannerState, histories: Mapping[VariantSpec, TrafficHistory],
               config: PlannerConfig) -> PlannerState:
    """Feed each model's forecaster the recent past (Prometheus ``query_range``), so a restart or a new leader
    does not forecast from nothing. Points where an entry variant has no value are gaps, not zero demand."""
    by_model: dict[str, list[tuple[VariantSpec, TrafficHistory]]] = defaultdict(list)
    for spec, series in histories.items():
        by_model[spec.model].append((spec, series))
    mixes = dict(state.mixes)
    for model, items in by_model.items():
        entry, exit_ = _entry_and_exit(items, lambda item: item[0].role)
        timestamps = entry[0][1].timestamps
        if any(h.timestamps != timestamps for _, h in items):
            continue  # misaligned series: starting cold beats learning from a skewed past
        mix = mixes.get(model) or new_mix(config.forecast)
        for i, t in enumerate(timestamps):
            rate = _sum_known([h.requests_per_s[i] for _, h in entry])
            prompt = _weighted_mean([(h.prompt_tokens_mean[i], h.requests_per_s[i]) for _, h in entry])
            output = _weighted_mean([(h.generation_tokens_mean[i], h.requests_per_s[i]) for _, h in exit_])
            mix, _ = update_mix(mix, observation=MixObservation(rate, prompt, output), now=t, config=config.forecast)
        mixes[model] = mix
    return PlannerState(mixes=mixes, histories=state.histories)
