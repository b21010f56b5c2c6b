"""How many requests per second one replica sustains within latency SLOs, and how many replicas a rate needs.

Pure functions over frozen dataclasses. Prompt lengths are taken lognormal with the mix's mean and p90 (the
two numbers the signals give; production prompt lengths are right-skewed). The inputs (mix, SLO targets) are
:mod:`autoscaler.perf.traffic`'s, the prompt queues :mod:`autoscaler.perf.prefill_queue`'s; this module prices a
replica per role and searches the largest rate. The three roles:

**Prefill** (TTFT at a percentile). A prompt of ``p`` tokens costs ``w = b*p + c*p^2`` seconds of work: the
quadratic (attention) term is per prompt, because prompts batched into one forward pass do not attend to each
other (vLLM v1's FlashAttention backend runs ``flash_attn_varlen_func`` with per-request ``cu_seqlens_q`` and
``seqused_k``, vllm/v1/attention/backends/flash_attn.py), so a batch is not charged ``c*(sum p)^2``. The replica
works in iterations, as vLLM's scheduler does: an iteration takes the waiting work up to the token budget
(``max_num_batched_tokens``, chunking a prompt that does not fit), lasts ``a`` plus that work, and whoever
arrives meanwhile waits for the next one. With ``X`` the work waiting when an iteration starts,
``X' = (X - budget)+ + N``, ``N`` the work that arrived during it (and, on an idle replica, a fresh start
with one prompt); ``X`` is taken to be gamma, its mean and variance the fixed point of that recursion
(``prefill_queue.PromptQueue``). A request's TTFT is the rest of the iteration it arrives in, the work ahead of it
in full iterations, and its own last iteration, which also carries whoever arrived before it started. The
sustainable rate is the largest at which ``P(TTFT <= target) >= percentile``. Against the engine
(``autoscaler.perf.engine``; 3 GPUs x 4 prompt mixes x 6 targets between the bare prefill time and 10x it):
the engine's p90 TTFT at the model's limit is within 15% of the target at 82% of the points (mean error
+0.2%); the misses are above ~90% utilisation, long prompts on the safe side (to -25%), near-equal prompts
not (to +35%). At p50 also 82%; at p99 68%, the tail being a little light at high load (to +25%).
``benchmarks/bench_capacity_vs_engine.py`` prints such cases. (The birth-death queue this replaced, in the
spirit of llm-d inferno's state-dependent M/M/1/K, assumed exponential service: it was within 15% at 48% of
those points, 40% conservative for near-equal prompts and 24% optimistic for long ones.)

**Decode** (ITL at a percentile). Requests are admitted at once (continuous batching). A sequence in flight
holds ``C = input + output*(1+cv^2)/2`` tokens: in-flight sequences are sampled by duration, so with
exponential output lengths (cv = 1) they have generated a whole mean output, not half of it. The running
batch ``B`` has mean ``L`` and, because a bigger batch steps slower and so keeps its sequences longer,
variance ``L*s(L)/alpha`` rather than the Poisson ``L`` (the linear-noise approximation of a birth-death
process that loses sequences at rate ``B/(output*s(B))``; ``s(B) = alpha + beta*B + gamma*B*C`` is the
step). Limits on the running batch: the ITL target at the SLO percentile of ``B``; the KV cache holding the
batch's tokens (their spread includes the spread of each sequence's context) and ``max_num_seqs``, both at
the 99th percentile: overflowing them preempts or queues requests, which costs TTFT far beyond one slow
token. Little's law gives the rate ``L / (output_tokens * s(L))``. Against the engine the p90/p99 ITL at the
limit is within 6% of the target (3 GPUs x 2 mixes x 5 targets).

**Both** (aggregated). Each step decodes the running batch and carries prompt chunks (chunked prefill):
the mean step is ``s = alpha / (1 - rate*(p + output*k))`` (``p``: step seconds one prompt adds,
``k = beta + gamma*C``). The ITL percentile is the step with the percentile (Poisson) batch *and* the
percentile of prompt tokens arriving during one step (compound Poisson, capped by the token budget); this is
what makes aggregated serving's ITL spiky. TTFT uses the birth-death prompt queue
(:class:`~autoscaler.perf.prefill_queue.BacklogQueue`) with the decode part of each step as per-iteration
overhead and the decode tokens taken out of the budget; it has not been moved to the prefill role's model yet
and errs on the safe side (at 14.3 req/s of the chat mix on an 8B/H100 it predicts a p90 TTFT of 0.40 s where
the engine shows 0.25 s). The rate is the smallest any constraint allows; that constraint is the binding one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from scipy.optimize import brentq

from autoscaler.core.types import Role
from autoscaler.perf.prefill_queue import (
    UNBOUNDED,
    BacklogQueue,
    backlog_queue,
    prompt_queue,
    prompts_per_iteration,
)
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.traffic import PROMPT_SIGMA_CAP, SloTargets, TrafficMix, check_finite, normal_quantile

__all__ = [
    "ADMISSION_PERCENTILE",
    "PROMPT_SIGMA_CAP",
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

_RATE_RTOL = 1e-3


class Binding(StrEnum):
    """The constraint that limits a replica's rate. ``*-unattainable``: the SLO fails even with one request."""

    TTFT = "ttft"
    ITL = "itl"
    KV_CACHE = "kv-cache"
    MAX_NUM_SEQS = "max-num-seqs"
    TTFT_UNATTAINABLE = "ttft-unattainable"
    ITL_UNATTAINABLE = "itl-unattainable"
    KV_UNATTAINABLE = "kv-unattainable"



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


