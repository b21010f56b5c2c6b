"""Performance profile of one model on one accelerator in one role.

Latency shapes follow the usual roofline reasoning for transformer serving:
- prefill of a batch of N prompt tokens costs ``a + b*N + c*N^2`` seconds (linear GEMMs, quadratic attention);
- one decode step for B sequences with mean context C costs ``alpha + beta*B + gamma*B*C`` seconds
  (weights read once per step, per-sequence overhead, KV-cache read proportional to tokens held).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PerformanceProfile"]


@dataclass(frozen=True, slots=True)
class PerformanceProfile:
    name: str
    model: str
    accelerator: str
    gpus_per_replica: int
    prefill_a: float  # s
    prefill_b: float  # s per token
    prefill_c: float  # s per token^2
    decode_alpha: float  # s per step
    decode_beta: float  # s per sequence per step
    decode_gamma: float  # s per (sequence x context token) per step
    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    startup_s: float = 60.0  # pod start to ready (weights loaded)
    node_startup_s: float = 600.0  # GPU node request to ready
    cost_per_gpu_hour: float = 2.0  # USD

    def prefill_time(self, tokens: float) -> float:
        """Seconds to prefill a batch holding ``tokens`` prompt tokens."""
        if tokens <= 0:
            return 0.0
        return self.prefill_a + self.prefill_b * tokens + self.prefill_c * tokens * tokens

    def decode_step_time(self, batch: float, mean_context: float) -> float:
        """Seconds for one decode step (one token for each of ``batch`` sequences)."""
        if batch <= 0:
            return 0.0
        return self.decode_alpha + self.decode_beta * batch + self.decode_gamma * batch * mean_context

    @property
    def cost_per_replica_hour(self) -> float:
        return self.cost_per_gpu_hour * self.gpus_per_replica
