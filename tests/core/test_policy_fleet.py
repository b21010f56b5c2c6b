"""decide_fleet: allocation across variants and models, each variant's pipeline, and the global bounds."""

import pytest

from autoscaler.core.behavior import Behavior
from autoscaler.core.fleet import VariantInput, decide_fleet
from autoscaler.core.policyset import CostBounds, ModelPolicy, PolicySet, VariantPolicy
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.perf.capacity import TrafficMix, estimate_capacity
from tests.core.test_slo_policy import H100_8B, SLO

FAST = Behavior(scale_down_window_s=0, max_step_up=0, max_step_down=0)
CALM = VariantSignals(freshness=Freshness.FRESH, waiting=0, running=2, kv_usage_mean=0.3, completions_per_s=1.0)
SATURATED = VariantSignals(freshness=Freshness.FRESH, waiting=40, running=50, kv_usage_mean=0.95, completions_per_s=9.0)


def spec(name: str, role: Role, acc: str, *, model: str = "llama", low: int = 1, high: int = 20) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", name), model=model, role=role, accelerator=acc,
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=low, max_replicas=high)


def variant(name, role, acc, *, capacity=None, gpus=1, price=4.0, current=1, signals=CALM, **spec_kwargs):
    return VariantInput(spec=spec(name, role, acc, **spec_kwargs), signals=signals, current=current,
                        capacity_rps=capacity, gpus_per_replica=gpus, cost_per_replica_hour=price * gpus)


def desired(fleet) -> dict[str, int]:
    return {d.variant.name: d.desired for d in fleet.decisions}


def policy(bounds=None, models=(), behavior=FAST) -> PolicySet:
    return PolicySet(models=tuple(models), bounds=bounds or CostBounds(), behavior=behavior)


def test_serves_the_demand_on_the_cheapest_accelerator():
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, price=4.0),
                variant("d-a100", Role.DECODE, "A100", capacity=3.0, price=2.0)]  # 0.8 vs 0.67 $/h per req/s
    fleet = decide_fleet(variants=variants, demands={"llama": 14.0}, policy=policy(), now=0.0)
    assert desired(fleet) == {"d-h100": 1, "d-a100": 3}  # the H100 minimum of 1 counts towards the demand
    assert fleet.decision(VariantRef("ns", "d-a100")).reason is Reason.COST_OPTIMAL


def test_a_negotiated_gpu_price_changes_the_choice():
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, price=4.0, low=0),
                variant("d-a100", Role.DECODE, "A100", capacity=3.0, price=2.0, low=0)]
    cheap_h100 = policy(CostBounds(gpu_hour_price={"H100": 1.5}))
    fleet = decide_fleet(variants=variants, demands={"llama": 10.0}, policy=cheap_h100, now=0.0)
    assert desired(fleet) == {"d-h100": 2, "d-a100": 0}


def test_a_binding_budget_serves_the_higher_priority_model_and_reports_the_rest():
    models = (ModelPolicy("chat", priority=100), ModelPolicy("batch", priority=1))
    variants = [variant("chat", Role.BOTH, "H100", capacity=2.0, model="chat"),
                variant("batch", Role.BOTH, "H100", capacity=2.0, model="batch")]
    fleet = decide_fleet(variants=variants, demands={"chat": 10.0, "batch": 10.0},
                         policy=policy(CostBounds(budget_per_hour=28.0), models), now=0.0)
    assert desired(fleet) == {"chat": 5, "batch": 2}
    assert fleet.unserved_rate("chat") == 0.0 and fleet.unserved_rate("batch") == pytest.approx(6.0)
    assert fleet.decision(VariantRef("ns", "batch")).steps[1].reason is Reason.BUDGET_LIMITED
    assert {c.subject for c in fleet.conditions if c.reason is Reason.DEMAND_UNSERVED} == {"batch"}


def test_reactive_scale_ups_are_trimmed_to_the_quota_lowest_priority_first():
    models = (ModelPolicy("chat", priority=100), ModelPolicy("batch", priority=1))
    variants = [variant("chat", Role.BOTH, "H100", model="chat", current=2, signals=SATURATED),
                variant("batch", Role.BOTH, "H100", model="batch", current=2, signals=SATURATED)]
    fleet = decide_fleet(variants=variants, demands={}, policy=policy(CostBounds(gpu_quota={"H100": 8}), models),
                         now=0.0)
    assert desired(fleet) == {"chat": 6, "batch": 2}
    batch = fleet.decision(VariantRef("ns", "batch"))
    assert (batch.reason, batch.steps[-1].stage) == (Reason.QUOTA_LIMITED, "fleet-bounds")


