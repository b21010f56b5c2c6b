import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.core.allocation import (
    Allocation,
    AllocationProblem,
    AllocModel,
    AllocVariant,
    allocate,
    allocate_exact,
    allocate_greedy,
)
from autoscaler.core.policyset import CostBounds
from autoscaler.core.types import Reason, Role, VariantRef


def v(name, role, acc, capacity, cost, gpus=1, lo=0, hi=10, model="m"):
    return AllocVariant(VariantRef("ns", name), model, role, acc, capacity, cost, gpus, lo, hi)


P, D, B = Role.PREFILL, Role.DECODE, Role.BOTH
TWO_ACCELERATORS = (
    v("p-h100", P, "H100", 10, 8, gpus=2), v("p-a100", P, "A100", 4, 3),
    v("d-h100", D, "H100", 5, 4), v("d-a100", D, "A100", 2, 2),
)


def solve(variants, models, bounds=None, **kwargs):
    return allocate_exact(AllocationProblem(tuple(variants), tuple(models), bounds or CostBounds(), **kwargs))


def counts(allocation: Allocation) -> dict[str, int]:
    return {ref.name: n for ref, n in allocation.replicas.items()}


def test_meets_demand_at_the_lowest_cost():
    # prefill: H100 costs 0.8 $/h per req/s, A100 0.75 -> all A100; decode: H100 0.8, A100 1.0 -> H100.
    a = solve(TWO_ACCELERATORS, [AllocModel("m", 20)])
    assert counts(a) == {"p-h100": 0, "p-a100": 5, "d-h100": 4, "d-a100": 0}
    assert (a.cost_per_hour, a.unserved_rate("m"), a.binding) == (31.0, 0.0, ())


def test_a_small_remainder_goes_to_a_cheap_small_replica():
    # 21 req/s of decode: 4 x H100 (20) + 1 x A100 (2) = 18 $/h beats 5 x H100 = 20 $/h.
    a = solve([v("d-h100", D, "H100", 5, 4), v("d-a100", D, "A100", 2, 2)], [AllocModel("m", 21)])
    assert counts(a) == {"d-h100": 4, "d-a100": 1} and a.cost_per_hour == 18


@pytest.mark.parametrize(
    ("bounds", "served", "binding"),
    [
        pytest.param(CostBounds(budget_per_hour=30), 18.0, (Reason.BUDGET_LIMITED,), id="binding-budget"),
        pytest.param(CostBounds(gpu_quota={"A100": 2, "H100": 3}), 9.0, (Reason.QUOTA_LIMITED,), id="binding-quota"),
        pytest.param(CostBounds(max_gpus=4), 10.0, (Reason.TOTAL_GPUS_LIMITED,), id="binding-total-gpus"),
        pytest.param(CostBounds(budget_per_hour=1000, max_gpus=100), 23.0, (), id="loose-bounds-bind-nothing"),
    ],
)
def test_binding_bounds_leave_the_rest_to_early_rejection(bounds, served, binding):
    a = solve(TWO_ACCELERATORS, [AllocModel("m", 23)], bounds)
    outcome = a.outcome("m")
    assert outcome.served_rps == pytest.approx(served)
    assert a.unserved_rate("m") == pytest.approx(23 - served)
    assert a.binding == binding
    assert (Reason.DEMAND_UNSERVED in {c.reason for c in a.conditions}) == (served < 23)
    assert bounds.budget_per_hour is None or a.cost_per_hour <= bounds.budget_per_hour


def test_higher_priority_is_served_first_when_a_quota_binds():
    variants = [v("chat", B, "H100", 2, 4, model="chat"), v("batch", B, "H100", 2, 4, model="batch")]
    models = [AllocModel("chat", 10, priority=100), AllocModel("batch", 10, priority=1)]
    a = solve(variants, models, CostBounds(gpu_quota={"H100": 7}))
    assert counts(a) == {"chat": 5, "batch": 2}
    assert (a.unserved_rate("chat"), a.unserved_rate("batch")) == (0.0, pytest.approx(6.0))
    assert a.served_by_priority == ((100, 10.0), (1, 4.0))


def test_a_quota_smaller_than_the_minimum_is_a_condition_not_a_crash():
    variants = [v("d-h100", D, "H100", 5, 4, gpus=2, lo=3, hi=8)]
    for solver in (allocate_exact, allocate_greedy):
        a = solver(AllocationProblem(tuple(variants), (AllocModel("m", 40),), CostBounds(gpu_quota={"H100": 4})))
        assert counts(a) == {"d-h100": 3}  # the minimum is kept, nothing is added above it
        [minimum] = [c for c in a.conditions if c.reason is Reason.MINIMUM_EXCEEDS_BOUND]
        assert "H100 GPU quota" in minimum.message and "6" in minimum.message
        assert a.unserved_rate("m") == pytest.approx(25.0)


