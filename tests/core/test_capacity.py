"""Capacity under SLOs: the rate one replica sustains per role, what binds it, and replicas for a rate."""

import dataclasses

import pytest

from autoscaler.core.types import Role
from autoscaler.perf.capacity import (
    Binding,
    CapacityEstimate,
    SloTargets,
    TrafficMix,
    aggregated_capacity,
    decode_capacity,
    estimate_capacity,
    prefill_capacity,
    replicas_needed,
)
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles

PROFILES = default_profiles(environ={})
H100 = PROFILES["llama-3.1-8b/h100"]
CHAT = TrafficMix(mean_input_tokens=1024, p90_input_tokens=2048, mean_output_tokens=256, request_rate_rps=20)
SLO = SloTargets(ttft_s=1.0, itl_s=0.05)


def mix(**changes) -> TrafficMix:
    return dataclasses.replace(CHAT, **changes)


def replicas(role: Role, traffic: TrafficMix, slo: SloTargets = SLO, profile: PerformanceProfile = H100):
    capacity = estimate_capacity(profile=profile, role=role, mix=traffic, slo=slo)
    return replicas_needed(rate_rps=traffic.request_rate_rps, capacity=capacity)


# --- how the traffic moves the replica count ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "short", "long"),
    [
        pytest.param(Role.PREFILL, mix(mean_input_tokens=512, p90_input_tokens=1024),
                     mix(mean_input_tokens=4096, p90_input_tokens=8192), id="long-prompts-need-more-prefill"),
        pytest.param(Role.DECODE, mix(mean_output_tokens=128), mix(mean_output_tokens=1024),
                     id="long-outputs-need-more-decode"),
        pytest.param(Role.BOTH, mix(mean_output_tokens=128), mix(mean_output_tokens=1024),
                     id="long-outputs-need-more-aggregated"),
        pytest.param(Role.BOTH, mix(mean_input_tokens=256, p90_input_tokens=512),
                     mix(mean_input_tokens=4096, p90_input_tokens=8192), id="long-prompts-need-more-aggregated"),
    ],
)
def test_heavier_requests_need_more_replicas(role, short, long):
    assert replicas(role, long) > replicas(role, short) >= 1


