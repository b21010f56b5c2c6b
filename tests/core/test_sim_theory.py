"""At a constant Poisson load the simulated latencies agree with the capacity model: decode ITL from 20% below
to 10% above it, prefill TTFT from well below to 20% above it, at targets that leave the prefill replica below
saturation (near it, p90 TTFT swings with every per cent of load). ``benchmarks/bench_simulator.py`` prints the
whole table, saturated points included."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.types import Role
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.theory import check_decode, check_prefill, poisson_trace

PROFILES = default_profiles()


@pytest.mark.parametrize(("profile", "prompt", "itl"), [
    pytest.param("llama-3.1-8b/h100", 1024, 0.05, id="8b-h100"),
    pytest.param("llama-3.1-70b/h100-tp4", 1024, 0.03, id="70b-h100-tp4"),
])
def test_simulated_decode_itl_matches_the_capacity_model(profile, prompt, itl):
    point = check_decode(profile=PROFILES[profile], prompt_tokens=prompt, mean_output_tokens=200,
                         itl_target_s=itl, duration_s=150.0)
    assert point.role is Role.DECODE and point.requests > 500
    assert 0.8 <= point.ratio <= 1.1


@pytest.mark.parametrize(("profile", "prompt", "ttft"), [
    pytest.param("llama-3.1-8b/h100", 1024, 0.3, id="8b-h100-short-prompts"),
    pytest.param("llama-3.1-70b/h100-tp4", 4096, 1.0, id="70b-h100-tp4-long-prompts"),
])
def test_simulated_prefill_ttft_is_within_the_capacity_models_prediction(profile, prompt, ttft):
    point = check_prefill(profile=PROFILES[profile], prompt_tokens=prompt, mean_output_tokens=100,
                          ttft_target_s=ttft, duration_s=200.0)
    assert point.predicted_p90_s <= ttft
    assert 0.4 <= point.ratio <= 1.2


def test_an_unattainable_target_is_refused():
    with pytest.raises(ValueError, match="unattainable"):
        check_prefill(profile=PROFILES["llama-3.1-8b/h100"], prompt_tokens=30_000, mean_output_tokens=10,
                      ttft_target_s=0.1)


def test_the_poisson_trace_has_the_asked_rate_and_mean_output():
    trace = poisson_trace(rate_rps=20.0, duration_s=500.0, prompt_tokens=100, mean_output_tokens=50, seed=3)
    assert len(trace) / trace.duration_s == pytest.approx(20.0, rel=0.05)
    assert float(np.mean(trace.output_tokens)) == pytest.approx(50.0, rel=0.05)
    assert np.all(trace.input_tokens == 100)
