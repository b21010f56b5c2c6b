"""The simulator against the capacity model (:mod:`autoscaler.perf.capacity`) at a constant Poisson load.

For a latency target ``T`` the capacity model gives the largest rate one replica sustains with its p90 latency
at ``T``. Drive one simulated replica at exactly that rate (the other role over-provisioned so it does not
interfere) and measure the p90: the ratio measured / predicted says how well the two agree.

- prefill: p90 of (prefill finished - arrival), requests of a fixed prompt length (the capacity model sees only
  the mean and p90 of the prompts), exponential output lengths;
- decode: p90 over every generated token of the decode step time, exponential output lengths (the model's
  ``output_cv = 1``);
- prefill on a real mix (:func:`check_prefill_mix`): prompts and outputs drawn from a trace, the model given
  their mean and p90 prompt, as the planner gives it what Prometheus measures.

Pure of I/O; deterministic for a seed. ``benchmarks/bench_simulator.py`` prints the table; the test checks
the agreement on a couple of points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.capacity import SloTargets, TrafficMix, decode_capacity, prefill_capacity
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.baselines import Fixed
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace

__all__ = ["TheoryPoint", "check_decode", "check_prefill", "check_prefill_mix", "poisson_trace"]


@dataclass(frozen=True, slots=True)
class TheoryPoint:
    role: Role
    target_s: float  # the latency target the model sized for
    rate_rps: float  # the model's sustainable rate per replica at that target, which the simulation ran at
    predicted_p90_s: float  # the model's p90 latency at that rate
    simulated_p90_s: float
    requests: int

    @property
    def ratio(self) -> float:
        """Simulated over predicted p90 (1 = exact; below 1 = the model is conservative)."""
        return self.simulated_p90_s / self.predicted_p90_s


def poisson_trace(*, rate_rps: float, duration_s: float, prompt_tokens: int, mean_output_tokens: float,
                  seed: int) -> Trace:
    """Poisson arrivals at ``rate_rps``, a fixed prompt length and geometric (discrete exponential) outputs."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate_rps * duration_s))
    arrivals = np.sort(rng.uniform(0.0, duration_s, n))
    arrivals -= arrivals[0] if n else 0.0
    outputs = rng.geometric(1.0 / max(mean_output_tokens, 1.0), n).astype(np.int64)
    return Trace(arrival_s=arrivals, input_tokens=np.full(n, prompt_tokens, dtype=np.int64),
                 output_tokens=outputs, source=f"poisson({rate_rps:.3g}/s)")


def _scenario(profile: PerformanceProfile, slo: SloTargets, seed: int) -> Scenario:
    return Scenario(profile=profile.name, slo_ttft_s=slo.ttft_s, slo_itl_s=slo.itl_s, slo_percentile=slo.percentile,
                    warmup_s=0.0, tail_s=120.0, seed=seed, kv_latency_s=0.0, max_replicas=64)


