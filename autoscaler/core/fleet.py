"""Decide every variant at once: cost-optimal allocation across variants and models, then each variant's
pipeline, then the global cost bounds over the result.

1. Allocation (:mod:`autoscaler.core.allocation`): from each model's forecast demand and each variant's
   capacity per replica, the cheapest replicas per variant that serve the demand within the SLO; when the
   bounds bind, the most demand by priority, the rest reported as ``unserved_rate`` for early rejection.
2. Each variant's :func:`autoscaler.core.decide.decide` with the allocation as its predictive target.
3. The reactive side may ask for more than the allocation did; scale-ups that would break a quota, the total
   GPU cap or the budget are trimmed, lowest priority and dearest first. Running replicas are never removed
   for a bound here: a lowered bound takes effect through the allocation's targets and the stabilised
   scale-down.

Variants without a known capacity, or whose model has no demand forecast, are decided reactively, and the
GPUs and dollars they hold count against the bounds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from autoscaler.core.allocation import (
    Allocation,
    AllocationProblem,
    AllocModel,
    AllocVariant,
    Method,
    allocate,
)
from autoscaler.core.behavior import Recommendation
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.policyset import PolicySet, VariantBounds, variant_bounds
from autoscaler.core.saturation import saturation_load
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    Condition,
    Decision,
    DecisionStep,
    Reason,
    ReplicaCounts,
    Role,
    VariantRef,
    VariantSignals,
    VariantSpec,
)

__all__ = ["FleetDecision", "VariantInput", "decide_fleet", "held"]


@dataclass(frozen=True, slots=True)
class VariantInput:
    """Everything known about one variant this cycle."""

    spec: VariantSpec
    signals: VariantSignals
    current: int
    history: tuple[Recommendation, ...] = ()
    replicas: ReplicaCounts | None = None
    last_scaled_at: float | None = None
    capacity_rps: float | None = None
    """One replica's sustainable req/s within the SLO for the forecast mix (perf.capacity); None = unknown."""
    gpus_per_replica: int = 1
    cost_per_replica_hour: float = 0.0
    """$/h of one replica from its profile; the policy's ``gpu_hour_price`` for the accelerator overrides it."""


@dataclass(frozen=True, slots=True)
class FleetDecision:
    decisions: tuple[Decision, ...]
    histories: Mapping[VariantRef, tuple[Recommendation, ...]]
    allocation: Allocation | None = None
    conditions: tuple[Condition, ...] = ()

    def decision(self, ref: VariantRef) -> Decision | None:
        return next((d for d in self.decisions if d.variant == ref), None)

    def unserved_rate(self, model: str) -> float:
        """Req/s of ``model`` the bounds leave to early rejection (0 when all is served or unknown)."""
        return self.allocation.unserved_rate(model) if self.allocation else 0.0


@dataclass(frozen=True, slots=True)
class _Prepared:
    item: VariantInput
    bounds: VariantBounds
    price: float  # $/h per replica
    priority: int
    alloc: AllocVariant | None = None
    excluded: tuple[Reason, str] | None = None  # why the variant is not in the allocation


