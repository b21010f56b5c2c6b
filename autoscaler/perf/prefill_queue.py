"""The prefill role's prompt queue, as the capacity model sees it: how long a request waits behind the prompts
ahead of it on one replica, at a given arrival rate.

Two models. :class:`PromptQueue` (the prefill role): gated iterations up to the token budget, the work waiting at
an iteration's start gamma with the mean and variance of the recursion's fixed point (see
:mod:`autoscaler.perf.capacity`'s docstring for the model and its accuracy against the engine).
:class:`BacklogQueue` (the aggregated role, until it moves to the first): a birth-death queue of prompts with the
decode part of each step as per-iteration overhead. Pure math over a profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.optimize import brentq

from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.traffic import TrafficMix, lognormal_sigma, normal_quantile

__all__ = ["UNBOUNDED", "BacklogQueue", "PromptQueue", "backlog_queue", "prompt_queue", "prompts_per_iteration"]

UNBOUNDED = 10_000_000  # a backlog or batch no latency target limits


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
class PromptQueue:
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
              percentile: float) -> PromptQueue:
        mean = mix.mean_input_tokens
        sigma = lognormal_sigma(mean, mix.p90_input_tokens)

        def moment(k: int) -> float:
            return float(mean**k * math.exp(k * (k - 1) * sigma * sigma / 2.0))

        mean_work = b * mean + c * moment(2)
        work_sq = max(b * b * moment(2) + 2.0 * b * c * moment(3) + c * c * moment(4),
                      mean_work * mean_work * (1.0 + 1.0 / _MAX_SHAPE))
        mu = math.log(mean) - sigma * sigma / 2.0
        prompts = np.exp(mu + sigma * _PROMPT_Z)
        p = math.exp(mu + sigma * normal_quantile(percentile))
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


def prompt_queue(*, profile: PerformanceProfile, mix: TrafficMix, percentile: float) -> PromptQueue:
    # max_num_seqs caps the prompts in flight; with short prompts it, not the token budget, fills an iteration.
    budget = min(profile.max_num_batched_tokens, profile.max_num_seqs * mix.mean_input_tokens)
    return PromptQueue.build(fixed_s=profile.prefill_a, b=profile.prefill_b, c=profile.prefill_c,
                              budget_tokens=budget, mix=mix, percentile=percentile)


def prompts_per_iteration(*, budget_tokens: float, seats: float, mix: TrafficMix) -> int:
    return int(max(1, min(seats, math.floor(budget_tokens / mix.mean_input_tokens))))


# ---------------------------------------------------------------------------------------------------------------
# The aggregated role's prompt queue: a birth-death chain over requests (inferno's state-dependent M/M/1/K)


@dataclass(frozen=True, slots=True)
class BacklogQueue:
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
              mean_sq_tokens: float, own_tokens: float, max_batch: int) -> BacklogQueue:
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
            if high >= UNBOUNDED:
                return UNBOUNDED
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
            return UNBOUNDED
        return k + max(0, math.ceil(math.log(remaining) / math.log(self.rho) - 1.0 - 1e-9))


def backlog_queue(*, profile: PerformanceProfile, mix: TrafficMix, percentile: float, overhead_s: float,
                   budget: float, seats: float) -> BacklogQueue:
    budget = max(1.0, budget)
    return BacklogQueue.build(
        overhead_s=overhead_s, b=profile.prefill_b, c=profile.prefill_c, budget=budget,
        mean_tokens=mix.mean_input_tokens, mean_sq_tokens=mix.input_second_moment,
        own_tokens=mix.input_tokens_at(percentile),
        max_batch=int(max(1, min(seats, math.floor(budget / mix.mean_input_tokens)))),
    )

