import math

import pytest

from autoscaler.core.slo_policy import Prediction, predict_pools, recommend_slo, replicas_for_rate
from autoscaler.core.types import Reason, Role
from autoscaler.perf.capacity import Binding, CapacityEstimate, SloTargets, TrafficMix
from autoscaler.perf.profile import PerformanceProfile

# Llama-3.1-8B on one H100, coefficients as in models/profiles/llama-3.1-8b_h100.yaml (copied so the test does
# not move when the shipped profile is refitted).
H100_8B = PerformanceProfile(
    name="llama-3.1-8b/h100", model="meta-llama/Llama-3.1-8B-Instruct", accelerator="nvidia-h100-80gb",
    gpus_per_replica=1, prefill_a=0.00645, prefill_b=2.95e-05, prefill_c=8.84e-10, decode_alpha=0.00645,
    decode_beta=3.75e-05, decode_gamma=5.02e-08, kv_capacity_tokens=436080, max_num_seqs=1024,
    max_num_batched_tokens=8192,
)
SLO = SloTargets(ttft_s=1.0, itl_s=0.05, percentile=0.9)


@pytest.mark.parametrize(
    ("rate", "capacity", "replicas"),
    [
        pytest.param(0.0, 5.0, 0, id="no-traffic-needs-none"),
        pytest.param(0.1, 5.0, 1, id="a-trickle-needs-one"),
        pytest.param(10.0, 5.0, 2, id="exact-multiple-is-not-rounded-up"),
        pytest.param(10.01, 5.0, 3, id="just-over-needs-another"),
        pytest.param(0.3, 0.1, 3, id="float-noise-does-not-add-a-replica"),
    ],
)
def test_replicas_cover_the_rate(rate, capacity, replicas):
    assert replicas_for_rate(rate_rps=rate, capacity_rps=capacity) == replicas


@pytest.mark.parametrize(
    ("rate", "capacity"),
    [
        pytest.param(-1.0, 5.0, id="negative-rate"),
        pytest.param(math.nan, 5.0, id="nan-rate"),
        pytest.param(1.0, 0.0, id="zero-capacity"),
        pytest.param(1.0, math.inf, id="infinite-capacity"),
    ],
)
def test_refuses_nonsense_rates_and_capacities(rate, capacity):
    with pytest.raises(ValueError):
        replicas_for_rate(rate_rps=rate, capacity_rps=capacity)


def test_an_unattainable_slo_gives_no_prediction():
    capacity = CapacityEstimate(Role.DECODE, 0.0, Binding.ITL_UNATTAINABLE, 0, None, 0.2)
    assert recommend_slo(role=Role.DECODE, rate_rps=3.0, capacity=capacity) is None


def test_prediction_names_the_binding_constraint_and_horizon():
    capacity = CapacityEstimate(Role.DECODE, 2.0, Binding.KV_CACHE, 100, None, 0.04)
    prediction = recommend_slo(role=Role.DECODE, rate_rps=5.0, capacity=capacity, horizon_s=300)
    assert prediction == Prediction(3, Reason.SLO_CAPACITY, prediction.message)
    assert "kv-cache" in prediction.message and "+300s" in prediction.message


def pools(mean_input: float, mean_output: float, rate: float = 15.0) -> dict[Role, int]:
    mix = TrafficMix(mean_input_tokens=mean_input, p90_input_tokens=1.5 * mean_input, mean_output_tokens=mean_output)
    out = predict_pools(rate_rps=rate, mix=mix, slo=SLO, profiles={Role.PREFILL: H100_8B, Role.DECODE: H100_8B})
    return {role: p.replicas for role, p in out.items()}


def test_long_prompts_grow_prefill_but_not_decode():
    short, long = pools(256, 256), pools(2048, 256)
    assert long[Role.PREFILL] > short[Role.PREFILL]
    assert long[Role.DECODE] == short[Role.DECODE]


def test_long_outputs_grow_decode_but_not_prefill():
    short, long = pools(256, 256), pools(256, 1024)
    assert long[Role.DECODE] > short[Role.DECODE]
    assert long[Role.PREFILL] == short[Role.PREFILL]
