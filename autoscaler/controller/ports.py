"""The seams of the control loop. Real adapters: Prometheus + Kubernetes; the simulator provides its own."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.core.nodes import MachineSetState, NodePlan, NodeState
from autoscaler.core.types import (
    Decision,
    ReplicaCounts,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import SpecError

__all__ = [
    "Clock",
    "NodeExecution",
    "NodeObservation",
    "NodeProvisioner",
    "ReplicaReader",
    "Scaler",
    "SignalSource",
    "VariantInsight",
    "VariantPlacement",
    "VariantSource",
    "WallClock",
]


class VariantSource(Protocol):
    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        """The variants to manage, and the objects that could not be understood."""
        ...


class SignalSource(Protocol):
    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        """Signals for every variant; a variant without data maps to a MISSING entry (never raises for one)."""
        ...


@dataclass(frozen=True, slots=True)
class VariantInsight:
    """What the cycle believes about a variant beyond its decision, for its status: the model's forecast at the
    provisioning horizon, its admission ratio (early rejection) and the calibration of the variant's profile.
    ``None`` means not known this cycle (the status keeps what it had)."""

    forecast_horizon_s: float | None = None
    forecast_rps: float | None = None
    forecast_prompt_tokens_per_s: float | None = None
    forecast_generation_tokens_per_s: float | None = None
    admission_ratio: float | None = None
    rejection_threshold: float | None = None
    """Predicted load (latency over its SLO) above which the gateway rejects new requests."""
    predicted_prefill_load: float | None = None
    """Predicted TTFT of a request arriving now over the TTFT SLO."""
    predicted_decode_load: float | None = None
    """Predicted decode load when a request admitted now reaches decode (Mooncake's prediction)."""
    profile: str | None = None
    calibration_samples: int | None = None
    calibration_factor: float | None = None
    """Observed / profile-predicted latency at the operating point (1 = the profile is right)."""
    calibration_relative_error: float | None = None


class Scaler(Protocol):
    def current_replicas(self, spec: VariantSpec) -> int: ...

    def scale(self, spec: VariantSpec, replicas: int) -> None: ...

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None,
                     insight: VariantInsight | None = None) -> None: ...


class ReplicaReader(Protocol):
    """Optional on a Scaler: where the target's pods stand (ready, starting, Pending for lack of GPUs), so the
    planner neither stacks scale-ups on pods that cannot start (AIBrix #2670) nor lets them block a scale-down
    (Dynamo #14251). ``None``: not known this cycle."""

    def replica_counts(self, spec: VariantSpec) -> ReplicaCounts | None: ...


@dataclass(frozen=True, slots=True)
class VariantPlacement:
    """What the node planner needs of one variant beyond its spec and decision (its GPUs per replica are the
    planner's count: :func:`autoscaler.core.plan.replica_gpus`)."""

    unschedulable: int = 0  # pods Pending now for lack of GPUs (PodScheduled=False, Unschedulable)


@dataclass(frozen=True, slots=True)
class NodeObservation:
    """The GPU node pools as they are now. A variant missing from ``placements`` is left out of node
    planning (its node group, if any, is not one the provisioner manages) and is scaled as usual."""

    machinesets: tuple[MachineSetState, ...] = ()
    nodes: tuple[NodeState, ...] = ()  # nodes of those MachineSets, with our serving pods on each
    placements: Mapping[VariantRef, VariantPlacement] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeExecution:
    """How far a node plan got: ``plan.actions[:done]`` were carried out; ``error``: why the next was not."""

    done: int
    error: str = ""


class NodeProvisioner(Protocol):
    def observe(self, variants: Sequence[VariantSpec]) -> NodeObservation:
        """MachineSets, their nodes and where the variants' pods run. Raises AutoscalerError when it cannot
        read them (then the cycle plans no nodes)."""
        ...

    def execute(self, plan: NodePlan, *, targets: Mapping[VariantRef, ScaleTarget]) -> NodeExecution:
        """Carry out the actions in order; stop at the first failure or stale step (never raises for one)."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock) or since the start of a simulation."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()
