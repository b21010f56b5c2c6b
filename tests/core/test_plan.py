"""The planner: traffic observed per model, forecast, capacity per variant, fleet decision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.core.behavior import Behavior
from autoscaler.core.plan import PlannerConfig, PlannerState, VariantObservation, plan_cycle, resolve_profile
from autoscaler.core.policyset import PolicySet
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.forecast import ForecastConfig
from autoscaler.perf.profiles import default_profiles
from tests.core.history_series import history_series

PROFILES = default_profiles()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
POLICY = PolicySet(behavior=Behavior(scale_down_window_s=0, max_step_up=0, max_step_down=0))
CONFIG = PlannerConfig(forecast=ForecastConfig(interval_s=15, lead_time_s=60, history_s=3600))


def spec(role: Role, accelerator: str = "H100", model: str = MODEL, max_replicas: int = 40) -> VariantSpec:
    name = f"{role.value}-{accelerator.lower()}"
    return VariantSpec(ref=VariantRef("ns", name), model=model, role=role, accelerator=accelerator,
                       target=ScaleTarget("apps/v1", "Deployment", name), min_replicas=1, max_replicas=max_replicas)


def signals(*, rps: float, prompt: float, output: float, waiting: float = 0, running: float = 0,
            kv: float = 0.3) -> VariantSignals:
    return VariantSignals(
        freshness=Freshness.FRESH, pods=1, waiting=waiting, running=running, kv_usage_mean=kv, kv_usage_max=kv,
        completions_per_s=rps, prompt_tokens_per_s=rps * prompt, generation_tokens_per_s=rps * output,
        prompt_tokens_mean=prompt, prompt_tokens_p90=prompt * 1.5, generation_tokens_mean=output,
    )


FRESH = PlannerState()


def plan(observations, state=FRESH, now=1000.0):
    return plan_cycle(observations=observations, state=state, profiles=PROFILES, policy=POLICY, config=CONFIG,
                      now=now)


def pools(rps: float, prompt: float, output: float, current: int = 1) -> list[VariantObservation]:
    return [
        VariantObservation(spec(Role.PREFILL), signals(rps=rps, prompt=prompt, output=output), current),
        VariantObservation(spec(Role.DECODE), signals(rps=rps, prompt=prompt, output=output), current),
    ]


@pytest.mark.parametrize(
    ("accelerator", "model", "expected"),
    [
        pytest.param("H100", MODEL, "llama-3.1-8b/h100", id="short-accelerator-name"),
        pytest.param("nvidia-l40s", MODEL, "llama-3.1-8b/l40s", id="profile-accelerator-field"),
        pytest.param("h100", MODEL, "llama-3.1-8b/h100", id="case-insensitive"),
        pytest.param("TPU", MODEL, None, id="unknown-accelerator"),
        pytest.param("H100", "some/other-model", None, id="unknown-model"),
    ],
)
def test_resolves_a_variant_to_its_profile(accelerator, model, expected):
    found = resolve_profile(spec(Role.DECODE, accelerator, model), PROFILES, POLICY)
    assert (found.name if found else None) == expected


def test_sizes_prefill_and_decode_for_the_observed_demand():
    result, state = plan(pools(rps=60, prompt=2000, output=300))
    outlook = result.outlooks[MODEL]
    assert outlook.demand_rps == pytest.approx(60, rel=0.01)
    prefill = result.decision(spec(Role.PREFILL).ref)
    decode = result.decision(spec(Role.DECODE).ref)
    assert prefill.desired > 1 and decode.desired > 1
    assert any(s.reason is Reason.SLO_CAPACITY for s in prefill.steps)
    assert MODEL in state.mixes and spec(Role.PREFILL).ref in state.histories


def test_long_prompts_grow_prefill_not_decode():
    short, _ = plan(pools(rps=20, prompt=256, output=256))
    long, _ = plan(pools(rps=20, prompt=2048, output=256))
    p_ref, d_ref = spec(Role.PREFILL).ref, spec(Role.DECODE).ref
    assert long.decision(p_ref).desired > short.decision(p_ref).desired
    assert long.decision(d_ref).desired <= short.decision(d_ref).desired + 1


def test_long_outputs_grow_decode_more_than_prefill():
    short, _ = plan(pools(rps=20, prompt=1024, output=64))
    long, _ = plan(pools(rps=20, prompt=1024, output=1024))
    p_ref, d_ref = spec(Role.PREFILL).ref, spec(Role.DECODE).ref
    assert long.decision(d_ref).desired > short.decision(d_ref).desired
    assert long.decision(p_ref).desired == short.decision(p_ref).desired


def test_unknown_entry_signals_are_unknown_demand_and_hold():
    obs = [
        VariantObservation(spec(Role.PREFILL), VariantSignals.unknown("prometheus down"), 5),
        VariantObservation(spec(Role.DECODE), signals(rps=0, prompt=0, output=0, kv=0.0), 5),
    ]
    result, _ = plan(obs)
    assert result.outlooks[MODEL].demand_rps is None
    assert result.decision(spec(Role.PREFILL).ref).desired == 5


def test_zero_traffic_is_zero_demand_not_unknown():
    result, _ = plan(pools(rps=0.0, prompt=0.0, output=0.0, current=3))
    outlook = result.outlooks[MODEL]
    assert outlook.observed_rps == 0.0
    for role in (Role.PREFILL, Role.DECODE):
        assert result.decision(spec(role).ref).desired < 3


def test_waiting_requests_add_to_the_demand():
    quiet, _ = plan(pools(rps=10, prompt=1000, output=200))
    backlog = pools(rps=10, prompt=1000, output=200)
    backlog[0] = VariantObservation(spec(Role.PREFILL), signals(rps=10, prompt=1000, output=200, waiting=600), 1)
    busy, _ = plan(backlog)
    assert busy.outlooks[MODEL].demand_rps == pytest.approx(quiet.outlooks[MODEL].demand_rps + 600 / 60, rel=0.01)


def test_the_forecaster_carries_state_across_cycles():
    state = PlannerState()
    config = replace(CONFIG, rise_confirm_share=0.0)  # size for each cycle's demand at once
    for i, rate in enumerate([5, 10, 15, 20, 25, 30]):
        result, state = plan_cycle(observations=pools(rps=rate, prompt=1000, output=200), state=state,
                                   profiles=PROFILES, policy=POLICY, config=config, now=1000.0 + 15 * i)
    assert result.outlooks[MODEL].demand_rps >= 30
    assert result.outlooks[MODEL].forecast_method is not None


def test_predictive_off_decides_reactively():
    config = PlannerConfig(forecast=CONFIG.forecast, predictive=False)
    result, _ = plan_cycle(observations=pools(rps=60, prompt=2000, output=300), state=PlannerState(),
                           profiles=PROFILES, policy=POLICY, config=config, now=0.0)
    assert all(s.reason is not Reason.SLO_CAPACITY for d in result.decisions for s in d.steps)
    assert result.outlooks[MODEL].admission is None


def test_admission_ratio_is_reported_for_a_disaggregated_model():
    obs = [
        VariantObservation(spec(Role.PREFILL), signals(rps=40, prompt=4000, output=300, waiting=400, running=8), 1),
        VariantObservation(spec(Role.DECODE), signals(rps=40, prompt=4000, output=300, running=200, kv=0.95), 1),
    ]
    result, _ = plan(obs)
    outlook = result.outlooks[MODEL]
    assert outlook.admission is not None
    assert 0.0 <= outlook.admission_ratio < 1.0


def test_warm_start_teaches_the_forecaster_the_recent_past():
    from autoscaler.core.plan import warm_start

    n = 60
    ts = tuple(1000.0 + 15 * i for i in range(n))
    ramp = history_series(ts, tuple(1.0 + 0.5 * i for i in range(n)), (1000.0,) * n, (200.0,) * n)
    warmed = warm_start(state=PlannerState(), histories={spec(Role.PREFILL): ramp, spec(Role.DECODE): ramp},
                        config=CONFIG)
    now = ts[-1] + 15
    observed = 1.0 + 0.5 * n
    hot, _ = plan(pools(rps=observed, prompt=1000, output=200), state=warmed, now=now)
    cold, _ = plan(pools(rps=observed, prompt=1000, output=200), state=PlannerState(), now=now)
    assert hot.outlooks[MODEL].forecast_method not in (None, "observed")
    assert hot.outlooks[MODEL].demand_rps > cold.outlooks[MODEL].demand_rps  # the ramp goes on


def test_warm_start_skips_misaligned_histories():
    from autoscaler.core.plan import warm_start

    a = history_series((1.0, 2.0), (1.0, 1.0), (10.0, 10.0), (5.0, 5.0))
    b = history_series((1.0, 3.0), (1.0, 1.0), (10.0, 10.0), (5.0, 5.0))
    warmed = warm_start(state=PlannerState(), histories={spec(Role.PREFILL): a, spec(Role.DECODE): b},
                        config=CONFIG)
    assert MODEL not in warmed.mixes
