"""Cost-optimal allocation of replicas across the variants of each model, under global cost bounds.

The problem, for every managed model ``m`` with demand ``D_m`` (req/s at the provisioning horizon) and every
variant ``v`` (one model on one accelerator in one role) with per-replica capacity ``c_v`` (req/s within the
SLO for the forecast mix), price ``p_v`` ($/h), GPUs ``g_v`` and bounds ``[lo_v, hi_v]``::

    choose integers n_v in [lo_v, hi_v] and served fractions s_m in [0, 1] such that
      for every model m and every stage k of m:   sum_{v in m, k} c_v n_v >= s_m D_m
      for every accelerator a with a quota:       sum_{v on a} g_v n_v <= quota_a
      all GPUs:                                   sum_v g_v n_v <= max_gpus
      budget:                                     sum_v p_v n_v <= budget
    maximise, priority level by priority level (highest first), the served rate sum_{m in level} s_m D_m;
    then minimise the cost sum_v p_v n_v.

A request needs every stage of its model: prefill *and* decode when disaggregated, one ``both`` pool when not
(a model mixing the two is refused). A stage without variants is not managed here and imposes nothing.
With no binding bound every s_m is 1 and the answer is the cheapest allocation that meets all demand.
What a model cannot be given is ``unserved_rate``: the share that early rejection must turn away rather than
overload every variant.

Two solvers, same problem:

- :func:`allocate_exact`: when no bound binds the models and stages are independent and each stage is solved
  by enumeration; otherwise integer programming with HiGHS, one solve per priority level plus one for cost, each
  level's served rate kept as a constraint for the next (lexicographic optimisation). Exact, deterministic (no
  time limit, no relative gap; a node limit instead), tens of milliseconds for tens of variants, about a
  second at 100 when the bounds bind. HiGHS is driven through ``highspy._Highs``
  with ``output_flag`` off before anything else: ``highspy.Highs()`` logs its banner to stdout on construction
  (HiGHS #2749) and the HiGHS 1.12 inside SciPy's ``milp`` prints a stray debug line on MIP solves (HiGHS
  #2783); either would corrupt the JSON the CLI and the simulator print.
- :func:`allocate_greedy`: adds one replica at a time to the least-covered stage, choosing the variant with the
  lowest price per *useful* capacity ``p_v / min(c_v, need)`` (a second pass ranks by the share of a bound's
  remaining room instead, and the better pass wins), then trims replicas the binding stage makes useless.
  About 0.1 s for 1,000 variants. It is optimal when no bound binds and the variants of each stage share one
  capacity (one variant per stage is the common case); the property test checks exactly that. Otherwise it
  may cost more or, under binding bounds, serve less than the exact solver, never the other way round.

When the replicas' minimums alone break a bound, the bound is raised to what the minimums use (nothing beyond
them can be added in that scope) and a ``MinimumExceedsBound`` condition says so: the minimum is the
operator's floor and is kept; no crash, no negative headroom.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import highspy
import numpy as np

from autoscaler.core.policyset import CostBounds
from autoscaler.core.types import Condition, Reason, Role, VariantRef

__all__ = [
    "AllocModel",
    "AllocVariant",
    "Allocation",
    "AllocationProblem",
    "ModelOutcome",
    "allocate",
    "allocate_exact",
    "allocate_greedy",
    "stages_of",
]

Method = Literal["auto", "exact", "greedy"]
_EPS = 1e-9
_SERVED_RTOL = 1e-7  # a level's served rate is kept to this relative tolerance in later solves


@dataclass(frozen=True, slots=True)
class AllocVariant:
    ref: VariantRef
    model: str
    role: Role
    accelerator: str
    capacity_rps: float
    """Requests per second one replica serves within the SLO for the forecast mix."""
    cost_per_hour: float
    """$/h of one replica (GPUs x $/GPU-hour)."""
    gpus: int
    min_replicas: int = 0
    max_replicas: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_rps) and self.capacity_rps > 0):
            raise ValueError(f"{self.ref}: capacity_rps must be finite and > 0, got {self.capacity_rps!r}")
        if not (math.isfinite(self.cost_per_hour) and self.cost_per_hour >= 0):
            raise ValueError(f"{self.ref}: cost_per_hour must be finite and >= 0, got {self.cost_per_hour!r}")
        if self.gpus < 0 or not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"{self.ref}: need gpus >= 0 and 0 <= min_replicas <= max_replicas, got "
                             f"gpus={self.gpus}, min={self.min_replicas}, max={self.max_replicas}")


@dataclass(frozen=True, slots=True)
class AllocModel:
    model: str
    demand_rps: float
    priority: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.demand_rps) and self.demand_rps >= 0):
            raise ValueError(f"{self.model}: demand_rps must be finite and >= 0, got {self.demand_rps!r}")


@dataclass(frozen=True, slots=True)
class AllocationProblem:
    variants: tuple[AllocVariant, ...]
    models: tuple[AllocModel, ...]
    bounds: CostBounds = field(default_factory=CostBounds)
    reserved_gpus: Mapping[str, int] = field(default_factory=dict)
    """GPUs per accelerator already held by variants outside the problem (no capacity or demand known)."""
    reserved_cost_per_hour: float = 0.0

    def __post_init__(self) -> None:
        names = [m.model for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        refs = [v.ref for v in self.variants]
        if len(set(refs)) != len(refs):
            raise ValueError("a variant is listed twice")
        by_model: dict[str, list[AllocVariant]] = {name: [] for name in names}
        for v in self.variants:
            if v.model not in by_model:
                raise ValueError(f"{v.ref}: model {v.model!r} has no demand entry")
            by_model[v.model].append(v)
        for members in by_model.values():
            stages_of(members)  # raises on a model mixing aggregated and disaggregated variants


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    model: str
    priority: int
    demand_rps: float
    served_rps: float
    cost_per_hour: float

    @property
    def unserved_rate(self) -> float:
        """Requests per second the bounds leave unserved: early rejection's share."""
        return max(0.0, self.demand_rps - self.served_rps)

    @property
    def served_fraction(self) -> float:
        return 1.0 if self.demand_rps <= 0 else min(1.0, self.served_rps / self.demand_rps)


