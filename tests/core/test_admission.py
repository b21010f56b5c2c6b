"""Prediction-based early rejection (Mooncake §7), checked against loads computed by hand.

The profile keeps the arithmetic simple: prefill costs 1 ms per prompt token (1000 tokens = 1 s, 100 = 0.1 s);
a decode step costs 10 ms + 0.1 ms per sequence on a replica, independent of context. With a 50 ms TBT SLO a
replica decodes at most (0.05 - 0.01) / 0.0001 = 400 sequences. KV (1e9 tokens) and seats (1000) do not bind
unless a case says so. Cases name the departure model where its numbers depend on it: UNIFORM is the paper's
(everyone decodes exactly t_d), EXPONENTIAL (the default) memoryless.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.core.admission import (
    AdmissionConfig,
    DecodePool,
    DepartureModel,
    LatencySLO,
    PrefillPool,
    RejectionPolicy,
    TrafficMix,
    admit_to_decode,
    assess_admission,
    decode_capacity,
    decode_load,
    predict_decode,
    predicted_ttft,
    prefill_seconds,
)
from autoscaler.perf.profile import PerformanceProfile

PROFILE = PerformanceProfile(
    name="simple", model="m", accelerator="x", gpus_per_replica=1,
    prefill_a=0.0, prefill_b=0.001, prefill_c=0.0,
    decode_alpha=0.01, decode_beta=0.0001, decode_gamma=0.0,
    kv_capacity_tokens=10**9, max_num_seqs=1000,
)
KV_PROFILE = replace(PROFILE, kv_capacity_tokens=100_000)  # 100 sequences of 1000 tokens fill it
REACTIVE, EARLY, PREDICTIVE = RejectionPolicy.REACTIVE, RejectionPolicy.EARLY, RejectionPolicy.PREDICTIVE
UNIFORM, EXPONENTIAL = DepartureModel.UNIFORM, DepartureModel.EXPONENTIAL
SLO = LatencySLO(ttft_s=6.0, tbt_s=0.05)

# Decode drains before a new request gets there: 450 running (step 55 ms, load 1.1), each decoding
# t_d = 100 tokens x 55 ms = 5.5 s; a new request waits 2 s + 1 s of prefill (tau = 3 s), and the 4 queued ones
# enter over the first 2 s.
# UNIFORM: 450 x 3/5.5 = 245.45 leave, all 4 queued are still decoding (they entered less than t_d ago):
#   208.545 running, step 30.85 ms, load 0.617.
# EXPONENTIAL: 450 x exp(-3/5.5) = 260.810 stay; of the 4 entering evenly over [0, 2] s,
#   5.5/2 x (exp(-1/5.5) - exp(-3/5.5)) = 0.69898 stay: 2.796; 263.606 running, step 36.36 ms, load 0.72721.
DRAINING: dict[str, Any] = {
    "prefill": PrefillPool(replicas=2, profile=PROFILE, queued_requests=4, queued_tokens=4000),
    "decode": DecodePool(replicas=1, profile=PROFILE, running=450, mean_context_tokens=1000),
    "mix": TrafficMix(arrival_rate=1.0, mean_input_tokens=1000, mean_output_tokens=100),
    "slo": SLO,
}
# A prefill wave about to flood decode: 600 short prompts on 10 replicas = 6 s of queue, so a new request reaches
# decode in 6.1 s. Decode is light now (100 running, step 20 ms, load 0.4) and t_d = 400 x 20 ms = 8 s.
# UNIFORM: 100 x 6.1/8 = 76.25 leave while all 600 arrive: 623.75 running, step 72.375 ms, load 1.4475.
# EXPONENTIAL: 100 x exp(-6.1/8) = 46.650 stay; 600 x 8/6 x (exp(-0.1/8) - exp(-6.1/8)) = 416.863 of the wave
#   stay: 463.513 running, load (0.01 + 0.0463513) / 0.05 = 1.12703.
FLOODING: dict[str, Any] = {
    "prefill": PrefillPool(replicas=10, profile=PROFILE, queued_requests=600, queued_tokens=60000),
    "decode": DecodePool(replicas=1, profile=PROFILE, running=100, mean_context_tokens=1000),
    "mix": TrafficMix(arrival_rate=100.0, mean_input_tokens=100, mean_output_tokens=400),
    "slo": LatencySLO(ttft_s=10.0, tbt_s=0.05),
}
# Prefill over its SLO: 20 prompts of 1000 tokens on 2 replicas = 10 s of queue + 1 s > 6 s.
PREFILL_FULL: dict[str, Any] = dict(DRAINING, prefill=PrefillPool(replicas=2, profile=PROFILE, queued_requests=20,
                                                   queued_tokens=20000))


@pytest.mark.parametrize(("case", "departures", "prefill_load", "now", "then", "horizon", "running"), [
    pytest.param(DRAINING, UNIFORM, 0.5, 1.1, 0.617091, 3.0, 208.545455, id="draining-uniform"),
    pytest.param(DRAINING, EXPONENTIAL, 0.5, 1.1, 0.727212, 3.0, 263.606146, id="draining-exponential"),
    pytest.param(FLOODING, UNIFORM, 0.61, 0.4, 1.4475, 6.1, 623.75, id="flooding-uniform"),
    pytest.param(FLOODING, EXPONENTIAL, 0.61, 0.4, 1.127026, 6.1, 463.513136, id="flooding-exponential"),
])
def test_loads_are_predicted_latency_over_the_slo(case: dict, departures: DepartureModel, prefill_load: float,
                                                  now: float, then: float, horizon: float, running: float) -> None:
    decision = assess_admission(**case, config=AdmissionConfig(departures=departures))
    assert decision.prefill_load == pytest.approx(prefill_load)
    assert decision.decode_load_now == pytest.approx(now)
    assert decision.decode_load_at_horizon == pytest.approx(then, rel=1e-5)
    assert decision.horizon_s == pytest.approx(horizon)
    assert decision.predicted_running == pytest.approx(running, rel=1e-6)


@pytest.mark.parametrize(("case", "policy", "admit", "reason"), [
    pytest.param(DRAINING, REACTIVE, True, "admit", id="draining-reactive-admits"),
    pytest.param(DRAINING, EARLY, False, "over TBT SLO or KV now", id="draining-early-rejects-on-current-load"),
    pytest.param(DRAINING, PREDICTIVE, True, "admit", id="draining-predictive-sees-it-drain"),
    pytest.param(FLOODING, REACTIVE, True, "admit", id="flooding-reactive-admits"),
    pytest.param(FLOODING, EARLY, True, "admit", id="flooding-early-admits-on-light-current-load"),
    pytest.param(FLOODING, PREDICTIVE, False, "when it would reach decode", id="flooding-predictive-rejects"),
    pytest.param(PREFILL_FULL, REACTIVE, False, "TTFT over SLO", id="prefill-full-reactive"),
    pytest.param(PREFILL_FULL, EARLY, False, "TTFT over SLO", id="prefill-full-early"),
    pytest.param(PREFILL_FULL, PREDICTIVE, False, "TTFT over SLO", id="prefill-full-predictive"),
])
@pytest.mark.parametrize("departures", [UNIFORM, EXPONENTIAL])
def test_each_policy_admits_on_its_own_view_of_decode_load(case: dict, policy: RejectionPolicy, admit: bool,
                                                           reason: str, departures: DepartureModel) -> None:
    decision = assess_admission(**case, config=AdmissionConfig(policy=policy, departures=departures))
    assert decision.admit is admit
    assert reason in decision.reason
    assert decision.policy is policy


# With the request, FLOODING's predicted load is 1.4475 + 0.0001 / 0.05 = 1.4495 (UNIFORM): a buffer of 0.45 over
# the threshold admits it, 0.44 does not; the TTFT check ignores the buffer.
@pytest.mark.parametrize(("case", "overcommit", "admit"), [
    pytest.param(FLOODING, 0.45, True, id="buffer-covers-the-predicted-excess"),
    pytest.param(FLOODING, 0.44, False, id="buffer-too-small"),
    pytest.param(PREFILL_FULL, 5.0, False, id="buffer-does-not-relax-ttft"),
])
def test_overcommit_admits_predicted_excess_up_to_the_buffer(case: dict, overcommit: float, admit: bool) -> None:
    config = AdmissionConfig(policy=PREDICTIVE, departures=UNIFORM, overcommit=overcommit)
    assert assess_admission(**case, config=config).admit is admit


@pytest.mark.parametrize(("case", "prescale", "needed"), [
    pytest.param(DRAINING, True, 2, id="overloaded-now-450-of-400"),
    pytest.param(FLOODING, True, 2, id="overloaded-soon-464-of-400"),
    pytest.param(dict(FLOODING, prefill=replace(FLOODING["prefill"], queued_requests=100, queued_tokens=10000)),
                 False, 1, id="small-wave-fits"),  # 87.2 of the batch + 92.8 of the wave stay: 180, load 0.56
])
def test_decode_is_prescaled_when_committed_load_crosses_the_threshold(case: dict, prescale: bool,
                                                                        needed: int) -> None:
    decision = assess_admission(**case, config=AdmissionConfig())
    assert decision.prescale_decode is prescale
    assert decision.decode_replicas_needed == needed
    assert decision.decode_capacity == pytest.approx(400.0)


# Admission ratio over a 2 s interval in the flooding case, UNIFORM (t_d = 8 s > 2 s, so everything admitted in
# the interval is still decoding at its end). Prefill: 10 replicas can hold 9.9 s - 6 s of queue more and clear
# 2 s of work, at 0.1 s a request: 10 x (9.9 - 6 + 2) / 0.1 = 590 requests. Decode (400 sequences by TBT):
# predictive looks at 6.1 + 2 = 8.1 s: the batch has gone (8.1 > t_d) and 600 x (6 - 0.1) / 6 = 590 of the wave
# remain: 400 - 590 < 0 -> nothing; early drains today's 100 for 2 s, 75 left: 325 requests.
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
    config = AdmissionConfig(policy=policy, interval_s=2.0, departures=UNIFORM)
    assert assess_admission(**case, config=config).admission_ratio == pytest.approx(ratio)


def test_admission_ratio_counts_admissions_that_leave_within_the_interval() -> None:
    # EXPONENTIAL, early, 600 arrivals in 2 s: 100 x exp(-2/8) = 77.880 of today's batch stay, room
    # 400 - 77.880 = 322.120 at the end of the interval; of requests entering evenly over it,
    # 8/2 x (1 - exp(-2/8)) = 0.884797 are still there, so 322.120 / 0.884797 = 364.061 can be admitted: 0.606768.
    case = dict(FLOODING, mix=replace(FLOODING["mix"], arrival_rate=300.0))
    decision = assess_admission(**case, config=AdmissionConfig(policy=EARLY, interval_s=2.0))
    assert decision.admission_ratio == pytest.approx(0.606768, rel=1e-5)


def test_admission_ratio_respects_the_kv_cache() -> None:
    # 50 sequences of 1000 tokens on a 100k-token cache, outputs of 1000 tokens, UNIFORM: step 15 ms, t_d = 15 s;
    # after the 2 s interval 50 x 13/15 = 43.33 hold 43,333 tokens; each newcomer needs its 1000-token prompt and
    # 1000 for its output: (100,000 - 43,333) / 2000 = 28.33 of 40 arrivals (TBT would allow 356.7).
    # 10 idle prefill replicas take 10 x (5 + 2) / 1 = 70.
    case = {
        "prefill": PrefillPool(replicas=10, profile=PROFILE),
        "decode": DecodePool(replicas=1, profile=KV_PROFILE, running=50, mean_context_tokens=1000),
        "mix": TrafficMix(arrival_rate=20.0, mean_input_tokens=1000, mean_output_tokens=1000),
        "slo": SLO,
    }
    decision = assess_admission(**case, config=AdmissionConfig(policy=EARLY, interval_s=2.0, departures=UNIFORM))
    assert decision.admission_ratio == pytest.approx((100_000 - 50 * 13 / 15 * 1000) / 2000 / 40)


def test_a_lower_threshold_rejects_earlier() -> None:
    lenient = assess_admission(**DRAINING, config=AdmissionConfig(reject_above=1.0))
    strict = assess_admission(**DRAINING, config=AdmissionConfig(reject_above=0.6))
    assert lenient.admit and not strict.admit  # predicted decode load 0.729 with the request
    assert strict.reject_threshold == 0.6
    assert strict.decode_capacity == pytest.approx((0.6 * 0.05 - 0.01) / 0.0001)


# --- prefix cache and KV: the request's prefill is its uncached part, its decode holds all of it ------------


# 50 sequences of 1000 tokens hold 50k of a 100k-token cache; outputs of 100 tokens are reserved on admission.
# A 45k-token prompt with 44k cached prefills 1000 tokens (1 s) and would hold 50k + 45k + 100 = 95.1k: fits.
# At 50k tokens (49k cached): 100.1k > 100k, rejected on KV though its TTFT is still 1 s. Taken as uncached
# (no cached_tokens) a 45k prompt needs 45 s of prefill against a 6 s SLO.
@pytest.mark.parametrize(("prompt", "cached", "admit", "prefill_load", "reason"), [
    pytest.param(45_000, 44_000, True, 1 / 6, "admit", id="cached-prompt-fits"),
    pytest.param(50_000, 49_000, False, 1 / 6, "over TBT SLO or KV now", id="whole-prompt-overflows-kv"),
    pytest.param(45_000, None, False, 45 / 6, "TTFT over SLO", id="explicit-prompt-taken-as-uncached"),
])
def test_ttft_counts_the_uncached_prompt_and_kv_the_whole_prompt(prompt: float, cached: float | None, admit: bool,
                                                                 prefill_load: float, reason: str) -> None:
    decision = assess_admission(
        prefill=PrefillPool(replicas=1, profile=PROFILE),
        decode=DecodePool(replicas=1, profile=KV_PROFILE, running=50, mean_context_tokens=1000),
        mix=TrafficMix(arrival_rate=1.0, mean_input_tokens=1000, mean_output_tokens=100),
        slo=SLO, config=AdmissionConfig(policy=EARLY), input_tokens=prompt, cached_tokens=cached)
    assert decision.admit is admit
    assert decision.prefill_load == pytest.approx(prefill_load)
    assert reason in decision.reason


def test_the_mix_cached_share_shortens_the_mean_requests_prefill() -> None:
    # mean prompt 1000, of which 600 cached: 400 tokens = 0.4 s on an idle pool
    mix = TrafficMix(arrival_rate=1.0, mean_input_tokens=1000, mean_output_tokens=100, mean_cached_tokens=600)
    decision = assess_admission(prefill=PrefillPool(replicas=1, profile=PROFILE),
                                decode=DecodePool(replicas=1, profile=PROFILE), mix=mix, slo=SLO,
                                config=AdmissionConfig())
    assert decision.prefill_load == pytest.approx(0.4 / 6)


# c = 1e-6 s/token^2, a = 10 ms: 100 new tokens cost 0.01 + 0.1 + 0.01 = 0.12 s; behind a 400-token cached prefix
# their attention to it adds 2 x 1e-6 x 100 x 400 = 0.08 s.
@pytest.mark.parametrize(("tokens", "cached", "seconds"), [
    pytest.param(100, 0, 0.12, id="no-prefix"),
    pytest.param(100, 400, 0.20, id="attends-to-cached-prefix"),
    pytest.param(0, 400, 0.0, id="fully-cached"),
])
def test_prefill_pays_attention_over_the_cached_prefix(tokens: float, cached: float, seconds: float) -> None:
    profile = replace(PROFILE, prefill_a=0.01, prefill_c=1e-6)
    assert prefill_seconds(profile, tokens=tokens, cached_tokens=cached) == pytest.approx(seconds)


# --- the parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "tokens", "cached", "ttft"), [
    pytest.param(PrefillPool(replicas=2, profile=PROFILE), 500, 0, 0.5, id="idle"),
    pytest.param(PrefillPool(replicas=2, profile=PROFILE, queued_requests=4, queued_tokens=4000), 500, 0, 2.5,
                 id="even-queue"),
    pytest.param(PrefillPool(replicas=2, profile=PROFILE, queued_requests=3, queued_tokens=9000,
                             backlog_s=(7.0, 2.0)), 500, 0, 2.5, id="joins-the-shorter-backlog"),
    pytest.param(PrefillPool(replicas=2, profile=PROFILE, backlog_s=(7.0, 2.0)), 500, 300, 2.2,
                 id="cached-prefix-is-not-prefilled"),
    pytest.param(PrefillPool(replicas=0, profile=PROFILE), 500, 0, math.inf, id="no-replicas"),
])
def test_predicted_ttft_is_the_shortest_wait_plus_own_prefill(pool: PrefillPool, tokens: float, cached: float,
                                                              ttft: float) -> None:
    assert predicted_ttft(pool, input_tokens=tokens, cached_tokens=cached) == pytest.approx(ttft)


# 10 queued over backlogs of 1 s and 5 s: by 2 s the first replica is done (1 s of work) and the second 2 s into
# its 5: with requests in proportion to work, 10 x (1 + 2) / 6 = 5 are done. Idle decode: t_d = 100 x 10.1 ms =
# 1.01 s, and those 5 entered evenly over the 2 s. UNIFORM: the ones that entered after 2 - 1.01 s are still
# decoding, (2 - 0.99) / 2 = 0.505 of them: 2.525. EXPONENTIAL: 1.01/2 x (1 - exp(-2/1.01)) = 0.435289: 2.176444.
@pytest.mark.parametrize(("departures", "entered"), [
    pytest.param(UNIFORM, 2.525, id="uniform"), pytest.param(EXPONENTIAL, 2.176444, id="exponential"),
])
def test_requests_still_in_prefill_at_the_horizon_are_not_counted_as_decoding(departures: DepartureModel,
                                                                              entered: float) -> None:
    outlook = predict_decode(
        prefill=PrefillPool(replicas=2, profile=PROFILE, queued_requests=10, queued_tokens=10000,
                            backlog_s=(1.0, 5.0)),
        decode=DecodePool(replicas=1, profile=PROFILE),
        mix=TrafficMix(arrival_rate=0.0, mean_input_tokens=1000, mean_output_tokens=100),
        horizon_s=2.0, departures=departures)
    assert outlook.decode_time_s == pytest.approx(1.01)
    assert outlook.entered == pytest.approx(entered, rel=1e-6)
    assert outlook.finished == 0.0
    assert outlook.running == pytest.approx(entered, rel=1e-6)


# The queue drains in 1 s but the horizon is 1.5 s; t_d = 1.01 s. UNIFORM: of 10 entering over [0, 1] s only those
# after 1.5 - 1.01 = 0.49 s are still decoding: 10 x 0.51 = 5.1. EXPONENTIAL: 10 x 1.01 x (exp(-0.5/1.01) -
# exp(-1.5/1.01)) = 3.869027.
@pytest.mark.parametrize(("departures", "entered"), [
    pytest.param(UNIFORM, 5.1, id="uniform"), pytest.param(EXPONENTIAL, 3.869027, id="exponential"),
])
def test_requests_that_entered_and_finished_before_the_horizon_are_gone(departures: DepartureModel,
                                                                        entered: float) -> None:
    outlook = predict_decode(
        prefill=PrefillPool(replicas=1, profile=PROFILE, queued_requests=10, queued_tokens=1000, backlog_s=(1.0,)),
        decode=DecodePool(replicas=1, profile=PROFILE),
        mix=TrafficMix(arrival_rate=0.0, mean_input_tokens=1000, mean_output_tokens=100),
        horizon_s=1.5, departures=departures)
    assert outlook.entered == pytest.approx(entered, rel=1e-6)


# 100 running with 1000-token contexts, step 20 ms: in 1 s each survivor generates 50 tokens (capped at the mean
# output). UNIFORM (t_d = 2 s) keeps 50 of them, EXPONENTIAL 100 x exp(-0.5) = 60.653.
@pytest.mark.parametrize(("departures", "mean_output", "running", "context"), [
    pytest.param(UNIFORM, 100, 50.0, 1050.0, id="uniform-grows-by-50"),
    pytest.param(EXPONENTIAL, 100, 60.653066, 1050.0, id="exponential-grows-by-50"),
    pytest.param(UNIFORM, 40, 0.0, 1000.0, id="uniform-all-gone-when-t_d-is-short"),
])
def test_survivors_contexts_grow_by_the_tokens_they_generate(departures: DepartureModel, mean_output: float,
                                                             running: float, context: float) -> None:
    outlook = predict_decode(
        prefill=PrefillPool(replicas=1, profile=PROFILE),
        decode=DecodePool(replicas=1, profile=PROFILE, running=100, mean_context_tokens=1000),
        mix=TrafficMix(arrival_rate=0.0, mean_input_tokens=1000, mean_output_tokens=mean_output),
        horizon_s=1.0, departures=departures)
    assert outlook.running == pytest.approx(running, rel=1e-6)
    assert outlook.mean_context_tokens == pytest.approx(context)


# 10 requests queued for 1 s, horizon 1 s, idle decode (step 10.1 ms, t_d = 1.01 s): all 10 enter, on average
# 0.5 s in, so they have generated 0.5 / 0.0101 = 49.505 tokens. Their prompts are 5000 tokens each when the pool
# says so (selection at admission), the mix's 1000 otherwise.
@pytest.mark.parametrize(("queued_context", "context"), [
    pytest.param(50_000.0, 5049.50495, id="queued-prompts-known"),
    pytest.param(None, 1049.50495, id="mix-mean-prompt"),
])
def test_requests_in_prefill_bring_their_own_prompts_to_decode(queued_context: float | None,
                                                                context: float) -> None:
    outlook = predict_decode(
        prefill=PrefillPool(replicas=1, profile=PROFILE, queued_requests=10, queued_tokens=1000,
                            queued_context_tokens=queued_context),
        decode=DecodePool(replicas=1, profile=KV_PROFILE),
        mix=TrafficMix(arrival_rate=0.0, mean_input_tokens=1000, mean_output_tokens=100),
        horizon_s=1.0, departures=UNIFORM)
    assert outlook.running == pytest.approx(10.0)
    assert outlook.mean_context_tokens == pytest.approx(context)


@pytest.mark.parametrize(("running", "reserve", "admitted"), [
    pytest.param(399, 0.0, True, id="the-400th-fits-exactly"),
    pytest.param(400, 0.0, False, id="the-401st-does-not"),
])
def test_the_decode_time_check_admits_while_one_more_keeps_tbt_within_slo(running: int, reserve: float,
                                                                          admitted: bool) -> None:
    pool = DecodePool(replicas=1, profile=PROFILE, running=running, mean_context_tokens=1000)
    assert admit_to_decode(decode=pool, slo=SLO, context_tokens=1000, reserve_tokens=reserve) is admitted


# 90 x 1000 tokens in a 100k cache: a 1000-token prompt with 9000 kept for its output fills it exactly.
@pytest.mark.parametrize(("reserve", "admitted"), [
    pytest.param(9000.0, True, id="fills-the-cache-exactly"), pytest.param(9001.0, False, id="one-token-over"),
])
def test_the_decode_time_check_keeps_kv_for_the_output(reserve: float, admitted: bool) -> None:
    pool = DecodePool(replicas=1, profile=KV_PROFILE, running=90, mean_context_tokens=1000)
    assert admit_to_decode(decode=pool, slo=SLO, context_tokens=1000, reserve_tokens=reserve) is admitted


def test_a_decode_pool_without_replicas_takes_nothing() -> None:
    assert not admit_to_decode(decode=DecodePool(replicas=0, profile=PROFILE), slo=SLO, context_tokens=10)


# One replica unless said: TBT (0.01 + 0.0001 B) / 0.05, KV B x C / cache, seats B / max_num_seqs.
@pytest.mark.parametrize(("pool", "running", "context", "kv", "load"), [
    pytest.param(DecodePool(replicas=1, profile=PROFILE), 300, 1000, None, 0.8, id="tbt-bound"),
    pytest.param(DecodePool(replicas=2, profile=PROFILE), 600, 1000, None, 0.8, id="spread-over-replicas"),
    pytest.param(DecodePool(replicas=1, profile=KV_PROFILE), 50, 1000, None, 0.5, id="kv-bound"),
    pytest.param(DecodePool(replicas=1, profile=KV_PROFILE), 50, 1000, 80_000, 0.8, id="kv-tokens-given"),
    pytest.param(DecodePool(replicas=1, profile=replace(PROFILE, max_num_seqs=100)), 90, 1000, None, 0.9,
                 id="seat-bound"),
    pytest.param(DecodePool(replicas=1, profile=PROFILE), 0, 1000, None, 0.0, id="idle"),
    pytest.param(DecodePool(replicas=0, profile=PROFILE), 5, 1000, None, math.inf, id="work-without-replicas"),
])
def test_decode_load_is_the_tightest_of_tbt_kv_and_seats(pool: DecodePool, running: float, context: float,
                                                         kv: float | None, load: float) -> None:
    assert decode_load(pool, slo=SLO, running=running, context_tokens=context, kv_tokens=kv) == pytest.approx(load)


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
    pytest.param(lambda: PrefillPool(replicas=1, profile=PROFILE, queued_context_tokens=math.nan),
                 "queued_context_tokens", id="nan-queued-context"),
    pytest.param(lambda: PrefillPool(replicas=2, profile=PROFILE, backlog_s=(1.0,)), "backlog_s",
                 id="backlog-per-replica"),
    pytest.param(lambda: DecodePool(replicas=1, profile=PROFILE, running=-3), "running", id="negative-running"),
    pytest.param(lambda: TrafficMix(arrival_rate=math.inf, mean_input_tokens=1, mean_output_tokens=1),
                 "arrival_rate", id="infinite-rate"),
    pytest.param(lambda: TrafficMix(arrival_rate=1, mean_input_tokens=100, mean_output_tokens=1,
                                    mean_cached_tokens=101), "mean_cached_tokens", id="more-cached-than-prompt"),
    pytest.param(lambda: LatencySLO(ttft_s=0.0, tbt_s=0.1), "ttft_s", id="zero-slo"),
    pytest.param(lambda: AdmissionConfig(reject_above=0.0), "reject_above", id="zero-threshold"),
    pytest.param(lambda: AdmissionConfig(interval_s=-1.0), "interval_s", id="negative-interval"),
    pytest.param(lambda: AdmissionConfig(overcommit=-0.1), "overcommit", id="negative-overcommit"),
])
def test_invalid_inputs_are_refused_naming_the_field(build, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()
