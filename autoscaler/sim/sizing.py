"""Replicas a window of known traffic needs, from the capacity model (:mod:`autoscaler.perf.capacity`).

Used where the traffic is known rather than forecast: the clairvoyant model (each interval's actual requests),
static provisioning for the peak, and the warm start every policy begins from.

Every request counts in the mix, including those that miss the SLO even alone on an idle cluster (a prompt whose
prefill alone outlasts the TTFT target): they still take capacity. :func:`feasible` says which they are; their
share is the ceiling on any policy's attainment, reported next to the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.capacity import SloTargets, TrafficMix, estimate_capacity, replicas_needed
from autoscaler.perf.profile import PerformanceProfile

__all__ = ["FALLBACK_PERCENTILES", "Sizing", "alone_itl_s", "alone_ttft_s", "feasible", "mix_of", "size_pools"]

FALLBACK_PERCENTILES = (0.9, 0.5)


def alone_ttft_s(prompts: np.ndarray, *, profile: PerformanceProfile, transfer_s: np.ndarray | float) -> np.ndarray:
    """TTFT of each prompt served alone: chunked prefill, the KV transfer, the first decode step."""
    n = prompts.astype(float)
    chunks = np.ceil(n / profile.max_num_batched_tokens)
    prefill = chunks * profile.prefill_a + profile.prefill_b * n + profile.prefill_c * n * n
    first_step = profile.decode_alpha + profile.decode_beta + profile.decode_gamma * n
    return prefill + transfer_s + first_step


def alone_itl_s(prompts: np.ndarray, outputs: np.ndarray, *, profile: PerformanceProfile) -> np.ndarray:
    """Mean inter-token latency of each request decoded alone (context grows from prompt to prompt + output)."""
    mean_context = prompts.astype(float) + outputs.astype(float) / 2.0
    return profile.decode_alpha + profile.decode_beta + profile.decode_gamma * mean_context


def feasible(prompts: np.ndarray, outputs: np.ndarray, *, profile: PerformanceProfile, slo: SloTargets,
             transfer_s: np.ndarray | float) -> np.ndarray:
    """Which requests can meet both SLOs at all (served alone on an idle cluster)."""
    ttft_ok = alone_ttft_s(prompts, profile=profile, transfer_s=transfer_s) <= slo.ttft_s
    itl_ok = (outputs <= 1) | (alone_itl_s(prompts, outputs, profile=profile) <= slo.itl_s)
    return ttft_ok & itl_ok


def mix_of(prompts: np.ndarray, outputs: np.ndarray, *, rate_rps: float) -> TrafficMix | None:
    """The traffic mix of some requests (mean and p90 prompt, mean output); None for no requests."""
    if len(prompts) == 0:
        return None
    mean = max(1.0, float(np.mean(prompts)))
    return TrafficMix(mean_input_tokens=mean, p90_input_tokens=max(mean, float(np.quantile(prompts, 0.9))),
                      mean_output_tokens=max(1.0, float(np.mean(outputs))), request_rate_rps=rate_rps)


def window_mixes(prompts: np.ndarray, outputs: np.ndarray, *, lo: np.ndarray, hi: np.ndarray,
                 rates_rps: np.ndarray) -> list[TrafficMix | None]:
    """:func:`mix_of` of ``prompts[lo[i]:hi[i]]`` (and outputs) for every window ``i``, the same to the last bit,
    for windows whose bounds never move back (``lo`` and ``hi`` non-decreasing) over integer token counts.

    ``static-peak`` sizes each minute of a trace for the mix of a trace-long window around it: millions of prompts
    per window on a two-day replay, where a partition per window cost a minute. Here the windows' prompts are
    counted per distinct length as the windows slide (each prompt enters and leaves once), and the p90 is read
    from the running counts; means are exact integer sums over the count (float64 sums of integers are exact
    below 2**53, in any order, as ``np.mean``'s are), and the p90 interpolates between the two order statistics
    with NumPy's arithmetic for its default (linear) method."""
    if not (np.issubdtype(prompts.dtype, np.integer) and np.issubdtype(outputs.dtype, np.integer)):
        raise TypeError("window_mixes needs integer token counts")
    if np.any(np.diff(lo) < 0) or np.any(np.diff(hi) < 0) or np.any(hi < lo):
        raise ValueError("window_mixes needs windows that only move forward")
    values, index = np.unique(prompts, return_inverse=True)
    prompt_sums = np.concatenate([[0], np.cumsum(prompts, dtype=np.int64)])
    output_sums = np.concatenate([[0], np.cumsum(outputs, dtype=np.int64)])
    counts = np.zeros(len(values), dtype=np.int64)
    at_lo = at_hi = 0
    out: list[TrafficMix | None] = []
    for a, b, rate in zip(lo.tolist(), hi.tolist(), rates_rps.tolist(), strict=True):
        counts += np.bincount(index[at_hi:max(at_hi, b)], minlength=len(values))
        counts -= np.bincount(index[at_lo:a], minlength=len(values))
        at_lo, at_hi = a, max(at_hi, b)
        n = b - a
        if n == 0:
            out.append(None)
            continue
        mean = max(1.0, float(prompt_sums[b] - prompt_sums[a]) / n)
        p90 = _linear_quantile(values, np.cumsum(counts), n, 0.9)
        out.append(TrafficMix(mean_input_tokens=mean, p90_input_tokens=max(mean, p90),
                              mean_output_tokens=max(1.0, float(output_sums[b] - output_sums[a]) / n),
                              request_rate_rps=rate))
    return out


def _linear_quantile(values: np.ndarray, cumulative: np.ndarray, n: int, q: float) -> float:
    """``np.quantile(x, q)`` of ``n`` samples given as ``cumulative`` counts per sorted distinct value."""
    virtual = (n - 1) * q  # NumPy's virtual index for its linear method
    below = math.floor(virtual)
    gamma = virtual - below
    below = min(max(below, 0), n - 1)
    a, b = (int(values[np.searchsorted(cumulative, k, side="right")]) for k in (below, min(below + 1, n - 1)))
    diff = b - a
    return float(b - diff * (1.0 - gamma)) if gamma >= 0.5 else float(a + diff * gamma)


@dataclass(frozen=True, slots=True)
class Sizing:
    prefill: int
    decode: int
    mix: TrafficMix | None = None

    def of(self, role: Role) -> int:
        return self.prefill if role is Role.PREFILL else self.decode


def size_pools(*, mix: TrafficMix | None, rate_rps: float, profile: PerformanceProfile, slo: SloTargets,
               min_replicas: int = 1, max_replicas: int = 10_000) -> Sizing:
    """Prefill and decode replicas for ``rate_rps`` of ``mix`` within the SLO (clamped to the bounds).

    When the model finds the SLO percentile unattainable for a role (its percentile prompt alone misses the
    target), the role is sized at the lower percentiles of ``FALLBACK_PERCENTILES`` in turn, and at last for
    throughput alone (every replica busy): no count meets the SLO there, and past saturation more does not help.
    """
    if mix is None or rate_rps <= 0:
        return Sizing(min_replicas, min_replicas, mix)
    counts = []
    for role in (Role.PREFILL, Role.DECODE):
        needed = None
        for percentile in (slo.percentile, *(q for q in FALLBACK_PERCENTILES if q < slo.percentile)):
            target = SloTargets(ttft_s=slo.ttft_s, itl_s=slo.itl_s, percentile=percentile)
            needed = replicas_needed(rate_rps=rate_rps,
                                     capacity=estimate_capacity(profile=profile, role=role, mix=mix, slo=target))
            if needed is not None:
                break
        if needed is None:
            needed = math.ceil(rate_rps * _busy_s_per_request(profile, role, mix) - 1e-9)
        counts.append(min(max_replicas, max(min_replicas, needed)))
    return Sizing(counts[0], counts[1], mix)


def _busy_s_per_request(profile: PerformanceProfile, role: Role, mix: TrafficMix) -> float:
    """Replica-seconds one request takes at full batching: its prefill alone, or its share of a full decode batch."""
    if role is Role.PREFILL:
        n = mix.mean_input_tokens
        return profile.prefill_b * n + profile.prefill_c * mix.input_second_moment + profile.prefill_a
    context = mix.inflight_context_tokens
    batch = max(1, min(profile.max_num_seqs, math.floor(profile.kv_capacity_tokens / context)))
    return mix.mean_output_tokens * profile.decode_step_time(batch, context) / batch