@dataclass(frozen=True, slots=True)
class Allocation:
    replicas: Mapping[VariantRef, int]
    models: tuple[ModelOutcome, ...]
    cost_per_hour: float
    gpus: Mapping[str, int]  # per accelerator, reserved included
    method: str  # "exact" or "greedy"
    binding: tuple[Reason, ...] = ()  # bounds with no headroom left (QUOTA_LIMITED, BUDGET_LIMITED, ...)
    conditions: tuple[Condition, ...] = ()

    def outcome(self, model: str) -> ModelOutcome | None:
        return next((m for m in self.models if m.model == model), None)

    def unserved_rate(self, model: str) -> float:
        found = self.outcome(model)
        return found.unserved_rate if found else 0.0

    @property
    def served_by_priority(self) -> tuple[tuple[int, float], ...]:
        """(priority, served req/s) from the highest priority down: what the solvers maximise, in order."""
        levels = sorted({m.priority for m in self.models}, reverse=True)
        return tuple((p, sum(m.served_rps for m in self.models if m.priority == p)) for p in levels)


def stages_of(variants: Sequence[AllocVariant]) -> dict[Role, list[AllocVariant]]:
    """A model's variants by stage; refuses a model that mixes aggregated and disaggregated variants."""
    stages: dict[Role, list[AllocVariant]] = {}
    for v in variants:
        stages.setdefault(v.role, []).append(v)
    if Role.BOTH in stages and len(stages) > 1:
        model = variants[0].model
        raise ValueError(f"model {model!r} mixes aggregated (both) and disaggregated (prefill/decode) variants; "
                         "allocate them as separate models")
    return stages


# ---------------------------------------------------------------------------------------------------------------
# Resource scopes shared by both solvers


@dataclass(frozen=True, slots=True)
class _Scope:
    reason: Reason
    label: str
    limit: float  # what the allocated variants may use: the bound less the reserved usage
    weights: tuple[float, ...]  # per variant, in problem order
    reserved: float = 0.0


