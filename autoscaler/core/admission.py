"""Admission control over one model's prefill and decode pools: prediction-based early rejection.

Source: Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST'25 (arXiv 2407.00079), section 7.
Load is measured against the SLOs: prefill load = predicted TTFT / TTFT SLO (for a request arriving now), decode
load = predicted time between tokens / TBT SLO. Three policies:

- ``REACTIVE``: admit on prefill load alone; a request whose decode would break the TBT SLO is rejected when it
  reaches the decode pool (the paper's baseline) and its prefill is wasted.
- ``EARLY``: also reject at arrival while the decode pool is loaded *now*. Because a request admitted now only
  reaches decode one TTFT later, this makes prefill and decode load swing in anti-phase (the paper's Fig. 9).
- ``PREDICTIVE``: reject at arrival when the decode load is predicted to be too high *at the moment this request
  would enter decode*: requests now in prefill are added as they finish, running ones removed as they finish.
  As in the paper's system-level prediction, each request is assumed to decode for the same time
  ``t_d = mean output tokens x current step time``, so of the ``B`` running sequences ``B * min(1, tau / t_d)``
  finish within ``tau``, and of the ``Q`` requests in prefill (finishing spread evenly over the time the
  prefill pool needs to drain them) those that are still decoding at ``tau`` are added.

The result per model also carries an admission ratio (share of the next interval's arrivals the pools can take
while both loads stay under the threshold) and whether the decode pool should be scaled ahead of load it has
already committed to. Pure: values in, values out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "AdmissionConfig",
    "AdmissionDecision",
    "DecodeOutlook",
    "DecodePool",
    "LatencySLO",
    "PrefillPool",
    "RejectionPolicy",
    "TrafficMix",
    "admit_to_decode",
    "assess_admission",
    "decode_capacity",
    "decode_step_time",
    "predict_decode",
    "predicted_ttft",
]


class RejectionPolicy(StrEnum):
    REACTIVE = "reactive"  # reject at decode time (after prefill was spent)
    EARLY = "early"  # reject at arrival on the current decode load
    PREDICTIVE = "predictive"  # reject at arrival on the decode load predicted for when the request gets there


def _finite_non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class LatencySLO:
    ttft_s: float  # time to first token, seconds
    tbt_s: float  # time between tokens, seconds

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tbt_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"LatencySLO.{name} must be a finite number > 0, got {value}")


@dataclass(frozen=True, slots=True)
class PrefillPool:
    """The prefill variant of a model now. Totals are over the pool's replicas."""

    replicas: int
    profile: PerformanceProfile
    queued_requests: float = 0.0  # waiting or being prefilled
    queued_tokens: float = 0.0  # prompt tokens those still need prefilled
    backlog_s: tuple[float, ...] = ()
    """Seconds of prefill work queued on each replica, when the caller knows it (a router or simulator does).
    Empty: the queue is assumed spread evenly and its length estimated from the totals."""

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"PrefillPool.replicas must be >= 0, got {self.replicas}")
        _finite_non_negative("PrefillPool", queued_requests=self.queued_requests, queued_tokens=self.queued_tokens)
        if self.backlog_s and len(self.backlog_s) != self.replicas:
            raise ValueError(f"PrefillPool.backlog_s needs one entry per replica ({self.replicas}), "
                             f"got {len(self.backlog_s)}")
        for value in self.backlog_s:
            _finite_non_negative("PrefillPool", backlog_s=value)


