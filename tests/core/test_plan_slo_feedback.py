"""The planner closes the loop on the SLO: a variant whose measured TTFT p90 sits at its target gets more
replicas cycle by cycle than the model alone gives it, and slack gives that headroom back."""

from __future__ import annotations

from dataclasses import replace

from autoscaler.core.plan import PlannerConfig, PlannerState, VariantObservation, plan_cycle
from autoscaler.core.slo_feedback import SloFeedback
from autoscaler.core.types import Role

from .test_plan import CONFIG, POLICY, PROFILES, signals, spec


def observe(ttft_p90: float, rps: float = 20) -> list[VariantObservation]:
    prefill = replace(signals(rps=rps, prompt=2000, output=200),
                      ttft_quantiles_s=((0.5, ttft_p90 / 2), (0.9, ttft_p90), (0.99, ttft_p90 * 1.2)))
    return [VariantObservation(spec(Role.PREFILL), prefill, 4),
            VariantObservation(spec(Role.DECODE), signals(rps=20, prompt=2000, output=200), 4)]


def prefill_replicas(ttft_p90: float, *, cycles: int, config: PlannerConfig = CONFIG,
                     state: PlannerState | None = None, rps: float = 20) -> tuple[int, PlannerState]:
    state = state or PlannerState()
    desired = 0
    for i in range(cycles):
        plan, state = plan_cycle(observations=observe(ttft_p90, rps), state=state, profiles=PROFILES, policy=POLICY,
                                 config=config, now=1000.0 + 15 * i)
        desired = plan.decision(spec(Role.PREFILL).ref).desired
    return desired, state


def test_a_variant_held_at_its_ttft_target_gets_more_replicas_than_the_model_gives():
    model_only, _ = prefill_replicas(1.0, cycles=6, config=replace(CONFIG, slo_feedback=SloFeedback(enabled=False)))
    corrected, state = prefill_replicas(1.0, cycles=6)
    assert corrected > model_only
    assert state.capacity_trims[spec(Role.PREFILL).ref] < 0.6  # six cycles at the target: near the floor
    assert spec(Role.DECODE).ref in state.capacity_trims  # measured, within its ITL target: kept at 1


def test_slack_gives_the_headroom_back_and_no_more():
    _, tight = prefill_replicas(1.0, cycles=3)
    trim = tight.capacity_trims[spec(Role.PREFILL).ref]
    _, relaxed = prefill_replicas(0.1, cycles=5, state=tight)
    assert trim < relaxed.capacity_trims[spec(Role.PREFILL).ref] <= 1.0
    _, full = prefill_replicas(0.1, cycles=200, state=relaxed)
    assert full.capacity_trims[spec(Role.PREFILL).ref] == 1.0


def test_a_breach_under_more_load_than_the_serving_replicas_are_modelled_for_leaves_the_trim_alone():
    # 4 prefill replicas taking 400 req/s of 2000-token prompts: the model itself says the SLO breaks, so the
    # breach says nothing about the model (sizing follows the demand; trimming too would count it twice).
    _, state = prefill_replicas(1.0, cycles=6, rps=400)
    assert state.capacity_trims[spec(Role.PREFILL).ref] == 1.0
    # The same breach with the pool within its modelled capacity is the model's error: the trim falls.
    _, state = prefill_replicas(1.0, cycles=6, rps=20)
    assert state.capacity_trims[spec(Role.PREFILL).ref] < 0.6
