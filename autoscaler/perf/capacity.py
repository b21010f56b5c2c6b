"""How many requests per second one replica sustains within latency SLOs, and how many replicas a rate needs.

Pure functions over frozen dataclasses. The three roles:

**Prefill** (TTFT at a percentile). An iteration takes up to ``K = min(max_num_seqs, max_num_batched_tokens //
mean_prompt)`` waiting prompts and costs ``iterations*a + b*tokens + c*sum(prompt^2)`` (DistServe's estimator
shape; a batch over the token budget is chunked into several iterations). The backlog is a birth-death chain
in the spirit of llm-d inferno's state-dependent M/M/1/K: with ``n`` requests present the replica completes
``min(n, K)/T(min(n, K))`` requests per second. By PASTA an arrival sees the stationary backlog; a request that
finds ``n`` waits for the whole batch in service, then for the full batches queued ahead of it, then for its
own batch: the leftover requests ahead, itself with the percentile prompt, and whoever arrived while it
waited (vLLM admits every waiting prompt at the start of an iteration). TTFT grows with ``n``, so the TTFT
percentile is the TTFT at the backlog percentile; the sustainable rate is the largest at which
``P(backlog <= n*) >= percentile``, ``n*`` being the longest backlog that still meets the target. Against the
time-stepped engine (``autoscaler.perf.engine``) this over-predicts p90 TTFT by 1.3x on geometric mean and
under-predicts it by at most 15% (40 rate/mix/GPU points, utilisation 0.3-0.95): it errs on the safe side.

**Decode** (ITL at a percentile). Requests are admitted at once (continuous batching), so the number of running
sequences is Poisson (M/G/inf) with mean ``L``. A sequence in flight holds ``C = input + output*(1+cv^2)/2``
tokens: in-flight sequences are sampled by duration, so with exponential output lengths (cv = 1) they have
generated a whole mean output, not half of it (``input + output/2`` is the equal-length case, cv = 0).
Limits on the running batch: the largest batch whose step ``alpha + beta*B + gamma*B*C`` meets the ITL target
(at the SLO percentile of the Poisson count), what the KV cache holds (``B*C <= kv_capacity``) and
``max_num_seqs`` (both at the 99th percentile: overflowing them preempts or queues requests, which costs TTFT
far beyond one slow token). Little's law gives the rate ``L / (output_tokens * step_time(L))``.

**Both** (aggregated). Each step decodes the running batch and carries prompt chunks (chunked prefill):
the mean step is ``s = alpha / (1 - rate*(p + output*k))`` (``p``: step seconds one prompt adds,
``k = beta + gamma*C``). The ITL percentile is the step with the percentile batch *and* the percentile of
prompt tokens arriving during one step (compound Poisson, capped by the token budget); this is what makes
aggregated serving's ITL spiky. TTFT uses the prefill queue above with the decode part of each step as
per-iteration overhead and the decode tokens taken out of the budget. The rate is the smallest any
constraint allows; that constraint is the binding one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from scipy.optimize import brentq

from autoscaler.core.types import Role
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "ADMISSION_PERCENTILE",
    "Binding",
    "CapacityEstimate",
    "SloTargets",
    "TrafficMix",
    "aggregated_capacity",
    "decode_capacity",
    "estimate_capacity",
    "prefill_capacity",
    "replicas_needed",
]

ADMISSION_PERCENTILE = 0.99
"""Percentile of the running batch that must fit the KV cache and ``max_num_seqs`` (overflow means queueing)."""

_Z90 = NormalDist().inv_cdf(0.9)
_MAX_BACKLOG = 10_000_000  # a TTFT target this loose is no constraint at all
_RATE_RTOL = 1e-6


class Binding(StrEnum):
    """The constraint that limits a replica's rate. ``*-unattainable``: the SLO fails even with one request."""

    TTFT = "ttft"
    ITL = "itl"
    KV_CACHE = "kv-cache"
    MAX_NUM_SEQS = "max-num-seqs"
    TTFT_UNATTAINABLE = "ttft-unattainable"
    ITL_UNATTAINABLE = "itl-unattainable"
    KV_UNATTAINABLE = "kv-unattainable"


