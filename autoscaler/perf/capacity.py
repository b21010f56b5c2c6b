"""How many requests per second one replica sustains within latency SLOs, and how many replicas a rate needs.

Pure functions over frozen dataclasses. Prompt lengths are taken lognormal with the mix's mean and p90 (the
two numbers the signals give; production prompt lengths are right-skewed). The three roles:

**Prefill** (TTFT at a percentile). A prompt of ``p`` tokens costs ``w = b*p + c*p^2`` seconds of work: the
quadratic (attention) term is per prompt, because prompts batched into one forward pass do not attend to each
other (vLLM v1's FlashAttention backend runs ``flash_attn_varlen_func`` with per-request ``cu_seqlens_q`` and
``seqused_k``, vllm/v1/attention/backends/flash_attn.py), so a batch is not charged ``c*(sum p)^2``. The replica
works in iterations, as vLLM's scheduler does: an iteration takes the waiting work up to the token budget
(``max_num_batched_tokens``, chunking a prompt that does not fit), lasts ``a`` plus that work, and whoever
arrives meanwhile waits for the next one. With ``X`` the work waiting when an iteration starts,
``X' = (X - budget)+ + N``, ``N`` the work that arrived during it (and, on an idle replica, a fresh start
with one prompt); ``X`` is taken to be gamma, its mean and variance the fixed point of that recursion
(:class:`_PromptQueue`). A request's TTFT is the rest of the iteration it arrives in, the work ahead of it
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
what makes aggregated serving's ITL spiky. TTFT uses the birth-death prompt queue (:class:`_BacklogQueue`)
with the decode part of each step as per-iteration overhead and the decode tokens taken out of the budget;
it has not been moved to the prefill role's model yet and errs on the safe side (at 14.3 req/s of the chat
mix on an 8B/H100 it predicts a p90 TTFT of 0.40 s where the engine shows 0.25 s). The rate is the smallest
any constraint allows; that constraint is the binding one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from scipy import special
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
_UNBOUNDED = 10_000_000  # a backlog or batch no latency target limits
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


def _check(name: str, value: float, *, low: float, strict: bool = True, high: float = math.inf) -> None:
    ok = math.isfinite(value) and (value > low if strict else value >= low) and value < high
    if not ok:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        upper = f" and < {high:g}" if high < math.inf else ""
        raise ValueError(f"{name} must be finite and {bound}{upper}, got {value!r}")


PROMPT_SIGMA_CAP = 0.9
"""Largest sigma of the prompt lognormal. Past p90/mean ~2.1 the sigma that fits the p90 climbs steeply to
1.28 (the most a lognormal's p90/mean reaches is 2.27), and its higher moments explode: at 1.28, E[p^4] is
19000 mean^4. Real prompt mixes with such a p90 have a wide body and a bounded tail instead: the shipped
traces (Azure LLM inference 2023 conversation, p90/mean 2.37; Mooncake FAST'25 conversation and synthetic,
2.27 and 2.52) have E[p^2], E[p^3], E[p^4] of a lognormal with sigma 0.70-1.0, and with sigma 1.28 one prefill
replica at the model's rate showed a p90 TTFT of 0.15-0.33 of the target (``benchmarks/bench_simulator.py``)."""


def _lognormal_sigma(mean: float, p90: float) -> float:
    """Sigma of the lognormal with this mean and p90 (0 when p90 <= mean), at most ``PROMPT_SIGMA_CAP``."""
    excess = math.log(max(p90, mean) / mean)  # = z90*sigma - sigma^2/2
    return min(PROMPT_SIGMA_CAP, _Z90 - math.sqrt(max(0.0, _Z90 * _Z90 - 2.0 * excess)))


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
        """E[prompt^2] (attention cost is quadratic per prompt), of the lognormal with this mean and p90."""
        sigma = _lognormal_sigma(self.mean_input_tokens, self.p90_input_tokens)
        return self.mean_input_tokens**2 * math.exp(sigma * sigma)

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
# The prefill role's prompt queue: gated iterations

# Quadrature nodes (fixed, so the model is deterministic and cheap). Work at an iteration's start: quantile
# levels ``1 - (1 - v)^3`` of Gauss-Legendre ``v`` crowd the upper tail, where long TTFTs come from. The
# tagged request's arrival within an iteration: Gauss-Legendre on (0, 1). Its prompt: Gauss-Hermite in the
# lognormal's normal variable.
_legendre_v, _legendre_w = np.polynomial.legendre.leggauss(16)
_WORK_LEVELS = 1.0 - (1.0 - (_legendre_v + 1.0) / 2.0) ** 3
_WORK_WEIGHTS = _legendre_w / 2.0 * 3.0 * (1.0 - (_legendre_v + 1.0) / 2.0) ** 2
_arrival_x, _arrival_w = np.polynomial.legendre.leggauss(5)
_ARRIVAL = ((_arrival_x + 1.0) / 2.0)[None, :, None]  # elapsed fraction of the iteration the request arrives in
_ARRIVAL_WEIGHTS = _arrival_w / 2.0
_hermite_z, _hermite_w = np.polynomial.hermite_e.hermegauss(8)
_PROMPT_Z = _hermite_z
_PROMPT_WEIGHTS = _hermite_w / _hermite_w.sum()
_SOLVE_TOL = 1e-7  # on log E[work] and log Var[work] at an iteration's start
_NEAR_SATURATION = 0.999  # past this utilisation no TTFT target is met (and the fixed point is slow to find)
_MAX_SHAPE = 1e4  # a gamma this peaked is a constant; keeps nearly fixed prompt lengths finite


def _compound_poisson_cdf(y: np.ndarray, count: np.ndarray, mean_work: float, work_sq: float) -> np.ndarray:
    """P(S <= y) for S, the work of a Poisson(``count``) number of prompts (each ``mean_work`` on average, with
    E[w^2] = ``work_sq``): the gamma with S's mean and variance, in Wilson-Hilferty's cube-root normal form.

    (Splitting off the atom at "nobody arrived" describes the sum better but made the TTFTs worse against the
    engine, so the plain gamma it is.)
    """
    mean = count * mean_work
    nine_shape = np.maximum(9.0 * count * mean_work * mean_work / work_sq, 1e-12)  # 9 * mean^2 / var
    ratio = np.maximum(y, 0.0) / np.maximum(mean, 1e-300)
    gamma = special.ndtr((np.cbrt(ratio) - 1.0 + 1.0 / nine_shape) * np.sqrt(nine_shape))
    return np.where(y > 0.0, gamma, 0.0)


@dataclass(frozen=True, slots=True)
class _QueueState:
    """Stationary law of the prompt work waiting at an iteration's start: gamma(shape, scale)."""

    shape: float
    scale: float
    mean_iteration_s: float
    idle_restart: float  # P(an iteration leaves nothing behind and nobody arrives during it)
    log_moments: tuple[float, float]  # where the solver ended: a warm start for the next rate


@dataclass(frozen=True, slots=True)
class _PromptQueue:
    """TTFT of a replica that prefills in iterations (vLLM's scheduler, chunked prefill), as a function of rate.

    Work is in seconds: a prompt of ``p`` tokens costs ``w = b*p + c*p^2``. An iteration starts with the prompt
    work ``X`` waiting, takes up to ``budget_s`` of it (the token budget), lasts ``fixed_s`` plus that work, and
    whoever arrives meanwhile waits for the next one (gated). So ``X' = (X - budget)+ + N``, ``N`` the work that
    arrived during the iteration; when an iteration leaves nothing and nobody came, the replica idles and
    starts afresh with the next prompt. ``X`` is taken to be gamma, its mean and variance the fixed point
    of that recursion. A request arriving a fraction ``u`` into an iteration of ``X`` first waits the rest of
    it, then the work ahead of it (the leftover of ``X`` and the ``u`` share of ``N``) and its own, in full
    iterations of ``fixed_s + budget_s``, and its last iteration carries whoever arrived before it started
    (up to the budget): its first token comes at that iteration's end.
    """

    fixed_s: float
    budget_s: float
    mean_work_s: float
    work_sq_s2: float  # E[w^2]
    own_work_s: np.ndarray  # w at the tagged request's prompt nodes
    alone_s: float  # TTFT of the percentile prompt on an idle engine

    @classmethod
    def build(cls, *, fixed_s: float, b: float, c: float, budget_tokens: float, mix: TrafficMix,
              percentile: float) -> _PromptQueue:
        mean = mix.mean_input_tokens
        sigma = _lognormal_sigma(mean, mix.p90_input_tokens)

        def moment(k: int) -> float:
            return float(mean**k * math.exp(k * (k - 1) * sigma * sigma / 2.0))

        mean_work = b * mean + c * moment(2)
        work_sq = max(b * b * moment(2) + 2.0 * b * c * moment(3) + c * c * moment(4),
                      mean_work * mean_work * (1.0 + 1.0 / _MAX_SHAPE))
        mu = math.log(mean) - sigma * sigma / 2.0
        prompts = np.exp(mu + sigma * _PROMPT_Z)
        p = math.exp(mu + sigma * _z(percentile))
        budget_s = max(1.0, budget_tokens) * mean_work / mean  # work per token, length-weighted
        own = b * p + c * p * p
        alone = fixed_s * max(1, math.ceil(own / budget_s - 1e-9)) + own
        return cls(fixed_s, budget_s, mean_work, work_sq, b * prompts + c * prompts * prompts, alone)

    @property
    def saturation(self) -> float:
        """The rate at which full iterations back to back only just keep up."""
        return 1.0 / (self.mean_work_s * (1.0 + self.fixed_s / self.budget_s))

    def _next_moments(self, shape: float, scale: float, rate: float) -> tuple[float, float, float, float]:
        """Mean and variance of ``X'`` for ``X ~ gamma(shape, scale)``, with E[iteration] and P(idle restart)."""
        fixed, budget, ew, ew2 = self.fixed_s, self.budget_s, self.mean_work_s, self.work_sq_s2
        stretch = 1.0 + rate * scale
        x = budget / scale
        # P(X <= budget), E[X; X <= budget] / (shape*scale), E[X^2; ...] / (shape*(shape+1)*scale^2), and for
        # the restart E[1{X <= budget} exp(-rate*X)] * stretch^shape, in one call.
        below, p1, p2, p_idle = special.gammainc((shape, shape + 1.0, shape + 2.0, shape), (x, x, x, x * stretch))
        mean_x = shape * scale
        x1_below = mean_x * p1
        x2_below = shape * (shape + 1.0) * scale * scale * p2
        served = x1_below + budget * (1.0 - below)  # E[min(X, budget)]
        served_sq = x2_below + budget * budget * (1.0 - below)
        left = mean_x - served  # E[(X - budget)+]
        left_sq = shape * (shape + 1.0) * scale * scale - x2_below - 2.0 * budget * (mean_x - x1_below) \
            + budget * budget * (1.0 - below)
        iteration = fixed + served
        iteration_sq = fixed * fixed + 2.0 * fixed * served + served_sq
        restart = math.exp(-rate * fixed - shape * math.log(stretch)) * float(p_idle)
        arrived = rate * ew * iteration
        arrived_sq = rate * ew2 * iteration + (rate * ew) ** 2 * iteration_sq
        cross = rate * ew * (fixed + budget) * left  # E[leftover * arrivals]: a leftover means a full iteration
        mean_next = left + arrived + restart * ew
        sq_next = left_sq + 2.0 * cross + arrived_sq + restart * ew2
        return float(mean_next), float(sq_next - mean_next * mean_next), float(iteration), restart

    def state(self, rate: float, start: tuple[float, float] | None = None) -> _QueueState | None:
        """The fixed point at ``rate``; ``None`` when the queue does not settle (at or past saturation)."""
        ew = self.mean_work_s
        low, high = math.log(ew * 1e-6), math.log(self.budget_s * 1e6)

        def step(z0: float, z1: float) -> tuple[float, float]:
            mean, var = math.exp(z0), math.exp(z1)
            shape = min(mean * mean / var, _MAX_SHAPE)
            next_mean, next_var, _, _ = self._next_moments(shape, mean / shape, rate)
            return (min(max(math.log(max(next_mean, 1e-300)), low), high),
                    min(max(math.log(max(next_var, 1e-300)), 2.0 * low), 2.0 * high))

        if start is None:  # no carry-over: a branching process of arrivals during iterations
            load = min(rate * ew, 0.999)
            mean = ew * max(1.0, rate * self.fixed_s / (1.0 - load))
            var = max(rate * self.work_sq_s2 * (self.fixed_s + mean) / (1.0 - load * load), 0.05 * mean * mean)
            z0, z1 = math.log(mean), math.log(var)
        else:
            z0, z1 = start
        previous = math.inf
        for iteration in range(100):
            f0, f1 = step(z0, z1)
            r0, r1 = f0 - z0, f1 - z1
            residual = max(abs(r0), abs(r1))
            if z0 >= high - 1e-9:
                break  # the waiting work grows without bound
            if residual < _SOLVE_TOL:
                return self._state_at(f0, f1, rate)
            if iteration < 1 or residual < 0.1 * previous:  # contracting fast: keep iterating
                previous, z0, z1 = residual, f0, f1
                continue
            previous = residual
            # Slow contraction (heavy load): a Newton step on step(z) - z, forward-difference Jacobian.
            h = 1e-6
            g0, g1 = step(z0 + h, z1)
            k0, k1 = step(z0, z1 + h)
            j00, j10 = (g0 - z0 - h - r0) / h, (g1 - z1 - r1) / h
            j01, j11 = (k0 - z0 - r0) / h, (k1 - z1 - h - r1) / h
            det = j00 * j11 - j01 * j10
            if det == 0.0 or not math.isfinite(det):
                z0, z1 = f0, f1
                continue
            n0 = min(max(z0 - (j11 * r0 - j01 * r1) / det, low), high)
            n1 = min(max(z1 - (j00 * r1 - j10 * r0) / det, 2.0 * low), 2.0 * high)
            m0, m1 = step(n0, n1)
            z0, z1 = (n0, n1) if max(abs(m0 - n0), abs(m1 - n1)) < residual else (f0, f1)
        return None if start is None else self.state(rate)

    def _state_at(self, z0: float, z1: float, rate: float) -> _QueueState:
        mean, var = math.exp(z0), math.exp(z1)
        shape = min(mean * mean / var, _MAX_SHAPE)
        _, _, iteration, restart = self._next_moments(shape, mean / shape, rate)
        return _QueueState(shape, mean / shape, iteration, restart, (z0, z1))

    def ttft_cdf(self, target_s: float, rate: float, state: _QueueState) -> float:
        """P(TTFT <= target_s) at ``rate``."""
        fixed, budget, ew, ew2 = self.fixed_s, self.budget_s, self.mean_work_s, self.work_sq_s2
        full = fixed + budget
        waiting = special.gammaincinv(state.shape, _WORK_LEVELS) * state.scale
        length = fixed + np.minimum(waiting, budget)
        weights = _WORK_WEIGHTS * length  # an arrival lands in an iteration in proportion to its length
        weights /= weights.sum()
        length = length[:, None, None]
        ahead_left = np.maximum(waiting - budget, 0.0)[:, None, None] + self.own_work_s[None, None, :]
        rest = (1.0 - _ARRIVAL) * length  # of the iteration in progress
        spare = target_s - rest
        full_before = np.maximum(np.floor(spare / full), 0.0)  # whole iterations that fit before the target
        last_end = spare - (full_before + 1.0) * fixed  # work that may be done by the target
        early = rate * _ARRIVAL * length  # expected arrivals ahead of it in the iteration it arrives in
        late = rate * np.maximum(rest + full_before * full, 0.0)  # joiners behind it, before its last iteration
        # Done within full_before iterations, or in the next if its work and its joiners' fit by the target.
        ahead, both = np.broadcast_arrays(early, early + late)
        done_early, with_joiners, fits = _compound_poisson_cdf(
            np.stack(np.broadcast_arrays(full_before * budget - ahead_left, last_end - ahead_left,
                                         (full_before + 1.0) * budget - ahead_left)),
            np.stack((ahead, both, ahead)), ew, ew2)
        done_early = np.where(full_before > 0.0, done_early, 0.0)
        done_next = np.where(last_end > full_before * budget,
                             np.maximum(0.0, np.minimum(with_joiners, fits) - done_early), 0.0)
        probability = np.where(spare > fixed, done_early + done_next, 0.0)
        busy = float(np.einsum("i,j,k,ijk->", weights, _ARRIVAL_WEIGHTS, _PROMPT_WEIGHTS, probability))
        idle_time = state.idle_restart / rate  # per iteration: P(it ends the busy spell) x the wait for a prompt
        idle = idle_time / (state.mean_iteration_s + idle_time)
        alone = float(_PROMPT_WEIGHTS @ (self._alone_ttft(self.own_work_s) <= target_s))
        return idle * alone + (1.0 - idle) * busy

    def _alone_ttft(self, work: np.ndarray) -> np.ndarray:
        return self.fixed_s * np.maximum(1.0, np.ceil(work / self.budget_s - 1e-9)) + work

    def margin(self, rate: float, target_s: float, percentile: float,
               solved: dict[float, tuple[float, float]] | None = None) -> float:
        """``P(TTFT <= target) - percentile`` at ``rate``; -1 when the queue cannot keep up.

        ``solved`` collects the fixed points found at other rates during one search; the solver starts from
        the one at the nearest lower rate (the waiting work grows with the rate, so it approaches from below
        and stays on the same branch). It only saves work: the answer does not depend on it.
        """
        if rate >= self.saturation * _NEAR_SATURATION:
            return -1.0
        below = [r for r in (solved or {}) if r < rate]
        state = self.state(rate, solved[max(below)] if solved and below else None)
        if state is None:
            return -1.0
        if solved is not None:
            solved[rate] = state.log_moments
        return self.ttft_cdf(target_s, rate, state) - percentile

    def ttft_at(self, rate: float, percentile: float, *, near_s: float | None = None) -> float:
        """Predicted TTFT percentile at ``rate`` (``inf`` at or past saturation); ``near_s``: a first guess."""
        if rate <= 0:
            return self.alone_s
        state = self.state(rate) if rate < self.saturation * _NEAR_SATURATION else None
        if state is None:
            return math.inf

        def excess(t: float) -> float:
            return self.ttft_cdf(t, rate, state) - percentile

        near = max(near_s or 0.0, self.alone_s)
        low, high = 0.8 * near, near
        while excess(high) < 0:
            low, high = high, high * 2.0
            if high > 1e7:
                return math.inf
        while low > 1e-9 and excess(low) >= 0:
            high, low = low, low * 0.5
        return float(brentq(excess, low, high, rtol=1e-3))


def _prompt_queue(*, profile: PerformanceProfile, mix: TrafficMix, percentile: float) -> _PromptQueue:
    # max_num_seqs caps the prompts in flight; with short prompts it, not the token budget, fills an iteration.
    budget = min(profile.max_num_batched_tokens, profile.max_num_seqs * mix.mean_input_tokens)
    return _PromptQueue.build(fixed_s=profile.prefill_a, b=profile.prefill_b, c=profile.prefill_c,
                              budget_tokens=budget, mix=mix, percentile=percentile)


def _prompts_per_iteration(*, budget_tokens: float, seats: float, mix: TrafficMix) -> int:
    return int(max(1, min(seats, math.floor(budget_tokens / mix.mean_input_tokens))))


# ---------------------------------------------------------------------------------------------------------------
# The aggregated role's prompt queue: a birth-death chain over requests (inferno's state-dependent M/M/1/K)


@dataclass(frozen=True, slots=True)
class _BacklogQueue:
    """The aggregated role's TTFT: an iteration takes up to ``K`` mean prompts; with ``n`` requests present the
    replica completes ``min(n, K)/T(min(n, K))`` per second; a request that finds ``n`` waits for the batch in
    service, the full batches ahead and its own (with the percentile prompt and whoever joined meanwhile). The
    TTFT percentile is the TTFT at the backlog percentile."""

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
              mean_sq_tokens: float, own_tokens: float, max_batch: int) -> _BacklogQueue:
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
            if high >= _UNBOUNDED:
                return _UNBOUNDED
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
            return _UNBOUNDED
        return k + max(0, math.ceil(math.log(remaining) / math.log(self.rho) - 1.0 - 1e-9))