def _poisson_headroom(limit: float, z: float) -> float:
    """Mean ``L`` of a Poisson count whose percentile ``L + z*sqrt(L)`` equals ``limit``."""
    root = (-z + math.sqrt(z * z + 4.0 * limit)) / 2.0
    return root * root


def _largest_rate(meets: Callable[[float], float], high: float, *, guess: float | None = None) -> float:
    """Largest rate in (0, high] at which ``meets(rate) >= 0``; ``meets`` falls as the rate rises.

    With a ``guess`` the root is bracketed from there (halving the distance to ``high`` going up, halving
    the rate going down), which saves evaluations when each one is expensive and ``meets(high)`` fails.
    """
    low = high * 1e-9
    if guess is None:
        if meets(high) >= 0:
            return high
        if meets(low) < 0:
            return 0.0
        up = high
    else:
        low, up = _bracket(meets, high, guess)
        if up <= low:
            return low
    passing = [low]

    def recorded(rate: float) -> float:
        margin = meets(rate)
        if margin >= 0:
            passing.append(rate)
        return margin

    rate = float(brentq(recorded, low, up, rtol=_RATE_RTOL, xtol=high * 1e-9))
    if recorded(rate) >= 0:
        return rate
    # brentq stopped a hair past the edge (margins jump where a discrete limit changes): bisect back in.
    low = max(r for r in passing if r < rate)
    for _ in range(60):
        mid = 0.5 * (low + rate)
        low, rate = (mid, rate) if meets(mid) >= 0 else (low, mid)
        if rate - low <= _RATE_RTOL * rate:
            break
    return low


def _bracket(meets: Callable[[float], float], high: float, guess: float) -> tuple[float, float]:
    """``(low, up)`` with ``meets(low) >= 0 > meets(up)``; ``up <= low`` when ``low`` is the answer itself."""
    if meets(guess) >= 0:
        low = guess
        while True:
            up = low + 0.5 * (high - low)
            if up - low <= _RATE_RTOL * low:
                return low, low
            if meets(up) < 0:
                return low, up
            low = up
    up = guess
    while up > high * 1e-9:
        low = 0.5 * up
        if meets(low) >= 0:
            return low, up
        up = low
    return 0.0, 0.0



# ---------------------------------------------------------------------------------------------------------------
# Roles