def _scopes(problem: AllocationProblem) -> tuple[list[_Scope], list[Condition]]:
    """Each bound as a linear row over the variants, raised to the minimums' usage where they break it."""
    b, vs = problem.bounds, problem.variants
    raw: list[tuple[Reason, str, float, tuple[float, ...], float]] = []
    for acc, quota in sorted(b.gpu_quota.items()):
        raw.append((Reason.QUOTA_LIMITED, f"{acc} GPU quota", float(quota),
                    tuple(float(v.gpus) if v.accelerator == acc else 0.0 for v in vs),
                    float(problem.reserved_gpus.get(acc, 0))))
    if b.max_gpus is not None:
        raw.append((Reason.TOTAL_GPUS_LIMITED, "total GPUs", float(b.max_gpus), tuple(float(v.gpus) for v in vs),
                    float(sum(problem.reserved_gpus.values()))))
    if b.budget_per_hour is not None:
        raw.append((Reason.BUDGET_LIMITED, "budget $/h", float(b.budget_per_hour),
                    tuple(v.cost_per_hour for v in vs), problem.reserved_cost_per_hour))
    scopes, conditions = [], []
    for reason, label, limit, weights, reserved in raw:
        floor = reserved + sum(w * v.min_replicas for w, v in zip(weights, vs, strict=True))
        if floor > limit + 1e-9:
            conditions.append(Condition(Reason.MINIMUM_EXCEEDS_BOUND, label,
                                        f"{label} is {limit:g} but the minimum replicas (and variants outside the "
                                        f"allocation) already need {floor:g}; nothing above the minimums is added"))
            limit = floor
        scopes.append(_Scope(reason, label, limit - reserved, weights, reserved))
    return scopes, conditions


def _finish(problem: AllocationProblem, counts: Sequence[int], method: str, scopes: list[_Scope],
            conditions: list[Condition]) -> Allocation:
    vs = problem.variants
    position = {v.ref: i for i, v in enumerate(vs)}
    replicas = {v.ref: int(n) for v, n in zip(vs, counts, strict=True)}
    used = [sum(w * replicas[v.ref] for w, v in zip(s.weights, vs, strict=True)) for s in scopes]
    by_model: dict[str, list[AllocVariant]] = {}
    for v in vs:
        by_model.setdefault(v.model, []).append(v)
    outcomes, binding = [], []
    for m in problem.models:
        mine = by_model.get(m.model, [])
        covered = {role: sum(v.capacity_rps * replicas[v.ref] for v in group)
                   for role, group in stages_of(mine).items()}
        served = min([m.demand_rps, *covered.values()]) if m.demand_rps > 0 else 0.0
        outcomes.append(ModelOutcome(m.model, m.priority, m.demand_rps, served,
                                     sum(v.cost_per_hour * replicas[v.ref] for v in mine)))
        if m.demand_rps <= 0 or served >= m.demand_rps * (1 - 1e-6):
            continue
        # What stops one more replica on a short stage: a bound without room, or the variant's max replicas.
        held: list[str] = []
        for v in mine:
            if covered[v.role] >= m.demand_rps * (1 - 1e-6):
                continue
            if replicas[v.ref] >= v.max_replicas:
                held.append(f"{v.ref.name} at its max of {v.max_replicas}")
                continue
            for k, scope in enumerate(scopes):
                if used[k] + scope.weights[position[v.ref]] > scope.limit + 1e-9:
                    binding.append(scope.reason)
                    held.append(f"{scope.label} ({used[k] + scope.reserved:g} of {scope.limit + scope.reserved:g} used)")
        conditions.append(Condition(Reason.DEMAND_UNSERVED, m.model,
                                    f"{m.demand_rps - served:.3g} of {m.demand_rps:.3g} req/s left to early rejection; "
                                    f"held by: {'; '.join(dict.fromkeys(held)) or 'nothing'}"))
    gpus: dict[str, int] = dict(problem.reserved_gpus)
    for v in vs:
        gpus[v.accelerator] = gpus.get(v.accelerator, 0) + v.gpus * replicas[v.ref]
    cost = problem.reserved_cost_per_hour + sum(v.cost_per_hour * replicas[v.ref] for v in vs)
    return Allocation(replicas, tuple(outcomes), cost, gpus, method, tuple(dict.fromkeys(binding)), tuple(conditions))


# ---------------------------------------------------------------------------------------------------------------
# Exact: mixed-integer programming


_MIP_MAX_NODES = 20_000  # branch-and-bound nodes per solve; the instances here need tens
_ENUMERATION_LIMIT = 20_000  # combinations per stage below which a stage is solved by enumeration