@pytest.mark.parametrize("role", list(Role))
def test_more_traffic_never_needs_fewer_replicas(role):
    counts = [replicas(role, mix(request_rate_rps=rate)) for rate in (0.5, 5, 20, 80, 200)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize("role", list(Role))
def test_zero_traffic_needs_zero_replicas(role):
    assert replicas(role, mix(request_rate_rps=0)) == 0


@pytest.mark.parametrize(
    ("loose", "tight"),
    [
        pytest.param(SloTargets(ttft_s=1.0, itl_s=0.08), SloTargets(ttft_s=1.0, itl_s=0.03), id="itl"),
        pytest.param(SloTargets(ttft_s=1.0, itl_s=0.03, percentile=0.5),
                     SloTargets(ttft_s=1.0, itl_s=0.03, percentile=0.99), id="percentile"),
    ],
)
def test_tighter_itl_lowers_decode_capacity(loose, tight):
    assert (decode_capacity(profile=H100, mix=CHAT, slo=tight).max_rate_rps
            < decode_capacity(profile=H100, mix=CHAT, slo=loose).max_rate_rps)


@pytest.mark.parametrize("role", [Role.PREFILL, Role.BOTH])
def test_tighter_ttft_lowers_prefill_capacity(role):
    loose = estimate_capacity(profile=H100, role=role, mix=CHAT, slo=SloTargets(ttft_s=2.0, itl_s=0.2))
    tight = estimate_capacity(profile=H100, role=role, mix=CHAT, slo=SloTargets(ttft_s=0.3, itl_s=0.2))
    assert 0 < tight.max_rate_rps < loose.max_rate_rps


def test_aggregated_replica_serves_less_than_either_specialist():
    both = aggregated_capacity(profile=H100, mix=CHAT, slo=SLO).max_rate_rps
    assert 0 < both < prefill_capacity(profile=H100, mix=CHAT, slo=SLO).max_rate_rps
    assert both < decode_capacity(profile=H100, mix=CHAT, slo=SLO).max_rate_rps


def test_faster_gpu_sustains_more():
    for role in Role:
        rates = [estimate_capacity(profile=PROFILES[f"llama-3.1-8b/{g}"], role=role, mix=CHAT, slo=SLO)
                 .max_rate_rps for g in ("l40s", "a100", "h100")]
        assert rates == sorted(rates), role


# --- predictions meet the targets they were sized for ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("role", list(Role))
def test_predicted_latencies_meet_the_slo_at_the_max_rate(name, role):
    capacity = estimate_capacity(profile=PROFILES[name], role=role, mix=CHAT, slo=SloTargets(ttft_s=2, itl_s=0.08))
    assert capacity.feasible and capacity.max_batch >= 1
    assert capacity.ttft_s is None or capacity.ttft_s <= 2
    assert capacity.itl_s is None or capacity.itl_s <= 0.08
    assert (capacity.ttft_s is None) == (role is Role.DECODE)
    assert (capacity.itl_s is None) == (role is Role.PREFILL)


# --- what binds ----------------------------------------------------------------------------------------------


def limited(**changes) -> PerformanceProfile:
    return dataclasses.replace(H100, **changes)


@pytest.mark.parametrize(
    ("role", "profile", "slo", "binding"),
    [
        pytest.param(Role.DECODE, H100, SloTargets(ttft_s=1, itl_s=0.02), Binding.ITL, id="decode-itl"),
        pytest.param(Role.DECODE, limited(kv_capacity_tokens=60_000), SLO, Binding.KV_CACHE, id="decode-kv"),
        pytest.param(Role.DECODE, limited(max_num_seqs=32), SLO, Binding.MAX_NUM_SEQS, id="decode-seqs"),
        pytest.param(Role.PREFILL, H100, SLO, Binding.TTFT, id="prefill-ttft"),
        pytest.param(Role.BOTH, H100, SloTargets(ttft_s=0.12, itl_s=0.5), Binding.TTFT, id="both-ttft"),
        pytest.param(Role.BOTH, H100, SloTargets(ttft_s=5, itl_s=0.03), Binding.ITL, id="both-itl"),
        pytest.param(Role.BOTH, limited(kv_capacity_tokens=20_000), SloTargets(ttft_s=5, itl_s=0.5),
                     Binding.KV_CACHE, id="both-kv"),
        pytest.param(Role.BOTH, limited(max_num_seqs=8), SloTargets(ttft_s=5, itl_s=0.5), Binding.MAX_NUM_SEQS,
                     id="both-seqs"),
    ],
)
def test_binding_constraint_is_reported(role, profile, slo, binding):
    capacity = estimate_capacity(profile=profile, role=role, mix=CHAT, slo=slo)
    assert capacity.binding is binding and capacity.feasible


def test_kv_bound_batch_fits_the_cache():
    profile = limited(kv_capacity_tokens=60_000)
    capacity = decode_capacity(profile=profile, mix=CHAT, slo=SLO)
    assert capacity.max_batch * CHAT.inflight_context_tokens <= profile.kv_capacity_tokens


@pytest.mark.parametrize(
    ("role", "profile", "slo", "binding"),
    [
        pytest.param(Role.DECODE, H100, SloTargets(ttft_s=1, itl_s=0.005), Binding.ITL_UNATTAINABLE,
                     id="decode-itl-below-one-step"),
        pytest.param(Role.BOTH, H100, SloTargets(ttft_s=1, itl_s=0.005), Binding.ITL_UNATTAINABLE,
                     id="both-itl-below-one-step"),
        pytest.param(Role.PREFILL, H100, SloTargets(ttft_s=0.02, itl_s=0.05), Binding.TTFT_UNATTAINABLE,
                     id="prefill-ttft-below-one-prompt"),
        pytest.param(Role.BOTH, H100, SloTargets(ttft_s=0.02, itl_s=0.05), Binding.TTFT_UNATTAINABLE,
                     id="both-ttft-below-one-prompt"),
        pytest.param(Role.DECODE, limited(kv_capacity_tokens=1000), SLO, Binding.KV_UNATTAINABLE,
                     id="decode-request-larger-than-cache"),
        pytest.param(Role.PREFILL, limited(kv_capacity_tokens=1000), SLO, Binding.KV_UNATTAINABLE,
                     id="prefill-prompt-larger-than-cache"),
        pytest.param(Role.BOTH, limited(kv_capacity_tokens=1000), SLO, Binding.KV_UNATTAINABLE,
                     id="both-request-larger-than-cache"),
    ],
)
def test_slo_missed_even_at_batch_one_is_reported_not_divided_by_zero(role, profile, slo, binding):
    capacity = estimate_capacity(profile=profile, role=role, mix=CHAT, slo=slo)
    assert capacity.binding is binding
    assert capacity.max_rate_rps == 0 and not capacity.feasible and capacity.max_batch == 0
    assert replicas_needed(rate_rps=5.0, capacity=capacity) is None
    assert replicas_needed(rate_rps=0.0, capacity=capacity) == 0


def test_unattainable_itl_reports_the_latency_of_one_request():
    capacity = decode_capacity(profile=H100, mix=CHAT, slo=SloTargets(ttft_s=1, itl_s=0.005))
    assert capacity.itl_s == pytest.approx(H100.decode_step_time(1, CHAT.inflight_context_tokens))


# --- replicas_needed ------------------------------------------------------------------------------------------


def estimate(rate: float) -> CapacityEstimate:
    return CapacityEstimate(Role.DECODE, rate, Binding.ITL, 10, None, 0.05)


@pytest.mark.parametrize(
    ("rate", "per_replica", "expected"),
    [
        pytest.param(0.0, 2.0, 0, id="no-traffic"),
        pytest.param(0.1, 2.0, 1, id="a-trickle-needs-one"),
        pytest.param(4.0, 2.0, 2, id="exact-multiple"),
        pytest.param(4.0000000001, 2.0, 2, id="float-noise-does-not-add-one"),
        pytest.param(4.1, 2.0, 3, id="rounds-up"),
        pytest.param(1000.0, 3.0, 334, id="many"),
    ],
)
def test_replicas_needed_rounds_up(rate, per_replica, expected):
    assert replicas_needed(rate_rps=rate, capacity=estimate(per_replica)) == expected


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_replicas_needed_refuses_nonsense_rates(rate):
    with pytest.raises(ValueError, match="rate_rps"):
        replicas_needed(rate_rps=rate, capacity=estimate(2.0))


# --- input validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(lambda: mix(mean_input_tokens=0), "mean_input_tokens", id="no-prompt"),
        pytest.param(lambda: mix(p90_input_tokens=float("nan")), "p90_input_tokens", id="nan-p90"),
        pytest.param(lambda: mix(mean_output_tokens=0.5), "mean_output_tokens", id="no-output"),
        pytest.param(lambda: mix(request_rate_rps=-1), "request_rate_rps", id="negative-rate"),
        pytest.param(lambda: mix(output_cv=-0.1), "output_cv", id="negative-cv"),
        pytest.param(lambda: SloTargets(ttft_s=0, itl_s=0.05), "ttft_s", id="zero-ttft"),
        pytest.param(lambda: SloTargets(ttft_s=1, itl_s=-1), "itl_s", id="negative-itl"),
        pytest.param(lambda: SloTargets(ttft_s=1, itl_s=0.05, percentile=1.0), "percentile", id="p100"),
        pytest.param(lambda: SloTargets(ttft_s=1, itl_s=0.05, percentile=0.3), "percentile", id="below-median"),
    ],
)
def test_bad_inputs_fail_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize(
    ("percentile", "expected"),
    [pytest.param(0.5, 1024, id="median-is-mean"), pytest.param(0.9, 2048, id="p90-is-p90")],
)
def test_prompt_length_at_a_percentile_interpolates_mean_and_p90(percentile, expected):
    assert CHAT.input_tokens_at(percentile) == pytest.approx(expected)


def test_equal_output_lengths_hold_half_the_output_in_flight():
    assert mix(output_cv=0.0).inflight_context_tokens == 1024 + 128
    assert mix(output_cv=1.0).inflight_context_tokens == 1024 + 256