@dataclass(frozen=True, slots=True)
class DecodePool:
    """The decode variant of a model now. Totals are over the pool's replicas (a router balances them)."""

    replicas: int
    profile: PerformanceProfile
    running: float = 0.0  # sequences decoding
    mean_context_tokens: float = 0.0  # mean KV context of those sequences

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"DecodePool.replicas must be >= 0, got {self.replicas}")
        _finite_non_negative("DecodePool", running=self.running, mean_context_tokens=self.mean_context_tokens)


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """Arrivals and their shape, e.g. the forecaster's upper quantile of the rate and its mean token counts."""

    arrival_rate: float  # requests per second
    mean_input_tokens: float
    mean_output_tokens: float

    def __post_init__(self) -> None:
        _finite_non_negative("TrafficMix", arrival_rate=self.arrival_rate, mean_input_tokens=self.mean_input_tokens,
                             mean_output_tokens=self.mean_output_tokens)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    policy: RejectionPolicy = RejectionPolicy.PREDICTIVE
    reject_above: float = 1.0
    """Load (predicted latency / SLO) above which new requests are rejected; 1.0 rejects exactly at the SLO."""
    interval_s: float = 30.0
    """Span the admission ratio is for: one control cycle."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reject_above) and self.reject_above > 0):
            raise ValueError(f"AdmissionConfig.reject_above must be a finite number > 0, got {self.reject_above}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"AdmissionConfig.interval_s must be a finite number > 0, got {self.interval_s}")


@dataclass(frozen=True, slots=True)
class DecodeOutlook:
    """The decode pool predicted ``horizon_s`` from now (Mooncake's system-level model)."""

    horizon_s: float
    running: float  # sequences decoding then
    mean_context_tokens: float
    decode_time_s: float  # t_d, the uniform decode duration assumed per request
    finished: float  # running now that will have finished
    entered: float  # in prefill now that will be decoding then


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    policy: RejectionPolicy
    prefill_load: float  # predicted TTFT of a request arriving now / TTFT SLO
    decode_load_now: float  # current step time / TBT SLO
    decode_load_at_horizon: float  # predicted step time when a request arriving now enters decode / TBT SLO
    horizon_s: float  # when that is: the predicted TTFT, seconds from now
    predicted_running: float  # decode sequences at the horizon
    decode_capacity: float  # sequences the decode pool holds at the threshold (the rejection point)
    reject_threshold: float  # load above which requests are rejected
    admit: bool  # is a request arriving now admitted (under this policy)
    admission_ratio: float  # share of the next interval's expected arrivals to admit, 0..1
    prescale_decode: bool  # decode load crosses the threshold within the horizon: scale decode ahead of it
    decode_replicas_needed: int  # decode replicas that keep the committed load under the threshold
    reason: str


def predicted_ttft(pool: PrefillPool, *, input_tokens: float) -> float:
    """Queue wait on the least-loaded replica plus this request's own prefill; inf with no replicas."""
    if pool.replicas == 0:
        return math.inf
    return _prefill_wait(pool) + pool.profile.prefill_time(input_tokens)


def _prefill_wait(pool: PrefillPool) -> float:
    if pool.backlog_s:
        return min(pool.backlog_s)
    if pool.queued_requests <= 0:
        return 0.0
    per_replica = pool.queued_requests / pool.replicas
    return per_replica * pool.profile.prefill_time(pool.queued_tokens / pool.queued_requests)


def _prefill_drain(pool: PrefillPool) -> float:
    """Seconds until everything queued now has been prefilled."""
    if pool.backlog_s:
        return max(pool.backlog_s)
    return _prefill_wait(pool) if pool.replicas else math.inf


def decode_step_time(pool: DecodePool, *, running: float, context_tokens: float) -> float:
    """Seconds per decode step with ``running`` sequences spread over the replicas (inf with none to run them)."""
    if running <= 0:
        return pool.profile.decode_step_time(1.0, context_tokens) if pool.replicas else math.inf
    if pool.replicas == 0:
        return math.inf
    return pool.profile.decode_step_time(running / pool.replicas, context_tokens)


def _seats_per_replica(profile: PerformanceProfile, *, slo: LatencySLO, threshold: float,
                       context_tokens: float) -> float:
    budget = threshold * slo.tbt_s - profile.decode_alpha
    if budget <= 0:
        return 0.0
    per_sequence = profile.decode_beta + profile.decode_gamma * context_tokens
    seats = budget / per_sequence if per_sequence > 0 else math.inf
    seats = min(seats, float(profile.max_num_seqs))
    if context_tokens > 0:
        seats = min(seats, profile.kv_capacity_tokens / context_tokens)
    return seats


def decode_capacity(pool: DecodePool, *, slo: LatencySLO, threshold: float, context_tokens: float) -> float:
    """Sequences the pool can decode with the step time at ``threshold x TBT SLO`` (and within KV and seat limits)."""
    return pool.replicas * _seats_per_replica(pool.profile, slo=slo, threshold=threshold,
                                              context_tokens=context_tokens)


def predict_decode(*, prefill: PrefillPool, decode: DecodePool, mix: TrafficMix, horizon_s: float) -> DecodeOutlook:
    """Decode pool ``horizon_s`` from now: running ones that finish leave, requests now in prefill arrive.

    Every request decodes for ``t_d = mix.mean_output_tokens x current step time`` (Mooncake §7.4).
    Requests in prefill finish evenly over the time the pool needs to drain them; one that entered decode more
    than ``t_d`` before the horizon has already left it again.
    """
    context = decode.mean_context_tokens if decode.running > 0 else mix.mean_input_tokens
    step = decode_step_time(decode, running=decode.running, context_tokens=context)
    t_d = mix.mean_output_tokens * step
    tau = max(0.0, horizon_s)
    finished = decode.running if t_d <= tau else decode.running * (tau / t_d)
    drain = _prefill_drain(prefill)
    done = prefill.queued_requests if drain <= tau else prefill.queued_requests * (tau / drain)
    # entries spread over [0, min(tau, drain)]; those entering before tau - t_d have finished by tau
    span = min(tau, drain)
    still = 1.0 if span <= 0 or t_d >= span else t_d / span
    entered = done * still
    survivors = decode.running - finished
    running = survivors + entered
    mixed_context = ((survivors * decode.mean_context_tokens + entered * mix.mean_input_tokens) / running
                     if running > 0 else mix.mean_input_tokens)
    return DecodeOutlook(horizon_s=tau, running=running, mean_context_tokens=mixed_context, decode_time_s=t_d,
                         finished=finished, entered=entered)


def admit_to_decode(*, decode: DecodePool, slo: LatencySLO, context_tokens: float, threshold: float = 1.0) -> bool:
    """The decode-time check (all policies; the only one under ``REACTIVE``): does one more sequence keep the
    step time within ``threshold x TBT SLO``?"""
    running = decode.running + 1.0
    context = (decode.running * decode.mean_context_tokens + context_tokens) / running
    return decode_step_time(decode, running=running, context_tokens=context) <= threshold * slo.tbt_s


def _ratio(budget: float, arrivals: float) -> float:
    if arrivals <= 0:
        return 1.0 if budget > 0 else 0.0
    return min(1.0, max(0.0, budget / arrivals))


def assess_admission(*, prefill: PrefillPool, decode: DecodePool, mix: TrafficMix, slo: LatencySLO,
                     config: AdmissionConfig, input_tokens: float | None = None) -> AdmissionDecision:
    """Loads, admission and decode pre-scaling for one model under ``config.policy``.

    ``input_tokens`` is the prompt of the request being decided (default: the mix's mean); the loads reported
    leave it out, the ``admit`` check includes it (one more request in prefill and, later, in decode).
    """
    threshold = config.reject_above
    prompt = mix.mean_input_tokens if input_tokens is None else input_tokens
    ttft = predicted_ttft(prefill, input_tokens=prompt)
    prefill_load = ttft / slo.ttft_s

    context_now = decode.mean_context_tokens if decode.running > 0 else mix.mean_input_tokens
    step_now = decode_step_time(decode, running=decode.running, context_tokens=context_now)
    decode_load_now = step_now / slo.tbt_s if decode.running > 0 else 0.0
    outlook = predict_decode(prefill=prefill, decode=decode, mix=mix, horizon_s=ttft)
    step_then = decode_step_time(decode, running=outlook.running, context_tokens=outlook.mean_context_tokens)
    decode_load_then = step_then / slo.tbt_s if outlook.running > 0 else 0.0

    # the candidate request, one more sequence in decode
    with_candidate_now = decode_step_time(decode, running=decode.running + 1.0, context_tokens=context_now)
    with_candidate_then = decode_step_time(
        decode, running=outlook.running + 1.0,
        context_tokens=(outlook.running * outlook.mean_context_tokens + prompt) / (outlook.running + 1.0))
    prefill_ok = prefill_load <= threshold
    if config.policy is RejectionPolicy.REACTIVE:
        decode_ok, reference = True, None
    elif config.policy is RejectionPolicy.EARLY:
        decode_ok, reference = with_candidate_now / slo.tbt_s <= threshold, decode.running
    else:
        decode_ok, reference = with_candidate_then / slo.tbt_s <= threshold, outlook.running
    admit = prefill_ok and decode_ok

    # Admission ratio over the next interval: what each pool can take of the expected arrivals.
    interval = config.interval_s
    arrivals = mix.arrival_rate * interval
    own_prefill = prefill.profile.prefill_time(mix.mean_input_tokens)
    if prefill.replicas == 0 or own_prefill <= 0:
        prefill_budget = 0.0 if prefill.replicas == 0 else math.inf
    else:
        max_wait = threshold * slo.ttft_s - own_prefill
        prefill_budget = prefill.replicas * (max_wait - _prefill_wait(prefill) + interval) / own_prefill
    ratio = _ratio(prefill_budget, arrivals)
    context = max(outlook.mean_context_tokens, context_now)
    seats = _seats_per_replica(decode.profile, slo=slo, threshold=threshold, context_tokens=context)
    capacity = decode.replicas * seats
    if reference is not None:
        t_d = outlook.decode_time_s
        departures = reference if t_d <= interval else reference * interval / t_d
        ratio = min(ratio, _ratio(capacity - reference + departures, arrivals))

    committed = max(decode.running, outlook.running)
    prescale = max(decode_load_now, decode_load_then) > threshold
    needed = math.ceil(committed / seats - 1e-9) if seats > 0 else decode.replicas
    reason = _reason(admit=admit, prefill_ok=prefill_ok, policy=config.policy, prefill_load=prefill_load,
                     decode_now=decode_load_now, decode_then=decode_load_then, horizon_s=outlook.horizon_s)
    return AdmissionDecision(
        policy=config.policy,
        prefill_load=prefill_load,
        decode_load_now=decode_load_now,
        decode_load_at_horizon=decode_load_then,
        horizon_s=outlook.horizon_s,
        predicted_running=outlook.running,
        decode_capacity=capacity,
        reject_threshold=threshold,
        admit=admit,
        admission_ratio=ratio,
        prescale_decode=prescale,
        decode_replicas_needed=max(needed, 0),
        reason=reason,
    )


def _reason(*, admit: bool, prefill_ok: bool, policy: RejectionPolicy, prefill_load: float, decode_now: float,
            decode_then: float, horizon_s: float) -> str:
    loads = (f"prefill load {prefill_load:.2f}, decode load {decode_now:.2f} now and {decode_then:.2f} "
             f"in {horizon_s:.1f}s")
    if admit:
        return f"admit: {loads}"
    if not prefill_ok:
        return f"reject: TTFT over SLO ({loads})"
    when = "now" if policy is RejectionPolicy.EARLY else "when it would reach decode"
    return f"reject: decode over TBT SLO {when} ({loads})"
