"""A model and accelerator without a profile: learnt from a generic shape, its scale from the loaded pods, and
decided reactively until both stages are learnt."""

from __future__ import annotations

import dataclasses

import pytest

from autoscaler.core.types import Freshness, Role, VariantSignals
from autoscaler.perf.calibration import CalibrationSettings, Stage
from autoscaler.perf.online import (
    OnlineCalibration,
    OnlineSettings,
    calibrated_profiles,
    learnt_profiles,
    observe,
    scratch_prior,
)
from autoscaler.perf.profiles import default_profiles

PROFILES = default_profiles(environ={})
REFERENCE = PROFILES["llama-3.1-8b/h100"]
TRUTH = PROFILES["llama-3.1-8b/a100"]  # 2.7x the reference's prefill per token, 1.6x its decode gamma
PRIOR = scratch_prior(model="acme/new-model", accelerator="A100", reference=REFERENCE)


def window(truth, *, batch: float, prompt: float, pods: int = 2, rate: float = 3.0) -> VariantSignals:
    """A loaded window of both pools as the signal source reports it, the engines running ``truth``."""
    context = 2000.0
    passes = rate * 1.2  # forward passes per second, summed over pods
    busy = passes * truth.prefill_a + rate * (truth.prefill_b * prompt + truth.prefill_c * prompt * prompt)
    return VariantSignals(
        freshness=Freshness.FRESH, pods=pods, waiting=0.0, running=pods * batch, completions_per_s=rate,
        warm_pods=tuple(f"p{i}" for i in range(pods)), itl_mean_s=truth.decode_step_time(batch, context),
        decoding=pods * batch, kv_usage_window_mean=batch * context / PRIOR.kv_capacity_tokens,
        prompt_tokens_mean=prompt, prompt_tokens_sq_mean=prompt * prompt, busy_per_s=busy, iterations_per_s=passes)


def learn(cycles: int, roles=(Role.PREFILL, Role.DECODE)) -> tuple[OnlineCalibration, dict, tuple]:
    state = OnlineCalibration()
    for i in range(cycles):
        sig = window(TRUTH, batch=20.0 + i % 5, prompt=3000.0 + 50 * (i % 7))
        for role in roles:
            state = observe(state, profile=PRIOR, role=role, signals=sig, now=15.0 * i)
    fitted, reports = calibrated_profiles(state, profiles={PRIOR.name: PRIOR})
    return state, fitted, reports


def test_the_scratch_prior_carries_the_reference_shape_under_the_variants_names():
    assert PRIOR.name == "learnt:acme/new-model/a100"
    assert (PRIOR.model, PRIOR.accelerator) == ("acme/new-model", "A100")
    assert PRIOR.prefill_b == REFERENCE.prefill_b and PRIOR.decode_gamma == REFERENCE.decode_gamma


def test_a_scratch_profile_learns_the_scale_of_an_engine_far_from_the_reference():
    state, fitted, reports = learn(20)
    learnt = learnt_profiles(state, fitted, reports)[PRIOR.name]
    for prompt in (2000.0, 4000.0):
        assert learnt.prefill_time(prompt) == pytest.approx(TRUTH.prefill_time(prompt), rel=0.15)
    assert learnt.decode_step_time(22.0, 2000.0) == pytest.approx(TRUTH.decode_step_time(22.0, 2000.0), rel=0.10)
    # The scratch bound applies: held to 1.5x, the same windows could not reach the truth (2.7x).
    narrow = OnlineSettings(fit=CalibrationSettings(bound=1.5), scratch_bound=1.5)
    clipped, _ = calibrated_profiles(state, profiles={PRIOR.name: PRIOR}, settings=narrow)
    assert clipped[PRIOR.name].prefill_time(3000.0) < 0.8 * TRUTH.prefill_time(3000.0)


@pytest.mark.parametrize("cycles, roles, kept", [
    pytest.param(5, (Role.PREFILL, Role.DECODE), False, id="too-few-windows"),
    pytest.param(20, (Role.PREFILL,), False, id="decode-not-learnt-yet"),
    pytest.param(20, (Role.PREFILL, Role.DECODE), True, id="both-stages-learnt"),
])
def test_a_scratch_profile_is_planned_with_only_once_both_stages_are_learnt(cycles, roles, kept):
    state, fitted, reports = learn(cycles, roles)
    shipped = {"llama-3.1-8b/h100": REFERENCE}
    usable = learnt_profiles(state, {**fitted, **shipped}, reports)
    assert (PRIOR.name in usable) is kept
    assert usable["llama-3.1-8b/h100"] is REFERENCE  # shipped profiles are never held back
    assert {r.stage for r in reports} == ({Stage.PREFILL, Stage.DECODE} if len(roles) == 2 else {Stage.PREFILL})


def test_a_scratch_profiles_borrowed_scale_does_not_pull_the_fit_but_a_shipped_profiles_does():
    # An engine 7x faster than the reference's scale, same shape; 12 windows at one operating point, a heavy
    # prior weight: a shipped prior's scale holds the fit back, a scratch prior's (some other model's) must not.
    truth = dataclasses.replace(REFERENCE, prefill_a=REFERENCE.prefill_a / 7, prefill_b=REFERENCE.prefill_b / 7,
                                prefill_c=REFERENCE.prefill_c / 7)
    heavy = OnlineSettings(fit=CalibrationSettings(prior_samples=12))
    state = OnlineCalibration()
    for i in range(12):
        state = observe(state, profile=PRIOR, role=Role.PREFILL, signals=window(truth, batch=20.0, prompt=3000.0),
                        now=15.0 * i)
    shipped_state = OnlineCalibration(windows={(REFERENCE.name, k[1]): v for k, v in state.windows.items()})
    scratch, _ = calibrated_profiles(state, profiles={PRIOR.name: PRIOR}, settings=heavy)
    shipped, _ = calibrated_profiles(shipped_state, profiles={REFERENCE.name: REFERENCE}, settings=heavy)
    assert scratch[PRIOR.name].prefill_time(3000.0) == pytest.approx(truth.prefill_time(3000.0), rel=0.02)
    # The shipped prior is trusted: half the weight stays on its 7x-slower scale (the bound allows 1/3 of it).
    assert shipped[REFERENCE.name].prefill_time(3000.0) > 2 * truth.prefill_time(3000.0)
