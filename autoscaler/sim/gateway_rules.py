"""Per-request early rejection rules a gateway could run, as the early-rejection benchmark compares them
(``benchmarks/bench_early_rejection.py``): Mooncake's prediction-based rule over per-sequence state, and the variants
beyond it. No policy decides with them: the controller's admission engine is :mod:`autoscaler.core.admission`,
which the simulated per-request gateway (:mod:`autoscaler.sim.gateway`) applies per request too. The loads and the
check with the request in it are that engine's (:func:`~autoscaler.core.admission.decode_load`,
:func:`~autoscaler.core.admission.load_with_request`).

Source: Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST'25 (arXiv 2407.00079), section 7.
Its Conductor decides at arrival whether to take a request, on the prefill load (predicted TTFT / TTFT SLO) and the
decode load. Plain early rejection reads the decode load *now*; the prediction-based variant reads it at the moment
this request would start decoding: sequences whose decode will have finished by then are removed, requests that
will have finished prefill by then are added.

:func:`autoscaler.core.admission.assess_admission` answers the same question once per control cycle from pool
totals (its admission ratio is the coarse export). Here the input is a :class:`PoolsView` a gateway or endpoint
picker keeps per request: when each prefill replica's queue empties, the admitted requests not yet decoding, and
each decoding sequence's KV and output so far. :func:`book_prefill` updates the view with the gateway's own
admissions between scrapes of the engines.

How long a sequence keeps decoding is not known. Mooncake assumes every request decodes for the same ``t_d``
(:meth:`OutputLengths.fixed`); :meth:`OutputLengths.from_sample` uses the spread of recently finished requests
instead, so a sequence survives a horizon with the probability its length distribution gives given what it has
produced so far. The decode step time is held at today's over the horizon.

Loads are those of :func:`autoscaler.core.admission.decode_load` (the highest of step time / TBT SLO, KV share and
seat share), with the request in it: its prompt plus KV kept for a mean output, as the decode-time check reserves.
Where the TBT SLO binds before the KV cache fills (Mooncake's setting), that is the paper's predicted TBT / TBT SLO.

Options beyond the paper, all off by default:

- ``PoolsView.later_arrivals``: the forecast also counts requests the gateway will admit *after* this one that
  finish prefill on other replicas before it does and so are decoding when it enters (a short prompt admitted a
  second after a long one). Measured in ``benchmarks/bench_early_rejection.py``: they weigh only on long prompts,
  whose prefill lasts longest, and explain a quarter to two thirds of the forecast's miss where the TBT SLO binds
  (see its docstring for where they do not). Expected entries ahead = the
  admitted arrival rate x, over the request's TTFT, the share of those arrivals whose prefill (drawn from recent
  admissions' prefill times, queued on the replica free soonest) is done by its entry, each with its prompt's KV
  plus the tokens it decodes until then.

- ``GatewayConfig.admit_probability``: PREDICTIVE admits when the probability that the decode load at entry stays
  within the threshold reaches this level, not when its expected value does. Each sequence's stay is a Bernoulli
  draw with the probability its output lengths give, so the batch count and its KV at entry have a variance; every
  limit (TBT, KV, seats) is linear in those two, and the probability is a normal approximation (sums of hundreds of
  independent draws), widened by ``forecast_error_sd`` for what the lengths do not explain (arrivals meanwhile, the
  step time drifting). With one fixed length the draws are certain and the rule is the expected-load rule; at a
  level of 0.5 it is too, whatever the spread.
- :func:`seat_from_door` with ``DoorRule.FIRST_FIT``: when a seat frees, the oldest waiting admitted request that
  fits takes it, instead of only the head of the line (``FIFO``).
- ``GatewayConfig.break_even``: for a gateway whose Conductor rejects at the decode door an admitted request that
  does not fit (after waiting at most :func:`door_patience`). PREDICTIVE then admits when the probability of fitting
  at entry beats :func:`break_even_fit_probability`: rejecting now costs the request; admitting one that does not
  fit costs the request and the prefill spent on it, which is worth requests only while prefill is busy. The level
  grows with the request's own prefill, so a small request is taken on a noisy forecast and a large one needs
  margin; with idle prefill it is 0 (admit whatever may fit: the door decides, as reactive rejection does).

Pure: values in, values out; times are seconds on the caller's clock.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from autoscaler.core.admission import (
    DecodePool,
    LatencySLO,
    RejectionPolicy,
    load_with_request,
    prefill_seconds,
)
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "DecodeForecast",
    "DecodingSequence",
    "DoorRule",
    "GatewayConfig",
    "LaterArrivals",
    "OutputLengths",
    "Overtakers",
    "PoolsView",
    "PrefillJob",
    "RequestVerdict",
    "admit_request",
    "book_prefill",
    "break_even_fit_probability",
    "decode_load_with",
    "decode_step_now",
    "door_patience",
    "expect_overtakers",
    "forecast_decode",
    "judge_request",
    "request_ttft",
    "seat_from_door",
]


def _check(owner: str, name: str, value: float, *, low: float = 0.0) -> None:
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{owner}.{name} must be a finite number >= {low:g}, got {value}")


@dataclass(frozen=True, slots=True)
class OutputLengths:
    """Output lengths (tokens, first token included) that requests of this model produce, sorted.

    ``fixed(n)`` is Mooncake's assumption (every request produces the mean); ``from_sample`` the empirical
    distribution of recently finished requests."""

    tokens: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("OutputLengths.tokens must hold at least one length")
        for value in self.tokens:
            _check("OutputLengths", "tokens", value, low=1.0)
        if any(a > b for a, b in zip(self.tokens, self.tokens[1:], strict=False)):
            raise ValueError("OutputLengths.tokens must be sorted (use OutputLengths.from_sample)")

    @classmethod
    def fixed(cls, tokens: float) -> OutputLengths:
        return cls((float(tokens),))

    @classmethod
    def from_sample(cls, lengths: Iterable[float]) -> OutputLengths:
        return cls(tuple(sorted(float(x) for x in lengths)))

    @property
    def mean(self) -> float:
        return sum(self.tokens) / len(self.tokens)

    def survival(self, tokens: float) -> float:
        """Share of requests producing more than ``tokens`` tokens."""
        return 1.0 - bisect.bisect_right(self.tokens, tokens) / len(self.tokens)

    def still_decoding(self, *, generated: float, more: float) -> float:
        """Probability that a sequence which has produced ``generated`` tokens produces ``more`` more. 0 for one
        already past every length seen: the distribution says it is done (Mooncake drops those older than t_d)."""
        alive = self.survival(generated)
        return self.survival(generated + more) / alive if alive > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PrefillJob:
    """A request admitted and not yet decoding."""

    done_at: float
    """When its prefill is expected to finish (seconds); at or before now: prefilled, waiting for a decode seat."""
    prompt_tokens: float  # its whole prompt: the KV it brings to decode
    seat_probability: float = 1.0
    """Chance it takes a decode seat: 1 where the door waits for one; where the door rejects what does not fit,
    the fit probability it was admitted on (the forecast then counts it as that share of an entry)."""

    def __post_init__(self) -> None:
        _check("PrefillJob", "prompt_tokens", self.prompt_tokens)
        if not 0.0 <= self.seat_probability <= 1.0:
            raise ValueError(f"PrefillJob.seat_probability must lie in [0, 1], got {self.seat_probability}")
        if math.isnan(self.done_at):
            raise ValueError("PrefillJob.done_at must be a number, got nan")


@dataclass(frozen=True, slots=True)
class DecodingSequence:
    context_tokens: float  # KV it holds now: prompt + tokens generated
    generated_tokens: float  # output tokens so far, the first (from prefill) included

    def __post_init__(self) -> None:
        _check("DecodingSequence", "context_tokens", self.context_tokens)
        _check("DecodingSequence", "generated_tokens", self.generated_tokens)


@dataclass(frozen=True, slots=True)
class LaterArrivals:
    """Requests the gateway expects to admit after the one being decided: their rate and, from recent admissions,
    how long their prefill takes and the KV they bring. Build with :meth:`from_sample`."""

    rate_per_s: float
    """Admitted arrivals per second, recently (e.g. admissions over the last minute / 60)."""
    prefill_s: tuple[float, ...]
    """Prefill seconds (cached prefix excluded) of recent admissions, ascending."""
    prompt_tokens: tuple[float, ...]
    """Their whole prompts (the KV each brings to decode), in the order of ``prefill_s``."""
    _sum_s: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _sum_tokens: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check("LaterArrivals", "rate_per_s", self.rate_per_s)
        if not self.prefill_s or len(self.prefill_s) != len(self.prompt_tokens):
            raise ValueError("LaterArrivals.prefill_s and prompt_tokens must be non-empty and of equal length")
        for seconds, tokens in zip(self.prefill_s, self.prompt_tokens, strict=True):
            _check("LaterArrivals", "prefill_s", seconds)
            _check("LaterArrivals", "prompt_tokens", tokens)
        if any(a > b for a, b in zip(self.prefill_s, self.prefill_s[1:], strict=False)):
            raise ValueError("LaterArrivals.prefill_s must be ascending (use LaterArrivals.from_sample)")
        # Running sums, so the share finishing within any time and their mean prompt take one bisection.
        object.__setattr__(self, "_sum_s", tuple(itertools.accumulate(self.prefill_s, initial=0.0)))
        object.__setattr__(self, "_sum_tokens", tuple(itertools.accumulate(self.prompt_tokens, initial=0.0)))

    @classmethod
    def from_sample(cls, *, rate_per_s: float, admitted: Iterable[tuple[float, float]]) -> LaterArrivals:
        """From ``(prefill seconds, prompt tokens)`` of recent admissions, in any order."""
        pairs = sorted(admitted)
        return cls(rate_per_s=rate_per_s, prefill_s=tuple(float(a) for a, _ in pairs),
                   prompt_tokens=tuple(float(b) for _, b in pairs))


@dataclass(frozen=True, slots=True)
class PoolsView:
    """What a gateway knows of one model's prefill and decode pools at one instant."""

    prefill_profile: PerformanceProfile
    decode_profile: PerformanceProfile
    prefill_free_at: tuple[float, ...]
    """Per prefill replica, when the work queued on it is done (seconds; in the past: idle)."""
    decode_replicas: int
    outputs: OutputLengths
    prefill_jobs: tuple[PrefillJob, ...] = ()
    decoding: tuple[DecodingSequence, ...] = ()
    later_arrivals: LaterArrivals | None = None
    """When set, forecasts also count later admissions that overtake (:func:`expect_overtakers`); None: only the
    requests admitted so far (Mooncake's prediction)."""
    mean_prefill_s: float | None = None
    """Mean prefill seconds of recent arrivals, admitted or not: the unit ``GatewayConfig.break_even`` counts wasted
    prefill in (the admitted mean would shrink as the rule turns long prompts away, raising every level in turn)."""

    def __post_init__(self) -> None:
        if self.decode_replicas < 0:
            raise ValueError(f"PoolsView.decode_replicas must be >= 0, got {self.decode_replicas}")
        if self.mean_prefill_s is not None and not (math.isfinite(self.mean_prefill_s) and self.mean_prefill_s > 0):
            raise ValueError(f"PoolsView.mean_prefill_s must be a finite number > 0, got {self.mean_prefill_s}")
        for value in self.prefill_free_at:
            if math.isnan(value):
                raise ValueError("PoolsView.prefill_free_at must hold numbers, got nan")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    slo: LatencySLO
    policy: RejectionPolicy = RejectionPolicy.PREDICTIVE
    reject_above: float = 1.0
    """Load above which a request is rejected; 1.0 rejects exactly at the SLO (or a full KV cache)."""
    admit_probability: float | None = None
    """PREDICTIVE only: admit when P(decode load at entry <= reject_above) is at least this (0 < level < 1). Below
    0.5 it admits on doubt, above it asks for a margin. None: admit on the expected load (Mooncake's rule)."""
    forecast_error_sd: float = 0.0
    """Standard deviation (in load) of the forecast error the output lengths do not explain, added in quadrature to
    theirs; e.g. measured from recent misses. Used only with ``admit_probability`` or ``break_even``."""
    break_even: bool = False
    """PREDICTIVE only, for a decode door that rejects what does not fit (after at most :func:`door_patience`):
    admit when P(decode load at entry <= reject_above) exceeds :func:`break_even_fit_probability` for this
    request. Needs ``PoolsView.mean_prefill_s``; excludes ``admit_probability``."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reject_above) and self.reject_above > 0):
            raise ValueError(f"GatewayConfig.reject_above must be a finite number > 0, got {self.reject_above}")
        level = self.admit_probability
        if level is not None and not (0.0 < level < 1.0):
            raise ValueError(f"GatewayConfig.admit_probability must lie strictly between 0 and 1, got {level}")
        _check("GatewayConfig", "forecast_error_sd", self.forecast_error_sd)
        if self.break_even and level is not None:
            raise ValueError("GatewayConfig.break_even and admit_probability exclude each other: set one")


class DoorRule(StrEnum):
    """Which prefilled request waiting at the decode door takes a seat when one frees."""

    FIFO = "fifo"  # the head of the line or nobody
    FIRST_FIT = "first-fit"  # the oldest that fits


@dataclass(frozen=True, slots=True)
class DecodeForecast:
    """The decode pool expected at ``at``, before the request being decided joins it."""

    at: float
    running: float  # expected sequences decoding then
    kv_tokens: float  # expected KV they hold
    step_s: float  # decode step time assumed over the horizon (today's)
    staying: float  # of those, sequences decoding now
    entering: float  # of those, requests now in prefill (or waiting for a seat)
    running_var: float = 0.0  # variance of the count, each stay an independent draw
    kv_var: float = 0.0  # variance of the KV they hold
    running_kv_cov: float = 0.0  # covariance of the two
    overtaking: float = 0.0  # of ``running``, requests not yet arrived (``PoolsView.later_arrivals``)


@dataclass(frozen=True, slots=True)
class RequestVerdict:
    admit: bool
    prefill_load: float  # predicted TTFT / TTFT SLO
    decode_load_now: float  # decode load with the request added to today's batch
    decode_load_at_entry: float  # decode load with the request when it would start decoding
    entry_at: float  # when that is: now + predicted TTFT
    reason: str
    fit_probability: float = math.nan
    """P(decode load at entry <= threshold), normal approximation (nan when the request never reaches decode)."""
    decode_load_sd_at_entry: float = 0.0
    """Standard deviation of that load from the output lengths alone, on the limit least likely to hold."""
    required_probability: float = math.nan
    """The fit probability the rule asked for (``admit_probability`` or the break-even level); nan: none asked."""


def _pool(view: PoolsView) -> DecodePool:
    return DecodePool(replicas=view.decode_replicas, profile=view.decode_profile)


def decode_step_now(view: PoolsView) -> float:
    """Seconds of one decode step now: today's batch per replica, one sequence when none decodes; inf with no
    decode replica."""
    running = len(view.decoding)
    if view.decode_replicas == 0:
        return math.inf
    if running == 0:
        return view.decode_profile.decode_step_time(1.0, 0.0)
    context = sum(s.context_tokens for s in view.decoding) / running
    return view.decode_profile.decode_step_time(running / view.decode_replicas, context)


def request_ttft(view: PoolsView, *, prompt_tokens: float, cached_tokens: float = 0.0, now: float) -> float:
    """Wait for the replica free soonest plus this request's own prefill (its uncached part behind the cached
    prefix); inf with no prefill replica."""
    if not view.prefill_free_at:
        return math.inf
    cached = min(cached_tokens, prompt_tokens)
    wait = max(0.0, min(view.prefill_free_at) - now)
    return wait + prefill_seconds(view.prefill_profile, tokens=prompt_tokens - cached, cached_tokens=cached)


@dataclass(frozen=True, slots=True)
class Overtakers:
    """Requests expected to arrive after ``now`` and be decoding at ``at``."""

    count: float = 0.0
    kv_tokens: float = 0.0  # the KV they hold then
    kv_squares: float = 0.0  # sum over them of (KV held)^2: arrivals are Poisson, so this is the KV's variance


def expect_overtakers(later: LaterArrivals, *, outputs: OutputLengths, free_at: Sequence[float], at: float,
                      now: float, step_s: float) -> Overtakers:
    """Admissions expected in ``(now, at)`` whose prefill is done by ``at``.

    Arrivals come at ``later.rate_per_s``, in slots of one expected arrival at the slot's middle (the last slot
    partial). Each slot goes to the replica free soonest in ``free_at`` (the queues, with the request being decided
    booked) and starts at the later of that and its arrival; of ``later``'s prefill times, the share within the
    time left to ``at`` enter, holding their prompt plus a token per ``step_s`` since, and stay with the
    probability ``outputs`` give for that many tokens. The slot then occupies its replica for the mean prefill time
    (the queue as a fluid; who finishes first comes from the spread)."""
    horizon = at - now
    if horizon <= 0 or later.rate_per_s <= 0 or not free_at:
        return Overtakers()
    size = len(later.prefill_s)
    mean_prefill = later._sum_s[-1] / size
    free = list(free_at)
    expected = later.rate_per_s * horizon
    count = kv = squares = 0.0
    slot = 0
    while slot < expected:
        weight = min(1.0, expected - slot)
        arrives = now + (slot + weight / 2.0) / later.rate_per_s
        slot += 1
        replica = min(range(len(free)), key=free.__getitem__)
        start = max(free[replica], arrives)
        free[replica] = start + weight * mean_prefill
        room = at - start
        done = bisect.bisect_right(later.prefill_s, room) if room >= 0 else 0
        if done == 0:
            continue
        lead = room - later._sum_s[done] / done  # mean seconds they decode before ``at``
        decoded = lead / step_s if math.isfinite(step_s) else 0.0
        share = weight * done / size * outputs.still_decoding(generated=1.0, more=decoded)
        held = later._sum_tokens[done] / done + decoded
        count, kv, squares = count + share, kv + share * held, squares + share * held * held
    return Overtakers(count=count, kv_tokens=kv, kv_squares=squares)


def forecast_decode(view: PoolsView, *, at: float, now: float) -> DecodeForecast:
    """Expected decode batch at ``at``: each sequence decoding now stays with the probability of producing the
    tokens the horizon takes; each job in prefill enters when its prefill is done (a waiting one now) and stays
    likewise. Survivors' KV grows by one token a step. With ``view.later_arrivals``, requests not yet arrived that
    would be decoding by ``at`` are added (:func:`expect_overtakers` over ``view.prefill_free_at``)."""
    step = decode_step_now(view)
    horizon = max(0.0, at - now)
    ahead = horizon / step if math.isfinite(step) else 0.0
    staying = kv = var_n = var_kv = cov = 0.0
    # Each stay is a Bernoulli draw: p(1 - p) on the count, times the KV it would hold on the KV.
    for seq in view.decoding:
        p = view.outputs.still_decoding(generated=seq.generated_tokens, more=ahead)
        held = seq.context_tokens + ahead
        staying += p
        kv += p * held
        spread = p * (1.0 - p)
        var_n, var_kv, cov = var_n + spread, var_kv + spread * held * held, cov + spread * held
    entering = 0.0
    for job in view.prefill_jobs:
        entered = max(job.done_at, now)
        if entered > at:
            continue
        decoded = (at - entered) / step if math.isfinite(step) else 0.0
        p = job.seat_probability * view.outputs.still_decoding(generated=1.0, more=decoded)
        held = job.prompt_tokens + decoded
        entering += p
        kv += p * held
        spread = p * (1.0 - p)
        var_n, var_kv, cov = var_n + spread, var_kv + spread * held * held, cov + spread * held
    later = Overtakers()
    if view.later_arrivals is not None:
        later = expect_overtakers(view.later_arrivals, outputs=view.outputs, free_at=view.prefill_free_at, at=at,
                                  now=now, step_s=step)
    # Poisson arrivals: the count's variance is its mean, the KV's the sum of squares, their covariance the KV.
    return DecodeForecast(at=at, running=staying + entering + later.count, kv_tokens=kv + later.kv_tokens,
                          step_s=step, staying=staying, entering=entering, running_var=var_n + later.count,
                          kv_var=var_kv + later.kv_squares, running_kv_cov=cov + later.kv_tokens,
                          overtaking=later.count)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _fit_probability(view: PoolsView, *, slo: LatencySLO, outlook: DecodeForecast, prompt_tokens: float,
                     threshold: float, extra_sd: float) -> tuple[float, float]:
    """P(every decode limit with the request in it stays within ``threshold``), each limit normal with the mean and
    variance of the forecast (the least of them: the limits move together, one of them binds); and that limit's
    standard deviation from the output lengths alone."""
    if view.decode_replicas == 0:
        return 0.0, 0.0
    p, n = view.decode_profile, float(view.decode_replicas)
    count, kv = outlook.running + 1.0, outlook.kv_tokens + prompt_tokens
    # Each limit as mean + (weight on the count) x count + (weight on the KV) x KV, the request's share included:
    # step = alpha + beta x count / n + gamma x KV / n (decode_load's step at mean context KV / count).
    limits = (
        ((p.decode_alpha + (p.decode_beta * count + p.decode_gamma * kv) / n) / slo.tbt_s,
         p.decode_beta / (n * slo.tbt_s), p.decode_gamma / (n * slo.tbt_s)),
        ((kv + view.outputs.mean) / (n * p.kv_capacity_tokens), 0.0, 1.0 / (n * p.kv_capacity_tokens)),
        (count / (n * p.max_num_seqs), 1.0 / (n * p.max_num_seqs), 0.0),
    )
    least, least_sd = 2.0, 0.0
    for mean, per_sequence, per_token in limits:
        variance = max(0.0, per_sequence ** 2 * outlook.running_var + per_token ** 2 * outlook.kv_var
                       + 2.0 * per_sequence * per_token * outlook.running_kv_cov)
        sd = math.sqrt(variance + extra_sd ** 2)
        if sd > 0:
            chance = _normal_cdf((threshold - mean) / sd)
        else:
            chance = 1.0 if mean <= threshold else 0.0
        if chance < least:
            least, least_sd = chance, math.sqrt(variance)
    return least, least_sd


def decode_load_with(view: PoolsView, *, slo: LatencySLO, running: float, kv_tokens: float,
                     prompt_tokens: float) -> float:
    """Decode load with one more sequence of ``prompt_tokens`` holding KV for a mean output besides."""
    return load_with_request(_pool(view), slo=slo, running=running, kv_tokens=kv_tokens, prompt_tokens=prompt_tokens,
                             reserve_tokens=view.outputs.mean)


def judge_request(view: PoolsView, *, prompt_tokens: float, cached_tokens: float = 0.0, now: float,
                  config: GatewayConfig) -> RequestVerdict:
    """Admit or reject one arriving request under ``config.policy``: REACTIVE on its TTFT alone (its decode is
    checked when it gets there), EARLY also on the decode load now, PREDICTIVE on the decode load when it would
    start decoding."""
    _check("request", "prompt_tokens", prompt_tokens)
    _check("request", "cached_tokens", cached_tokens)
    slo, threshold = config.slo, config.reject_above
    ttft = request_ttft(view, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, now=now)
    prefill_load = ttft / slo.ttft_s
    now_kv = sum(s.context_tokens for s in view.decoding)
    load_now = decode_load_with(view, slo=slo, running=float(len(view.decoding)), kv_tokens=now_kv,
                          prompt_tokens=prompt_tokens)
    entry = now + ttft
    break_even = config.break_even and config.policy is RejectionPolicy.PREDICTIVE
    if math.isfinite(entry):
        # Later admissions queue behind this one: forecast over the queues with it booked (no effect without them).
        booked = view if view.later_arrivals is None else replace(
            view, prefill_free_at=_book(view, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, now=now)[0])
        outlook = forecast_decode(booked, at=entry, now=now)
        load_then = decode_load_with(view, slo=slo, running=outlook.running, kv_tokens=outlook.kv_tokens,
                               prompt_tokens=prompt_tokens)
        fits, spread = _fit_probability(view, slo=slo, outlook=outlook, prompt_tokens=prompt_tokens,
                                        threshold=threshold, extra_sd=config.forecast_error_sd)
    else:
        load_then, fits, spread = math.inf, math.nan, 0.0
    decode_load_used = {RejectionPolicy.REACTIVE: 0.0, RejectionPolicy.EARLY: load_now,
                        RejectionPolicy.PREDICTIVE: load_then}[config.policy]
    loads = f"prefill load {prefill_load:.2f}, decode load {load_now:.2f} now and {load_then:.2f} at entry"
    level = config.admit_probability if config.policy is RejectionPolicy.PREDICTIVE else None
    if break_even:
        if view.mean_prefill_s is None:
            raise ValueError("GatewayConfig.break_even needs PoolsView.mean_prefill_s (recent mean prefill seconds)")
        cached = min(cached_tokens, prompt_tokens)
        own = prefill_seconds(view.prefill_profile, tokens=prompt_tokens - cached, cached_tokens=cached)
        level = break_even_fit_probability(prefill_s=own, mean_prefill_s=view.mean_prefill_s,
                                           prefill_load=min(prefill_load, 1.0))  # inf: no prefill, rejected below
    if prefill_load > threshold:
        admit, reason = False, f"reject: TTFT over SLO ({loads})"
    elif level is not None and not (fits > level if break_even else fits >= level):  # nan rejects too
        admit, reason = False, (f"reject: P(decode within TBT SLO and KV when it would start decoding) {fits:.2f} "
                                f"{'<=' if break_even else '<'} {level:.2f} ({loads})")
    elif level is None and decode_load_used > threshold:
        when = "now" if config.policy is RejectionPolicy.EARLY else "when it would start decoding"
        admit, reason = False, f"reject: decode over TBT SLO or KV {when} ({loads})"
    else:
        admit, reason = True, f"admit: {loads}, P(fits at entry) {fits:.2f}"
    return RequestVerdict(admit=admit, prefill_load=prefill_load, decode_load_now=load_now,
                          decode_load_at_entry=load_then, entry_at=entry, reason=reason, fit_probability=fits,
                          decode_load_sd_at_entry=spread, required_probability=math.nan if level is None else level)


def break_even_fit_probability(*, prefill_s: float, mean_prefill_s: float, prefill_load: float) -> float:
    """The probability of fitting decode at entry above which admitting a request costs fewer requests than
    rejecting it, when a request that does not fit is rejected at the decode door.

    Rejecting at arrival loses the request. Admitting loses nothing if it fits (probability p) and otherwise the
    request and its prefill, ``prefill_s``, worth ``w = prefill_s / mean_prefill_s x min(1, prefill_load)``
    requests: other requests' prefill displaced, counted in mean prefills, and only as far as prefill is busy
    (``prefill_load``, predicted TTFT / TTFT SLO: at 0 the replica would idle, at 1 or more every second spent is
    one another request lacks before its TTFT SLO). Admit when (1 - p)(1 + w) < 1, i.e. p > w / (1 + w)."""
    _check("break_even_fit_probability", "prefill_s", prefill_s)
    _check("break_even_fit_probability", "prefill_load", prefill_load)
    if not (math.isfinite(mean_prefill_s) and mean_prefill_s > 0):
        raise ValueError(f"break_even_fit_probability.mean_prefill_s must be a finite number > 0, got {mean_prefill_s}")
    wasted = prefill_s / mean_prefill_s * min(1.0, prefill_load)
    return wasted / (1.0 + wasted)


def door_patience(*, slo: LatencySLO, step_s: float, output_tokens: float) -> float:
    """Seconds a prefilled request can wait for a decode seat and still meet the TBT SLO per output token, if it
    then decodes ``output_tokens`` (the first, from prefill, included) at ``step_s`` a token:
    wait + (output - 1) x step <= (output - 1) x TBT SLO. 0 when the step already misses the SLO."""
    _check("door_patience", "step_s", step_s)
    _check("door_patience", "output_tokens", output_tokens, low=1.0)
    return max(0.0, (slo.tbt_s - step_s) * (output_tokens - 1.0))


def admit_request(view: PoolsView, *, prompt_tokens: float, cached_tokens: float = 0.0, now: float,
                  config: GatewayConfig) -> bool:
    """Does ``config.policy`` admit a request of ``prompt_tokens`` (``cached_tokens`` of them in the prefix cache)
    arriving at ``now``? See :func:`judge_request` for the loads behind the answer."""
    return judge_request(view, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, now=now,
                         config=config).admit


def book_prefill(view: PoolsView, *, prompt_tokens: float, cached_tokens: float = 0.0, now: float) -> PoolsView:
    """The view after the gateway sends an admitted request to the prefill replica free soonest (FIFO there)."""
    if not view.prefill_free_at:
        raise ValueError("book_prefill needs a prefill replica; PoolsView.prefill_free_at is empty")
    free, done_at = _book(view, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, now=now)
    job = PrefillJob(done_at=done_at, prompt_tokens=prompt_tokens)
    return replace(view, prefill_free_at=free, prefill_jobs=(*view.prefill_jobs, job))


def _book(view: PoolsView, *, prompt_tokens: float, cached_tokens: float, now: float) -> tuple[tuple[float, ...],
                                                                                                  float]:
    """The prefill queues with one more request on the replica free soonest, and when its prefill is done."""
    cached = min(cached_tokens, prompt_tokens)
    free = list(view.prefill_free_at)
    replica = min(range(len(free)), key=free.__getitem__)
    free[replica] = max(free[replica], now) + prefill_seconds(view.prefill_profile, tokens=prompt_tokens - cached,
                                                              cached_tokens=cached)
    return tuple(free), free[replica]


def seat_from_door(*, instances: Sequence[DecodePool], waiting: Sequence[float], slo: LatencySLO,
                   reserve_tokens: float, threshold: float = 1.0,
                   rule: DoorRule = DoorRule.FIFO) -> tuple[int, int] | None:
    """Which prefilled request waiting at the decode door takes a seat now, and where: ``(index into waiting,
    index into instances)``, or None. ``waiting`` holds their prompts in arrival order; ``instances`` the decode
    instances (one replica each, with their running count and mean context). A request goes to the instance where
    the load with it (its prompt plus ``reserve_tokens`` of KV for its output) is lowest, and fits if that load is
    within ``threshold`` (the decode-time check of :func:`autoscaler.core.admission.admit_to_decode`)."""
    _check("seat_from_door", "reserve_tokens", reserve_tokens)
    candidates = waiting[:1] if rule is DoorRule.FIFO else waiting
    for position, prompt in enumerate(candidates):
        loads = [load_with_request(pool, slo=slo, running=pool.running,
                                   kv_tokens=pool.running * pool.mean_context_tokens, prompt_tokens=prompt,
                                   reserve_tokens=reserve_tokens) if pool.replicas else math.inf
                 for pool in instances]
        if loads:
            best = min(range(len(loads)), key=loads.__getitem__)
            if loads[best] <= threshold:
                return position, best
    return None