def _check(name: str, value: float, *, low: float, strict: bool = True, high: float = math.inf) -> None:
    ok = math.isfinite(value) and (value > low if strict else value >= low) and value < high
    if not ok:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        upper = f" and < {high:g}" if high < math.inf else ""
        raise ValueError(f"{name} must be finite and {bound}{upper}, got {value!r}")


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """What the requests look like and how many arrive.

    >>> TrafficMix(mean_input_tokens=1024, p90_input_tokens=2048, mean_output_tokens=256, request_rate_rps=4)
    TrafficMix(mean_input_tokens=1024, p90_input_tokens=2048, mean_output_tokens=256, request_rate_rps=4, output_cv=1.0)
    """

    mean_input_tokens: float
    p90_input_tokens: float
    mean_output_tokens: float
    request_rate_rps: float = 0.0
    output_cv: float = 1.0
    """Coefficient of variation of output lengths: 1 for exponential (typical chat), 0 for fixed lengths."""

    def __post_init__(self) -> None:
        _check("mean_input_tokens", self.mean_input_tokens, low=0)
        _check("p90_input_tokens", self.p90_input_tokens, low=0)
        _check("mean_output_tokens", self.mean_output_tokens, low=1, strict=False)
        _check("request_rate_rps", self.request_rate_rps, low=0, strict=False)
        _check("output_cv", self.output_cv, low=0, strict=False)

    def input_tokens_at(self, percentile: float) -> float:
        """Prompt length at ``percentile``, scaling the p90 excess over the mean by the normal quantile."""
        z = _z(percentile)
        return max(1.0, self.mean_input_tokens + (self.p90_input_tokens - self.mean_input_tokens) * z / _Z90)

    @property
    def input_second_moment(self) -> float:
        """E[prompt^2] (attention cost is quadratic per prompt), with sigma taken from the p90."""
        sigma = max(0.0, self.p90_input_tokens - self.mean_input_tokens) / _Z90
        return self.mean_input_tokens**2 + sigma**2

    @property
    def inflight_context_tokens(self) -> float:
        """Mean tokens held by a decoding sequence seen at a random instant (length-biased)."""
        return self.mean_input_tokens + self.mean_output_tokens * (1.0 + self.output_cv**2) / 2.0


@dataclass(frozen=True, slots=True)
class SloTargets:
    """Latency targets at one percentile (0.9 = p90)."""

    ttft_s: float
    itl_s: float
    percentile: float = 0.9

    def __post_init__(self) -> None:
        _check("ttft_s", self.ttft_s, low=0)
        _check("itl_s", self.itl_s, low=0)
        _check("percentile", self.percentile, low=0.5, strict=False, high=1.0)


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """One replica's sustainable rate within the SLO, what limits it, and the latencies predicted at that rate.

    ``max_batch`` is the prompts per prefill iteration (prefill) or the percentile running batch (decode,
    both). ``ttft_s``/``itl_s`` are the predicted percentile latencies at ``max_rate_rps`` (``None`` where the
    role does not produce that latency); for an unattainable SLO they are the latencies of one request alone.
    """

    role: Role
    max_rate_rps: float
    binding: Binding
    max_batch: int
    ttft_s: float | None
    itl_s: float | None

    @property
    def feasible(self) -> bool:
        return self.max_rate_rps > 0


@lru_cache(maxsize=64)
def _z(percentile: float) -> float:
    return NormalDist().inv_cdf(percentile)


def _poisson_headroom(limit: float, z: float) -> float:
    """Mean ``L`` of a Poisson count whose percentile ``L + z*sqrt(L)`` equals ``limit``."""
    root = (-z + math.sqrt(z * z + 4.0 * limit)) / 2.0
    return root * root