def check_prefill(*, profile: PerformanceProfile, prompt_tokens: int, mean_output_tokens: float,
                  ttft_target_s: float, duration_s: float = 600.0, seed: int = 0) -> TheoryPoint:
    """One prefill replica at the rate the model says meets a p90 TTFT of ``ttft_target_s``."""
    mix = TrafficMix(mean_input_tokens=prompt_tokens, p90_input_tokens=prompt_tokens,
                     mean_output_tokens=mean_output_tokens)
    slo = SloTargets(ttft_s=ttft_target_s, itl_s=10.0, percentile=0.9)
    estimate = prefill_capacity(profile=profile, mix=mix, slo=slo)
    if not estimate.feasible or estimate.ttft_s is None:
        raise ValueError(f"the capacity model finds a p90 TTFT of {ttft_target_s} s unattainable for "
                         f"{prompt_tokens}-token prompts on {profile.name}")
    rate = estimate.max_rate_rps
    trace = poisson_trace(rate_rps=rate, duration_s=duration_s, prompt_tokens=prompt_tokens,
                          mean_output_tokens=mean_output_tokens, seed=seed)
    decode_rate = decode_capacity(profile=profile, mix=mix, slo=SloTargets(ttft_s=10.0, itl_s=0.2)).max_rate_rps
    decoders = max(1, math.ceil(2 * rate / decode_rate)) if decode_rate > 0 else 8
    result = simulate(trace, _scenario(profile, slo, seed), Fixed(prefill=1, decode=decoders), profile=profile,
                      keep_cluster=True)
    assert result.cluster is not None
    ttft = result.cluster.outcomes.prefilled_s - result.cluster.trace.arrival_s
    steady = ttft[len(ttft) // 10:]  # the first tenth fills the queue from empty
    steady = steady[np.isfinite(steady)]
    return TheoryPoint(Role.PREFILL, ttft_target_s, rate, float(estimate.ttft_s), float(np.quantile(steady, 0.9)),
                       int(steady.size))


def check_decode(*, profile: PerformanceProfile, prompt_tokens: int, mean_output_tokens: float,
                 itl_target_s: float, duration_s: float = 300.0, seed: int = 0) -> TheoryPoint:
    """One decode replica at the rate the model says meets a p90 ITL of ``itl_target_s``."""
    mix = TrafficMix(mean_input_tokens=prompt_tokens, p90_input_tokens=prompt_tokens,
                     mean_output_tokens=mean_output_tokens)
    slo = SloTargets(ttft_s=60.0, itl_s=itl_target_s, percentile=0.9)
    estimate = decode_capacity(profile=profile, mix=mix, slo=slo)
    if not estimate.feasible or estimate.itl_s is None:
        raise ValueError(f"the capacity model finds a p90 ITL of {itl_target_s} s unattainable on {profile.name}")
    rate = estimate.max_rate_rps
    trace = poisson_trace(rate_rps=rate, duration_s=duration_s, prompt_tokens=prompt_tokens,
                          mean_output_tokens=mean_output_tokens, seed=seed)
    prefill_rate = prefill_capacity(profile=profile, mix=mix, slo=SloTargets(ttft_s=5.0, itl_s=1.0)).max_rate_rps
    prefillers = max(1, math.ceil(2 * rate / prefill_rate)) if prefill_rate > 0 else 8
    result = simulate(trace, _scenario(profile, slo, seed), Fixed(prefill=prefillers, decode=1), profile=profile,
                      keep_cluster=True, record_latencies=True)
    assert result.cluster is not None
    steps = result.cluster.token_itl[len(result.cluster.token_itl) // 10:]
    seconds = np.concatenate([s for s, _ in steps]) if steps else np.zeros(0)
    tokens = np.concatenate([c for _, c in steps]) if steps else np.zeros(0)
    order = np.argsort(seconds, kind="stable")
    cumulative = np.cumsum(tokens[order])
    p90 = float(seconds[order][np.searchsorted(cumulative, 0.9 * cumulative[-1])]) if cumulative.size else math.nan
    return TheoryPoint(Role.DECODE, itl_target_s, rate, float(estimate.itl_s), p90, len(trace))


def check_prefill_mix(*, profile: PerformanceProfile, prompts: np.ndarray, outputs: np.ndarray,
                      ttft_target_s: float, duration_s: float = 1200.0, seed: int = 0) -> TheoryPoint:
    """One prefill replica at the model's rate for a mix drawn from real requests (``prompts``, ``outputs``)."""
    outputs = np.maximum(outputs, 1)
    mix = TrafficMix(mean_input_tokens=float(np.mean(prompts)), p90_input_tokens=float(np.quantile(prompts, 0.9)),
                     mean_output_tokens=float(np.mean(outputs)))
    slo = SloTargets(ttft_s=ttft_target_s, itl_s=10.0, percentile=0.9)
    estimate = prefill_capacity(profile=profile, mix=mix, slo=slo)
    if not estimate.feasible or estimate.ttft_s is None:
        raise ValueError(f"the capacity model finds a p90 TTFT of {ttft_target_s} s unattainable for this mix "
                         f"on {profile.name}")
    rate = estimate.max_rate_rps
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration_s))
    arrivals = np.sort(rng.uniform(0.0, duration_s, n))
    arrivals -= arrivals[0] if n else 0.0
    pick = rng.integers(0, len(prompts), n)
    trace = Trace(arrival_s=arrivals, input_tokens=np.asarray(prompts, dtype=np.int64)[pick],
                  output_tokens=np.asarray(outputs, dtype=np.int64)[pick], source="resampled")
    result = simulate(trace, _scenario(profile, slo, seed), Fixed(prefill=1, decode=8), profile=profile,
                      keep_cluster=True)
    assert result.cluster is not None
    ttft = result.cluster.outcomes.prefilled_s - result.cluster.trace.arrival_s
    steady = np.nan_to_num(ttft[len(ttft) // 10:], nan=math.inf)
    return TheoryPoint(Role.PREFILL, ttft_target_s, rate, float(estimate.ttft_s), float(np.quantile(steady, 0.9)),
                       int(steady.size))