def test_zero_demand_keeps_only_the_minimums():
    variants = [v("d-h100", D, "H100", 5, 4, lo=1), v("d-a100", D, "A100", 2, 2, lo=0)]
    a = solve(variants, [AllocModel("m", 0.0)])
    assert counts(a) == {"d-h100": 1, "d-a100": 0} and a.unserved_rate("m") == 0


def test_gpus_held_outside_the_allocation_count_against_the_quota():
    a = solve([v("d-h100", D, "H100", 5, 4)], [AllocModel("m", 50)], CostBounds(gpu_quota={"H100": 8}),
              reserved_gpus={"H100": 5})
    assert counts(a) == {"d-h100": 3} and a.gpus["H100"] == 8


def test_a_stage_without_variants_imposes_nothing():
    a = solve([v("d-h100", D, "H100", 5, 4)], [AllocModel("m", 12)])
    assert counts(a) == {"d-h100": 3} and a.unserved_rate("m") == 0


@pytest.mark.parametrize(
    ("variants", "models", "match"),
    [
        pytest.param([v("agg", B, "H100", 5, 4), v("pre", P, "H100", 5, 4)], [AllocModel("m", 1)], "mixes",
                     id="aggregated-and-disaggregated-in-one-model"),
        pytest.param([v("d", D, "H100", 5, 4)], [AllocModel("m", 1), AllocModel("m", 2)], "twice",
                     id="model-listed-twice"),
        pytest.param([v("d", D, "H100", 5, 4, model="other")], [AllocModel("m", 1)], "no demand entry",
                     id="variant-of-an-unknown-model"),
    ],
)
def test_refuses_inconsistent_problems(variants, models, match):
    with pytest.raises(ValueError, match=match):
        AllocationProblem(tuple(variants), tuple(models))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"capacity_rps": 0.0}, id="zero-capacity"),
        pytest.param({"capacity_rps": math.nan}, id="nan-capacity"),
        pytest.param({"cost_per_hour": -1.0}, id="negative-cost"),
        pytest.param({"min_replicas": 3, "max_replicas": 2}, id="min-above-max"),
    ],
)
def test_refuses_invalid_variants(kwargs):
    base = {"ref": VariantRef("ns", "x"), "model": "m", "role": D, "accelerator": "H100", "capacity_rps": 1.0,
            "cost_per_hour": 1.0, "gpus": 1, "min_replicas": 0, "max_replicas": 4}
    with pytest.raises(ValueError, match="ns/x"):
        AllocVariant(**{**base, **kwargs})


def test_auto_falls_back_to_greedy_for_large_problems():
    problem = AllocationProblem(TWO_ACCELERATORS, (AllocModel("m", 20),))
    assert allocate(problem=problem).method == "exact"
    assert allocate(problem=problem, exact_max_variables=3).method == "greedy"


def test_the_exact_solver_prints_nothing(capfd):
    # HiGHS as bundled in SciPy prints a stray debug line on MIP solves; JSON on stdout must stay clean.
    solve(TWO_ACCELERATORS, [AllocModel("m", 23)], CostBounds(budget_per_hour=30))
    assert capfd.readouterr() == ("", "")


# ---------------------------------------------------------------------------------------------------------------
# Property tests: exact against brute force, greedy against exact.

ACCELERATORS = {"A": 4.0, "B": 2.5}  # $/GPU-hour


@st.composite
def problems(draw, *, bounded=True, equal_capacity=False, max_variants=5):
    models, variants = [], []
    for m in range(draw(st.integers(1, 2))):
        name = f"m{m}"
        roles = draw(st.sampled_from([(B,), (P, D)]))
        for role in roles:
            stage_capacity = draw(st.sampled_from([1.5, 2.0, 3.0, 5.0]))
            for k in range(draw(st.integers(1, 2))):
                if len(variants) == max_variants:
                    break
                acc = draw(st.sampled_from(sorted(ACCELERATORS)))
                gpus = draw(st.sampled_from([1, 2, 4]))
                lo = draw(st.integers(0, 1))
                capacity = stage_capacity if equal_capacity else draw(st.sampled_from([1.5, 2.0, 3.0, 5.0]))
                variants.append(AllocVariant(VariantRef("ns", f"{name}-{role.value}-{k}"), name, role, acc,
                                             capacity, gpus * ACCELERATORS[acc] * draw(st.sampled_from([1.0, 1.3])),
                                             gpus, lo, lo + draw(st.integers(0, 3))))
        models.append(AllocModel(name, draw(st.integers(0, 40)) / 2, draw(st.sampled_from([0, 5]))))
    bounds = CostBounds()
    if bounded:
        bounds = CostBounds(
            gpu_quota=draw(st.dictionaries(st.sampled_from(sorted(ACCELERATORS)), st.integers(0, 12), max_size=2)),
            max_gpus=draw(st.none() | st.integers(0, 20)),
            budget_per_hour=draw(st.none() | st.integers(0, 80).map(float)),
        )
    return AllocationProblem(tuple(variants), tuple(models), bounds)


