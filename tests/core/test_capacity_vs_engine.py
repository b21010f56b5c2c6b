"""The capacity model against the engine the emulator's pods run (:class:`autoscaler.perf.engine.Engine`).

Issue 3: "at the rate the model says is the limit, the emulator's TTFT/ITL sit at the target within 15%; at 20%
above, they break it". One replica of each profile, driven directly (no emulator process around it): Poisson
arrivals, lognormal prompt lengths with the mix's mean and p90, lognormal output lengths with the mix's mean
and coefficient of variation, all seeded. The capacity model only ever sees the mix's mean and p90.

- prefill (TTFT-bound): p90 over requests of first token minus arrival, after the first tenth of the requests
  (the queue starts empty);
- decode (ITL-bound): p90 over generated tokens of the inter-token latency (vLLM's histogram counts one
  observation per token), after a warm-up that fills the batch;
- decode, KV-cache-bound: one-sided, see :func:`test_kv_bound_decode_admits_everyone_at_the_limit_and_queues_20_percent_above`.

``benchmarks/bench_capacity_vs_engine.py`` prints these cases and more (other mixes and percentiles) with
longer runs.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np
import pytest

from autoscaler.core.types import Role
from autoscaler.perf.capacity import Binding, SloTargets, TrafficMix, estimate_capacity
from autoscaler.perf.engine import Completion, Engine, Request
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles

PROFILES = default_profiles(environ={})
CHAT = TrafficMix(mean_input_tokens=1024, p90_input_tokens=2048, mean_output_tokens=256)
LONG = TrafficMix(mean_input_tokens=4096, p90_input_tokens=8192, mean_output_tokens=256)  # documents, code
TEMPLATED = TrafficMix(mean_input_tokens=2000, p90_input_tokens=2400, mean_output_tokens=256)  # near-equal prompts
TOLERANCE = 0.15  # the "within 15%"
ABOVE = 1.2  # the "20% above"
PREFILL_REQUESTS = 40_000  # p90 TTFT to about +-5% (seed to seed) at these loads
DECODE_WINDOW_S, DECODE_WARMUP_S = 600.0, 60.0  # a decode sequence lives ~8 s here: ~75 batch lifetimes
MAX_TOKENS = 32_768


def lognormal_sigma(*, mean: float, p90: float) -> float:
    """Sigma of the lognormal with this mean and 90th percentile: ln(p90/mean) = z90*sigma - sigma^2/2."""
    z90 = NormalDist().inv_cdf(0.9)
    return z90 - math.sqrt(z90 * z90 - 2.0 * math.log(p90 / mean))


def lognormal_lengths(rng: np.random.Generator, *, mean: float, sigma: float, size: int) -> np.ndarray:
    mu = math.log(mean) - sigma * sigma / 2.0
    return np.clip(np.rint(rng.lognormal(mu, sigma, size)), 1, MAX_TOKENS).astype(np.int64)


def poisson_requests(*, mix: TrafficMix, rate_rps: float, duration_s: float, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    size = int(rate_rps * duration_s * 1.2) + 100
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, size))
    prompts = lognormal_lengths(rng, mean=mix.mean_input_tokens, size=size,
                                sigma=lognormal_sigma(mean=mix.mean_input_tokens, p90=mix.p90_input_tokens))
    outputs = lognormal_lengths(rng, mean=mix.mean_output_tokens, size=size,
                                sigma=math.sqrt(math.log(1.0 + mix.output_cv**2)))
    keep = arrivals < duration_s
    return [Request(id=i, prompt_tokens=int(p), output_tokens=int(o), arrival_s=float(t))
            for i, (t, p, o) in enumerate(zip(arrivals[keep], prompts[keep], outputs[keep], strict=True))]


def prefill_p90_ttft_s(*, profile: PerformanceProfile, mix: TrafficMix, rate_rps: float, seed: int) -> float:
    """p90 TTFT of one prefill replica fed ``PREFILL_REQUESTS`` requests at ``rate_rps``."""
    duration = PREFILL_REQUESTS / rate_rps
    engine = Engine(profile=profile, role=Role.PREFILL)
    for request in poisson_requests(mix=mix, rate_rps=rate_rps, duration_s=duration, seed=seed):
        engine.submit(request)
    done = engine.advance(4.0 * duration)  # long enough to drain even an overloaded queue
    assert engine.snapshot().waiting == 0
    return float(np.quantile([c.ttft_s for c in done if c.request.arrival_s >= 0.1 * duration], 0.9))


@dataclasses.dataclass(frozen=True)
class DecodeRun:
    p90_itl_s: float
    p90_ttft_s: float  # a decode replica's TTFT is its admission wait plus one step
    preempted: float  # fraction of finished requests preempted at least once


def run_decode(*, profile: PerformanceProfile, mix: TrafficMix, rate_rps: float, seed: int) -> DecodeRun:
    engine = Engine(profile=profile, role=Role.DECODE, record_latencies=True)
    duration = DECODE_WARMUP_S + DECODE_WINDOW_S
    for request in poisson_requests(mix=mix, rate_rps=rate_rps, duration_s=duration, seed=seed):
        engine.submit(request)
    engine.advance(DECODE_WARMUP_S)
    engine.drain_latencies()
    done: list[Completion] = engine.advance(DECODE_WINDOW_S)
    observed = engine.drain_latencies()
    order = np.argsort(observed.itl_s, kind="stable")
    tokens = np.cumsum(observed.itl_count[order])
    p90_itl = float(observed.itl_s[order][np.searchsorted(tokens, 0.9 * tokens[-1])])
    return DecodeRun(p90_itl, float(np.quantile([c.ttft_s for c in done], 0.9)),
                     float(np.mean([c.preemptions > 0 for c in done])))


# --- prefill: TTFT-bound -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mix", "ttft_s"), [
    pytest.param("llama-3.1-8b/h100", CHAT, 0.5, id="8b-h100-chat"),
    pytest.param("llama-3.1-8b/l40s", CHAT, 1.0, id="8b-l40s-chat"),
    pytest.param("llama-3.1-70b/h100-tp4", CHAT, 1.0, id="70b-h100-tp4-chat"),
    pytest.param("llama-3.1-70b/h100-tp4", LONG, 3.0, id="70b-h100-tp4-long"),
    pytest.param("llama-3.1-8b/h100", TEMPLATED, 0.5, id="8b-h100-templated"),
])
def test_prefill_p90_ttft_sits_at_the_target_at_the_models_limit_and_breaks_20_percent_above(name, mix, ttft_s):
    profile = PROFILES[name]
    capacity = estimate_capacity(profile=profile, role=Role.PREFILL, mix=mix,
                                 slo=SloTargets(ttft_s=ttft_s, itl_s=1.0))
    assert capacity.binding is Binding.TTFT and capacity.feasible

    at_limit = prefill_p90_ttft_s(profile=profile, mix=mix, rate_rps=capacity.max_rate_rps, seed=1)
    above = prefill_p90_ttft_s(profile=profile, mix=mix, rate_rps=ABOVE * capacity.max_rate_rps, seed=2)

    assert at_limit == pytest.approx(ttft_s, rel=TOLERANCE), (capacity.max_rate_rps, at_limit)
    assert above > ttft_s, (capacity.max_rate_rps, above)


# --- decode: ITL-bound -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "itl_s"), [
    pytest.param("llama-3.1-8b/h100", 0.03, id="8b-h100"),
    pytest.param("llama-3.1-8b/l40s", 0.05, id="8b-l40s"),
    pytest.param("llama-3.1-70b/h100-tp4", 0.04, id="70b-h100-tp4"),
])
def test_decode_p90_itl_sits_at_the_target_at_the_models_limit_and_breaks_20_percent_above(name, itl_s):
    profile = PROFILES[name]
    capacity = estimate_capacity(profile=profile, role=Role.DECODE, mix=CHAT,
                                 slo=SloTargets(ttft_s=1.0, itl_s=itl_s))
    assert capacity.binding is Binding.ITL and capacity.feasible

    at_limit = run_decode(profile=profile, mix=CHAT, rate_rps=capacity.max_rate_rps, seed=1)
    above = run_decode(profile=profile, mix=CHAT, rate_rps=ABOVE * capacity.max_rate_rps, seed=2)

    assert at_limit.p90_itl_s == pytest.approx(itl_s, rel=TOLERANCE), (capacity.max_rate_rps, at_limit)
    assert above.p90_itl_s > itl_s, (capacity.max_rate_rps, above)


# --- decode: KV-cache-bound (one-sided) --------------------------------------------------------------------------


def test_kv_bound_decode_admits_everyone_at_the_limit_and_queues_20_percent_above():
    """A KV-cache limit is not a latency with a target to sit at: the model sizes the running batch so that
    its tokens fit the cache 99% of the time (``ADMISSION_PERCENTILE``), and the latencies at that rate are
    whatever they are below their targets. So the check is one-sided on the latency, and two-sided on what
    the cache does: at the limit requests are admitted on arrival (the decode replica's p90 TTFT is a step or
    two, few preemptions) with the ITL within its target; 20% above, the cache is short often enough that
    requests queue for it (p90 TTFT up tenfold) and more are preempted (vLLM's recompute)."""
    profile = dataclasses.replace(PROFILES["llama-3.1-8b/h100"], kv_capacity_tokens=60_000)
    slo = SloTargets(ttft_s=1.0, itl_s=0.05)
    capacity = estimate_capacity(profile=profile, role=Role.DECODE, mix=CHAT, slo=slo)
    assert capacity.binding is Binding.KV_CACHE and capacity.feasible

    at_limit = run_decode(profile=profile, mix=CHAT, rate_rps=capacity.max_rate_rps, seed=1)
    above = run_decode(profile=profile, mix=CHAT, rate_rps=ABOVE * capacity.max_rate_rps, seed=2)

    assert at_limit.p90_itl_s <= slo.itl_s
    assert at_limit.p90_ttft_s <= 3 * profile.decode_step_time(capacity.max_batch, CHAT.inflight_context_tokens)
    assert at_limit.preempted <= 0.03, at_limit
    assert above.p90_ttft_s > 10 * at_limit.p90_ttft_s, (at_limit, above)
    assert above.preempted > 2 * at_limit.preempted, (at_limit, above)
