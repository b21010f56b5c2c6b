"""Prediction-based early rejection (Mooncake §7), checked against loads computed by hand.

The profile keeps the arithmetic simple: prefill costs 1 ms per prompt token (1000 tokens = 1 s, 100 = 0.1 s);
a decode step costs 10 ms + 0.1 ms per sequence on a replica, independent of context. With a 50 ms TBT SLO a
replica decodes at most (0.05 - 0.01) / 0.0001 = 400 sequences.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.core.admission import (
    AdmissionConfig,
    DecodePool,
    LatencySLO,
    PrefillPool,
    RejectionPolicy,
    TrafficMix,
    admit_to_decode,
    assess_admission,
    decode_capacity,
    predict_decode,
    predicted_ttft,
)
from autoscaler.perf.profile import PerformanceProfile

PROFILE = PerformanceProfile(
    name="simple", model="m", accelerator="x", gpus_per_replica=1,
    prefill_a=0.0, prefill_b=0.001, prefill_c=0.0,
    decode_alpha=0.01, decode_beta=0.0001, decode_gamma=0.0,
    kv_capacity_tokens=10**9, max_num_seqs=1000,
)
REACTIVE, EARLY, PREDICTIVE = RejectionPolicy.REACTIVE, RejectionPolicy.EARLY, RejectionPolicy.PREDICTIVE

# Decode drains before a new request gets there: 450 running (step 55 ms, load 1.1), each decoding
# t_d = 100 tokens x 55 ms = 5.5 s; a new request waits 2 s + 1 s of prefill, so by then 450 x 3/5.5 = 245.45
# have left and the 4 queued ones have arrived: 208.55 running, step 30.85 ms, load 0.617.
DRAINING: dict[str, Any] = {
    "prefill": PrefillPool(replicas=2, profile=PROFILE, queued_requests=4, queued_tokens=4000),
    "decode": DecodePool(replicas=1, profile=PROFILE, running=450, mean_context_tokens=1000),
    "mix": TrafficMix(arrival_rate=1.0, mean_input_tokens=1000, mean_output_tokens=100),
    "slo": LatencySLO(ttft_s=6.0, tbt_s=0.05),
}
# A prefill wave about to flood decode: 600 short prompts on 10 replicas = 6 s of queue, so a new request reaches
# decode in 6.1 s. Decode is light now (100 running, step 20 ms, load 0.4) but t_d = 400 x 20 ms = 8 s, so only
# 100 x 6.1/8 = 76.25 leave while all 600 arrive: 623.75 running, step 72.375 ms, load 1.4475.
FLOODING: dict[str, Any] = {
    "prefill": PrefillPool(replicas=10, profile=PROFILE, queued_requests=600, queued_tokens=60000),
    "decode": DecodePool(replicas=1, profile=PROFILE, running=100, mean_context_tokens=1000),
    "mix": TrafficMix(arrival_rate=100.0, mean_input_tokens=100, mean_output_tokens=400),
    "slo": LatencySLO(ttft_s=10.0, tbt_s=0.05),
}
# Prefill over its SLO: 20 prompts of 1000 tokens on 2 replicas = 10 s of queue + 1 s > 6 s.
PREFILL_FULL: dict[str, Any] = dict(DRAINING, prefill=PrefillPool(replicas=2, profile=PROFILE, queued_requests=20,
                                                   queued_tokens=20000))


@pytest.mark.parametrize(("case", "prefill_load", "now", "then", "horizon", "running"), [
    pytest.param(DRAINING, 0.5, 1.1, 0.617091, 3.0, 208.545455, id="draining"),
    pytest.param(FLOODING, 0.61, 0.4, 1.4475, 6.1, 623.75, id="flooding"),
])
def test_loads_are_predicted_latency_over_the_slo(case: dict, prefill_load: float, now: float, then: float,
                                                  horizon: float, running: float) -> None:
    decision = assess_admission(**case, config=AdmissionConfig())
    assert decision.prefill_load == pytest.approx(prefill_load)
    assert decision.decode_load_now == pytest.approx(now)
    assert decision.decode_load_at_horizon == pytest.approx(then, rel=1e-5)
    assert decision.horizon_s == pytest.approx(horizon)
    assert decision.predicted_running == pytest.approx(running, rel=1e-6)


@pytest.mark.parametrize(("case", "policy", "admit", "reason"), [
    pytest.param(DRAINING, REACTIVE, True, "admit", id="draining-reactive-admits"),
    pytest.param(DRAINING, EARLY, False, "decode over TBT SLO now", id="draining-early-rejects-on-current-load"),
    pytest.param(DRAINING, PREDICTIVE, True, "admit", id="draining-predictive-sees-it-drain"),
    pytest.param(FLOODING, REACTIVE, True, "admit", id="flooding-reactive-admits"),
    pytest.param(FLOODING, EARLY, True, "admit", id="flooding-early-admits-on-light-current-load"),
    pytest.param(FLOODING, PREDICTIVE, False, "when it would reach decode", id="flooding-predictive-rejects"),
    pytest.param(PREFILL_FULL, REACTIVE, False, "TTFT over SLO", id="prefill-full-reactive"),
    pytest.param(PREFILL_FULL, EARLY, False, "TTFT over SLO", id="prefill-full-early"),
    pytest.param(PREFILL_FULL, PREDICTIVE, False, "TTFT over SLO", id="prefill-full-predictive"),
])
def test_each_policy_admits_on_its_own_view_of_decode_load(case: dict, policy: RejectionPolicy, admit: bool,
                                                           reason: str) -> None:
    decision = assess_admission(**case, config=AdmissionConfig(policy=policy))
    assert decision.admit is admit
    assert reason in decision.reason
    assert decision.policy is policy


@pytest.mark.parametrize(("case", "prescale", "needed"), [
    pytest.param(DRAINING, True, 2, id="overloaded-now-450-of-400"),
    pytest.param(FLOODING, True, 2, id="overloaded-soon-624-of-400"),
    pytest.param(dict(FLOODING, prefill=replace(FLOODING["prefill"], queued_requests=100, queued_tokens=10000)),
                 False, 1, id="small-wave-fits"),
])
def test_decode_is_prescaled_when_committed_load_crosses_the_threshold(case: dict, prescale: bool,
                                                                        needed: int) -> None:
    decision = assess_admission(**case, config=AdmissionConfig())
    assert decision.prescale_decode is prescale
    assert decision.decode_replicas_needed == needed
    assert decision.decode_capacity == pytest.approx(400.0)


# Admission ratio over a 2 s interval in the flooding case. Prefill: 10 replicas can hold 9.9 s - 6 s of queue more
# and clear 2 s of work, at 0.1 s a request: 10 x (9.9 - 6 + 2) / 0.1 = 590 requests. Decode (400 seats):
# predictive starts from 623.75 of which 623.75 x 2/8 leave: 400 - 623.75 + 155.94 < 0 -> nothing;
# early starts from 100 of which 25 leave: 325 requests.
@pytest.mark.parametrize(("rate", "policy", "ratio"), [
    pytest.param(100.0, REACTIVE, 1.0, id="200-arrivals-reactive"),
    pytest.param(100.0, EARLY, 1.0, id="200-arrivals-early"),
    pytest.param(100.0, PREDICTIVE, 0.0, id="200-arrivals-predictive"),
    pytest.param(300.0, EARLY, 325 / 600, id="600-arrivals-early-decode-bound"),
    pytest.param(400.0, REACTIVE, 590 / 800, id="800-arrivals-reactive-prefill-bound"),
    pytest.param(400.0, EARLY, 325 / 800, id="800-arrivals-early-decode-bound"),
    pytest.param(0.0, EARLY, 1.0, id="no-arrivals-with-room"),
    pytest.param(0.0, PREDICTIVE, 0.0, id="no-arrivals-without-room"),
])
def test_admission_ratio_is_the_share_of_arrivals_both_pools_can_take(rate: float, policy: RejectionPolicy,
                                                                      ratio: float) -> None:
    case = dict(FLOODING, mix=replace(FLOODING["mix"], arrival_rate=rate))
    decision = assess_admission(**case, config=AdmissionConfig(policy=policy, interval_s=2.0))
    assert decision.admission_ratio == pytest.approx(ratio)


def test_a_lower_threshold_rejects_earlier() -> None:
    lenient = assess_admission(**DRAINING, config=AdmissionConfig(reject_above=1.0))
    strict = assess_admission(**DRAINING, config=AdmissionConfig(reject_above=0.6))
    assert lenient.admit and not strict.admit  # predicted decode load 0.619 with the request
    assert strict.reject_threshold == 0.6
    assert strict.decode_capacity == pytest.approx((0.6 * 0.05 - 0.01) / 0.0001)


# --- the parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "tokens", "ttft"), [
    pytest.param(PrefillPool(replicas=2, profile=PROFILE), 500, 0.5, id="idle"),
    pytest.param(PrefillPool(replicas=2, profile=PROFILE, queued_requests=4, queued_tokens=4000), 500, 2.5,
                 id="even-queue"),
    pytest.param(PrefillPool(replicas=2, profile=PROFILE, queued_requests=3, queued_tokens=9000,
                             backlog_s=(7.0, 2.0)), 500, 2.5, id="joins-the-shorter-backlog"),
    pytest.param(PrefillPool(replicas=0, profile=PROFILE), 500, math.inf, id="no-replicas"),
])
def test_predicted_ttft_is_the_shortest_wait_plus_own_prefill(pool: PrefillPool, tokens: float,
                                                              ttft: float) -> None:
    assert predicted_ttft(pool, input_tokens=tokens) == pytest.approx(ttft)


def test_requests_still_in_prefill_at_the_horizon_are_not_counted_as_decoding() -> None:
    # 10 queued over backlogs of 1 s and 5 s: by 2 s, 10 x 2/5 = 4 are done. Idle decode: t_d = 100 x 10.1 ms
    # = 1.01 s, so of those 4 (finishing evenly over 2 s) 1.01/2 are still decoding at 2 s: 2.02.
    outlook = predict_decode(
        prefill=PrefillPool(replicas=2, profile=PROFILE, queued_requests=10, queued_tokens=10000,
                            backlog_s=(1.0, 5.0)),
        decode=DecodePool(replicas=1, profile=PROFILE),
        mix=TrafficMix(arrival_rate=0.0, mean_input_tokens=1000, mean_output_tokens=100),
        horizon_s=2.0)
    assert outlook.decode_time_s == pytest.approx(1.01)
    assert outlook.entered == pytest.approx(2.02)
    assert outlook.finished == 0.0
    assert outlook.running == pytest.approx(2.02)


@pytest.mark.parametrize(("running", "admitted"), [
    pytest.param(399, True, id="the-400th-fits-exactly"), pytest.param(400, False, id="the-401st-does-not"),
])
def test_the_decode_time_check_admits_while_one_more_keeps_tbt_within_slo(running: int, admitted: bool) -> None:
    pool = DecodePool(replicas=1, profile=PROFILE, running=running, mean_context_tokens=1000)
    assert admit_to_decode(decode=pool, slo=LatencySLO(ttft_s=1.0, tbt_s=0.05), context_tokens=1000) is admitted


@pytest.mark.parametrize(("changes", "context", "seats"), [
    pytest.param({}, 1000, 2 * 400.0, id="tbt-bound"),
    pytest.param({"max_num_seqs": 256}, 1000, 2 * 256.0, id="seat-bound"),
    pytest.param({"kv_capacity_tokens": 100_000}, 1000, 2 * 100.0, id="kv-bound"),
    pytest.param({"decode_alpha": 0.06}, 1000, 0.0, id="slo-below-a-bare-step"),
    pytest.param({"decode_gamma": 1e-7}, 1000, 2 * 0.04 / 0.0002, id="context-cost"),
])
def test_decode_capacity_is_the_tightest_of_slo_seats_and_kv(changes: dict, context: float, seats: float) -> None:
    pool = DecodePool(replicas=2, profile=replace(PROFILE, **changes))
    assert decode_capacity(pool, slo=LatencySLO(ttft_s=1.0, tbt_s=0.05), threshold=1.0,
                           context_tokens=context) == pytest.approx(seats)


def test_a_decode_pool_at_zero_with_work_in_prefill_asks_to_be_scaled_up() -> None:
    decision = assess_admission(**dict(FLOODING, decode=DecodePool(replicas=0, profile=PROFILE)),
                                config=AdmissionConfig())
    assert not decision.admit
    assert decision.prescale_decode
    assert decision.decode_replicas_needed >= 1
    assert decision.admission_ratio == 0.0


def test_a_prefill_pool_at_zero_rejects_everything() -> None:
    decision = assess_admission(**dict(DRAINING, prefill=PrefillPool(replicas=0, profile=PROFILE)),
                                config=AdmissionConfig(policy=REACTIVE))
    assert not decision.admit
    assert decision.prefill_load == math.inf
    assert decision.admission_ratio == 0.0


@pytest.mark.parametrize(("build", "field"), [
    pytest.param(lambda: PrefillPool(replicas=-1, profile=PROFILE), "replicas", id="negative-prefill-replicas"),
    pytest.param(lambda: PrefillPool(replicas=1, profile=PROFILE, queued_tokens=math.nan), "queued_tokens",
                 id="nan-tokens"),
    pytest.param(lambda: PrefillPool(replicas=2, profile=PROFILE, backlog_s=(1.0,)), "backlog_s",
                 id="backlog-per-replica"),
    pytest.param(lambda: DecodePool(replicas=1, profile=PROFILE, running=-3), "running", id="negative-running"),
    pytest.param(lambda: TrafficMix(arrival_rate=math.inf, mean_input_tokens=1, mean_output_tokens=1),
                 "arrival_rate", id="infinite-rate"),
    pytest.param(lambda: LatencySLO(ttft_s=0.0, tbt_s=0.1), "ttft_s", id="zero-slo"),
    pytest.param(lambda: AdmissionConfig(reject_above=0.0), "reject_above", id="zero-threshold"),
    pytest.param(lambda: AdmissionConfig(interval_s=-1.0), "interval_s", id="negative-interval"),
])
def test_invalid_inputs_are_refused_naming_the_field(build, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()
