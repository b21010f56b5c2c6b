"""SLO-driven (predictive) policy: replicas = capacity model(forecast at the provisioning horizon, SLO).

Prefill and decode are sized separately, each against its own capacity for the forecast mix: long prompts
lower a prefill replica's rate (more prompt tokens per request against the TTFT target) and so raise the
prefill count; long outputs lower a decode replica's rate (more steps per request against the ITL target) and
so raise the decode count. The prefill:decode ratio therefore follows the mix without a fixed ratio anywhere.

The forecast and the capacity come in as values (:mod:`autoscaler.forecast`, :mod:`autoscaler.perf.capacity`);
this module only turns them into a recommendation with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.core.types import Reason, Role
from autoscaler.perf.capacity import CapacityEstimate, SloTargets, TrafficMix, estimate_capacity
from autoscaler.perf.profile import PerformanceProfile

__all__ = ["Prediction", "predict_pools", "recommend_slo", "replicas_for_rate"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The predictive target of one variant, handed to :func:`autoscaler.core.decide.decide`."""

    replicas: int
    reason: Reason = Reason.SLO_CAPACITY
    message: str = ""
    stage_holds_load: bool = False
    """The caller checked that the targets of every variant of this stage (same model and role) carry
    today's load together; then this variant may go below its own consolidation floor, because its load
    moves to its peers (how a cost-optimal allocation retires a dear variant)."""

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {self.replicas}")


def replicas_for_rate(*, rate_rps: float, capacity_rps: float) -> int:
    """Fewest replicas whose summed capacity covers ``rate_rps``: 0 for no traffic."""
    if not (math.isfinite(rate_rps) and rate_rps >= 0):
        raise ValueError(f"rate_rps must be finite and >= 0, got {rate_rps!r}")
    if rate_rps == 0:
        return 0
    if not (math.isfinite(capacity_rps) and capacity_rps > 0):
        raise ValueError(f"capacity_rps must be finite and > 0, got {capacity_rps!r}")
    return max(1, math.ceil(rate_rps / capacity_rps - 1e-9))


def recommend_slo(*, role: Role, rate_rps: float, capacity: CapacityEstimate,
                  horizon_s: float = 0.0) -> Prediction | None:
    """Replicas of one pool for the forecast rate; None when no replica count can meet the SLO."""
    if rate_rps > 0 and not capacity.feasible:
        return None
    replicas = replicas_for_rate(rate_rps=rate_rps, capacity_rps=capacity.max_rate_rps) if rate_rps > 0 else 0
    return Prediction(replicas, Reason.SLO_CAPACITY,
                      f"{role.value}: {rate_rps:.3g} req/s at +{horizon_s:g}s over {capacity.max_rate_rps:.3g} "
                      f"req/s per replica ({capacity.binding.value}-bound) -> {replicas}")


def predict_pools(
    *, rate_rps: float, mix: TrafficMix, slo: SloTargets, profiles: Mapping[Role, PerformanceProfile],
    horizon_s: float = 0.0,
) -> dict[Role, Prediction | None]:
    """Size each pool (prefill, decode, or both) of one model for the forecast rate and mix."""
    return {
        role: recommend_slo(role=role, rate_rps=rate_rps, horizon_s=horizon_s,
                            capacity=estimate_capacity(profile=profile, role=role, mix=mix, slo=slo))
        for role, profile in profiles.items()
    }