def _cheapest_cover(group: Sequence[AllocVariant], need: float) -> list[int] | None:
    """Cheapest counts for one stage covering ``need`` req/s, by enumeration; None when the space is too big.

    All variants but the one with the widest range are enumerated; the last takes the fewest replicas that
    close the gap (prices are >= 0, so fewer is never dearer). Ties: fewer GPUs, then fewer replicas.
    """
    last = max(range(len(group)), key=lambda i: group[i].max_replicas - group[i].min_replicas)
    others = [i for i in range(len(group)) if i != last]
    if math.prod(group[i].max_replicas - group[i].min_replicas + 1 for i in others) > _ENUMERATION_LIMIT:
        return None
    tail = group[last]
    best: tuple[tuple[float, int, int], list[int]] | None = None
    for combo in itertools.product(*(range(group[i].min_replicas, group[i].max_replicas + 1) for i in others)):
        gap = need - sum(group[i].capacity_rps * n for i, n in zip(others, combo, strict=True))
        n_last = max(tail.min_replicas, math.ceil(gap / tail.capacity_rps - 1e-9))
        if n_last > tail.max_replicas:
            continue
        counts = [0] * len(group)
        for i, n in zip(others, combo, strict=True):
            counts[i] = n
        counts[last] = n_last
        key = (round(sum(v.cost_per_hour * n for v, n in zip(group, counts, strict=True)), 9),
               sum(v.gpus * n for v, n in zip(group, counts, strict=True)), sum(counts))
        if best is None or key < best[0]:
            best = (key, counts)
    return best[1] if best else None


def _separable(problem: AllocationProblem, scopes: list[_Scope]) -> list[int] | None:
    """The optimum when no global bound binds: every model and stage on its own. None when a bound would be
    broken (or a stage is too big to enumerate); then the integer program decides."""
    vs = problem.variants
    position = {v.ref: i for i, v in enumerate(vs)}
    counts = [v.min_replicas for v in vs]
    for m in problem.models:
        stages = stages_of([v for v in vs if v.model == m.model])
        if m.demand_rps <= 0 or not stages:
            continue
        # The most this model can be served is what its weakest stage holds at max replicas.
        served = min([m.demand_rps, *(sum(v.capacity_rps * v.max_replicas for v in g) for g in stages.values())])
        for group in stages.values():
            cover = _cheapest_cover(group, served)
            if cover is None:
                return None
            for v, n in zip(group, cover, strict=True):
                counts[position[v.ref]] = n
    for scope in scopes:
        if sum(w * n for w, n in zip(scope.weights, counts, strict=True)) > scope.limit + 1e-9:
            return None
    return counts


def allocate_exact(problem: AllocationProblem) -> Allocation:
    """Lexicographically optimal allocation (served rate by priority, then cost).

    When no bound binds, the models and their stages are independent: each stage is the cheapest cover of its
    demand, found by enumeration (microseconds). Otherwise, integer programming. Columns: the replicas of each
    variant (integer), then the served rate of each model with demand (continuous, in [0, demand]; a rate
    rather than a fraction keeps the rows well scaled).
    """
    vs = problem.variants
    scopes, conditions = _scopes(problem)
    separable = _separable(problem, scopes)
    if separable is not None:
        return _finish(problem, separable, "exact", scopes, conditions)
    n_vars = len(vs)
    demanded = [m for m in problem.models if m.demand_rps > 0 and any(v.model == m.model for v in vs)]
    size = n_vars + len(demanded)
    if n_vars == 0:
        return _finish(problem, [], "exact", scopes, conditions)

    position = {v.ref: i for i, v in enumerate(vs)}
    stages = {m.model: stages_of([v for v in vs if v.model == m.model]) for m in demanded}
    rows: list[np.ndarray] = []
    lows: list[float] = []
    highs: list[float] = []
    for j, m in enumerate(demanded):
        for group in stages[m.model].values():
            row = np.zeros(size)
            for v in group:
                row[position[v.ref]] = v.capacity_rps
            row[n_vars + j] = -1.0
            rows.append(row)
            lows.append(0.0)
            highs.append(np.inf)
    for scope in scopes:
        row = np.zeros(size)
        row[:n_vars] = scope.weights
        rows.append(row)
        lows.append(-np.inf)
        highs.append(scope.limit + 1e-9)

    col_low = np.array([v.min_replicas for v in vs] + [0.0] * len(demanded), dtype=float)
    col_high = np.array([v.max_replicas for v in vs] + [m.demand_rps for m in demanded], dtype=float)

    def solve(objective: np.ndarray) -> list[int]:
        x = _solve_mip(objective=objective, rows=np.array(rows).reshape(len(rows), size), row_low=np.array(lows),
                       row_high=np.array(highs), col_low=col_low, col_high=col_high, integer=n_vars)
        counts = [round(value) for value in x[:n_vars]]
        _check_integer_solution(counts, vs, scopes)
        return counts

    def served(counts: list[int], m: AllocModel) -> float:
        covered = [sum(v.capacity_rps * counts[position[v.ref]] for v in group) for group in stages[m.model].values()]
        return min([m.demand_rps, *covered])

    for level in sorted({m.priority for m in demanded}, reverse=True):
        objective = np.zeros(size)
        members = [j for j, m in enumerate(demanded) if m.priority == level]
        objective[[n_vars + j for j in members]] = -1.0
        counts = solve(objective)
        # The level's best served rate, recomputed from the integers (not the solver's continuous columns),
        # is kept as a constraint for the later solves.
        best = sum(served(counts, demanded[j]) for j in members)
        rows.append(-objective)
        lows.append(best - _SERVED_RTOL * max(1.0, best))
        highs.append(np.inf)
    cost = np.zeros(size)
    cost[:n_vars] = [v.cost_per_hour for v in vs]
    # Among equal costs prefer fewer GPUs, then fewer replicas: a tiny tie-break, far below any price step.
    cost[:n_vars] += [1e-7 * v.gpus + 1e-9 for v in vs]
    return _finish(problem, solve(cost), "exact", scopes, conditions)


