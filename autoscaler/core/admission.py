"""Admission control over one model's prefill and decode pools: prediction-based early rejection.

Source: Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST'25 (arXiv 2407.00079), section 7.
Load is measured against the SLOs: prefill load = predicted TTFT / TTFT SLO (for a request arriving now); decode
load = predicted time between tokens / TBT SLO, and here also the share of the KV cache and of the scheduler's
sequence slots in use, whichever is highest (a decode instance that cannot hold a request's KV cannot take it,
however fast its steps are; with 10k-token contexts the KV cache binds long before the TBT SLO does). Policies:

- ``REACTIVE``: admit on prefill load alone; a request whose decode would break the TBT SLO or not fit the KV cache
  is rejected when it reaches the decode pool (the paper's baseline) and its prefill is wasted.
- ``EARLY``: also reject at arrival while the decode pool is loaded *now*. Because a request admitted now only
  reaches decode one TTFT later, this makes prefill and decode load swing in anti-phase (the paper's Fig. 9).
- ``PREDICTIVE``: reject at arrival when the decode load is predicted to be too high *at the moment this request
  would enter decode*: requests now in prefill are added as they finish (they are committed load), running ones
  removed as they finish.

How long a request decodes is not known when it is admitted. The paper (§7.4) assumes every request decodes for
the same ``t_d``; ``t_d = mean output tokens x current step time`` here. :class:`DepartureModel` picks how the
running batch drains: ``UNIFORM`` is the paper's assumption (ages spread evenly, so ``B * (1 - tau / t_d)`` are
left after ``tau``); ``EXPONENTIAL`` (the default) treats the remaining decode time as memoryless, leaving
``B * exp(-tau / t_d)``. Real output lengths are spread (Mooncake conversation trace: mean 343 tokens, coefficient of
variation 0.73), so part of today's batch outlives ``t_d`` by far; replayed per request (an earlier version of
``benchmarks/bench_early_rejection.py``), the predicted decode load missed the load a request met at entry by a
standard deviation of 0.066-0.085 with the exponential model against 0.081-0.091 with the paper's.

The one admission engine: the planner calls :func:`assess_admission` once per control cycle on pool totals and
exports its admission ratio; a gateway deciding per request, as Mooncake's Conductor does, calls the same function
with the request's prompt (``input_tokens``) on its live view of the pools and takes its ``admit``
(:mod:`autoscaler.sim.gateway` in the simulator). The research variants the benchmark compares per request (output
length spread, break-even at the decode door) live with the simulator, :mod:`autoscaler.sim.gateway_rules`. What the
prediction buys is measured in ``benchmarks/bench_early_rejection.py`` (Mooncake trace at 2x, KV- and TBT-bound
decode): Mooncake's rule alone damps early rejection's anti-phase swings and wastes no prefill but rejects more than
reactive rejection at the decode door, whose exact check serves smaller prompts first; the gateway's break-even rule
(prediction at arrival, a bounded wait at the door) rejects fewer than both where decode alone is tight (see that
file's docstring).

Besides the per-request decision the result carries an admission ratio (the share of the next interval's
arrivals the pools can take while both loads stay under the threshold; a gateway applies it per interval) and
whether the decode pool should be scaled ahead of load it has already committed to. Pure: values in, values out.
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
    "DepartureModel",
    "LatencySLO",
    "PrefillPool",
    "RejectionPolicy",
    "TrafficMix",
    "admit_to_decode",
    "assess_admission",
    "decode_capacity",
    "decode_load",
    "decode_step_time",
    "load_with_request",
    "predict_decode",
    "predicted_ttft",
    "prefill_seconds",
]


class RejectionPolicy(StrEnum):
    REACTIVE = "reactive"  # reject at decode time (after prefill was spent)
    EARLY = "early"  # reject at arrival on the current decode load
    PREDICTIVE = "predictive"  # reject at arrival on the decode load predicted for when the request gets there


class DepartureModel(StrEnum):
    UNIFORM = "uniform"  # Mooncake §7.4: every request decodes for exactly t_d
    EXPONENTIAL = "exponential"  # remaining decode time memoryless with mean t_d


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
    queued_context_tokens: float | None = None
    """Whole prompts of those requests (cached prefix included): the KV they bring to decode. None: the mix's
    mean prompt each. Admission selects (long prompts fail the TTFT check first), so the two can differ."""
    backlog_s: tuple[float, ...] = ()
    """Seconds of prefill work queued on each replica, when the caller knows it (a router or simulator does).
    Empty: the queue is assumed spread evenly and its length estimated from the totals."""

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"PrefillPool.replicas must be >= 0, got {self.replicas}")
        _finite_non_negative("PrefillPool", queued_requests=self.queued_requests, queued_tokens=self.queued_tokens)
        if self.queued_context_tokens is not None:
            _finite_non_negative("PrefillPool", queued_context_tokens=self.queued_context_tokens)
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
    mean_context_tokens: float = 0.0  # mean KV context of those sequences (prompt + tokens generated so far)

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"DecodePool.replicas must be >= 0, got {self.replicas}")
        _finite_non_negative("DecodePool", running=self.running, mean_context_tokens=self.mean_context_tokens)


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """Arrivals and their shape, e.g. the forecaster's upper quantile of the rate and its mean token counts."""

    arrival_rate: float  # requests per second
    mean_input_tokens: float  # prompt tokens, all of which sit in the KV cache at decode
    mean_output_tokens: float
    mean_cached_tokens: float = 0.0
    """Prompt tokens found in the prefix cache: not prefilled again (their attention still costs), but in KV."""

    def __post_init__(self) -> None:
        _finite_non_negative("TrafficMix", arrival_rate=self.arrival_rate, mean_input_tokens=self.mean_input_tokens,
                             mean_output_tokens=self.mean_output_tokens, mean_cached_tokens=self.mean_cached_tokens)
        if self.mean_cached_tokens > self.mean_input_tokens:
            raise ValueError(f"TrafficMix.mean_cached_tokens ({self.mean_cached_tokens}) must not exceed "
                             f"mean_input_tokens ({self.mean_input_tokens})")


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    policy: RejectionPolicy = RejectionPolicy.PREDICTIVE
    reject_above: float = 1.0
    """Load (predicted latency / SLO, or KV / seat share) above which new requests are rejected; 1.0 rejects
    exactly at the SLO."""
    interval_s: float = 30.0
    """Span the admission ratio is for: one control cycle (or a gateway's shorter update period)."""
    departures: DepartureModel = DepartureModel.EXPONENTIAL
    """How the running decode batch drains over the horizon (see the module docstring for why not the paper's)."""
    overcommit: float = 0.0
    """Decode load by which an arrival-time check may exceed ``reject_above`` and still admit: requests kept in
    prefill as a buffer, so that decode stays full when more of its batch finishes than predicted. The decode-time
    check still rejects what does not fit. 0: reject on the prediction alone."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reject_above) and self.reject_above > 0):
            raise ValueError(f"AdmissionConfig.reject_above must be a finite number > 0, got {self.reject_above}")
        if not (math.isfinite(self.overcommit) and self.overcommit >= 0):
            raise ValueError(f"AdmissionConfig.overcommit must be a finite number >= 0, got {self.overcommit}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"AdmissionConfig.interval_s must be a finite number > 0, got {self.interval_s}")


@dataclass(frozen=True, slots=True)
class DecodeOutlook:
    """The decode pool predicted ``horizon_s`` from now (Mooncake's system-level model)."""

    horizon_s: float
    running: float  # sequences decoding then
    mean_context_tokens: float
    decode_time_s: float  # t_d, the mean decode duration assumed per request
    finished: float  # running now that will have finished
    entered: float  # in prefill now that will be decoding then


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    policy: RejectionPolicy
    prefill_load: float  # predicted TTFT of a request arriving now / TTFT SLO
    decode_load_now: float  # max(step time / TBT SLO, KV share, seat share) now
    decode_load_at_horizon: float  # the same when a request arriving now enters decode
    horizon_s: float  # when that is: the predicted TTFT, seconds from now
    predicted_running: float  # decode sequences at the horizon
    decode_capacity: float  # sequences the decode pool holds at the threshold (the rejection point)
    reject_threshold: float  # load above which requests are rejected
    admit: bool  # is a request arriving now admitted (under this policy)
    admission_ratio: float  # share of the next interval's expected arrivals to admit, 0..1
    prescale_decode: bool  # decode load crosses the threshold within the horizon: scale decode ahead of it
    decode_replicas_needed: int  # decode replicas that keep the committed load under the threshold
    reason: str


def prefill_seconds(profile: PerformanceProfile, *, tokens: float, cached_tokens: float = 0.0) -> float:
    """Seconds to prefill ``tokens`` new prompt tokens behind a ``cached_tokens`` prefix from the cache.

    The profile's ``c * N^2`` term is causal attention over N tokens; new tokens also attend to the cached prefix,
    which adds ``2 * c * tokens * cached_tokens`` (the FLOPs of the ``tokens x cached`` block of the score matrix).
    """
    if tokens <= 0:
        return 0.0
    return profile.prefill_time(tokens) + 2.0 * profile.prefill_c * tokens * cached_tokens


def predicted_ttft(pool: PrefillPool, *, input_tokens: float, cached_tokens: float = 0.0) -> float:
    """Queue wait on the least-loaded replica plus this request's own prefill; inf with no replicas."""
    if pool.replicas == 0:
        return math.inf
    own = prefill_seconds(pool.profile, tokens=max(0.0, input_tokens - cached_tokens), cached_tokens=cached_tokens)
    return _prefill_wait(pool) + own


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


def _prefilled_by(pool: PrefillPool, horizon_s: float) -> float:
    """Requests now in prefill that will have finished by ``horizon_s``: each replica's share of the queue in
    proportion to its work, done in proportion to the time it has."""
    if pool.queued_requests <= 0:
        return 0.0
    if pool.backlog_s:
        total = sum(pool.backlog_s)
        if total <= 0:
            return pool.queued_requests
        return pool.queued_requests * sum(min(b, horizon_s) for b in pool.backlog_s) / total
    drain = _prefill_drain(pool)
    return pool.queued_requests if drain <= horizon_s else pool.queued_requests * horizon_s / drain


def decode_step_time(pool: DecodePool, *, running: float, context_tokens: float) -> float:
    """Seconds per decode step with ``running`` sequences spread over the replicas (inf with none to run them)."""
    if running <= 0:
        return pool.profile.decode_step_time(1.0, context_tokens) if pool.replicas else math.inf
    if pool.replicas == 0:
        return math.inf
    return pool.profile.decode_step_time(running / pool.replicas, context_tokens)


def decode_load(pool: DecodePool, *, slo: LatencySLO, running: float, context_tokens: float,
                kv_tokens: float | None = None) -> float:
    """Load of the decode pool holding ``running`` sequences of mean ``context_tokens``: the highest of step time /
    TBT SLO, KV cache share (``kv_tokens``, default ``running x context_tokens``) and scheduler seat share.
    0 when nothing runs; inf with sequences and no replicas."""
    if running <= 0:
        return 0.0
    if pool.replicas == 0:
        return math.inf
    profile = pool.profile
    kv = running * context_tokens if kv_tokens is None else kv_tokens
    tbt = decode_step_time(pool, running=running, context_tokens=context_tokens) / slo.tbt_s
    kv_share = kv / (pool.replicas * profile.kv_capacity_tokens)
    seat_share = running / (pool.replicas * profile.max_num_seqs)
    return max(tbt, kv_share, seat_share)


def _seats_per_replica(profile: PerformanceProfile, *, slo: LatencySLO, threshold: float,
                       context_tokens: float) -> float:
    budget = threshold * slo.tbt_s - profile.decode_alpha
    if budget <= 0:
        return 0.0
    per_sequence = profile.decode_beta + profile.decode_gamma * context_tokens
    seats = budget / per_sequence if per_sequence > 0 else math.inf
    seats = min(seats, threshold * profile.max_num_seqs)
    if context_tokens > 0:
        seats = min(seats, threshold * profile.kv_capacity_tokens / context_tokens)
    return seats


def decode_capacity(pool: DecodePool, *, slo: LatencySLO, threshold: float, context_tokens: float) -> float:
    """Sequences the pool can decode with its load at ``threshold``: step time within ``threshold x TBT SLO``, KV
    and seats within ``threshold`` of the pool's."""
    return pool.replicas * _seats_per_replica(pool.profile, slo=slo, threshold=threshold,
                                              context_tokens=context_tokens)


def _survival(model: DepartureModel, *, elapsed_s: float, t_d: float) -> float:
    """Share of a batch with evenly spread ages (UNIFORM) or memoryless decode times still decoding after
    ``elapsed_s``."""
    if elapsed_s <= 0 or math.isinf(t_d):  # t_d is inf when no replica runs the batch: nobody leaves
        return 1.0
    if t_d <= 0:
        return 0.0
    if model is DepartureModel.UNIFORM:
        return max(0.0, 1.0 - elapsed_s / t_d)
    return math.exp(-elapsed_s / t_d)


def _entries_still_decoding(model: DepartureModel, *, span_s: float, horizon_s: float, t_d: float) -> float:
    """Share of requests entering decode evenly over ``[0, span_s]`` that are still decoding at ``horizon_s``."""
    if math.isinf(t_d):
        return 1.0
    if span_s <= 0:  # all entered at once, horizon_s ago
        if model is DepartureModel.UNIFORM:
            return 1.0 if t_d > horizon_s else 0.0
        return _survival(model, elapsed_s=horizon_s, t_d=t_d)
    if model is DepartureModel.UNIFORM:  # each decodes exactly t_d: those entering after horizon - t_d remain
        return min(1.0, max(0.0, span_s - max(0.0, horizon_s - t_d)) / span_s)
    if t_d <= 0:
        return 0.0
    earliest, latest = horizon_s - span_s, horizon_s  # elapsed decode time of the last and the first to enter
    return t_d / span_s * (math.exp(-earliest / t_d) - math.exp(-latest / t_d))


def predict_decode(*, prefill: PrefillPool, decode: DecodePool, mix: TrafficMix, horizon_s: float,
                   departures: DepartureModel = DepartureModel.EXPONENTIAL) -> DecodeOutlook:
    """Decode pool ``horizon_s`` from now: running ones that finish leave, requests now in prefill arrive.

    Every request decodes for ``t_d = mix.mean_output_tokens x current step time`` on average (Mooncake §7.4);
    ``departures`` says how the running batch drains. Requests in prefill enter evenly over the time they need;
    those that entered and finished before the horizon are gone again. Survivors' contexts grow by the tokens they
    generate meanwhile (at most one mean output), so the KV share is not under-predicted.
    """
    context = decode.mean_context_tokens if decode.running > 0 else mix.mean_input_tokens
    step = decode_step_time(decode, running=decode.running, context_tokens=context)
    t_d = mix.mean_output_tokens * step
    tau = max(0.0, horizon_s)
    survivors = decode.running * _survival(departures, elapsed_s=tau, t_d=t_d)
    finished = decode.running - survivors
    span = min(tau, _prefill_drain(prefill))
    entered = _prefilled_by(prefill, tau) * _entries_still_decoding(departures, span_s=span, horizon_s=tau,
                                                                    t_d=t_d)
    running = survivors + entered
    steps = tau / step if math.isfinite(step) and step > 0 else 0.0
    queued_prompt = (prefill.queued_context_tokens / prefill.queued_requests
                     if prefill.queued_context_tokens is not None and prefill.queued_requests > 0
                     else mix.mean_input_tokens)
    survivor_context = decode.mean_context_tokens + min(steps, mix.mean_output_tokens)
    # entries arrive on average span/2 in, and have decoded since
    entered_steps = max(0.0, tau - span / 2) / step if steps else 0.0
    entered_context = queued_prompt + min(entered_steps, mix.mean_output_tokens)
    mixed_context = ((survivors * survivor_context + entered * entered_context) / running
                     if running > 0 else mix.mean_input_tokens)
    return DecodeOutlook(horizon_s=tau, running=running, mean_context_tokens=mixed_context, decode_time_s=t_d,
                         finished=finished, entered=entered)


def load_with_request(pool: DecodePool, *, slo: LatencySLO, running: float, kv_tokens: float,
                      prompt_tokens: float, reserve_tokens: float) -> float:
    """Decode load of ``running`` sequences holding ``kv_tokens`` with one more of ``prompt_tokens`` whose KV may
    grow by ``reserve_tokens``: the check every admission rule makes (at arrival, at the decode door)."""
    total = running + 1.0
    held = kv_tokens + prompt_tokens
    return decode_load(pool, slo=slo, running=total, context_tokens=held / total, kv_tokens=held + reserve_tokens)


def _load_with_candidate(pool: DecodePool, *, slo: LatencySLO, running: float, context_tokens: float,
                         prompt_tokens: float, reserve_tokens: float) -> float:
    return load_with_request(pool, slo=slo, running=running, kv_tokens=running * context_tokens,
                             prompt_tokens=prompt_tokens, reserve_tokens=reserve_tokens)


def admit_to_decode(*, decode: DecodePool, slo: LatencySLO, context_tokens: float, threshold: float = 1.0,
                    reserve_tokens: float = 0.0) -> bool:
    """The decode-time check (all policies; the only one under ``REACTIVE``): does one more sequence of
    ``context_tokens``, with ``reserve_tokens`` of KV kept for its output, keep the load within ``threshold``?"""
    if decode.replicas == 0:
        return False
    return _load_with_candidate(decode, slo=slo, running=decode.running, context_tokens=decode.mean_context_tokens,
                                prompt_tokens=context_tokens, reserve_tokens=reserve_tokens) <= threshold


def _room(pool: DecodePool, *, slo: LatencySLO, threshold: float, running: float, kv_tokens: float,
          prompt_tokens: float, reserve_tokens: float) -> float:
    """How many more sequences of ``prompt_tokens`` (each keeping ``reserve_tokens`` of KV for its output) the
    pool takes on top of ``running`` holding ``kv_tokens`` before its load passes ``threshold``: the tightest of
    the TBT, KV and seat limits, each linear in the count. May be negative (already over)."""
    if pool.replicas == 0:
        return 0.0
    p = pool.profile
    n = pool.replicas
    tbt_budget = threshold * slo.tbt_s - p.decode_alpha - (p.decode_beta * running + p.decode_gamma * kv_tokens) / n
    per_request_step = (p.decode_beta + p.decode_gamma * prompt_tokens) / n
    by_tbt = tbt_budget / per_request_step if per_request_step > 0 else math.inf
    per_request_kv = prompt_tokens + reserve_tokens
    by_kv = ((threshold * n * p.kv_capacity_tokens - kv_tokens) / per_request_kv if per_request_kv > 0
             else math.inf)
    by_seats = threshold * n * p.max_num_seqs - running
    return min(by_tbt, by_kv, by_seats)


def _ratio(budget: float, arrivals: float) -> float:
    if arrivals <= 0:
        return 1.0 if budget > 0 else 0.0
    return min(1.0, max(0.0, budget / arrivals))


def assess_admission(*, prefill: PrefillPool, decode: DecodePool, mix: TrafficMix, slo: LatencySLO,
                     config: AdmissionConfig, input_tokens: float | None = None,
                     cached_tokens: float | None = None) -> AdmissionDecision:
    """Loads, admission and decode pre-scaling for one model under ``config.policy``.

    ``input_tokens`` is the prompt of the request being decided and ``cached_tokens`` the part of it found in the
    prefix cache (defaults: the mix's means; an explicit prompt without ``cached_tokens`` is taken as uncached).
    The loads reported leave the request out; the ``admit`` check includes it: its prefill, then its prompt in
    decode with KV kept for a mean output.
    """
    threshold = config.reject_above
    prompt = mix.mean_input_tokens if input_tokens is None else input_tokens
    if cached_tokens is None:
        cached_tokens = mix.mean_cached_tokens if input_tokens is None else 0.0
    cached = min(cached_tokens, prompt)
    ttft = predicted_ttft(prefill, input_tokens=prompt, cached_tokens=cached)
    prefill_load = ttft / slo.ttft_s

    context_now = decode.mean_context_tokens if decode.running > 0 else mix.mean_input_tokens
    decode_load_now = decode_load(decode, slo=slo, running=decode.running, context_tokens=context_now)
    outlook = predict_decode(prefill=prefill, decode=decode, mix=mix, horizon_s=ttft, departures=config.departures)
    decode_load_then = decode_load(decode, slo=slo, running=outlook.running,
                                   context_tokens=outlook.mean_context_tokens)

    reserve = mix.mean_output_tokens
    decode_limit = threshold + config.overcommit
    prefill_ok = prefill_load <= threshold
    if config.policy is RejectionPolicy.REACTIVE:
        decode_ok = True
    elif config.policy is RejectionPolicy.EARLY:
        decode_ok = _load_with_candidate(decode, slo=slo, running=decode.running, context_tokens=context_now,
                                         prompt_tokens=prompt, reserve_tokens=reserve) <= decode_limit
    else:
        decode_ok = _load_with_candidate(decode, slo=slo, running=outlook.running,
                                         context_tokens=outlook.mean_context_tokens, prompt_tokens=prompt,
                                         reserve_tokens=reserve) <= decode_limit
    admit = prefill_ok and decode_ok

    # Admission ratio over the next interval: what each pool can take of the expected arrivals.
    interval = config.interval_s
    arrivals = mix.arrival_rate * interval
    new_tokens = max(0.0, mix.mean_input_tokens - mix.mean_cached_tokens)
    own_prefill = prefill_seconds(prefill.profile, tokens=new_tokens, cached_tokens=mix.mean_cached_tokens)
    if prefill.replicas == 0 or own_prefill <= 0:
        prefill_budget = 0.0 if prefill.replicas == 0 else math.inf
    else:
        max_wait = threshold * slo.ttft_s - own_prefill
        prefill_budget = prefill.replicas * (max_wait - _prefill_wait(prefill) + interval) / own_prefill
    ratio = _ratio(prefill_budget, arrivals)
    # A sequence holds its prompt and, on average over its life, half its output.
    footprint = mix.mean_input_tokens + mix.mean_output_tokens / 2
    context = max(outlook.mean_context_tokens, context_now, footprint)
    seats = _seats_per_replica(decode.profile, slo=slo, threshold=threshold, context_tokens=context)
    capacity = decode.replicas * seats
    # Requests admitted over the interval enter decode spread over it; those with short outputs leave again
    # before its end, so the room at the end takes more than itself in admissions.
    staying = _entries_still_decoding(config.departures, span_s=interval, horizon_s=interval,
                                      t_d=outlook.decode_time_s)
    if config.policy is RejectionPolicy.EARLY:
        # Early rejection's view: today's batch, drained over the interval; what is in prefill is not counted.
        left = decode.running * _survival(config.departures, elapsed_s=interval, t_d=outlook.decode_time_s)
        room = _room(decode, slo=slo, threshold=decode_limit, running=left, kv_tokens=left * context_now,
                     prompt_tokens=mix.mean_input_tokens, reserve_tokens=reserve)
        ratio = min(ratio, _ratio(room / max(staying, 1e-9), arrivals))
    elif config.policy is RejectionPolicy.PREDICTIVE:
        # Admissions over the interval reach decode over [ttft, ttft + interval]: the room they find is what is
        # left at the end of that span once the batch and everything now in prefill is accounted for.
        later = predict_decode(prefill=prefill, decode=decode, mix=mix, horizon_s=ttft + interval,
                               departures=config.departures)
        room = _room(decode, slo=slo, threshold=decode_limit, running=later.running,
                     kv_tokens=later.running * later.mean_context_tokens, prompt_tokens=mix.mean_input_tokens,
                     reserve_tokens=reserve)
        ratio = min(ratio, _ratio(room / max(staying, 1e-9), arrivals))

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
    return f"reject: decode over TBT SLO or KV {when} ({loads})"
