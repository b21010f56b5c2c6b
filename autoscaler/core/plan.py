"""One control cycle's planning, pure: signals in, decisions and per-model outlooks out.

For each model:
1. observe its traffic (arrival rate where requests enter: prefill or aggregated variants; the prompt mix there,
   the output mix at decode) and feed the forecaster;
2. size for the forecast's upper quantile over the provisioning lead time of its variants, plus the queue
   already waiting (cleared within ``backlog_drain_s``);
3. price each variant's replica capacity under the model's SLO with the capacity model of its profile, for the
   mix (mean prompt and output, prompt p90/mean) smoothed over ``mix_halflife_s``;
4. predict the decode load a request admitted now meets when it reaches decode (Mooncake's prediction-based
   early rejection): an admission ratio, and a decode floor when that load crosses the threshold in time.
Then :func:`autoscaler.core.fleet.decide_fleet` allocates across variants and runs each variant's pipeline.

State (forecasters, stabilisation histories) goes in and comes out as values; the shell keeps it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from autoscaler.core.accelerators import canonical_accelerator
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
from autoscaler.core.screen import screened
from autoscaler.core.slo_feedback import SloFeedback, measured_ratio, update_trims
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
    prime_mix,
    tokens_per_completion,
    update_mix,
)
from autoscaler.perf.capacity import SloTargets, TrafficMix, estimate_capacity
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "MixLevel",
    "ModelOutlook",
    "Plan",
    "PlannerConfig",
    "PlannerState",
    "TrafficHistory",
    "VariantObservation",
    "plan_cycle",
    "replica_gpus",
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
    nodes_on_demand: bool = False
    """GPU nodes are added when pods need them (cluster autoscaler, Karpenter, scaled MachineSets): a scale-up
    waits for a node to boot, so the lead time includes the profile's node start-up. Off, it is included only
    while a variant has pods Pending for lack of GPUs (then a node is being, or must be, added)."""
    admission_enforced: bool = False
    """A gateway applies the admission ratio each cycle reports (early rejection). Only then is the observed
    rate an admitted share of the arrivals; without one, dividing by the ratio would read a phantom surge
    (so off unless said: the settings' ``planner.gateway_enforces_admission``)."""
    min_admission_ratio: float = 0.1
    rate_window_s: float = 60.0
    """Window the observed request rate is averaged over (Prometheus' ``rate()`` window). The rate admitted over
    it was admitted at the ratios of every cycle in it, so arrivals are recovered with their time-weighted mean:
    dividing by the last cycle's alone read the surge scenario's 80 req/s as 45-160 req/s from cycle to cycle,
    and the admission ratio set from that swung 0.23-0.77 with the queue (TTFT p90 5-10 s for the admitted)."""
    """Smallest admission ratio the observed rate is divided by to recover arrivals (bounds the
    amplification of a noisy rate when nearly everything was rejected)."""
    rise_confirm_share: float = 0.5
    """A rise in demand is sized for once it has held this share of the lead time (the lowest demand over that
    window is used; at most ``rise_confirm_max_s``). Capacity asked for now arrives a lead time later, and each
    replica pays its start-up (node boot included) before serving: a rise that is gone within a fraction of
    the lead was a burst that early rejection and the headroom absorb, and acting on it buys capacity that
    arrives too late and leaves again (on the 70B scenario 4 GPUs x 17 min per replica)."""
    warm_replay_s: float = 3600.0
    """At a warm start, the newest history replayed cycle by cycle (scoring the forecasting methods); anything
    older is taken in at once as the seasonal methods' past."""
    rise_confirm_max_s: float = 300.0
    """Longest confirmation window (the HPA's scale-down window: the two windows then match)."""
    ready_hold_fall: float = 0.05
    """Ready replicas are held for the lead time (not only the scale-down window) once the demand sized for has
    fallen by more than this share from a high within the last lead time: released in a dip and asked for again,
    a replica is back a lead time later (the 70B Azure load x8 released one at minute 6 of the hour, asked for it
    again at minute 12 and had it at minute 30, eight minutes into the hour's peak). A smaller fall is noise, and
    a mix that needs fewer replicas for a steady demand (Mooncake conversation's) is no fall: both release after
    the scale-down window as before (held on those too, Mooncake conversation cost 3.9% more GPU-hours for
    nothing)."""
    slo_feedback: SloFeedback = field(default_factory=SloFeedback)
    """How the measured latency quantiles trim each variant's modelled capacity (:mod:`.slo_feedback`)."""
    mix_halflife_s: float = 300.0
    """Half-life of the smoothed mix (mean prompt and output tokens, prompt p90/mean) capacity is priced for.
    One rate window's means are a noisy sample (the Azure conversation trace's one-minute mean prompt swings
    between 0.75x and 1.25x of its level), and a replica's capacity is steep in them: priced per window, the
    target swung 6 <-> 15 prefill replicas from minute to minute and the scale-down window kept the peaks."""


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
    admission_ratios: Mapping[str, float] = field(default_factory=dict)
    """Per model, the share of new requests the last cycle said to admit (early rejection): the rate observed
    at prefill is what was admitted, so demand is that over the ratio (sizing from admitted requests alone
    would shrink capacity as rejection grows, and reject more)."""
    mix_levels: Mapping[str, MixLevel] = field(default_factory=dict)
    """Per model, the smoothed mix capacity is priced for."""
    admission_history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per model, (time set, admission ratio) of the recent cycles, 1 included: the ratios the observed rate's
    window was admitted at (``PlannerConfig.rate_window_s``). Empty: the last ratio alone is used."""
    demand_history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per model, recent (time, demand) pairs: the window a rise must hold for."""
    sized_history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Per model, (time, demand sized for) over the last lead time: whether the demand is down from its high."""
    capacity_trims: Mapping[VariantRef, float] = field(default_factory=dict)
    """Per variant, the multiplier of its modelled capacity the measured SLO quantiles set (1 = the model)."""


@dataclass(frozen=True, slots=True)
class MixLevel:
    """A model's traffic mix smoothed over ``PlannerConfig.mix_halflife_s``; ``at``: when last updated."""

    mean_input_tokens: float
    mean_output_tokens: float
    prompt_spread: float
    """Prompt p90 over mean (>= 1)."""
    at: float


@dataclass(frozen=True, slots=True)
class ModelOutlook:
    """What the planner believes about one model's traffic this cycle (status, metrics, the adapter)."""

    model: str
    observed_rps: float | None  # arrivals: the rate admitted at the entry over last cycle's admission ratio
    demand_rps: float | None  # what capacity is sized for (forecast upper quantile + backlog; rises once held)
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

    @property
    def computed_admission_ratio(self) -> float | None:
        """The admission ratio when early rejection or unserved demand set one; None when nothing computed it
        (a published metric is then absent, not a default of 1)."""
        return self.admission_ratio if self.admission is not None or self.unserved_rps > 0 else None


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

    Accelerators match by :func:`canonical_accelerator` on the profile's accelerator or the part of its name
    after the slash (``llama-3.1-8b/h100`` and ``accelerator: nvidia-h100-80gb`` match ``H100``), since
    clusters label GPUs in many spellings.
    """
    named = policy.variant_policy(spec)
    if named is not None and named.profile:
        return profiles.get(named.profile)
    want = canonical_accelerator(spec.accelerator)
    for profile in profiles.values():
        if profile.model.lower() != spec.model.lower() and profile.name.split("/")[0] != spec.model.lower():
            continue
        short = profile.name.split("/")[-1]
        if want in (canonical_accelerator(profile.accelerator), canonical_accelerator(short),
                    canonical_accelerator(short.split("-")[0])):
            return profile
    return None


def replica_gpus(spec: VariantSpec, profiles: Mapping[str, PerformanceProfile], policy: PolicySet) -> int:
    """GPUs one replica of the variant uses: its declaration, else its profile's count, else 1 (the count the
    planner's quotas and prices use, and the scaler's MachineSet sizing)."""
    profile = resolve_profile(spec, profiles, policy)
    return spec.gpus(profile.gpus_per_replica if profile else None)


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
    """Mean tokens per finished request: from the histogram when read, else token rate over completion rate."""
    mean = sig.prompt_tokens_mean if prompt else sig.generation_tokens_mean
    if mean is not None:
        return mean
    tokens = sig.prompt_tokens_per_s if prompt else sig.generation_tokens_per_s
    return tokens_per_completion(tokens, sig.completions_per_s)


def _serves_nothing(o: VariantObservation) -> bool:
    """At zero replicas with no pod ready: it has no series, and its share of the traffic is known to be zero."""
    return o.current == 0 and (o.replicas is None or o.replicas.ready == 0) and not _fresh(o.signals)


def _observe(model_obs: Sequence[VariantObservation]) -> tuple[MixObservation, float]:
    """The model's admitted traffic this cycle, and the requests waiting at its entry. A variant at zero pods
    takes no traffic: it is left out rather than making the whole model's demand unknown for its siblings.

    vLLM counts requests when they finish (``request_success_total``), not when they arrive: the admitted arrival
    rate is read as the entry's completion rate (a prefill finishes within seconds of its arrival), and what
    arrived but has not finished is the waiting queue, which :func:`_demand` adds on top."""
    serving = [o for o in model_obs if not _serves_nothing(o)]
    entry, exit_ = _entry_and_exit(serving, lambda o: o.spec.role)
    if not entry or not all(_fresh(o.signals) for o in entry):
        return MixObservation(None, None, None), 0.0  # unknown: never read as zero demand
    admitted = _sum_known([o.signals.completions_per_s for o in entry])
    waiting = sum(o.signals.waiting or 0.0 for o in entry)
    prompt = _weighted_mean([(_tokens_mean(o.signals, prompt=True), o.signals.completions_per_s) for o in entry])
    output = _weighted_mean([(_tokens_mean(o.signals, prompt=False), o.signals.completions_per_s)
                             for o in exit_ if _fresh(o.signals)])
    return MixObservation(admitted, prompt, output), waiting


def _window_ratio(state: PlannerState, model: str, *, now: float, config: PlannerConfig) -> float | None:
    """The admission ratio the observed rate's window was admitted at: the time-weighted mean of the ratios in
    force over ``[now - rate_window_s, now]`` (1 before the first one known), else the last cycle's."""
    history = state.admission_history.get(model)
    if not history:
        return state.admission_ratios.get(model)
    start = now - config.rate_window_s
    total = 0.0
    covered = start
    in_force = 1.0
    for at, ratio in history:
        if at > covered:
            end = min(at, now)
            total += in_force * (end - covered)
            covered = end
        in_force = ratio
    if now > covered:
        total += in_force * (now - covered)
    return total / config.rate_window_s if config.rate_window_s > 0 else in_force