def _check_integer_solution(counts: list[int], vs: Sequence[AllocVariant], scopes: list[_Scope]) -> None:
    for n, v in zip(counts, vs, strict=True):
        if not v.min_replicas <= n <= v.max_replicas:
            raise ArithmeticError(f"solver returned {n} replicas for {v.ref}, outside [{v.min_replicas}, "
                                  f"{v.max_replicas}]")
    for scope in scopes:
        if sum(w * n for w, n in zip(scope.weights, counts, strict=True)) > scope.limit + 1e-6:
            raise ArithmeticError(f"solver broke the {scope.label}")


def _solve_mip(*, objective: np.ndarray, rows: np.ndarray, row_low: np.ndarray, row_high: np.ndarray,
               col_low: np.ndarray, col_high: np.ndarray, integer: int) -> np.ndarray:
    """Minimise ``objective @ x`` with the first ``integer`` columns integral. Raises ArithmeticError on failure."""
    solver = highspy._Highs()  # type: ignore[attr-defined]  # see the module docstring
    solver.setOptionValue("output_flag", False)  # first call: nothing may reach stdout
    solver.setOptionValue("mip_rel_gap", 0.0)
    solver.setOptionValue("random_seed", 0)
    # A deterministic work bound (a time limit would make the answer depend on machine load): past it the
    # caller falls back to greedy.
    solver.setOptionValue("mip_max_nodes", _MIP_MAX_NODES)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(objective), rows.shape[0]
    lp.col_cost_ = objective.astype(float)
    lp.col_lower_, lp.col_upper_ = col_low, col_high
    lp.row_lower_ = np.where(np.isinf(row_low), -highspy.kHighsInf, row_low)
    lp.row_upper_ = np.where(np.isinf(row_high), highspy.kHighsInf, row_high)
    starts, indices, values = [0], [], []
    for column in rows.T:  # column-wise sparse storage
        nonzero = np.flatnonzero(column)
        indices.extend(nonzero.tolist())
        values.extend(column[nonzero].tolist())
        starts.append(len(indices))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(indices, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(values, dtype=float)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * integer + [highspy.HighsVarType.kContinuous] * (
        len(objective) - integer)
    solver.passModel(lp)
    solver.run()
    status = solver.getModelStatus()
    solution = np.array(solver.getSolution().col_value)
    # kSolveError also covers "optimal, but a continuous column is off by the MIP tolerance (1e-6)": the caller
    # keeps only the integer columns and checks them, so such a solution is usable.
    usable = status == highspy.HighsModelStatus.kOptimal or (
        status == highspy.HighsModelStatus.kSolveError and len(solution) == len(objective))
    if not usable:
        raise ArithmeticError(f"integer program not solved: {solver.modelStatusToString(status)}")
    return solution


# ---------------------------------------------------------------------------------------------------------------
# Greedy


def allocate_greedy(problem: AllocationProblem) -> Allocation:
    """Heuristic allocation: the cheapest useful replica for the least-covered stage, level by level, then trim.

    Two passes, the better one kept (more served by priority, then cheaper): one ranks replicas by price per
    useful req/s, the other by the largest share of a bound's remaining room they would take per useful req/s
    (what matters once a quota or the budget is the scarce thing).
    """
    scopes, conditions = _scopes(problem)
    by_price = _greedy(problem, scopes, scarcity=False)
    if not scopes:
        return _finish(problem, by_price, "greedy", scopes, conditions)
    by_scarcity = _greedy(problem, scopes, scarcity=True)
    first = _finish(problem, by_price, "greedy", scopes, list(conditions))
    second = _finish(problem, by_scarcity, "greedy", scopes, list(conditions))
    better = [s for _, s in second.served_by_priority], second.cost_per_hour
    if _lexicographically_better(*better, [s for _, s in first.served_by_priority], first.cost_per_hour):
        return second
    return first


def _lexicographically_better(served: list[float], cost: float, other_served: list[float], other_cost: float) -> bool:
    for a, b in zip(served, other_served, strict=True):
        if abs(a - b) > 1e-9 * max(1.0, abs(b)):
            return a > b
    return cost < other_cost - 1e-9


def _greedy(problem: AllocationProblem, scopes: list[_Scope], *, scarcity: bool) -> list[int]:
    vs = problem.variants
    counts = [v.min_replicas for v in vs]
    used = [sum(w * n for w, n in zip(s.weights, counts, strict=True)) for s in scopes]

    def fits(i: int) -> bool:
        return counts[i] < vs[i].max_replicas and all(
            used[k] + s.weights[i] <= s.limit + 1e-9 for k, s in enumerate(scopes))

    def add(i: int, delta: int) -> None:
        counts[i] += delta
        for k, s in enumerate(scopes):
            used[k] += delta * s.weights[i]

    def score(i: int, need: float) -> tuple[float, float, str]:
        useful = min(vs[i].capacity_rps, need)
        price = vs[i].cost_per_hour / useful
        if not scarcity:
            return price, -vs[i].capacity_rps, str(vs[i].ref)
        share = max((s.weights[i] / max(s.limit - used[k], 1e-9) for k, s in enumerate(scopes) if s.weights[i] > 0),
                    default=0.0)
        return share / useful, price, str(vs[i].ref)

    groups: dict[tuple[str, Role], list[int]] = {}
    for i, v in enumerate(vs):
        groups.setdefault((v.model, v.role), []).append(i)
    covered = {key: sum(vs[i].capacity_rps * counts[i] for i in members) for key, members in groups.items()}
    demand = {m.model: m.demand_rps for m in problem.models}

    for level in sorted({m.priority for m in problem.models}, reverse=True):
        models = {m.model for m in problem.models if m.priority == level and m.demand_rps > 0}
        keys = sorted(key for key in groups if key[0] in models)
        cap = {m: 1.0 for m in models}  # a blocked stage caps the fraction its model can use
        heap = [(covered[key] / demand[key[0]], key) for key in keys]
        heapq.heapify(heap)
        while heap:
            _, key = heapq.heappop(heap)
            model = key[0]
            if covered[key] >= cap[model] * demand[model] * (1 - 1e-12):
                continue  # closed (served, or capped by a blocked sibling stage)
            need = cap[model] * demand[model] - covered[key]
            options = [i for i in groups[key] if fits(i)]
            if not options:
                cap[model] = min(cap[model], covered[key] / demand[model])
                continue
            best = min(options, key=lambda i: score(i, need))
            add(best, 1)
            covered[key] += vs[best].capacity_rps
            heapq.heappush(heap, (covered[key] / demand[model], key))
        # Trim: replicas above what the model's least-served stage can use are wasted.
        for model in sorted(models):
            stage_keys = [key for key in keys if key[0] == model]
            served = min([demand[model], *(covered[key] for key in stage_keys)])
            for key in stage_keys:
                for i in sorted(groups[key], key=lambda i: (-vs[i].cost_per_hour, str(vs[i].ref))):
                    while counts[i] > vs[i].min_replicas and covered[key] - vs[i].capacity_rps >= served - 1e-9:
                        add(i, -1)
                        covered[key] -= vs[i].capacity_rps
    return counts


def allocate(*, problem: AllocationProblem, method: Method = "auto", exact_max_variables: int = 100) -> Allocation:
    """Exact for problems up to ``exact_max_variables`` variants (or when asked), greedy beyond or on failure."""
    if method == "greedy" or (method == "auto" and len(problem.variants) > exact_max_variables):
        return allocate_greedy(problem)
    try:
        return allocate_exact(problem)
    except ArithmeticError:
        if method == "exact":
            raise
        return allocate_greedy(problem)