def prefill_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one prefill replica serves with TTFT (queue + prefill) within the SLO percentile."""
    if max(mix.input_tokens_at(slo.percentile), mix.mean_input_tokens) > profile.kv_capacity_tokens:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.KV_UNATTAINABLE, 0, None, None)
    queue = prompt_queue(profile=profile, mix=mix, percentile=slo.percentile)
    if queue.alone_s > slo.ttft_s:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.TTFT_UNATTAINABLE, 0, queue.alone_s, None)
    solved: dict[float, tuple[float, float]] = {}
    rate = _largest_rate(lambda r: queue.margin(r, slo.ttft_s, slo.percentile, solved), queue.saturation,
                         guess=0.7 * queue.saturation)
    batch = prompts_per_iteration(budget_tokens=profile.max_num_batched_tokens, seats=profile.max_num_seqs, mix=mix)
    return CapacityEstimate(Role.PREFILL, rate, Binding.TTFT, batch,
                            queue.ttft_at(rate, slo.percentile, near_s=slo.ttft_s), None)


def _inflight_context_sq(mix: TrafficMix) -> float:
    """E[C^2] of a decoding sequence's context seen at a random instant: prompt plus tokens generated so far.

    Output lengths are taken gamma-shaped with the mix's cv; in flight they are seen length-biased, so the
    tokens generated so far have E[g^2] = E[o^3] / (3 E[o]) = out^2 (1 + cv^2)(1 + 2 cv^2) / 3.
    """
    out, cv2 = mix.mean_output_tokens, mix.output_cv**2
    generated = mix.inflight_context_tokens - mix.mean_input_tokens
    generated_sq = out * out * (1.0 + cv2) * (1.0 + 2.0 * cv2) / 3.0
    return mix.input_second_moment + 2.0 * mix.mean_input_tokens * generated + generated_sq


def _largest_running(fits: Callable[[float], bool], high: float) -> float:
    """Largest mean running batch in (0, high] that ``fits`` (which is monotone); 0 when none does."""
    if fits(high):
        return high
    low = 0.0
    while high - low > 1e-6 * high:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def decode_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one decode replica serves with ITL within the SLO percentile."""
    context = mix.inflight_context_tokens
    context_var = max(0.0, _inflight_context_sq(mix) - context * context)
    per_sequence = profile.decode_beta + profile.decode_gamma * context
    alone = profile.decode_step_time(1, context)
    if profile.kv_capacity_tokens < context:
        return CapacityEstimate(Role.DECODE, 0.0, Binding.KV_UNATTAINABLE, 0, None, alone)
    by_itl = (slo.itl_s - profile.decode_alpha) / per_sequence if per_sequence > 0 else UNBOUNDED
    if by_itl < 1:
        return CapacityEstimate(Role.DECODE, 0.0, Binding.ITL_UNATTAINABLE, 0, None, alone)
    z = max(0.0, normal_quantile(slo.percentile))
    z_admit = normal_quantile(max(slo.percentile, ADMISSION_PERCENTILE))
    by_seqs = min(profile.max_num_seqs, profile.max_num_batched_tokens)

    def spread(running: float) -> float:
        """Standard deviation of the running batch around its mean ``running`` (see the module docstring)."""
        feedback = profile.decode_step_time(running, context) / profile.decode_alpha
        return math.sqrt(running * feedback)

    def kv_fits(running: float) -> bool:
        tokens_sd = math.sqrt(running * context_var + (spread(running) * context) ** 2)
        return running * context + z_admit * tokens_sd <= profile.kv_capacity_tokens

    limits = (
        (_largest_running(lambda n: n + z * spread(n) <= by_itl, by_itl), Binding.ITL),
        (_largest_running(kv_fits, profile.kv_capacity_tokens / context), Binding.KV_CACHE),
        (_largest_running(lambda n: n + z_admit * spread(n) <= by_seqs, by_seqs), Binding.MAX_NUM_SEQS),
    )
    running, binding = min(limits, key=lambda item: item[0])  # first wins ties: ITL, then KV, then max_num_seqs
    if running <= 0:
        return CapacityEstimate(Role.DECODE, 0.0, binding, 0, None, alone)
    rate = running / (mix.mean_output_tokens * profile.decode_step_time(running, context))
    batch = running + z * spread(running)
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
                   max(0.0, normal_quantile(slo.percentile)))

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

    def queue(self, rate: float) -> BacklogQueue:
        running = self.running(rate) if rate > 0 else 0.0
        p = self.profile
        return backlog_queue(profile=p, mix=self.mix, percentile=self.slo.percentile,
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
    z_admit = normal_quantile(max(slo.percentile, ADMISSION_PERCENTILE))
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
    check_finite("rate_rps", rate_rps, low=0, strict=False)
    if rate_rps == 0:
        return 0
    if not capacity.feasible:
        return None
    return max(1, math.ceil(rate_rps / capacity.max_rate_rps - 1e-9))