def _largest_rate(meets: Callable[[float], float], high: float) -> float:
    """Largest rate in (0, high] at which ``meets(rate) >= 0``; ``meets`` falls as the rate rises."""
    low = high * 1e-9
    if meets(high) >= 0:
        return high
    if meets(low) < 0:
        return 0.0
    rate = float(brentq(meets, low, high, rtol=_RATE_RTOL, xtol=low))
    if meets(rate) >= 0:
        return rate
    # brentq stopped a hair past the edge (margins jump where the backlog limit changes): bisect back in.
    for _ in range(60):
        mid = 0.5 * (low + rate)
        low, rate = (mid, rate) if meets(mid) >= 0 else (low, mid)
        if rate - low <= _RATE_RTOL * rate:
            break
    return low


# ---------------------------------------------------------------------------------------------------------------
# The prompt queue (prefill, and the prefill half of aggregated serving)


@dataclass(frozen=True, slots=True)
class _PromptQueue:
    overhead_s: float  # fixed cost of one iteration
    b: float
    c: float
    budget: float  # prompt tokens per iteration
    mean_tokens: float
    mean_sq_tokens: float
    own_tokens: float  # the tagged request's prompt (the percentile prompt)
    max_batch: int  # K: prompts per iteration
    batch_times: tuple[float, ...]  # T(n) for n = 0..K mean prompts (precomputed: the search calls ttft often)
    log_service_rates: np.ndarray  # ln mu(n) for n = 1..K: a batch of n prompts completes n in T(n) seconds

    @classmethod
    def build(cls, *, overhead_s: float, b: float, c: float, budget: float, mean_tokens: float,
              mean_sq_tokens: float, own_tokens: float, max_batch: int) -> _PromptQueue:
        n = np.arange(0, max_batch + 1, dtype=float)
        tokens = n * mean_tokens
        iterations = np.maximum(1.0, np.ceil(tokens / budget - 1e-9))
        times = iterations * overhead_s + b * tokens + c * n * mean_sq_tokens
        return cls(overhead_s, b, c, budget, mean_tokens, mean_sq_tokens, own_tokens, max_batch,
                   tuple(times.tolist()), np.log(n[1:]) - np.log(times[1:]))

    def batch_time(self, others: float, *, own: bool) -> float:
        tokens = others * self.mean_tokens + (self.own_tokens if own else 0.0)
        squares = others * self.mean_sq_tokens + (self.own_tokens**2 if own else 0.0)
        iterations = max(1, math.ceil(tokens / self.budget - 1e-9))
        return iterations * self.overhead_s + self.b * tokens + self.c * squares

    def ttft(self, backlog: int, rate: float) -> float:
        """TTFT of a request that arrives at ``rate`` to find ``backlog`` requests present."""
        if backlog == 0:
            return self.batch_time(0, own=True)
        k = self.max_batch
        in_service = min(backlog, k)
        full, rest = divmod(backlog - in_service, k)
        wait = self.batch_times[in_service] + full * self.batch_times[k]
        joiners = min(k - 1 - rest, rate * wait)  # arrived while it waited: they share its iteration
        return wait + self.batch_time(rest + max(0.0, joiners), own=True)

    def max_backlog(self, target_s: float, rate: float) -> int | None:
        """The longest backlog an arrival may find and still meet ``target_s``; ``None`` if even 0 fails."""
        if self.ttft(0, rate) > target_s:
            return None
        low, high = 0, 1
        while self.ttft(high, rate) <= target_s:
            if high >= _MAX_BACKLOG:
                return _MAX_BACKLOG
            low, high = high, high * 2
        while high - low > 1:  # ttft(low) <= target < ttft(high); ttft grows with the backlog
            mid = (low + high) // 2
            low, high = (mid, high) if self.ttft(mid, rate) <= target_s else (low, mid)
        return low

    def margin(self, rate: float, target_s: float, percentile: float) -> float:
        """``P(TTFT <= target) - percentile`` at ``rate``; -1 when the queue cannot keep up."""
        log_mu = self.log_service_rates
        limit = self.max_backlog(target_s, rate)
        if limit is None or rate >= math.exp(log_mu[-1]):
            return -1.0
        return _Backlog.at(log_mu, rate).cdf(limit) - percentile

    def ttft_at(self, rate: float, percentile: float) -> float:
        """Predicted TTFT percentile at ``rate`` (the TTFT at the backlog percentile)."""
        if rate <= 0:
            return self.ttft(0, 0.0)
        return self.ttft(_Backlog.at(self.log_service_rates, rate).quantile(percentile), rate)