def brute_force(problem: AllocationProblem) -> tuple[tuple[float, ...], float]:
    """Best (served rate by priority level, cost) over every replica vector within the variants' bounds."""
    vs = problem.variants
    b = problem.bounds
    levels = sorted({m.priority for m in problem.models}, reverse=True)

    def usage(n):
        gpus = {acc: sum(v.gpus * k for v, k in zip(vs, n, strict=True) if v.accelerator == acc) for acc in ACCELERATORS}
        return gpus, sum(gpus.values()), sum(v.cost_per_hour * k for v, k in zip(vs, n, strict=True))

    floor_gpus, floor_total, floor_cost = usage([v.min_replicas for v in vs])
    quota = {acc: max(q, floor_gpus.get(acc, 0)) for acc, q in b.gpu_quota.items()}
    max_gpus = None if b.max_gpus is None else max(b.max_gpus, floor_total)
    budget = None if b.budget_per_hour is None else max(b.budget_per_hour, floor_cost)
    best = None
    for n in itertools.product(*(range(v.min_replicas, v.max_replicas + 1) for v in vs)):
        gpus, total, cost = usage(n)
        if any(gpus.get(acc, 0) > q for acc, q in quota.items()):
            continue
        if (max_gpus is not None and total > max_gpus) or (budget is not None and cost > budget + 1e-9):
            continue
        served = {}
        for m in problem.models:
            stages = {}
            for v, k in zip(vs, n, strict=True):
                if v.model == m.model:
                    stages[v.role] = stages.get(v.role, 0.0) + v.capacity_rps * k
            served[m.model] = min([m.demand_rps, *stages.values()]) if m.demand_rps > 0 and stages else 0.0
        key = tuple(sum(served[m.model] for m in problem.models if m.priority == p) for p in levels)
        if best is None or _better(key, cost, *best):
            best = (key, cost)
    return best


def _better(key, cost, best_key, best_cost, tol=1e-6):
    for a, b in zip(key, best_key, strict=True):
        if a > b + tol:
            return True
        if a < b - tol:
            return False
    return cost < best_cost - tol


def objective(a: Allocation) -> tuple[tuple[float, ...], float]:
    return tuple(served for _, served in a.served_by_priority), a.cost_per_hour


def assert_feasible(problem: AllocationProblem, a: Allocation) -> None:
    for v_ in problem.variants:
        assert v_.min_replicas <= a.replicas[v_.ref] <= v_.max_replicas
    if Reason.MINIMUM_EXCEEDS_BOUND in {c.reason for c in a.conditions}:
        return  # a bound was raised to the minimums' usage; checked against brute force instead
    b = problem.bounds
    for acc, quota in b.gpu_quota.items():
        assert a.gpus.get(acc, 0) <= quota
    assert b.max_gpus is None or sum(a.gpus.values()) <= b.max_gpus
    assert b.budget_per_hour is None or a.cost_per_hour <= b.budget_per_hour + 1e-6


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(problems())
def test_exact_matches_brute_force(problem):
    a = allocate_exact(problem)
    assert_feasible(problem, a)
    served, cost = objective(a)
    best_served, best_cost = brute_force(problem)
    assert served == pytest.approx(best_served, abs=1e-6)
    assert cost == pytest.approx(best_cost, abs=1e-6)


@PROPERTY
@given(problems())
def test_greedy_is_feasible_and_never_better_than_exact(problem):
    exact, greedy = allocate_exact(problem), allocate_greedy(problem)
    assert_feasible(problem, greedy)
    e_served, e_cost = objective(exact)
    g_served, g_cost = objective(greedy)
    assert not _better(g_served, g_cost, e_served, e_cost)


@PROPERTY
@given(problems(bounded=False, equal_capacity=True))
def test_greedy_equals_exact_when_no_bound_binds_and_a_stage_shares_one_capacity(problem):
    # Covering a demand with equal-sized replicas: the cheapest ones first is optimal, so greedy is exact here.
    e_served, e_cost = objective(allocate_exact(problem))
    g_served, g_cost = objective(allocate_greedy(problem))
    assert g_served == pytest.approx(e_served, abs=1e-6)
    assert g_cost == pytest.approx(e_cost, abs=1e-6)