def test_a_quota_smaller_than_the_minimum_is_a_condition_and_keeps_the_minimum():
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, gpus=2, low=3, current=3)]
    fleet = decide_fleet(variants=variants, demands={"llama": 40.0},
                         policy=policy(CostBounds(gpu_quota={"H100": 4})), now=0.0)
    assert desired(fleet) == {"d-h100": 3}
    reasons = {c.reason for c in fleet.conditions}
    assert Reason.MINIMUM_EXCEEDS_BOUND in reasons and Reason.DEMAND_UNSERVED in reasons


def test_a_variant_without_capacity_is_decided_reactively_and_holds_its_gpus():
    steady = VariantSignals(freshness=Freshness.FRESH, waiting=0, running=9, kv_usage_mean=0.5, completions_per_s=3.0)
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, current=1),
                variant("d-l40s", Role.DECODE, "H100", capacity=None, current=3, signals=steady)]
    fleet = decide_fleet(variants=variants, demands={"llama": 30.0},
                         policy=policy(CostBounds(gpu_quota={"H100": 5})), now=0.0)
    assert desired(fleet) == {"d-h100": 2, "d-l40s": 3}
    assert [c.reason for c in fleet.conditions][:1] == [Reason.CAPACITY_UNKNOWN]


def test_a_model_without_forecast_is_decided_reactively():
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, current=2, signals=SATURATED)]
    fleet = decide_fleet(variants=variants, demands={"llama": None}, policy=policy(), now=0.0)
    assert fleet.allocation is None and desired(fleet)["d-h100"] > 2
    assert fleet.decision(VariantRef("ns", "d-h100")).reason is Reason.SATURATED


def test_histories_come_back_per_variant():
    variants = [variant("a", Role.DECODE, "H100"), variant("b", Role.PREFILL, "H100")]
    fleet = decide_fleet(variants=variants, demands={}, policy=policy(), now=5.0)
    assert set(fleet.histories) == {VariantRef("ns", "a"), VariantRef("ns", "b")}
    assert all(h[-1].at == 5.0 for h in fleet.histories.values())


def test_a_mix_shift_to_long_prompts_grows_prefill_not_decode():
    def cycle(mean_input: float) -> dict[str, int]:
        mix = TrafficMix(mean_input_tokens=mean_input, p90_input_tokens=1.5 * mean_input, mean_output_tokens=256)
        cap = {role: estimate_capacity(profile=H100_8B, role=role, mix=mix, slo=SLO).max_rate_rps
               for role in (Role.PREFILL, Role.DECODE)}
        variants = [variant("prefill", Role.PREFILL, "H100", capacity=cap[Role.PREFILL], current=1),
                    variant("decode", Role.DECODE, "H100", capacity=cap[Role.DECODE], current=1)]
        return desired(decide_fleet(variants=variants, demands={"llama": 15.0}, policy=policy(), now=0.0))

    short, long = cycle(256), cycle(2048)
    assert long["prefill"] > short["prefill"]
    assert long["decode"] == short["decode"]


def test_policy_variant_bounds_apply_through_the_fleet():
    models = (ModelPolicy("llama", variants=(VariantPolicy(Role.DECODE, "H100", max_replicas=2),)),)
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=1.0)]
    fleet = decide_fleet(variants=variants, demands={"llama": 10.0}, policy=policy(models=models), now=0.0)
    assert desired(fleet) == {"d-h100": 2}
    assert fleet.unserved_rate("llama") == pytest.approx(8.0)


def busy(kv: float) -> VariantSignals:
    return VariantSignals(freshness=Freshness.FRESH, waiting=0, running=4, kv_usage_mean=kv, completions_per_s=2.0)