@dataclass(frozen=True, slots=True)
class _Backlog:
    """Stationary backlog distribution of the birth-death chain at one arrival rate (below saturation)."""

    head: np.ndarray  # unnormalised weights for n = 0..K
    rho: float  # lambda / mu(K): geometric ratio of the tail n >= K
    total: float

    @classmethod
    def at(cls, log_mu: np.ndarray, rate: float) -> _Backlog:
        k = len(log_mu)
        log_w = np.arange(k + 1) * math.log(rate) - np.concatenate(([0.0], np.cumsum(log_mu)))
        head = np.exp(log_w - log_w.max())
        rho = rate / math.exp(log_mu[-1])
        return cls(head=head, rho=rho, total=float(head[:-1].sum()) + float(head[-1]) / (1.0 - rho))

    def cdf(self, n: int) -> float:
        k = len(self.head) - 1
        if n < k:
            return float(self.head[: n + 1].sum()) / self.total
        tail = float(self.head[-1]) * (1.0 - self.rho ** (n - k + 1)) / (1.0 - self.rho)
        return (float(self.head[:-1].sum()) + tail) / self.total

    def quantile(self, q: float) -> int:
        k = len(self.head) - 1  # K >= 1
        cumulative = np.cumsum(self.head[:-1]) / self.total
        if cumulative[-1] >= q:
            return int(np.searchsorted(cumulative, q))
        # cumulative[-1] + w_K * (1 - rho^(j+1)) / ((1 - rho) * total) >= q, solved for j = n - K
        remaining = 1.0 - (q - float(cumulative[-1])) * self.total * (1.0 - self.rho) / float(self.head[-1])
        if remaining <= 0.0:
            return _MAX_BACKLOG
        return k + max(0, math.ceil(math.log(remaining) / math.log(self.rho) - 1.0 - 1e-9))


def _prompt_queue(*, profile: PerformanceProfile, mix: TrafficMix, percentile: float, overhead_s: float,
                  budget: float, seats: float) -> _PromptQueue:
    budget = max(1.0, budget)
    return _PromptQueue.build(
        overhead_s=overhead_s, b=profile.prefill_b, c=profile.prefill_c, budget=budget,
        mean_tokens=mix.mean_input_tokens, mean_sq_tokens=mix.input_second_moment,
        own_tokens=mix.input_tokens_at(percentile),
        max_batch=int(max(1, min(seats, math.floor(budget / mix.mean_input_tokens)))),
    )


# ---------------------------------------------------------------------------------------------------------------
# Roles


