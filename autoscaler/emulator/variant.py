"""What the emulator emulates: a variant (one Deployment of vLLM pods) and the traffic it receives."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoscaler.core.types import Role
from autoscaler.perf.profile import PerformanceProfile

__all__ = ["EmulatedVariant", "TrafficSampler", "constant_load"]


def constant_load(rate: float) -> Callable[[float], float]:
    """A load function of ``rate`` requests/s at all times."""
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a finite number >= 0, got {rate}")
    return lambda _t: rate


@dataclass(frozen=True, slots=True)
class EmulatedVariant:
    """One Deployment of vLLM pods: model, role, accelerator, performance, and the load it receives.

    ``load(t)`` is requests/s at emulated second ``t``. A decode variant whose namespace and model also have a
    prefill variant ignores its own ``load``: it receives what the prefill pods finished.
    """

    namespace: str
    deployment: str
    model: str
    role: Role
    accelerator: str
    profile: PerformanceProfile
    load: Callable[[float], float]
    mean_prompt_tokens: float = 1024.0
    mean_output_tokens: float = 256.0
    length_sigma: float = 0.5
    """Spread of the lognormal prompt and output lengths (sigma of the underlying normal); 0 gives the means."""
    startup_s: float | None = None
    """Emulated seconds from pod creation to ready; ``None`` takes ``profile.startup_s``."""
    max_model_len: int = 32768
    """Longest prompt+output a pod accepts (samples are clipped); also bounds the token-count histograms."""
    prefix_cache_hit_rate: float = 0.0
    block_size: int = 16
    """KV-cache block size in tokens (vLLM's default on CUDA)."""
    seed: int = 0

    def __post_init__(self) -> None:
        where = f"variant {self.namespace}/{self.deployment}"
        for name in ("namespace", "deployment", "model", "accelerator"):
            if not getattr(self, name):
                raise ValueError(f"{where}: {name} must not be empty")
        object.__setattr__(self, "role", Role(self.role))
        for name in ("mean_prompt_tokens", "mean_output_tokens"):
            value = getattr(self, name)
            if not (value >= 1 and math.isfinite(value)):
                raise ValueError(f"{where}: {name} must be a finite number >= 1, got {value}")
        if not (self.length_sigma >= 0 and math.isfinite(self.length_sigma)):
            raise ValueError(f"{where}: length_sigma must be a finite number >= 0, got {self.length_sigma}")
        if self.startup_s is not None and not (self.startup_s >= 0 and math.isfinite(self.startup_s)):
            raise ValueError(f"{where}: startup_s must be a finite number >= 0, got {self.startup_s}")
        if self.block_size < 1:
            raise ValueError(f"{where}: block_size must be >= 1, got {self.block_size}")
        if self.max_model_len < 2 or self.longest_request_tokens < 2:
            raise ValueError(
                f"{where}: max_model_len ({self.max_model_len}) and the KV cache of profile "
                f"{self.profile.name} ({self.profile.kv_capacity_tokens} tokens) must hold at least 2 tokens"
            )
        if not callable(self.load):
            raise TypeError(f"{where}: load must be a callable t_seconds -> requests/s")

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.deployment)

    @property
    def ready_after_s(self) -> float:
        return self.profile.startup_s if self.startup_s is None else self.startup_s

    @property
    def longest_request_tokens(self) -> int:
        """Prompt+output a pod can hold: the model length, and the KV cache of one pod."""
        return min(self.max_model_len, self.profile.kv_capacity_tokens // self.block_size * self.block_size)


class TrafficSampler:
    """Poisson arrivals and lognormal lengths for one variant, deterministic for a given seed."""

    def __init__(self, variant: EmulatedVariant) -> None:
        self._variant = variant
        self._rng = np.random.default_rng(variant.seed)

    def arrivals(self, t0: float, t1: float) -> np.ndarray:
        """Sorted arrival times in ``[t0, t1)`` for the rate ``load`` gives at the window's middle."""
        rate = float(self._variant.load((t0 + t1) / 2))
        if not (rate >= 0 and math.isfinite(rate)):
            raise ValueError(f"variant {self._variant.deployment}: load({t0:.3f}) must be >= 0, got {rate}")
        n = int(self._rng.poisson(rate * (t1 - t0)))
        return np.sort(self._rng.uniform(t0, t1, n))

    def lengths(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (prompt, output) token counts around the variant's means, clipped to what a pod can hold."""
        v = self._variant
        prompt = self._lognormal(v.mean_prompt_tokens, n)
        output = self._lognormal(v.mean_output_tokens, n)
        longest = v.longest_request_tokens
        prompt = np.clip(prompt, 1, longest - 1)
        output = np.clip(output, 1, longest - prompt)
        return prompt, output

    def _lognormal(self, mean: float, n: int) -> np.ndarray:
        sigma = self._variant.length_sigma
        mu = math.log(mean) - sigma * sigma / 2  # so that the mean of the samples is ``mean``
        return np.maximum(np.rint(self._rng.lognormal(mu, sigma, n)), 1).astype(np.int64)
