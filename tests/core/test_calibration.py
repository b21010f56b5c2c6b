"""Online calibration: noisy observations with outliers recover the true coefficients, within bounds."""

import dataclasses

import numpy as np
import pytest

from autoscaler.perf.calibration import (
    CalibrationSettings,
    DecodeObservation,
    PrefillObservation,
    Stage,
    calibrate_decode,
    calibrate_prefill,
)
from autoscaler.perf.profiles import default_profiles

PRIOR = default_profiles(environ={})["llama-3.1-8b/h100"]
DECODE = ("decode_alpha", "decode_beta", "decode_gamma")
PREFILL = ("prefill_a", "prefill_b", "prefill_c")


def hidden(names, factors):
    return dataclasses.replace(PRIOR, **{n: getattr(PRIOR, n) * f for n, f in zip(names, factors, strict=True)})


def decode_samples(truth, *, n, seed, noise=0.03, outliers=0.05, warming_up=0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        batch, context = float(rng.integers(1, 257)), float(rng.uniform(200, 4000))
        itl = truth.decode_step_time(batch, context) * (1 + noise * rng.standard_normal())
        if rng.random() < outliers:
            itl *= rng.uniform(2, 4)  # a preemption storm or a GC pause
        samples.append(DecodeObservation(batch=batch, mean_context=context, itl_s=itl))
    # Warm-up: first requests after start are slow (CUDA graphs, compile) and must not be learned.
    samples += [DecodeObservation(batch=2.0, mean_context=300.0, itl_s=2.0, warming_up=True)] * warming_up
    return samples


def prefill_samples(truth, *, n, seed, noise=0.03, outliers=0.05):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        tokens = float(round(np.exp(rng.uniform(np.log(16), np.log(16_000)))))  # many short, some long prompts
        chunks = max(1, int(np.ceil(tokens / truth.max_num_batched_tokens)))
        seconds = chunks * truth.prefill_a + truth.prefill_b * tokens + truth.prefill_c * tokens**2
        seconds *= 1 + noise * rng.standard_normal()
        if rng.random() < outliers:
            seconds *= rng.uniform(2, 4)
        samples.append(PrefillObservation(prompt_tokens=tokens, prefill_s=seconds))
    return samples


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "factors",
    [pytest.param((1.3, 0.7, 1.3), id="up-down-up"), pytest.param((0.7, 1.3, 0.7), id="down-up-down")],
)
def test_decode_coefficients_30_percent_off_converge_within_10_percent(seed, factors):
    truth = hidden(DECODE, factors)
    result = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=400, seed=seed, warming_up=40))
    for name in DECODE:
        assert result.coefficients[name] == pytest.approx(getattr(truth, name), rel=0.10), name
    assert (result.stage, result.samples, result.excluded) == (Stage.DECODE, 400, 40)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prefill_coefficients_30_percent_off_converge_within_10_percent(seed):
    truth = hidden(PREFILL, (0.7, 1.3, 1.3))
    result = calibrate_prefill(profile=PRIOR, observations=prefill_samples(truth, n=400, seed=seed))
    for name in PREFILL:
        assert result.coefficients[name] == pytest.approx(getattr(truth, name), rel=0.10), name


def test_calibrated_profile_predicts_better_than_the_prior():
    truth = hidden(DECODE, (1.3, 0.7, 1.3))
    samples = decode_samples(truth, n=300, seed=4, outliers=0)
    result = calibrate_decode(profile=PRIOR, observations=samples)
    calibrated = result.apply(PRIOR)
    assert calibrated.name == PRIOR.name and calibrated.prefill_a == PRIOR.prefill_a

    def error(profile):
        return np.median([abs(profile.decode_step_time(s.batch, s.mean_context) - s.itl_s) for s in samples])

    assert error(calibrated) < error(PRIOR) / 3
    assert result.residual_s == pytest.approx(error(calibrated))


def test_correction_factor_is_observed_over_predicted_at_the_operating_point():
    truth = hidden(DECODE, (1.25, 1.25, 1.25))  # everything 25% slower than the profile says
    result = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=200, seed=5, noise=0.0,
                                                                         outliers=0))
    assert result.correction == pytest.approx(1.25, rel=1e-6)


def test_warming_up_samples_are_excluded():
    truth = hidden(DECODE, (1.0, 1.0, 1.0))
    clean = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=200, seed=6))
    polluted = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=200, seed=6, warming_up=500))
    assert polluted.fitted == clean.fitted and polluted.excluded == 500
    assert polluted.correction == clean.correction


def test_a_coefficient_far_off_is_clipped_to_three_times_the_prior():
    truth = hidden(DECODE, (10.0, 1.0, 1.0))
    result = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=2000, seed=7, outliers=0),
                              settings=CalibrationSettings(prior_samples=0))
    assert result.coefficients["decode_alpha"] == pytest.approx(3 * PRIOR.decode_alpha)


def test_few_samples_keep_the_prior_but_report_the_correction():
    truth = hidden(DECODE, (2.0, 2.0, 2.0))
    result = calibrate_decode(profile=PRIOR, observations=decode_samples(truth, n=5, seed=8, noise=0, outliers=0))
    assert result.fitted == result.prior and result.samples == 5
    assert result.correction == pytest.approx(2.0)


def test_no_samples_keep_the_prior_with_a_neutral_correction():
    result = calibrate_prefill(profile=PRIOR, observations=[])
    assert (result.fitted, result.correction, result.samples, result.residual_s) == (result.prior, 1.0, 0, None)


def test_prior_weight_blends_a_small_sample_toward_the_profile():
    truth = hidden(DECODE, (1.3, 1.3, 1.3))
    samples = decode_samples(truth, n=20, seed=9, noise=0.0, outliers=0)
    light = calibrate_decode(profile=PRIOR, observations=samples, settings=CalibrationSettings(prior_samples=0))
    heavy = calibrate_decode(profile=PRIOR, observations=samples, settings=CalibrationSettings(prior_samples=60))
    assert light.coefficients["decode_alpha"] == pytest.approx(truth.decode_alpha, rel=0.05)
    # 20 samples against a prior worth 60: a quarter of the way from the prior to the fit.
    assert heavy.coefficients["decode_alpha"] == pytest.approx(PRIOR.decode_alpha * 1.075, rel=0.02)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(lambda: DecodeObservation(batch=0, mean_context=100, itl_s=0.01), "batch", id="no-batch"),
        pytest.param(lambda: DecodeObservation(batch=1, mean_context=100, itl_s=float("nan")), "itl_s",
                     id="nan-itl"),
        pytest.param(lambda: PrefillObservation(prompt_tokens=-5, prefill_s=0.1), "prompt_tokens",
                     id="negative-tokens"),
        pytest.param(lambda: PrefillObservation(prompt_tokens=5, prefill_s=0.1, sum_squared_tokens=-1),
                     "sum_squared_tokens", id="negative-squares"),
        pytest.param(lambda: CalibrationSettings(bound=1.0), "bound", id="no-room"),
        pytest.param(lambda: CalibrationSettings(min_samples=2), "min_samples", id="too-few"),
    ],
)
def test_bad_inputs_fail_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
