"""Online calibration (autoscaler.perf.online): which windows are learnt from, bounded windows, fitted profiles."""

from __future__ import annotations

import dataclasses
import math

import pytest

from autoscaler.core.types import Freshness, Role, VariantSignals
from autoscaler.perf.calibration import CalibrationSettings, Stage
from autoscaler.perf.online import (
    OnlineCalibration,
    OnlineSettings,
    calibrated_profiles,
    decode_observation,
    observe,
    prefill_observation,
)
from autoscaler.perf.profile import PerformanceProfile

PRIOR = PerformanceProfile(
    name="p/h100", model="m", accelerator="H100", gpus_per_replica=1,
    prefill_a=0.006, prefill_b=3e-5, prefill_c=9e-10,
    decode_alpha=0.006, decode_beta=4e-5, decode_gamma=5e-8, kv_capacity_tokens=400_000,
)
HIDDEN = dataclasses.replace(PRIOR, decode_alpha=0.0078, decode_beta=2.8e-5, decode_gamma=6.5e-8,
                             prefill_a=0.0042, prefill_b=3.9e-5, prefill_c=1.17e-9)


def window(**changes: object) -> VariantSignals:
    """A fresh, warm, busy window of two pods whose decode and prefill numbers come from HIDDEN."""
    batch, context = 20.0, 1500.0
    base = VariantSignals(
        freshness=Freshness.FRESH, pods=2, waiting=0.0, running=2 * batch, completions_per_s=4.0,
        warm_pods=("a", "b"), itl_mean_s=HIDDEN.decode_step_time(batch, context), decoding=2 * batch,
        kv_usage_window_mean=batch * context / PRIOR.kv_capacity_tokens,
        prompt_tokens_mean=1000.0, prompt_tokens_sq_mean=1.2e6, prefix_cache_hit_ratio=0.0,
        prefill_time_mean_s=HIDDEN.prefill_a + HIDDEN.prefill_b * 1000 + HIDDEN.prefill_c * 1.2e6,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def stages(state: OnlineCalibration) -> dict[Stage, int]:
    return {stage: n for stage in Stage if (n := state.samples(PRIOR.name, stage))}


@pytest.mark.parametrize(("role", "signals", "settings", "expected"), [
    pytest.param(Role.DECODE, window(), OnlineSettings(), {Stage.DECODE: 1}, id="decode-pods-give-decode"),
    pytest.param(Role.PREFILL, window(), OnlineSettings(), {Stage.PREFILL: 1}, id="prefill-pods-give-prefill"),
    pytest.param(Role.BOTH, window(), OnlineSettings(), {}, id="aggregated-pods-skipped-by-default"),
    pytest.param(Role.BOTH, window(), OnlineSettings(aggregated=True), {Stage.DECODE: 1, Stage.PREFILL: 1},
                 id="aggregated-pods-when-asked"),
    pytest.param(Role.DECODE, window(warming_pods=("c",)), OnlineSettings(), {}, id="a-warming-pod-skips-it"),
    pytest.param(Role.DECODE, window(warm_pods=()), OnlineSettings(), {}, id="no-pod-known-warm"),
    pytest.param(Role.DECODE, window(missing=("pod_ages",)), OnlineSettings(), {}, id="pod-ages-unknown"),
    pytest.param(Role.DECODE, window(completions_per_s=0.0, running=0.0, waiting=0.0), OnlineSettings(), {},
                 id="idle-window"),
    pytest.param(Role.DECODE, window(freshness=Freshness.STALE), OnlineSettings(), {}, id="stale-window"),
    pytest.param(Role.DECODE, window(itl_mean_s=None), OnlineSettings(), {}, id="itl-not-exported"),
    pytest.param(Role.DECODE, window(itl_mean_s=math.nan), OnlineSettings(), {}, id="itl-nan"),
    pytest.param(Role.DECODE, window(decoding=math.inf), OnlineSettings(), {}, id="batch-inf"),
    pytest.param(Role.DECODE, window(kv_usage_window_mean=math.nan), OnlineSettings(), {}, id="kv-nan"),
    pytest.param(Role.DECODE, window(decoding=0.4), OnlineSettings(), {}, id="nearly-idle-decode"),
    pytest.param(Role.DECODE, window(pods=0), OnlineSettings(), {}, id="no-pods"),
    pytest.param(Role.PREFILL, window(prefill_time_mean_s=None), OnlineSettings(), {}, id="prefill-not-exported"),
    pytest.param(Role.PREFILL, window(prompt_tokens_mean=math.nan), OnlineSettings(), {}, id="prompt-nan"),
    pytest.param(Role.PREFILL, window(completions_per_s=200.0), OnlineSettings(), {}, id="prefill-pods-too-busy"),
    pytest.param(Role.PREFILL, window(prefix_cache_hit_ratio=1.0), OnlineSettings(), {}, id="all-cached"),
])
def test_observes_only_windows_that_measure_a_stage(role, signals, settings, expected):
    state = observe(OnlineCalibration(), profile=PRIOR, role=role, signals=signals, now=0.0, settings=settings)
    assert stages(state) == expected
    for samples in state.windows.values():
        for _, obs in samples:
            assert all(math.isfinite(v) for v in dataclasses.astuple(obs) if isinstance(v, float))


def test_decode_observation_reads_batch_per_pod_and_context_from_the_kv_tokens_held():
    obs = decode_observation(profile=PRIOR, signals=window())
    assert obs is not None
    assert (obs.batch, obs.mean_context) == pytest.approx((20.0, 1500.0))
    assert obs.itl_s == pytest.approx(HIDDEN.decode_step_time(20.0, 1500.0))


def test_prefill_observation_discounts_prefix_cache_hits():
    """Hits skip the first h*N tokens: N(1-h) computed, N^2 - (hN)^2 attention pairs left."""
    obs = prefill_observation(profile=PRIOR, signals=window(prefix_cache_hit_ratio=0.5))
    assert obs is not None
    assert (obs.prompt_tokens, obs.sum_squared_tokens) == pytest.approx((500.0, 1.2e6 * 0.75))


def test_windows_are_bounded_and_keep_the_newest():
    settings = OnlineSettings(window_samples=12)
    state = OnlineCalibration()
    for i in range(30):
        state = observe(state, profile=PRIOR, role=Role.DECODE, signals=window(), now=float(i), settings=settings)
    kept = state.windows[(PRIOR.name, Stage.DECODE)]
    assert [t for t, _ in kept] == [float(i) for i in range(18, 30)]


def test_observations_older_than_max_age_are_dropped_when_a_new_one_arrives():
    settings = OnlineSettings(max_age_s=100.0)
    state = OnlineCalibration()
    for now in (0.0, 50.0, 120.0, 160.0):
        state = observe(state, profile=PRIOR, role=Role.DECODE, signals=window(), now=now, settings=settings)
    assert [t for t, _ in state.windows[(PRIOR.name, Stage.DECODE)]] == [120.0, 160.0]


def test_observe_returns_a_new_value_and_leaves_the_old_one_alone():
    before = OnlineCalibration()
    after = observe(before, profile=PRIOR, role=Role.DECODE, signals=window(), now=0.0)
    assert before.windows == {} and after.samples(PRIOR.name, Stage.DECODE) == 1


def varied_state(n: int) -> OnlineCalibration:
    """n windows per stage from HIDDEN over a spread of batches, contexts and prompt lengths."""
    state = OnlineCalibration()
    for i in range(n):
        # Prompts spread log-uniformly over 16-16,000 tokens: a narrower spread does not tell a, b and c apart.
        batch, context, prompt = 2.0 + (i * 7) % 60, 200.0 + (i * 613) % 6000, 16.0 * 1000.0 ** ((i * 0.618) % 1)
        sig = window(decoding=2 * batch, itl_mean_s=HIDDEN.decode_step_time(batch, context),
                     kv_usage_window_mean=batch * context / PRIOR.kv_capacity_tokens, completions_per_s=0.5,
                     prompt_tokens_mean=prompt, prompt_tokens_sq_mean=prompt * prompt,
                     prefill_time_mean_s=HIDDEN.prefill_time(prompt))
        state = observe(state, profile=PRIOR, role=Role.BOTH, signals=sig, now=float(i),
                        settings=OnlineSettings(aggregated=True))
    return state


def test_enough_windows_move_the_profile_to_the_hidden_coefficients():
    profiles, reports = calibrated_profiles(varied_state(200), profiles={PRIOR.name: PRIOR, "other": HIDDEN})
    fitted = profiles[PRIOR.name]
    for name in ("decode_alpha", "decode_beta", "decode_gamma", "prefill_a", "prefill_b", "prefill_c"):
        assert getattr(fitted, name) == pytest.approx(getattr(HIDDEN, name), rel=0.10), name
    assert profiles["other"] is HIDDEN  # no observations: unchanged
    assert [(r.profile, r.stage, r.samples, r.applied) for r in reports] == [
        (PRIOR.name, Stage.DECODE, 200, True), (PRIOR.name, Stage.PREFILL, 200, True)]
    decode = reports[0]
    assert decode.coefficients == {"decode_alpha": fitted.decode_alpha, "decode_beta": fitted.decode_beta,
                                   "decode_gamma": fitted.decode_gamma}
    assert decode.relative_error is not None and decode.relative_error < 0.05
    assert decode.factor != pytest.approx(1.0, abs=0.05)  # the prior is off at the operating point


def test_too_few_windows_keep_the_profile_and_report_the_factor_alone():
    profiles, reports = calibrated_profiles(varied_state(5), profiles={PRIOR.name: PRIOR})
    assert profiles[PRIOR.name] is PRIOR
    assert [(r.samples, r.applied, r.relative_error) for r in reports] == [(5, False, None), (5, False, None)]
    assert all(math.isfinite(r.factor) and r.factor > 0 for r in reports)


def test_windows_of_a_profile_no_longer_configured_are_ignored():
    profiles, reports = calibrated_profiles(varied_state(20), profiles={"other": HIDDEN})
    assert profiles == {"other": HIDDEN} and reports == ()


@pytest.mark.parametrize("changes", [
    pytest.param({"window_samples": 5}, id="window-smaller-than-min-samples"),
    pytest.param({"max_age_s": 0.0}, id="zero-max-age"),
    pytest.param({"max_prefill_utilisation": math.nan}, id="nan-utilisation"),
    pytest.param({"fit": CalibrationSettings(min_samples=50), "window_samples": 40}, id="fit-needs-more"),
])
def test_rejects_settings_that_could_never_fit(changes):
    with pytest.raises(ValueError, match=next(iter(changes)) if "fit" not in changes else "min_samples"):
        OnlineSettings(**changes)