def decide_fleet(
    *,
    variants: Sequence[VariantInput],
    demands: Mapping[str, float | None],
    policy: PolicySet,
    now: float,
    method: Method = "auto",
    predictive_floors: Mapping[VariantRef, Prediction] | None = None,
    lead_times: Mapping[str, float] | None = None,
) -> FleetDecision:
    """Decide all variants. ``demands``: per model, req/s to provision for (the forecast's upper quantile at
    the provisioning horizon); a model absent or None has no forecast and is decided reactively.

    ``predictive_floors``: other predictive targets per variant (e.g. the decode replicas early rejection's
    prediction says the load already committed to decode will need); the larger of it and the allocation's
    target is used. They are not checked against the bounds before the last stage trims scale-ups.

    ``lead_times``: per model, how long a new replica takes to serve (the planner's lead time); a model's ready
    replicas are held at least that long before a scale-down.
    """
    prepared = [_prepare(item, policy=policy, demands=demands, now=now) for item in variants]
    conditions = [Condition(p.excluded[0], str(p.item.spec.ref), p.excluded[1]) for p in prepared if p.excluded]
    try:
        allocation = _allocate(prepared, demands=demands, policy=policy, method=method)
    except (ValueError, ArithmeticError) as exc:  # decided reactively rather than not at all
        allocation = None
        conditions.append(Condition(Reason.SIGNALS_INVALID, "allocation",
                                    f"allocation failed ({type(exc).__name__}: {exc}): decided reactively"))
    if allocation is not None:
        conditions += allocation.conditions

    scaling = ScalingPolicy(saturation=policy.saturation, behavior=policy.behavior)
    holds = _stages_hold_load(prepared, allocation, scaling) if allocation else set()
    stage_sizes = Counter((p.alloc.model, p.alloc.role) for p in prepared if p.alloc is not None)
    decisions: list[Decision] = []
    histories: dict[VariantRef, tuple[Recommendation, ...]] = {}
    for p in prepared:
        prediction = None
        if allocation is not None and p.alloc is not None:
            peers = stage_sizes[(p.alloc.model, p.alloc.role)] - 1
            prediction = _prediction(p, allocation=allocation, demands=demands, peers=peers)
            if prediction is not None and (p.alloc.model, p.alloc.role) in holds:
                prediction = replace(prediction, stage_holds_load=True)
        floor = (predictive_floors or {}).get(p.item.spec.ref)
        if floor is not None and (prediction is None or floor.replicas > prediction.replicas):
            prediction = floor
        try:
            decision, histories[p.item.spec.ref] = decide(
                spec=p.item.spec, signals=p.item.signals, current=p.item.current, history=p.item.history,
                policy=scaling, now=now, prediction=prediction, replicas=p.item.replicas,
                last_scaled_at=p.item.last_scaled_at, variant_policy=policy.variant_policy(p.item.spec),
                lead_s=(lead_times or {}).get(p.item.spec.model, 0.0),
            )
        except (ValueError, ArithmeticError) as exc:  # this variant's numbers: hold it, decide the others
            decision, histories[p.item.spec.ref] = held(p.item.spec.ref, p.item.current, exc), p.item.history
        decisions.append(decision)
    decisions, trimmed = _enforce_bounds(prepared, decisions, policy=policy)
    return FleetDecision(tuple(decisions), histories, allocation, tuple(conditions + trimmed))


def held(ref: VariantRef, current: int, exc: Exception) -> Decision:
    """A variant no decision could be computed for: it stays where it is, and its status says why."""
    step = DecisionStep("hold", current, Reason.SIGNALS_INVALID,
                        f"no decision ({type(exc).__name__}: {exc}): holding at {current}", constrained=True)
    return Decision(variant=ref, current=current, desired=current, steps=(step,))


def _prepare(item: VariantInput, *, policy: PolicySet, demands: Mapping[str, float | None],
             now: float) -> _Prepared:
    spec = item.spec
    bounds = variant_bounds(spec=spec, policy=policy.variant_policy(spec), now=now)
    gpu_price = policy.bounds.gpu_hour_price.get(spec.accelerator)
    # The VariantAutoscaling's costPerHour, else the policy's GPU price, else the profile's list price.
    price = (gpu_price * item.gpus_per_replica if gpu_price is not None and spec.cost_per_hour is None
             else item.cost_per_replica_hour)
    prepared = _Prepared(item, bounds, price, policy.priority(spec.model))
    if demands.get(spec.model) is None:
        return prepared  # no forecast for the model: reactive only, not worth a condition per variant
    if item.capacity_rps is None:
        return replace(prepared, excluded=(Reason.CAPACITY_UNKNOWN, "no capacity estimate: decided reactively"))
    if item.capacity_rps <= 0:
        return replace(prepared, excluded=(Reason.SLO_UNATTAINABLE,
                                           "no replica count meets the SLO for this mix: decided reactively"))
    # A scale-to-zero variant keeps its minimum while its model has demand; with none forecast the target may
    # be zero, and decide() still waits for the idle window before going there.
    low = 0 if bounds.scale_to_zero and not demands.get(spec.model) else bounds.min_replicas
    return replace(prepared, alloc=AllocVariant(
        ref=spec.ref, model=spec.model, role=spec.role, accelerator=spec.accelerator,
        capacity_rps=item.capacity_rps, cost_per_hour=price, gpus=item.gpus_per_replica,
        min_replicas=low, max_replicas=bounds.max_replicas))


def _allocate(prepared: list[_Prepared], *, demands: Mapping[str, float | None], policy: PolicySet,
              method: Method) -> Allocation | None:
    inside = [p.alloc for p in prepared if p.alloc is not None]
    if not inside:
        return None
    models = sorted({v.model for v in inside})
    reserved_gpus: dict[str, int] = {}
    reserved_cost = 0.0
    for p in prepared:
        if p.alloc is None:
            acc = p.item.spec.accelerator
            reserved_gpus[acc] = reserved_gpus.get(acc, 0) + p.item.current * p.item.gpus_per_replica
            reserved_cost += p.item.current * p.price
    problem = AllocationProblem(
        variants=tuple(inside),
        models=tuple(AllocModel(m, float(demands[m] or 0.0), policy.priority(m)) for m in models),
        bounds=policy.bounds, reserved_gpus=reserved_gpus, reserved_cost_per_hour=reserved_cost,
    )
    return allocate(problem=problem, method=method)


