"""What the capacity model is asked about: the traffic mix (prompt lengths lognormal with the mix's mean and p90)
and the latency targets at a percentile. Pure values; :mod:`autoscaler.perf.capacity` prices them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

__all__ = [
    "PROMPT_SIGMA_CAP",
    "Z90",
    "SloTargets",
    "TrafficMix",
    "check_finite",
    "lognormal_sigma",
    "normal_quantile",
]

Z90 = NormalDist().inv_cdf(0.9)


@lru_cache(maxsize=64)
def normal_quantile(percentile: float) -> float:
    return NormalDist().inv_cdf(percentile)


def check_finite(name: str, value: float, *, low: float, strict: bool = True, high: float = math.inf) -> None:
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


def lognormal_sigma(mean: float, p90: float) -> float:
    """Sigma of the lognormal with this mean and p90 (0 when p90 <= mean), at most ``PROMPT_SIGMA_CAP``."""
    excess = math.log(max(p90, mean) / mean)  # = z90*sigma - sigma^2/2
    return min(PROMPT_SIGMA_CAP, Z90 - math.sqrt(max(0.0, Z90 * Z90 - 2.0 * excess)))


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
        check_finite("mean_input_tokens", self.mean_input_tokens, low=0)
        check_finite("p90_input_tokens", self.p90_input_tokens, low=0)
        check_finite("mean_output_tokens", self.mean_output_tokens, low=1, strict=False)
        check_finite("request_rate_rps", self.request_rate_rps, low=0, strict=False)
        check_finite("output_cv", self.output_cv, low=0, strict=False)

    def input_tokens_at(self, percentile: float) -> float:
        """Prompt length at ``percentile``, scaling the p90 excess over the mean by the normal quantile."""
        z = normal_quantile(percentile)
        return max(1.0, self.mean_input_tokens + (self.p90_input_tokens - self.mean_input_tokens) * z / Z90)

    @property
    def input_second_moment(self) -> float:
        """E[prompt^2] (attention cost is quadratic per prompt), of the lognormal with this mean and p90."""
        sigma = lognormal_sigma(self.mean_input_tokens, self.p90_input_tokens)
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
        check_finite("ttft_s", self.ttft_s, low=0)
        check_finite("itl_s", self.itl_s, low=0)
        check_finite("percentile", self.percentile, low=0.5, strict=False, high=1.0)