def prefill_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one prefill replica serves with TTFT (queue + prefill) within the SLO percentile."""
    queue = _prompt_queue(profile=profile, mix=mix, percentile=slo.percentile, overhead_s=profile.prefill_a,
                          budget=profile.max_num_batched_tokens, seats=profile.max_num_seqs)
    if max(queue.own_tokens, mix.mean_input_tokens) > profile.kv_capacity_tokens:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.KV_UNATTAINABLE, 0, None, None)
    alone = queue.ttft(0, 0.0)
    if alone > slo.ttft_s:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.TTFT_UNATTAINABLE, 0, alone, None)
    saturation = math.exp(queue.log_service_rates[-1]) * (1.0 - 1e-9)
    rate = _largest_rate(lambda r: queue.margin(r, slo.ttft_s, slo.percentile), saturation)
    return CapacityEstimate(Role.PREFILL, rate, Binding.TTFT, queue.max_batch,
                            queue.ttft_at(rate, slo.percentile), None)


def decode_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one decode replica serves with ITL within the SLO percentile."""
    context = mix.inflight_context_tokens
    per_sequence = profile.decode_beta + profile.decode_gamma * context
    alone = profile.decode_step_time(1, context)
    by_kv = math.floor(profile.kv_capacity_tokens / context)
    if by_kv < 1:
        return CapacityEstimate(Role.DECODE, 0.0, Binding.KV_UNATTAINABLE, 0, None, alone)
    by_itl = math.floor((slo.itl_s - profile.decode_alpha) / per_sequence) if per_sequence > 0 else _MAX_BACKLOG
    if by_itl < 1:
        return CapacityEstimate(Role.DECODE, 0.0, Binding.ITL_UNATTAINABLE, 0, None, alone)
    z = max(0.0, _z(slo.percentile))
    z_admit = _z(max(slo.percentile, ADMISSION_PERCENTILE))
    by_seqs = min(profile.max_num_seqs, profile.max_num_batched_tokens)
    means = ((_poisson_headroom(by_itl, z), Binding.ITL),
             (_poisson_headroom(by_kv, z_admit), Binding.KV_CACHE),
             (_poisson_headroom(by_seqs, z_admit), Binding.MAX_NUM_SEQS))
    running, binding = min(means, key=lambda item: item[0])  # first wins ties: ITL, then KV, then max_num_seqs
    rate = running / (mix.mean_output_tokens * profile.decode_step_time(running, context))
    batch = running + z * math.sqrt(running)
    return CapacityEstimate(Role.DECODE, rate, binding, math.floor(batch + 1e-9), None,
                            profile.decode_step_time(batch, context))