def _remember_ratios(history: Mapping[str, tuple[tuple[float, float], ...]], ratios: Mapping[str, float], *,
                     now: float, config: PlannerConfig) -> dict[str, tuple[tuple[float, float], ...]]:
    """Each model's ratio history with this cycle's appended, keeping the one in force at the window's start."""
    out = {}
    for model, ratio in ratios.items():
        kept = [(t, r) for t, r in history.get(model, ()) if t < now]
        older = [i for i, (t, _) in enumerate(kept) if t <= now - config.rate_window_s]
        if older:
            kept = kept[older[-1]:]
        out[model] = (*kept, (now, ratio))
    return out


def _arrivals(observed: MixObservation, *, ratio: float | None, config: PlannerConfig) -> MixObservation:
    """The observed (admitted) rate scaled back to arrivals by last cycle's admission ratio."""
    if observed.arrival_rate is None or ratio is None or ratio >= 1.0 or not config.admission_enforced:
        return observed
    return replace(observed, arrival_rate=observed.arrival_rate / max(ratio, config.min_admission_ratio))


DEFAULT_PROMPT_SPREAD = 2.0
"""Prompt p90/mean assumed while none is observed (a chat mix's)."""


def _mix_level(model_obs: Sequence[VariantObservation], observed: MixObservation, *, previous: MixLevel | None,
               now: float, config: PlannerConfig) -> MixLevel | None:
    """This window's mix folded into the smoothed one; the previous level when the window says nothing
    (idle or unknown), None before any window has."""
    mean_in, mean_out = observed.mean_input_tokens, observed.mean_output_tokens
    if not (mean_in and mean_out and mean_in > 0 and mean_out > 0):
        return previous
    p90s = [o.signals.prompt_tokens_p90 for o in model_obs
            if o.spec.role in (Role.PREFILL, Role.BOTH) and o.signals.prompt_tokens_p90]
    spread = max(1.0, max(p90s) / mean_in) if p90s else (previous.prompt_spread if previous else
                                                          DEFAULT_PROMPT_SPREAD)
    if previous is None:
        return MixLevel(mean_in, mean_out, spread, now)
    w = 1.0 - 0.5 ** (max(0.0, now - previous.at) / config.mix_halflife_s)
    return MixLevel(previous.mean_input_tokens + w * (mean_in - previous.mean_input_tokens),
                    previous.mean_output_tokens + w * (mean_out - previous.mean_output_tokens),
                    previous.prompt_spread + w * (spread - previous.prompt_spread), now)