@pytest.mark.parametrize(
    ("a100_kv", "expected"),
    [
        pytest.param(0.3, {"d-h100": 2, "d-a100": 0}, id="peers-hold-the-load-so-the-dear-variant-retires"),
        # 2 A100 replicas at kv 0.75 carry 1.875 replicas' worth of load (at kv_high 0.8), 5.6 req/s at 3 req/s
        # each; a forecast of 4 req/s gives one H100 (5 req/s), which could not take it: the A100 floor stays.
        pytest.param(0.75, {"d-h100": 1, "d-a100": 2}, id="stage-cannot-hold-today-s-load-keeps-the-floor"),
    ],
)
def test_the_stage_consolidation_check_gates_moving_load_between_variants(a100_kv, expected):
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, price=1.5, low=0, current=1),
                variant("d-a100", Role.DECODE, "A100", capacity=3.0, price=2.5, low=0, current=2,
                        signals=busy(a100_kv))]
    demand = 8.0 if a100_kv < 0.5 else 4.0
    fleet = decide_fleet(variants=variants, demands={"llama": demand}, policy=policy(), now=0.0)
    assert desired(fleet) == expected, [d.message for d in fleet.decisions]


def test_a_predictive_floor_from_early_rejection_raises_the_allocation():
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, current=2)]
    floors = {VariantRef("ns", "d-h100"): Prediction(6, Reason.FORECAST, "decode load committed by prefill")}
    fleet = decide_fleet(variants=variants, demands={"llama": 10.0}, policy=policy(), now=0.0,
                         predictive_floors=floors)
    decision = fleet.decision(VariantRef("ns", "d-h100"))
    assert (decision.desired, decision.reason) == (6, Reason.FORECAST)
    lower = {VariantRef("ns", "d-h100"): Prediction(1, Reason.FORECAST)}
    assert desired(decide_fleet(variants=variants, demands={"llama": 10.0}, policy=policy(), now=0.0,
                                predictive_floors=lower)) == {"d-h100": 2}


def test_scale_to_zero_through_the_fleet_waits_for_the_idle_window():
    models = (ModelPolicy("llama", variants=(VariantPolicy(Role.DECODE, "H100", scale_to_zero=True,
                                                           idle_window_s=60),)),)
    idle = VariantSignals(freshness=Freshness.FRESH, waiting=0, running=0, kv_usage_mean=0.0, completions_per_s=0.0)
    histories, current, seen = {}, 1, []
    for cycle in range(8):
        item = VariantInput(spec=spec("d", Role.DECODE, "H100"), signals=idle, current=current,
                            history=histories.get(VariantRef("ns", "d"), ()), capacity_rps=5.0)
        fleet = decide_fleet(variants=[item], demands={"llama": 0.0}, policy=policy(models=models), now=cycle * 15.0)
        histories, current = fleet.histories, fleet.decisions[0].desired
        seen.append(current)
    assert seen == [1, 1, 1, 1, 0, 0, 0, 0]


def test_scale_to_zero_variant_keeps_its_minimum_while_its_model_has_demand():
    models = (ModelPolicy("llama", variants=(VariantPolicy(Role.DECODE, "H100", scale_to_zero=True),)),)
    variants = [variant("d-h100", Role.DECODE, "H100", capacity=5.0, price=4.0, current=1),
                variant("d-a100", Role.DECODE, "A100", capacity=5.0, price=1.0, current=1, low=0)]
    fleet = decide_fleet(variants=variants, demands={"llama": 4.0}, policy=policy(models=models), now=0.0)
    assert desired(fleet) == {"d-h100": 1, "d-a100": 0}


def test_a_models_lead_time_holds_its_ready_replicas_past_the_scale_down_window():
    from autoscaler.core.types import ReplicaCounts

    slow = policy(behavior=Behavior(scale_down_window_s=300, max_step_down=0))

    def run(lead_times):
        histories, current, seen = {}, 4, []
        for cycle, demand in enumerate([20.0] + [10.0] * 8):  # 4 replicas' worth, then 2's, every 100 s
            item = VariantInput(spec=spec("d", Role.DECODE, "H100"), signals=CALM, current=current,
                                history=histories.get(VariantRef("ns", "d"), ()), capacity_rps=5.0,
                                replicas=ReplicaCounts(ready=current, starting=0, unschedulable=0))
            fleet = decide_fleet(variants=[item], demands={"llama": demand}, policy=slow, now=cycle * 100.0,
                                 lead_times=lead_times)
            histories, current = fleet.histories, fleet.decisions[0].desired
            seen.append(current)
        return seen

    assert run(None) == [4, 4, 4, 4, 2, 2, 2, 2, 2]  # the 300 s window alone
    assert run({"llama": 700.0}) == [4, 4, 4, 4, 4, 4, 4, 4, 2]  # a replica back takes 700 s: held that long