@dataclass(frozen=True, slots=True)
class _Aggregated:
    """Steady state of a replica that prefills and decodes in the same steps, as functions of the rate."""

    profile: PerformanceProfile
    mix: TrafficMix
    slo: SloTargets
    context: float
    per_sequence: float  # k = beta + gamma*C, seconds per running sequence per step
    prompt_work: float  # p: step seconds one prompt adds (its chunks' overhead, linear and quadratic terms)
    z: float

    @classmethod
    def of(cls, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> _Aggregated:
        context = mix.inflight_context_tokens
        chunks = math.ceil(mix.mean_input_tokens / profile.max_num_batched_tokens)
        work = (chunks * profile.prefill_a + profile.prefill_b * mix.mean_input_tokens
                + profile.prefill_c * mix.input_second_moment)
        return cls(profile, mix, slo, context, profile.decode_beta + profile.decode_gamma * context, work,
                   max(0.0, _z(slo.percentile)))

    @property
    def saturation(self) -> float:
        return (1.0 - 1e-9) / (self.prompt_work + self.mix.mean_output_tokens * self.per_sequence)

    def mean_step(self, rate: float) -> float:
        free = 1.0 - rate * (self.prompt_work + self.mix.mean_output_tokens * self.per_sequence)
        return self.profile.decode_alpha / free

    def running(self, rate: float) -> float:
        """Mean decoding sequences (Little's law over the mean step)."""
        return rate * self.mix.mean_output_tokens * self.mean_step(rate)

    def batch_at_percentile(self, rate: float) -> float:
        mean = self.running(rate)
        return max(1.0, mean + self.z * math.sqrt(mean))

    def chunk_at_percentile(self, rate: float, batch: float) -> float:
        """Percentile of prompt tokens one step carries: those that arrived during the previous step."""
        prompts = rate * self.mean_step(rate)
        room = max(1.0, self.profile.max_num_batched_tokens - batch)
        chunks = max(1.0, self.mix.mean_input_tokens / room)  # a long prompt stretches several steps
        if math.exp(-prompts * chunks) >= self.slo.percentile:
            return 0.0
        tokens = prompts * self.mix.mean_input_tokens + self.z * math.sqrt(prompts * self.mix.input_second_moment)
        return max(0.0, min(room, tokens))

    def itl(self, rate: float) -> float:
        p = self.profile
        batch = self.batch_at_percentile(rate)
        chunk = self.chunk_at_percentile(rate, batch)
        step = p.decode_alpha + self.per_sequence * batch
        if chunk > 0:
            squares = chunk * self.mix.input_second_moment / self.mix.mean_input_tokens
            step += p.prefill_a + p.prefill_b * chunk + p.prefill_c * squares
        return step

    def rate_for_batch(self, limit: float, z: float) -> float:
        """Largest rate whose ``z`` percentile batch stays within ``limit`` (closed form of ``running``)."""
        mean = _poisson_headroom(limit, z)
        out = self.mix.mean_output_tokens
        return mean / (out * self.profile.decode_alpha + mean * (self.prompt_work + out * self.per_sequence))

    def queue(self, rate: float) -> _PromptQueue:
        running = self.running(rate) if rate > 0 else 0.0
        p = self.profile
        return _prompt_queue(profile=p, mix=self.mix, percentile=self.slo.percentile,
                             overhead_s=p.decode_alpha + self.per_sequence * running + p.prefill_a,
                             budget=p.max_num_batched_tokens - running, seats=p.max_num_seqs - running)


def aggregated_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one replica serves doing both prefill and decode, within both SLOs."""
    model = _Aggregated.of(profile, mix, slo)
    alone_ttft, alone_itl = model.queue(0.0).ttft(0, 0.0), model.itl(0.0)
    by_kv = math.floor(profile.kv_capacity_tokens / model.context)
    if by_kv < 1 or mix.input_tokens_at(slo.percentile) > profile.kv_capacity_tokens:
        return CapacityEstimate(Role.BOTH, 0.0, Binding.KV_UNATTAINABLE, 0, None, None)
    if alone_ttft > slo.ttft_s:
        return CapacityEstimate(Role.BOTH, 0.0, Binding.TTFT_UNATTAINABLE, 0, alone_ttft, alone_itl)
    if alone_itl > slo.itl_s:
        return CapacityEstimate(Role.BOTH, 0.0, Binding.ITL_UNATTAINABLE, 0, alone_ttft, alone_itl)
    high = model.saturation
    z_admit = _z(max(slo.percentile, ADMISSION_PERCENTILE))
    by_seqs = min(profile.max_num_seqs, profile.max_num_batched_tokens)
    rates = (
        (_largest_rate(lambda r: slo.itl_s - model.itl(r), high), Binding.ITL),
        (_largest_rate(lambda r: model.queue(r).margin(r, slo.ttft_s, slo.percentile), high), Binding.TTFT),
        (min(high, model.rate_for_batch(by_kv, z_admit)), Binding.KV_CACHE),
        (min(high, model.rate_for_batch(by_seqs, z_admit)), Binding.MAX_NUM_SEQS),
    )
    rate, binding = min(rates, key=lambda item: item[0])
    return CapacityEstimate(Role.BOTH, rate, binding, math.floor(model.batch_at_percentile(rate) + 1e-9),
                            model.queue(rate).ttft_at(rate, slo.percentile), model.itl(rate))


def estimate_capacity(*, profile: PerformanceProfile, role: Role, mix: TrafficMix,
                      slo: SloTargets) -> CapacityEstimate:
    """The capacity of one replica of ``profile`` serving ``role``."""
    if role is Role.PREFILL:
        return prefill_capacity(profile=profile, mix=mix, slo=slo)
    if role is Role.DECODE:
        return decode_capacity(profile=profile, mix=mix, slo=slo)
    return aggregated_capacity(profile=profile, mix=mix, slo=slo)


def replicas_needed(*, rate_rps: float, capacity: CapacityEstimate) -> int | None:
    """Replicas to serve ``rate_rps`` within the SLO: 0 for no traffic, ``None`` when no count can meet it."""
    _check("rate_rps", rate_rps, low=0, strict=False)
    if rate_rps == 0:
        return 0
    if not capacity.feasible:
        return None
    return max(1, math.ceil(rate_rps / capacity.max_rate_rps - 1e-9))