def _backlog_queue(*, profile: PerformanceProfile, mix: TrafficMix, percentile: float, overhead_s: float,
                   budget: float, seats: float) -> _BacklogQueue:
    budget = max(1.0, budget)
    return _BacklogQueue.build(
        overhead_s=overhead_s, b=profile.prefill_b, c=profile.prefill_c, budget=budget,
        mean_tokens=mix.mean_input_tokens, mean_sq_tokens=mix.input_second_moment,
        own_tokens=mix.input_tokens_at(percentile),
        max_batch=int(max(1, min(seats, math.floor(budget / mix.mean_input_tokens)))),
    )


# ---------------------------------------------------------------------------------------------------------------
# Roles


def prefill_capacity(*, profile: PerformanceProfile, mix: TrafficMix, slo: SloTargets) -> CapacityEstimate:
    """Requests per second one prefill replica serves with TTFT (queue + prefill) within the SLO percentile."""
    if max(mix.input_tokens_at(slo.percentile), mix.mean_input_tokens) > profile.kv_capacity_tokens:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.KV_UNATTAINABLE, 0, None, None)
    queue = _prompt_queue(profile=profile, mix=mix, percentile=slo.percentile)
    if queue.alone_s > slo.ttft_s:
        return CapacityEstimate(Role.PREFILL, 0.0, Binding.TTFT_UNATTAINABLE, 0, queue.alone_s, None)
    solved: dict[float, tuple[float, float]] = {}
    rate = _largest_rate(lambda r: queue.margin(r, slo.ttft_s, slo.percentile, solved), queue.saturation,
                         guess=0.7 * queue.saturation)
    batch = _prompts_per_iteration(budget_tokens=profile.max_num_batched_tokens, seats=profile.max_num_seqs, mix=mix)
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
    by_itl = (slo.itl_s - profile.decode_alpha) / per_sequence if per_sequence > 0 else _UNBOUNDED
    if by_itl < 1:
        return CapacityEstimate(Role.DECODE, 0.0, Binding.ITL_UNATTAINABLE, 0, None, alone)
    z = max(0.0, _z(slo.percentile))
    z_admit = _z(max(slo.percentile, ADMISSION_PERCENTILE))
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

    def queue(self, rate: float) -> _BacklogQueue:
        running = self.running(rate) if rate > 0 else 0.0
        p = self.profile
        return _backlog_queue(profile=p, mix=self.mix, percentile=self.slo.percentile,
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