def _stages_hold_load(prepared: list[_Prepared], allocation: Allocation,
                      scaling: ScalingPolicy) -> set[tuple[str, Role]]:
    """Stages (model, role) whose allocated replicas would carry today's load together: the consolidation
    check over the stage, each variant's load (in replicas at the thresholds) weighed by its capacity."""
    load: dict[tuple[str, Role], float | None] = {}
    after: dict[tuple[str, Role], float] = {}
    for p in prepared:
        if p.alloc is None:
            continue
        key = (p.alloc.model, p.alloc.role)
        serving = p.item.replicas.ready if p.item.replicas is not None else p.item.current
        units = saturation_load(signals=p.item.signals, serving=serving, thresholds=scaling.saturation)
        previous = load.get(key, 0.0)
        load[key] = None if units is None or previous is None else previous + units * p.alloc.capacity_rps
        after[key] = after.get(key, 0.0) + allocation.replicas[p.alloc.ref] * p.alloc.capacity_rps
    return {key for key, total in load.items() if total is not None and after[key] > total}


def _prediction(p: _Prepared, *, allocation: Allocation, demands: Mapping[str, float | None],
                peers: int) -> Prediction | None:
    """The allocation's target for one variant; ``peers``: other allocated variants of the same model and role."""
    if p.alloc is None:
        return None
    replicas = allocation.replicas[p.alloc.ref]
    outcome = allocation.outcome(p.alloc.model)
    demand = float(demands.get(p.alloc.model) or 0.0)
    text = (f"{p.alloc.role.value}: {replicas} x {p.alloc.capacity_rps:.3g} req/s for {demand:.3g} req/s "
            f"({allocation.method} allocation)")
    if outcome is not None and outcome.unserved_rate > 0:
        reason = allocation.binding[0] if allocation.binding else Reason.DEMAND_UNSERVED
        return Prediction(replicas, reason, f"{text}; {outcome.unserved_rate:.3g} req/s unserved")
    return Prediction(replicas, Reason.COST_OPTIMAL if peers else Reason.SLO_CAPACITY, text)


def _enforce_bounds(prepared: list[_Prepared], decisions: list[Decision], *,
                    policy: PolicySet) -> tuple[list[Decision], list[Condition]]:
    """Trim scale-ups that would break a global bound, lowest priority and dearest per replica first."""
    b = policy.bounds
    if b.unbounded:
        return decisions, []
    desired = [d.desired for d in decisions]
    scopes: list[tuple[Reason, str, float, list[float]]] = []
    for acc, quota in sorted(b.gpu_quota.items()):
        scopes.append((Reason.QUOTA_LIMITED, f"{acc} GPU quota", float(quota),
                       [float(p.item.gpus_per_replica) if p.item.spec.accelerator == acc else 0.0
                        for p in prepared]))
    if b.max_gpus is not None:
        scopes.append((Reason.TOTAL_GPUS_LIMITED, "total GPUs", float(b.max_gpus),
                       [float(p.item.gpus_per_replica) for p in prepared]))
    if b.budget_per_hour is not None:
        scopes.append((Reason.BUDGET_LIMITED, "budget $/h", b.budget_per_hour, [p.price for p in prepared]))
    order = sorted(range(len(prepared)),
                   key=lambda i: (prepared[i].priority, -prepared[i].price, str(prepared[i].item.spec.ref)))
    trimmed: dict[int, list[tuple[Reason, str]]] = {}
    conditions: list[Condition] = []
    for reason, label, limit, weights in scopes:
        usage = sum(w * n for w, n in zip(weights, desired, strict=True))
        for i in order:
            floor = max(decisions[i].current, prepared[i].bounds.min_replicas)
            while usage > limit + 1e-9 and weights[i] > 0 and desired[i] > floor:
                desired[i] -= 1
                usage -= weights[i]
                trimmed.setdefault(i, []).append((reason, label))
        if usage > limit + 1e-9:
            conditions.append(Condition(Reason.MINIMUM_EXCEEDS_BOUND, label,
                                        f"{label} is {limit:g} but running replicas and minimums use {usage:g}"))
    out = list(decisions)
    for i, hits in trimmed.items():
        reason, label = hits[0]
        step = DecisionStep("fleet-bounds", desired[i], reason,
                            f"{decisions[i].desired} trimmed to {desired[i]} by the {label}", constrained=True)
        out[i] = replace(decisions[i], desired=desired[i], steps=decisions[i].steps + (step,))
    return out, conditions