def _lead_time(model_obs: Sequence[VariantObservation], profiles: Mapping[str, PerformanceProfile | None],
               config: PlannerConfig) -> float:
    """How far ahead capacity must be sized: the slowest start-up among the model's variants, plus a cycle.

    A start-up is the pod's; plus the GPU node's when nodes come on demand or the variant already has pods
    Pending for lack of GPUs (then the next replica waits for a node too). Capped at the forecast's reach."""
    starts = []
    for o in model_obs:
        profile = profiles.get(str(o.spec.ref))
        if profile is None:
            continue
        needs_node = config.nodes_on_demand or (o.replicas is not None and o.replicas.unschedulable > 0)
        starts.append(profile.startup_s + (profile.node_startup_s if needs_node else 0.0))
    lead = (max(starts) if starts else 0.0) + config.forecast.interval_s
    return min(max(lead, config.forecast.interval_s), config.forecast.lead_time_s)


def _serving(o: VariantObservation) -> int:
    """Replicas that take requests now: the ready ones when Kubernetes says, else the current count."""
    return o.replicas.ready if o.replicas is not None else o.current


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
    # Pods still loading weights or Pending serve nothing yet: the pools are what is ready.
    pool_p = PrefillPool(replicas=max(1, sum(_serving(o) for o in prefill)), profile=p_prof,
                         queued_requests=queued, queued_tokens=queued * mix.mean_input_tokens)
    pool_d = DecodePool(replicas=max(1, sum(_serving(o) for o in decode)), profile=d_prof, running=running,
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
    """Steps 1-4 of the module docstring per model, then the fleet's allocation over every variant."""
    # A value that cannot be true is unknown from here on (autoscaler.core.screen), for every stage.
    observations = [replace(o, signals=screened(o.signals)) for o in observations]
    variant_profiles = {str(o.spec.ref): resolve_profile(o.spec, profiles, policy) for o in observations}
    planned, conditions = _plan_models(observations, state=state, variant_profiles=variant_profiles, policy=policy,
                                       config=config, now=now)
    capacity = {ref: rate for p in planned.values() for ref, rate in p.capacity.items()}
    fleet = decide_fleet(variants=_fleet_inputs(observations, variant_profiles, state=state, capacity=capacity),
                         demands={m: p.demand for m, p in planned.items() if p.demand is not None},
                         policy=policy, now=now,
                         predictive_floors={ref: f for p in planned.values() for ref, f in p.floors.items()},
                         lead_times={m: p.ready_hold_s for m, p in planned.items() if p.ready_hold_s > 0})
    outlooks = {m: _with_unserved(p.outlook, fleet.unserved_rate(m)) for m, p in planned.items()}
    new_state = _next_state(state, planned, outlooks, fleet, live={o.spec.ref for o in observations}, now=now,
                            config=config)
    return Plan(fleet.decisions, outlooks, tuple(conditions) + fleet.conditions, fleet), new_state


def _plan_models(observations: Sequence[VariantObservation], *, state: PlannerState,
                 variant_profiles: Mapping[str, PerformanceProfile | None], policy: PolicySet,
                 config: PlannerConfig, now: float) -> tuple[dict[str, _ModelPlan], list[Condition]]:
    """Each model's plan; a model whose numbers fail is left out (its variants are decided reactively this
    cycle, its forecaster and mix keep last cycle's state) with a condition saying so."""
    by_model: dict[str, list[VariantObservation]] = defaultdict(list)
    for o in observations:
        by_model[o.spec.model].append(o)
    planned: dict[str, _ModelPlan] = {}
    conditions: list[Condition] = []
    for model, obs in by_model.items():
        try:
            planned[model] = _plan_model(model, obs, state=state, variant_profiles=variant_profiles, policy=policy,
                                         config=config, now=now)
        except (ValueError, ArithmeticError) as exc:  # one model's numbers must not stop the others
            conditions.append(Condition(Reason.SIGNALS_INVALID, model,
                                        f"planning failed ({type(exc).__name__}: {exc}): decided reactively"))
    return planned, conditions


def _fleet_inputs(observations: Sequence[VariantObservation],
                  variant_profiles: Mapping[str, PerformanceProfile | None], *, state: PlannerState,
                  capacity: Mapping[VariantRef, float | None]) -> list[VariantInput]:
    """What the fleet allocation needs of each variant: its observation, history, capacity and price."""
    inputs = []
    for o in observations:
        profile = variant_profiles[str(o.spec.ref)]
        inputs.append(VariantInput(
            spec=o.spec, signals=o.signals, current=o.current, history=state.histories.get(o.spec.ref, ()),
            replicas=o.replicas, last_scaled_at=o.last_scaled_at, capacity_rps=capacity.get(o.spec.ref),
            gpus_per_replica=o.spec.gpus(profile.gpus_per_replica if profile else None),
            cost_per_replica_hour=_replica_price(o.spec, profile),
        ))
    return inputs


def _next_state(state: PlannerState, planned: Mapping[str, _ModelPlan], outlooks: Mapping[str, ModelOutlook],
                fleet: FleetDecision, *, live: set[VariantRef], now: float, config: PlannerConfig) -> PlannerState:
    """Last cycle's state with each planned model's parts replaced (a model that failed keeps its own)."""
    trims = dict(state.capacity_trims)
    for p in planned.values():
        trims.update(p.trims)
    return PlannerState(
        mixes={**state.mixes, **{m: p.mix for m, p in planned.items()}},
        histories=dict(fleet.histories),
        admission_ratios={m: o.admission_ratio for m, o in outlooks.items() if o.admission_ratio < 1.0},
        mix_levels={**state.mix_levels, **{m: p.level for m, p in planned.items() if p.level is not None}},
        demand_history={**state.demand_history, **{m: p.recent for m, p in planned.items() if p.recent is not None}},
        sized_history={**state.sized_history,
                       **{m: p.sized_recent for m, p in planned.items() if p.sized_recent is not None}},
        admission_history={**state.admission_history, **_remember_ratios(
            state.admission_history, {m: o.admission_ratio for m, o in outlooks.items()}, now=now, config=config)},
        capacity_trims={r: t for r, t in trims.items() if r in live},
    )


@dataclass(frozen=True, slots=True)
class _ModelPlan:
    """One model's part of a cycle's plan, applied to the planner's state only when all of it was computed."""

    mix: MixState
    level: MixLevel | None
    recent: tuple[tuple[float, float], ...] | None
    demand: float | None  # None: no predictive sizing this cycle (unknown demand, or predictive off)
    capacity: dict[VariantRef, float | None]
    floors: dict[VariantRef, Prediction]
    outlook: ModelOutlook
    trims: dict[VariantRef, float]  # the SLO feedback's capacity trims of this model's variants
    ready_hold_s: float = 0.0  # how long the fleet holds this model's ready replicas before a scale-down
    sized_recent: tuple[tuple[float, float], ...] | None = None  # (time, demand sized for), a lead time of it


def _plan_model(model: str, obs: Sequence[VariantObservation], *, state: PlannerState,
                variant_profiles: Mapping[str, PerformanceProfile | None], policy: PolicySet,
                config: PlannerConfig, now: float) -> _ModelPlan:
    """Steps 1-4 of the module docstring for one model."""
    # 1. observe: the admitted traffic, back to arrivals, into the forecaster (which follows the smoothed mix).
    admitted, waiting = _observe(obs)
    level = _mix_level(obs, admitted, previous=state.mix_levels.get(model), now=now, config=config)
    observed = _arrivals(admitted, ratio=_window_ratio(state, model, now=now, config=config), config=config)
    if level is not None and level.at == now:
        observed = replace(observed, mean_input_tokens=level.mean_input_tokens,
                           mean_output_tokens=level.mean_output_tokens)
    mix_state, forecast = update_mix(state.mixes.get(model) or new_mix(config.forecast), observation=observed,
                                     now=now, config=config.forecast)
    # 2. size: the forecast's upper quantile over the lead time plus the backlog, once a rise has held.
    lead = _lead_time(obs, variant_profiles, config)
    demand, method = _demand(observed, forecast, waiting=waiting, lead_s=lead, config=config)
    recent, sized_recent, hold = None, None, 0.0
    if demand is not None:
        recent, demand = _confirmed(state.demand_history.get(model, ()), demand, now=now,
                                    window_s=min(config.rise_confirm_max_s, config.rise_confirm_share * lead))
        sized_recent, hold = _ready_hold(state.sized_history.get(model, ()), demand, now=now, lead_s=lead,
                                         config=config)
    mean_in = _known(forecast.mean_input_tokens, level.mean_input_tokens if level else None, lead)
    mean_out = _known(forecast.mean_output_tokens, level.mean_output_tokens if level else None, lead)
    # Each variant's SLO, field by field: its VariantAutoscaling's, the model's policy, the settings'.
    slos = {o.spec.ref: policy.slo_for(o.spec, config.default_slo) for o in obs}
    capacity: dict[VariantRef, float | None] = {}
    floors: dict[VariantRef, Prediction] = {}
    trims: dict[VariantRef, float] = {}
    admission = None
    sized = None
    if config.predictive and demand is not None and mean_in and mean_out:
        sized = demand
        # 3. price each variant's replica for the mix under the SLO, trimmed by the measured quantiles where the
        # model said the pool had room (a breach under more load than modelled is the demand's, see _overloaded).
        mix = _priced_mix(obs, demand=demand, mean_in=mean_in, mean_out=mean_out, level=level)
        modelled = _capacities(obs, variant_profiles, mix=mix, slos=slos)
        trims = update_trims(state.capacity_trims, {
            o.spec.ref: None if _overloaded(o, modelled.get(o.spec.ref), state.capacity_trims.get(o.spec.ref, 1.0))
            else measured_ratio(role=o.spec.role, signals=o.signals, ttft_s=slos[o.spec.ref].ttft_s,
                                itl_s=slos[o.spec.ref].itl_s, percentile=slos[o.spec.ref].percentile)
            for o in obs}, settings=config.slo_feedback)
        capacity = _trimmed(modelled, trims, config=config)
        # 4. admission: the ratio to admit (held to what the ready entry serves once its TTFT nears the target),
        # and a decode floor where committed load crosses the threshold.
        slo = _tightest(slos.values())
        admission = _admission(obs, variant_profiles,
                               AdmissionMix(arrival_rate=observed.arrival_rate or demand,
                                            mean_input_tokens=mean_in, mean_output_tokens=mean_out),
                               slo, config)
        if admission is not None:
            admission = _within_serving_capacity(admission, obs, capacity, arrivals=observed.arrival_rate or demand,
                                                 waiting=waiting, slo=slo, config=config)
        floors = _decode_floor(obs, admission)
    outlook = ModelOutlook(model=model, observed_rps=observed.arrival_rate, demand_rps=demand,
                           forecast_method=method, mean_input_tokens=mean_in, mean_output_tokens=mean_out,
                           admission=admission, horizon_s=lead,
                           forecast_error=_forecast_error(forecast.arrival_rate, method))
    return _ModelPlan(mix_state, level, recent, sized, capacity, floors, outlook, trims,
                      hold if sized is not None else 0.0, sized_recent)


def _tightest(slos: Iterable[SloTargets]) -> SloTargets:
    """One SLO for a model whose variants set different ones (the gateway admits per model): each target at its
    strictest."""
    slos = list(slos)
    return SloTargets(ttft_s=min(s.ttft_s for s in slos), itl_s=min(s.itl_s for s in slos),
                      percentile=max(s.percentile for s in slos))


def _replica_price(spec: VariantSpec, profile: PerformanceProfile | None) -> float:
    """One replica's $/hour before the policy's GPU prices: the VariantAutoscaling's ``costPerHour``, else the
    profile's list price per GPU times the variant's GPUs."""
    if spec.cost_per_hour is not None:
        return spec.cost_per_hour
    if profile is None:
        return 0.0
    return profile.cost_per_gpu_hour * spec.gpus(profile.gpus_per_replica)


def _priced_mix(obs: Sequence[VariantObservation], *, demand: float, mean_in: float, mean_out: float,
                level: MixLevel | None) -> TrafficMix:
    """The mix capacity is priced for: prompts less what the prefix cache skips, their spread, the outputs."""
    hit = max((o.signals.prefix_cache_hit_ratio or 0.0 for o in obs), default=0.0)
    spread = level.prompt_spread if level else DEFAULT_PROMPT_SPREAD
    # Even a full prefix-cache hit computes the last prompt token (vLLM recomputes it for the logits).
    return TrafficMix(mean_input_tokens=max(mean_in * (1 - hit), 1.0), p90_input_tokens=mean_in * spread,
                      mean_output_tokens=max(mean_out, 1.0), request_rate_rps=demand)


def _capacities(obs: Sequence[VariantObservation], variant_profiles: Mapping[str, PerformanceProfile | None], *,
                mix: TrafficMix, slos: Mapping[VariantRef, SloTargets]) -> dict[VariantRef, float | None]:
    """Each variant's modelled replica rate within its SLO, before any trim (None where the SLO cannot be met);
    no profile, no entry."""
    capacity: dict[VariantRef, float | None] = {}
    for o in obs:
        profile = variant_profiles[str(o.spec.ref)]
        if profile is None:
            continue
        est = estimate_capacity(profile=profile, role=o.spec.role, mix=mix, slo=slos[o.spec.ref])
        capacity[o.spec.ref] = est.max_rate_rps if est.feasible and est.max_rate_rps > 0 else None
    return capacity


def _trimmed(modelled: Mapping[VariantRef, float | None], trims: Mapping[VariantRef, float], *,
             config: PlannerConfig) -> dict[VariantRef, float | None]:
    """The modelled replica rates times this cycle's SLO trims (when the feedback is on)."""
    return {ref: rate * (trims.get(ref, 1.0) if config.slo_feedback.enabled else 1.0) if rate is not None else None
            for ref, rate in modelled.items()}


def _decode_floor(obs: Sequence[VariantObservation], admission: AdmissionDecision | None) -> dict[VariantRef,
                                                                                                  Prediction]:
    """The decode variant's floor when the committed decode load crosses the threshold in time (one decode
    variant only: the replicas needed are the pool's)."""
    decode = [o for o in obs if o.spec.role is Role.DECODE]
    if admission is None or not admission.prescale_decode or len(decode) != 1:
        return {}
    return {decode[0].spec.ref: Prediction(
        replicas=admission.decode_replicas_needed, reason=Reason.FORECAST,
        message=f"decode load at admission horizon {admission.decode_load_at_horizon:.2f}")}


def _overloaded(o: VariantObservation, per_replica: float | None, trim: float) -> bool:
    """Did the variant take more requests than its serving replicas are modelled (trim included) to serve within
    the SLO? Then a breach is what the model predicts for that load, not an error in it: sizing already follows
    the demand, and trimming the capacity too would count the overload twice (on the 70B Azure load x8 the trim
    fell to its floor in a rise the lead time could not meet, and doubled the replicas ordered after it)."""
    rate = o.signals.completions_per_s
    if per_replica is None or rate is None or not math.isfinite(rate):
        return False
    return rate > _serving(o) * per_replica * trim


def _within_serving_capacity(admission: AdmissionDecision, obs: Sequence[VariantObservation],
                             capacity: Mapping[VariantRef, float | None], *, arrivals: float, waiting: float,
                             slo: SloTargets, config: PlannerConfig) -> AdmissionDecision:
    """Early rejection held to what the ready entry replicas serve within the SLO, once the entry shows its limit.

    The admission ratio's own prefill budget counts a replica busy 100% of the time on mean prompts; the capacity
    model's rate (prompt spread, SLO percentile and the SLO trim included) is what a replica serves within the SLO.
    Admitting the difference kept the surge scenario's queue swinging (TTFT p90 1-10 s for the admitted: fewer than
    half of them met it). Only where the entry's predicted or measured TTFT nears the target, so that a model that
    underrates the engine (the true engine 0.7x the profile) does not reject work the pods are serving in time.
    Held also while requests were being rejected (so that the ratio would not swing as the queue empties), it
    rejected more than the pods could serve: 88.4% against 92.1% on the 70B Azure load x8, 54.1% against 56.2% in
    the surge (the model rates a replica below what the engine serves at the SLO's percentile)."""
    entry = [o for o in obs if o.spec.role in (Role.PREFILL, Role.BOTH)]
    if not entry or arrivals <= 0 or any(capacity.get(o.spec.ref) is None for o in entry):
        return admission
    near = config.slo_feedback.near
    measured = [measured_ratio(role=o.spec.role, signals=o.signals, ttft_s=slo.ttft_s, itl_s=slo.itl_s,
                               percentile=slo.percentile) for o in entry]
    if admission.prefill_load <= near and all(m is None or m[0] <= near for m in measured):
        return admission
    serving = sum(_serving(o) * (capacity[o.spec.ref] or 0.0) for o in entry)
    interval = config.admission.interval_s
    cap = min(1.0, max(0.0, (serving * interval - waiting) / (arrivals * interval)))
    if cap >= admission.admission_ratio:
        return admission
    return replace(admission, admission_ratio=cap,
                   reason=f"{admission.reason}; admitted {cap:.2f}: {serving:.1f} req/s ready within the SLO")


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


def _confirmed(history: tuple[tuple[float, float], ...], demand: float, *, now: float,
               window_s: float) -> tuple[tuple[tuple[float, float], ...], float]:
    """The history with this cycle's demand, and the demand to size for: the lowest over the window (a rise
    counts once it has held that long; a fall counts at once, the scale-down window holds it back)."""
    kept = tuple((t, d) for t, d in history if now - window_s - 1e-9 <= t < now) + ((now, demand),)
    return kept, min(d for _, d in kept)


def _ready_hold(sized: tuple[tuple[float, float], ...], demand: float, *, now: float, lead_s: float,
                config: PlannerConfig) -> tuple[tuple[tuple[float, float], ...], float]:
    """The sized-demand history with this cycle's (kept a lead time), and how long ready replicas are held
    before a scale-down: the lead time if the demand sized for fell by more than ``ready_hold_fall`` from an
    earlier high within the last lead time (a dip: a replica released in it and needed again is back a lead time
    later, and the recommendations of the dip, not the demand's recovery, are what the scale-down window
    sees), else 0 (the scale-down window alone; a mix that needs fewer replicas for a steady or rising demand
    is no dip). Outside a dip a variant's recommendations are kept only for the scale-down window (and the newest
    one before it), so when a dip starts the hold sees those, not the whole lead time's: a demand that fell
    slowly for longer than the window is held at less than its high."""
    kept = tuple((t, d) for t, d in sized if now - lead_s - 1e-9 <= t < now) + ((now, demand),)
    peak, fell = 0.0, False
    for _, d in kept:
        fell = fell or d < (1.0 - config.ready_hold_fall) * peak
        peak = max(peak, d)
    return kept, lead_s if fell else 0.0


def _known(forecast: SeriesForecast | None, level: float | None, lead_s: float) -> float | None:
    """The smoothed mix's forecast at the lead time, else its level."""
    if forecast is not None:
        mean, _ = forecast.at(lead_s)
        if math.isfinite(mean) and mean > 0:
            return mean
    return level if level and level > 0 else None


def _forecast_error(forecast: SeriesForecast | None, method: str | None) -> float | None:
    """The back-test's mean absolute percentage error of the arrival-rate method in use; None until scored."""
    if forecast is None or method != forecast.method.value:
        return None
    score = next((s for s in forecast.scores if s.method is forecast.method), None)
    return score.mape if score is not None and math.isfinite(score.mape) else None


def _with_unserved(outlook: ModelOutlook, unserved: float) -> ModelOutlook:
    if unserved <= 0:
        return outlook
    return replace(outlook, unserved_rps=unserved)


class TrafficHistory(Protocol):
    """One variant's recent traffic on a time grid (``autoscaler.signals.history.HistorySeries`` is one)."""

    @property
    def timestamps(self) -> tuple[float, ...]: ...
    @property
    def completions_per_s(self) -> tuple[float | None, ...]: ...
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
        points = []
        for i in range(len(timestamps)):
            rate = _sum_known([h.completions_per_s[i] for _, h in entry])  # admitted arrivals, as _observe
            prompt = _weighted_mean([(h.prompt_tokens_mean[i], h.completions_per_s[i]) for _, h in entry])
            output = _weighted_mean([(h.generation_tokens_mean[i], h.completions_per_s[i]) for _, h in exit_])
            points.append(MixObservation(rate, prompt, output))
        mix = mixes.get(model) or new_mix(config.forecast)
        # The older past is taken in at once (what seasonal methods need: yesterday at this hour); only the
        # recent past is replayed cycle by cycle, so the back-test has scored the methods when the loop starts.
        # Replaying two days at a 15 s cycle would take minutes (each cycle predicts with every method).
        old = _older_than(timestamps, config.warm_replay_s) if mix.arrival_rate.last_time_s is None else 0
        if old:
            mix = prime_mix(mix, rates=_series(points[:old], "arrival_rate"),
                            inputs=_series(points[:old], "mean_input_tokens"),
                            outputs=_series(points[:old], "mean_output_tokens"), end_s=timestamps[old - 1],
                            config=config.forecast)
        seen = mix.arrival_rate.last_time_s is not None
        for t, point in zip(timestamps[old:], points[old:], strict=True):
            seen = seen or any(v is not None for v in (point.arrival_rate, point.mean_input_tokens,
                                                       point.mean_output_tokens))
            if not seen:
                continue  # before the first known point (no series yet): nothing to learn, and each update costs
            mix, _ = update_mix(mix, observation=point, now=t, config=config.forecast)
        mixes[model] = mix
    return replace(state, mixes=mixes)


def _older_than(timestamps: Sequence[float], replay_s: float) -> int:
    """How many leading points lie further than ``replay_s`` before the last one."""
    if not timestamps:
        return 0
    cut = timestamps[-1] - replay_s
    return sum(1 for t in timestamps if t < cut)


def _series(points: Sequence[MixObservation], name: str) -> np.ndarray:
    return np.array([math.nan if getattr(p, name) is None else float(getattr(p, name)) for p in points])
