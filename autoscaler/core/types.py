"""Value types shared by the core, its adapters and the shell.

Frozen dataclasses: cheap, hashable, and impossible to mutate behind a stage's back.
Pydantic models live at the boundaries (config, CRD, files) and convert into these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from autoscaler.core.accelerators import canonical_accelerator

__all__ = [
    "IDLE_KV_USAGE",
    "Condition",
    "Decision",
    "DecisionStep",
    "Freshness",
    "Reason",
    "ReplicaCounts",
    "Role",
    "ScaleTarget",
    "SloFields",
    "VariantRef",
    "VariantSignals",
    "VariantSpec",
    "finite_or_none",
]


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"  # aggregated serving: one pool does prefill and decode


@dataclass(frozen=True, slots=True, order=True)
class VariantRef:
    """Identity of a variant: the namespaced name of its VariantAutoscaling object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    """The object whose ``scale`` subresource is patched (Deployment, StatefulSet, LWS, ...)."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class SloFields:
    """The SLO fields one source sets; None = not set there (a less specific source's value holds)."""

    ttft_s: float | None = None
    itl_s: float | None = None
    percentile: float | None = None


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One model on one accelerator type in one role, and the bounds it is scaled within."""

    ref: VariantRef
    model: str
    role: Role
    accelerator: str
    target: ScaleTarget
    min_replicas: int = 1
    max_replicas: int = 10
    dry_run: bool = False
    slo: SloFields = field(default_factory=SloFields)
    """The VariantAutoscaling's ``spec.slo``: overrides the policy's and the settings' SLO field by field."""
    gpus_per_replica: int | None = None
    """GPUs one replica uses, as the variant declares it (``spec.gpusPerReplica``, an llm-d pod template's
    ``nvidia.com/gpu`` limit); None = undeclared, the profile's count applies (:meth:`gpus`)."""
    cost_per_hour: float | None = None
    """The VariantAutoscaling's ``spec.costPerHour`` for one replica; None = priced per GPU-hour."""

    def __post_init__(self) -> None:
        # One spelling per accelerator wherever a spec is made (CRD, llmd.ai object, simulator, tests).
        object.__setattr__(self, "accelerator", canonical_accelerator(self.accelerator))
        if self.gpus_per_replica is not None and self.gpus_per_replica < 1:
            raise ValueError(f"gpus_per_replica must be >= 1, got {self.gpus_per_replica}")

    def gpus(self, profile_gpus: int | None = None) -> int:
        """GPUs one replica uses: the variant's declaration, else its profile's, else 1. The one count that
        quotas, prices and node sizing use."""
        return self.gpus_per_replica or profile_gpus or 1


class Freshness(StrEnum):
    FRESH = "fresh"  # every required signal answered within the staleness bound
    STALE = "stale"  # answered, but the newest sample is older than the bound
    MISSING = "missing"  # no answer (Prometheus down, no series for this variant)


IDLE_KV_USAGE = 0.01
"""Most KV-cache use (0..1) an idle variant may show: with nothing running vLLM holds no blocks for requests
(prefix-cached blocks nobody uses count as free), so anything above rounding noise means work in flight."""


def finite_or_none(value: float | None) -> float | None:
    """NaN and +-Inf carry no information for a decision: treat them as absent."""
    if value is None:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class VariantSignals:
    """What Prometheus says about one variant in one cycle. ``None`` means "not known".

    Totals are summed over the variant's pods; ``pods`` is how many pods reported.
    """

    freshness: Freshness
    pods: int | None = None
    waiting: float | None = None  # vllm:num_requests_waiting, summed
    running: float | None = None  # vllm:num_requests_running, summed
    kv_usage_mean: float | None = None  # 0..1
    kv_usage_max: float | None = None  # 0..1
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    completions_per_s: float | None = None
    ttft_p90_s: float | None = None
    itl_p90_s: float | None = None
    missing: tuple[str, ...] = ()
    note: str = ""
    # The traffic mix, per finished request. In an idle window (no request finished) means and p90s are 0:
    # zero demand, not unknown (Dynamo #6985); learners of the mix should skip ``idle`` windows.
    prompt_tokens_mean: float | None = None
    prompt_tokens_p90: float | None = None
    generation_tokens_mean: float | None = None
    generation_tokens_p90: float | None = None
    preemptions_per_s: float | None = None
    # Prefix-cache hits / queries (in tokens), 0..1: the share of prompt tokens whose prefill is skipped.
    prefix_cache_hit_ratio: float | None = None
    # (quantile, seconds) pairs, e.g. ((0.5, 0.08), (0.9, 0.2), (0.99, 0.6)).
    ttft_quantiles_s: tuple[tuple[float, float], ...] = ()
    itl_quantiles_s: tuple[tuple[float, float], ...] = ()
    # Pods past their warm-up, and pods still warming (kept out of calibration, Dynamo #12430).
    warm_pods: tuple[str, ...] = ()
    warming_pods: tuple[str, ...] = ()
    # What online calibration fits the profile to, averaged over the rate window (None: not exported or no
    # observation in the window). ``decoding`` is the time-averaged count of sequences in decode steps, summed
    # over pods (the rate of the ITL histogram's sum: seconds of inter-token latency per second).
    itl_mean_s: float | None = None
    decoding: float | None = None
    kv_usage_window_mean: float | None = None  # 0..1, averaged over the window and the engines
    prefill_time_mean_s: float | None = None  # vllm:request_prefill_time_seconds: scheduled to first token
    prompt_tokens_sq_mean: float | None = None  # E[prompt tokens^2], estimated from the length histogram
    # Requests of the variant's model held in the gateway's queue (the endpoint picker's flow control,
    # inference_extension_flow_control_queue_size): demand that exists even when no pod does. None: no gateway
    # metric configured, or it could not be read.
    gateway_waiting: float | None = None
    # Learning under load (perf.online): seconds the engines computed per second, summed over pods (the GPU's
    # busy share, DCGM's engine-active ratio), and forward passes per second, summed (the rate of the count of
    # vllm:iteration_tokens_total). Their ratio to the token rates is the engine's cost per pass and per token
    # at any load, where the prefill-time mean only reads clean on a lightly loaded pod.
    busy_per_s: float | None = None
    iterations_per_s: float | None = None

    @classmethod
    def unknown(cls, note: str) -> VariantSignals:
        return cls(freshness=Freshness.MISSING, note=note)

    @property
    def waiting_per_replica(self) -> float | None:
        return None if self.waiting is None or not self.pods else self.waiting / self.pods

    @property
    def running_per_replica(self) -> float | None:
        return None if self.running is None or not self.pods else self.running / self.pods

    @property
    def quiet(self) -> bool:
        """No traffic counted: nothing finished, running or waiting, each known to be 0 (a window with nothing
        to learn from). Unknown (None) is never quiet."""
        return self.completions_per_s == 0 and self.running == 0 and self.waiting == 0

    @property
    def idle(self) -> bool:
        """Confirmed zero demand, the one definition of idle (scale-to-zero waits for a run of these): fresh,
        quiet, (nearly) no KV cache in use, and nothing held for it at the gateway. Unknown, stale or missing is never
        idle."""
        return (self.freshness is Freshness.FRESH and self.quiet and self.kv_usage_mean is not None
                and self.kv_usage_mean <= IDLE_KV_USAGE and not (self.gateway_waiting or 0) > 0)

    @property
    def calibration_ready(self) -> bool:
        """Fresh, every reporting pod known to be past its warm-up, and traffic to learn from."""
        return (self.freshness is Freshness.FRESH and bool(self.warm_pods) and not self.warming_pods
                and "pod_ages" not in self.missing and not self.quiet)

    def ttft_quantile_s(self, q: float) -> float | None:
        return dict(self.ttft_quantiles_s).get(q)

    def itl_quantile_s(self, q: float) -> float | None:
        return dict(self.itl_quantiles_s).get(q)


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """Where the replicas of a variant stand, as Kubernetes reports them (not Prometheus).

    ``starting`` are scheduled pods not ready yet (pulling, loading weights); ``unschedulable`` are pods
    Pending because no node has a free GPU (PodScheduled=False, reason Unschedulable). A pod is in at most
    one of the three counts.
    """

    ready: int
    starting: int = 0
    unschedulable: int = 0

    def __post_init__(self) -> None:
        for name in ("ready", "starting", "unschedulable"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def not_ready(self) -> int:
        return self.starting + self.unschedulable


class Reason(StrEnum):
    """Why a stage produced the replicas it did. Maps onto status conditions and events."""

    SATURATED = "Saturated"
    UNDERUTILISED = "Underutilised"
    WITHIN_TOLERANCE = "WithinTolerance"
    SIGNALS_MISSING = "SignalsMissing"
    SIGNALS_STALE = "SignalsStale"
    SIGNALS_INVALID = "SignalsInvalid"  # numbers no decision can be made from: the variant or model is held
    SCALE_UP_STABILISED = "ScaleUpStabilized"
    SCALE_DOWN_STABILISED = "ScaleDownStabilized"
    STEP_LIMITED = "StepLimited"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    DESIRED_WITHIN_RANGE = "DesiredWithinRange"
    SLO_CAPACITY = "SLOCapacity"
    FORECAST = "Forecast"
    BUDGET_LIMITED = "BudgetLimited"
    QUOTA_LIMITED = "QuotaLimited"
    TOTAL_GPUS_LIMITED = "TotalGPUsLimited"
    MINIMUM_EXCEEDS_BOUND = "MinimumExceedsBound"  # the min replicas alone break a quota, budget or GPU cap
    COST_OPTIMAL = "CostOptimal"  # the cheapest allocation across a model's variants that meets the demand
    DEMAND_UNSERVED = "DemandUnserved"  # cost bounds leave part of the demand to early rejection
    COOLDOWN = "Cooldown"
    REPLICAS_STARTING = "ReplicasStarting"  # earlier replicas not ready yet: no reactive step on top
    PENDING_CAPACITY = "PendingCapacity"  # pods Pending for lack of GPUs: no reactive step on top
    SCALED_TO_ZERO = "ScaledToZero"
    SCALE_FROM_ZERO = "ScaleFromZero"  # requests wait at the gateway for a model with no replica (WVA's reason)
    SCHEDULE_MINIMUM = "ScheduleMinimum"
    SCHEDULE_MAXIMUM = "ScheduleMaximum"
    CAPACITY_UNKNOWN = "CapacityUnknown"  # no capacity estimate for a variant: decided reactively
    SLO_UNATTAINABLE = "SLOUnattainable"  # no replica count of this variant meets the SLO for the mix
    NODES_ADDED = "NodesAdded"
    NODES_REMOVED = "NodesRemoved"
    NODE_BUSY = "NodeBusy"  # a node to remove still runs a serving pod of ours
    NODES_LIMITED = "NodesLimited"  # the MachineSets' max replicas cannot hold the pods


@dataclass(frozen=True, slots=True)
class DecisionStep:
    """One stage's output, kept for observability (as llm-d WVA's DecisionStep)."""

    stage: str
    replicas: int
    reason: Reason
    message: str
    constrained: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    variant: VariantRef
    current: int
    desired: int
    steps: tuple[DecisionStep, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    @property
    def reason(self) -> Reason:
        """The reason of the last stage that constrained the value, else the recommendation's."""
        for step in reversed(self.steps):
            if step.constrained:
                return step.reason
        return self.steps[0].reason if self.steps else Reason.WITHIN_TOLERANCE

    @property
    def message(self) -> str:
        return "; ".join(f"{s.stage}: {s.message}" for s in self.steps)


@dataclass(frozen=True, slots=True)
class Condition:
    """Something about the fleet as a whole that status and events should show (a bound that cannot be met,
    demand left to early rejection, a node that cannot be removed yet). ``subject`` names what it is about."""

    reason: Reason
    subject: str
    message: str
