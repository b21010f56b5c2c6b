"""One variant's bad numbers hold that variant, with the reason in its decision, and never stop the others
(issue 16, item 3); a model with a variant at zero pods keeps its demand known (item 5)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.core.behavior import Behavior
from autoscaler.core.plan import PlannerConfig, PlannerState, VariantObservation, plan_cycle
from autoscaler.core.policyset import PolicySet
from autoscaler.core.screen import screened
from autoscaler.core.types import (
    Freshness,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.forecast import ForecastConfig
from autoscaler.perf.profiles import default_profiles

PROFILES = default_profiles()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
OTHER = "meta-llama/Llama-3.1-70B-Instruct"
POLICY = PolicySet(behavior=Behavior(scale_down_window_s=0, max_step_up=0, max_step_down=0))
CONFIG = PlannerConfig(forecast=ForecastConfig(interval_s=15, lead_time_s=60, history_s=3600))


def spec(role: Role, model: str = MODEL, accelerator: str = "H100") -> VariantSpec:
    name = f"{model.split('/')[-1].lower()}-{role.value}-{accelerator.lower()}"
    return VariantSpec(ref=VariantRef("ns", name), model=model, role=role, accelerator=accelerator,
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=1, max_replicas=40)


def signals(**overrides: object) -> VariantSignals:
    base = VariantSignals(
        freshness=Freshness.FRESH, pods=2, waiting=1.0, running=8.0, kv_usage_mean=0.3, kv_usage_max=0.4,
        completions_per_s=10.0, prompt_tokens_per_s=10_000.0, generation_tokens_per_s=2_000.0,
        prompt_tokens_mean=1000.0, prompt_tokens_p90=1500.0, generation_tokens_mean=200.0,
        prefix_cache_hit_ratio=0.2,
    )
    return replace(base, **overrides)


def fleet(bad: VariantSignals, current: int = 2) -> list[VariantObservation]:
    """Two models: the first's prefill variant reads ``bad``, everything else is ordinary."""
    return [
        VariantObservation(spec(Role.PREFILL), bad, current),
        VariantObservation(spec(Role.DECODE), signals(), current),
        VariantObservation(spec(Role.PREFILL, OTHER), signals(), current),
        VariantObservation(spec(Role.DECODE, OTHER), signals(), current),
    ]


def plan(observations):
    return plan_cycle(observations=observations, state=PlannerState(), profiles=PROFILES, policy=POLICY,
                      config=CONFIG, now=1000.0)


def test_a_prefix_cache_hit_ratio_of_one_is_planned_not_raised():
    result, _ = plan(fleet(signals(prefix_cache_hit_ratio=1.0)))
    assert len(result.decisions) == 4
    assert result.outlooks[MODEL].demand_rps is not None


BAD = [
    pytest.param("waiting", 1e308, id="waiting-huge"),
    pytest.param("waiting", float("inf"), id="waiting-inf"),
    pytest.param("waiting", -3.0, id="waiting-negative"),
    pytest.param("kv_usage_mean", float("nan"), id="kv-nan"),
    pytest.param("kv_usage_mean", 7.0, id="kv-above-one"),
    pytest.param("running", 1e308, id="running-huge"),
    pytest.param("completions_per_s", 1e308, id="rate-huge"),
    pytest.param("completions_per_s", -1.0, id="rate-negative"),
    pytest.param("prompt_tokens_mean", 1e308, id="prompt-huge"),
    pytest.param("generation_tokens_mean", float("inf"), id="output-inf"),
    pytest.param("prefix_cache_hit_ratio", 1.5, id="hit-ratio-above-one"),
]


@pytest.mark.parametrize(("field", "value"), [*BAD, pytest.param("prompt_tokens_mean", 0.0, id="prompt-zero")])
def test_a_bad_number_in_one_variant_leaves_the_other_model_decided_as_if_it_were_not_there(field, value):
    result, _ = plan(fleet(signals(**{field: value})))
    alone, _ = plan(fleet(signals())[2:])
    for role in (Role.PREFILL, Role.DECODE):
        ref = spec(role, OTHER).ref
        assert result.decision(ref).desired == alone.decision(ref).desired


@pytest.mark.parametrize(("field", "value"), BAD)
def test_a_bad_number_never_scales_its_variant_down(field, value):
    result, _ = plan(fleet(signals(**{field: value}), current=5))
    decision = result.decision(spec(Role.PREFILL).ref)
    assert decision is not None and decision.desired >= 5


@pytest.mark.parametrize(("field", "value"), BAD)
def test_a_bad_number_holds_its_variant_and_the_decision_says_which_value(field, value):
    result, _ = plan(fleet(signals(**{field: value}), current=5))
    decision = result.decision(spec(Role.PREFILL).ref)
    assert decision.desired == 5
    assert field in decision.message and "implausible" in decision.message


def test_screening_drops_only_the_implausible_values_and_names_them():
    sig = screened(signals(running=float("nan"), completions_per_s=1e308))
    assert (sig.running, sig.completions_per_s, sig.waiting, sig.freshness) == (None, None, 1.0, Freshness.MISSING)
    assert {"running", "completions_per_s"} <= set(sig.missing)
    assert "running" in sig.note and "completions_per_s" in sig.note


def test_screening_leaves_plausible_signals_untouched():
    sig = signals()
    assert screened(sig) is sig


def test_a_sibling_at_zero_pods_does_not_make_its_models_demand_unknown():
    at_zero = spec(Role.PREFILL, accelerator="A100")
    observations = [
        VariantObservation(spec(Role.PREFILL), signals(), 2),
        VariantObservation(at_zero, VariantSignals.unknown(f"no series for {at_zero.ref}"), 0),
        VariantObservation(spec(Role.DECODE), signals(), 2),
    ]
    result, _ = plan(observations)
    assert result.outlooks[MODEL].demand_rps is not None
