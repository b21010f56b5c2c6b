"""Per-request early rejection at a gateway (Mooncake §7), checked against loads computed by hand.

The profile keeps the arithmetic simple: prefill costs 1 ms per prompt token (1000 tokens = 1 s); a decode step
costs 10 ms + 0.1 ms per sequence on a replica, independent of context. With a 50 ms TBT SLO a replica decodes at
most 400 sequences. KV (1e9 tokens) and seats (1000) do not bind unless a case says so. Requests arrive at
t = 100 s. ``OutputLengths.fixed(n)`` is Mooncake's assumption: a sequence stays while it has produced fewer
than n tokens.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.core.admission import DecodePool, LatencySLO, RejectionPolicy, admit_to_decode
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.gateway_rules import (
    DecodingSequence,
    DoorRule,
    GatewayConfig,
    LaterArrivals,
    OutputLengths,
    PoolsView,
    PrefillJob,
    admit_request,
    book_prefill,
    expect_overtakers,
    forecast_decode,
    judge_request,
    request_ttft,
    seat_from_door,
)

PROFILE = PerformanceProfile(
    name="simple", model="m", accelerator="x", gpus_per_replica=1,
    prefill_a=0.0, prefill_b=0.001, prefill_c=0.0,
    decode_alpha=0.01, decode_beta=0.0001, decode_gamma=0.0,
    kv_capacity_tokens=10**9, max_num_seqs=1000,
)
KV_PROFILE = replace(PROFILE, kv_capacity_tokens=100_000)
REACTIVE, EARLY, PREDICTIVE = RejectionPolicy.REACTIVE, RejectionPolicy.EARLY, RejectionPolicy.PREDICTIVE
SLO = LatencySLO(ttft_s=6.0, tbt_s=0.05)
NOW = 100.0


def view(**changes: Any) -> PoolsView:
    base = PoolsView(prefill_profile=PROFILE, decode_profile=PROFILE, prefill_free_at=(NOW,), decode_replicas=1,
                     outputs=OutputLengths.fixed(100))
    return replace(base, **changes)


def batch(count: int, *, context: float = 1000.0, generated: float) -> tuple[DecodingSequence, ...]:
    return tuple(DecodingSequence(context_tokens=context, generated_tokens=generated) for _ in range(count))


# Decode drains before the request gets there. 450 running: step 10 + 45 = 55 ms, load 1.1 now (1.102 with the
# request). The request waits 2 s for a prefill replica and prefills 1000 tokens in 1 s: it enters at 103 s, 54.55
# steps on. Of the batch (outputs of 100), the 225 at 20 tokens stay (74.5 < 100), the 225 at 60 leave
# (114.5 >= 100). Four jobs enter at 101, 101.5, 102 and 102.5 s and stay. 229 + the request: step 33 ms, load 0.66.
DRAINING = view(
    prefill_free_at=(NOW + 2.0, NOW + 3.0),
    decoding=batch(225, generated=20) + batch(225, generated=60),
    prefill_jobs=tuple(PrefillJob(done_at=NOW + s, prompt_tokens=1000) for s in (1.0, 1.5, 2.0, 2.5)),
)
# A prefill wave about to flood decode. 100 running at 10 tokens of 400: step 20 ms, load 0.402 with the request.
# 350 prompts finish prefill at 101 s. The request waits 4.9 s and prefills 100 tokens: it enters at 105 s, 250
# steps on; the batch stays (260 < 400) and the wave too (1 + 200 < 400): 451 with it, step 55.1 ms, load 1.102.
FLOODING = view(
    prefill_free_at=(NOW + 4.9,),
    outputs=OutputLengths.fixed(400),
    decoding=batch(100, generated=10),
    prefill_jobs=tuple(PrefillJob(done_at=NOW + 1.0, prompt_tokens=100) for _ in range(350)),
)
# Prefill over its SLO: 8 s of queue + 1 s > 6 s.
PREFILL_FULL = replace(DRAINING, prefill_free_at=(NOW + 8.0, NOW + 9.0))


@pytest.mark.parametrize(("pools", "prompt", "prefill_load", "now_load", "entry_load", "entry_at"), [
    pytest.param(DRAINING, 1000, 0.5, 1.102, 0.66, 103.0, id="draining"),
    pytest.param(FLOODING, 100, 5.0 / 6.0, 0.402, 1.102, 105.0, id="flooding"),
])
def test_loads_are_predicted_latency_over_the_slo(pools: PoolsView, prompt: float, prefill_load: float,
                                                  now_load: float, entry_load: float, entry_at: float) -> None:
    verdict = judge_request(pools, prompt_tokens=prompt, now=NOW, config=GatewayConfig(slo=SLO))
    assert verdict.prefill_load == pytest.approx(prefill_load)
    assert verdict.decode_load_now == pytest.approx(now_load)
    assert verdict.decode_load_at_entry == pytest.approx(entry_load)
    assert verdict.entry_at == pytest.approx(entry_at)


@pytest.mark.parametrize(("pools", "prompt", "policy", "admit", "reason"), [
    pytest.param(DRAINING, 1000, REACTIVE, True, "admit", id="draining-reactive-admits"),
    pytest.param(DRAINING, 1000, EARLY, False, "over TBT SLO or KV now", id="draining-early-rejects-on-load-now"),
    pytest.param(DRAINING, 1000, PREDICTIVE, True, "admit", id="draining-predictive-sees-it-drain"),
    pytest.param(FLOODING, 100, REACTIVE, True, "admit", id="flooding-reactive-admits"),
    pytest.param(FLOODING, 100, EARLY, True, "admit", id="flooding-early-admits-on-light-load-now"),
    pytest.param(FLOODING, 100, PREDICTIVE, False, "when it would start decoding", id="flooding-predictive-rejects"),
    pytest.param(PREFILL_FULL, 1000, REACTIVE, False, "TTFT over SLO", id="prefill-full-reactive"),
    pytest.param(PREFILL_FULL, 1000, EARLY, False, "TTFT over SLO", id="prefill-full-early"),
    pytest.param(PREFILL_FULL, 1000, PREDICTIVE, False, "TTFT over SLO", id="prefill-full-predictive"),
])
def test_each_policy_admits_on_its_own_view_of_decode_load(pools: PoolsView, prompt: float,
                                                           policy: RejectionPolicy, admit: bool, reason: str) -> None:
    config = GatewayConfig(slo=SLO, policy=policy)
    verdict = judge_request(pools, prompt_tokens=prompt, now=NOW, config=config)
    assert verdict.admit is admit
    assert reason in verdict.reason
    assert admit_request(pools, prompt_tokens=prompt, now=NOW, config=config) is admit


def test_forecast_removes_finished_sequences_and_adds_finished_prefills() -> None:
    forecast = forecast_decode(DRAINING, at=103.0, now=NOW)
    assert forecast.step_s == pytest.approx(0.055)
    assert forecast.staying == pytest.approx(225)
    assert forecast.entering == pytest.approx(4)
    assert forecast.running == pytest.approx(229)
    # 225 x (1000 + 54.545) + (1000 + 36.36) + (1000 + 27.27) + (1000 + 18.18) + (1000 + 9.09)
    assert forecast.kv_tokens == pytest.approx(225 * (1000 + 3 / 0.055) + 4000 + 5 / 0.055)


# A request prefilled at 99 s waits at the decode door: it counts from now, not from its done_at; a job still in
# prefill at the horizon is not counted. One sequence decodes at 10 tokens: step 10.1 ms, so a 1 s horizon is 99.01
# steps. With outputs of 100 both leave by then (10 + 99.01 and 1 + 99.01 reach 100); with 200 both stay.
@pytest.mark.parametrize(("outputs", "running", "entering"), [
    pytest.param(100, 0.0, 0.0, id="short-outputs-everyone-done-by-then"),
    pytest.param(200, 2.0, 1.0, id="long-outputs-the-waiting-one-counts-from-now"),
])
def test_a_prefilled_request_waiting_for_a_seat_enters_now(outputs: float, running: float,
                                                           entering: float) -> None:
    pools = view(outputs=OutputLengths.fixed(outputs), decoding=batch(1, generated=10),
                 prefill_jobs=(PrefillJob(done_at=NOW - 1.0, prompt_tokens=500),
                               PrefillJob(done_at=NOW + 5.0, prompt_tokens=500)))
    forecast = forecast_decode(pools, at=NOW + 1.0, now=NOW)
    assert forecast.step_s == pytest.approx(0.0101)
    assert forecast.running == pytest.approx(running)
    assert forecast.entering == pytest.approx(entering)


# 50 sequences of 1000 tokens at 10 of 100 outputs on a 100k-token cache: step 15 ms. A prompt with all but 1000
# tokens cached prefills in 1 s: 66.67 steps. KV at entry: 50 x 1066.67 = 53,333 + the prompt + 100 kept for its
# output. 46,500 tokens: 99,933 (admit); 47,000: 100,433 (reject), though now it would hold only 97,100.
@pytest.mark.parametrize(("prompt", "policy", "admit"), [
    pytest.param(46_500, PREDICTIVE, True, id="fits-with-the-batch-grown"),
    pytest.param(47_000, PREDICTIVE, False, id="overflows-once-the-batch-has-grown"),
    pytest.param(47_000, EARLY, True, id="early-sees-todays-smaller-kv"),
])
def test_kv_at_entry_counts_the_tokens_the_batch_generates_meanwhile(prompt: float, policy: RejectionPolicy,
                                                                     admit: bool) -> None:
    pools = view(decode_profile=KV_PROFILE, decoding=batch(50, generated=10))
    verdict = judge_request(pools, prompt_tokens=prompt, cached_tokens=prompt - 1000, now=NOW,
                            config=GatewayConfig(slo=SLO, policy=policy))
    assert verdict.prefill_load == pytest.approx(1 / 6)
    assert verdict.admit is admit


@pytest.mark.parametrize(("lengths", "generated", "more", "probability"), [
    pytest.param((10, 100, 200, 400), 50, 100, 2 / 3, id="two-of-the-three-longer-go-on"),
    pytest.param((10, 100, 200, 400), 0, 5, 1.0, id="all-go-on-for-5"),
    pytest.param((10, 100, 200, 400), 0, 10, 3 / 4, id="a-length-of-10-is-done-at-10"),
    pytest.param((10, 100, 200, 400), 450, 1, 0.0, id="past-every-length-seen-is-taken-as-done"),
    pytest.param((343,), 300, 42, 1.0, id="mooncake-fixed-td-stays-before-it"),
    pytest.param((343,), 300, 43, 0.0, id="mooncake-fixed-td-leaves-at-it"),
])
def test_sequences_stay_with_the_probability_their_lengths_give(lengths: tuple[float, ...], generated: float,
                                                                more: float, probability: float) -> None:
    outputs = OutputLengths.from_sample(reversed(lengths))
    assert outputs.still_decoding(generated=generated, more=more) == pytest.approx(probability)


def test_the_spread_of_output_lengths_keeps_long_runners_in_the_forecast() -> None:
    # Same mean (100) both ways. A sequence at 120 tokens is gone under Mooncake's fixed t_d; with lengths
    # (20, 20, 20, 340) it is one of the 340s and stays for 100 more steps.
    running = batch(1, generated=120)
    fixed = forecast_decode(view(decoding=running, outputs=OutputLengths.fixed(100)), at=NOW + 1.0, now=NOW)
    spread = forecast_decode(view(decoding=running, outputs=OutputLengths.from_sample([20, 20, 20, 340])),
                             at=NOW + 1.0, now=NOW)
    assert (fixed.running, spread.running) == (0.0, 1.0)


@pytest.mark.parametrize(("pools", "policy", "reason"), [
    pytest.param(view(prefill_free_at=()), REACTIVE, "TTFT over SLO", id="no-prefill-replica"),
    pytest.param(view(decode_replicas=0), EARLY, "decode over TBT SLO or KV now", id="no-decode-replica-early"),
    pytest.param(view(decode_replicas=0), PREDICTIVE, "when it would start decoding", id="no-decode-replica"),
])
def test_a_missing_pool_rejects(pools: PoolsView, policy: RejectionPolicy, reason: str) -> None:
    verdict = judge_request(pools, prompt_tokens=100, now=NOW, config=GatewayConfig(slo=SLO, policy=policy))
    assert not verdict.admit
    assert reason in verdict.reason


def test_an_idle_pool_admits_with_the_ttft_of_the_prefill_alone() -> None:
    assert request_ttft(view(prefill_free_at=(NOW - 50.0,)), prompt_tokens=2000, now=NOW) == pytest.approx(2.0)
    assert request_ttft(view(prefill_free_at=()), prompt_tokens=2000, now=NOW) == math.inf


def test_booking_queues_each_admission_on_the_replica_free_soonest() -> None:
    pools = view(prefill_free_at=(NOW + 2.0, NOW - 5.0))
    for _ in range(3):
        pools = book_prefill(pools, prompt_tokens=1500, cached_tokens=500, now=NOW)  # 1 s each
    assert pools.prefill_free_at == pytest.approx((NOW + 3.0, NOW + 2.0))
    assert [job.done_at for job in pools.prefill_jobs] == pytest.approx([NOW + 1.0, NOW + 2.0, NOW + 3.0])
    assert [job.prompt_tokens for job in pools.prefill_jobs] == [1500, 1500, 1500]


@pytest.mark.parametrize(("build", "message"), [
    pytest.param(lambda: OutputLengths(()), "OutputLengths.tokens must hold at least one length", id="no-lengths"),
    pytest.param(lambda: OutputLengths((5.0, 2.0)), "must be sorted", id="unsorted-lengths"),
    pytest.param(lambda: OutputLengths.from_sample([0.5]), "OutputLengths.tokens must be a finite number >= 1",
                 id="length-below-one"),
    pytest.param(lambda: OutputLengths.fixed(math.nan), "OutputLengths.tokens must be a finite", id="nan-length"),
    pytest.param(lambda: PrefillJob(done_at=math.nan, prompt_tokens=1), "PrefillJob.done_at", id="nan-done-at"),
    pytest.param(lambda: PrefillJob(done_at=1.0, prompt_tokens=-1), "PrefillJob.prompt_tokens", id="negative-prompt"),
    pytest.param(lambda: DecodingSequence(context_tokens=math.inf, generated_tokens=1),
                 "DecodingSequence.context_tokens", id="infinite-context"),
    pytest.param(lambda: DecodingSequence(context_tokens=1, generated_tokens=-2),
                 "DecodingSequence.generated_tokens", id="negative-generated"),
    pytest.param(lambda: view(decode_replicas=-1), "PoolsView.decode_replicas", id="negative-replicas"),
    pytest.param(lambda: view(prefill_free_at=(math.nan,)), "PoolsView.prefill_free_at", id="nan-free-at"),
    pytest.param(lambda: GatewayConfig(slo=SLO, reject_above=0.0), "GatewayConfig.reject_above", id="zero-threshold"),
    pytest.param(lambda: judge_request(view(), prompt_tokens=-5, now=NOW, config=GatewayConfig(slo=SLO)),
                 "request.prompt_tokens", id="negative-request-prompt"),
    pytest.param(lambda: book_prefill(view(prefill_free_at=()), prompt_tokens=5, now=NOW),
                 "needs a prefill replica", id="booking-without-prefill"),
])
def test_bad_input_is_refused_with_the_field_named(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


# Admission on the probability of fitting. 800 sequences at 30 tokens of outputs (40, 100), 1000 tokens each: a
# step of 10 + 80 = 90 ms. The request prefills 1000 tokens in 1 s: 11.1 steps on, each sequence is past 40 tokens
# and stays with probability 1/2 (the one in two that produces 100). The count at entry has mean 400 and variance
# 800/4 = 200; with the request, 401: step 50.1 ms, TBT load 1.002, standard deviation 0.1 ms per sequence / 50 ms
# x sqrt(200) = 0.0283. KV (1e9) and seats (1000) sit far below 1. With 790 sequences: mean 396 with the request,
# load 0.992, variance 197.5.
def spread_batch(count: int) -> PoolsView:
    return view(decoding=batch(count, generated=30), outputs=OutputLengths.from_sample([100, 40]))


PER_SEQUENCE = 0.0001 / 0.05
NORMAL = statistics.NormalDist()


@pytest.mark.parametrize(("count", "error_sd", "level", "probability", "admit"), [
    pytest.param(800, 0.0, 0.4, NORMAL.cdf(-0.002 / (PER_SEQUENCE * math.sqrt(200))), True,
                 id="over-on-average-admitted-on-doubt"),
    pytest.param(800, 0.0, 0.5, NORMAL.cdf(-0.002 / (PER_SEQUENCE * math.sqrt(200))), False,
                 id="over-on-average-rejected-at-even-odds"),
    pytest.param(790, 0.0, 0.5, NORMAL.cdf(0.008 / (PER_SEQUENCE * math.sqrt(197.5))), True,
                 id="under-on-average-admitted-at-even-odds"),
    pytest.param(790, 0.0, 0.9, NORMAL.cdf(0.008 / (PER_SEQUENCE * math.sqrt(197.5))), False,
                 id="under-on-average-rejected-when-asking-a-margin"),
    pytest.param(800, 0.04, 0.4, NORMAL.cdf(-0.002 / math.sqrt(PER_SEQUENCE ** 2 * 200 + 0.04 ** 2)), True,
                 id="an-unexplained-error-widens-the-doubt"),
])
def test_predictive_admits_on_the_probability_that_decode_fits(count: int, error_sd: float, level: float,
                                                               probability: float, admit: bool) -> None:
    config = GatewayConfig(slo=SLO, admit_probability=level, forecast_error_sd=error_sd)
    verdict = judge_request(spread_batch(count), prompt_tokens=1000, now=NOW, config=config)
    assert verdict.decode_load_at_entry == pytest.approx(1.002 if count == 800 else 0.992)
    assert verdict.fit_probability == pytest.approx(probability, rel=1e-6)
    assert verdict.decode_load_sd_at_entry == pytest.approx(PER_SEQUENCE * math.sqrt(count / 4))
    assert verdict.admit is admit
    assert ("admit" if admit else "P(decode within TBT SLO and KV when it would start decoding)") in verdict.reason


def test_the_forecast_carries_the_variance_of_each_stay() -> None:
    forecast = forecast_decode(spread_batch(800), at=NOW + 1.0, now=NOW)
    held = 1000 + 1.0 / 0.09  # context grown by the 11.1 steps of the horizon
    assert (forecast.running, forecast.running_var) == pytest.approx((400, 200))
    assert forecast.kv_tokens == pytest.approx(400 * held)
    assert forecast.kv_var == pytest.approx(200 * held ** 2)
    assert forecast.running_kv_cov == pytest.approx(200 * held)


# With Mooncake's single length every stay is certain: the probability is 0 or 1 and the rule is the expected-load
# rule whatever the level. Outputs of 40: the batch is gone by entry (load 0.202); outputs of 100: all 800 stay.
@pytest.mark.parametrize(("length", "level", "probability", "admit"), [
    pytest.param(40, 0.99, 1.0, True, id="certain-to-fit-admitted-at-any-level"),
    pytest.param(100, 0.01, 0.0, False, id="certain-to-overflow-rejected-at-any-level"),
])
def test_one_fixed_length_makes_the_probability_certain(length: float, level: float, probability: float,
                                                        admit: bool) -> None:
    pools = replace(spread_batch(800), outputs=OutputLengths.fixed(length))
    verdict = judge_request(pools, prompt_tokens=1000, now=NOW, config=GatewayConfig(slo=SLO, admit_probability=level))
    assert verdict.fit_probability == probability
    assert verdict.admit is admit


@pytest.mark.parametrize("policy", [pytest.param(REACTIVE, id="reactive"), pytest.param(EARLY, id="early")])
def test_the_probability_rule_leaves_the_other_policies_alone(policy: RejectionPolicy) -> None:
    # Load now: 801 sequences, step 90.1 ms, 1.802. Early rejects on it; reactive admits on the TTFT.
    pools = spread_batch(800)
    plain = judge_request(pools, prompt_tokens=1000, now=NOW, config=GatewayConfig(slo=SLO, policy=policy))
    with_level = judge_request(pools, prompt_tokens=1000, now=NOW,
                               config=GatewayConfig(slo=SLO, policy=policy, admit_probability=0.01))
    assert plain.decode_load_now == pytest.approx(1.802)
    assert with_level.admit is plain.admit is (policy is REACTIVE)


# The decode door. KV_PROFILE holds 100k tokens; 100 tokens are kept for each output. Instance A runs 50 sequences
# of 1000 tokens (50k of KV), B 10 of 2000 (20k). A 60k prompt overflows A (110.1k) and fits B (80.1k); a 30k prompt
# fits A (80.1k, step 15.1 ms: TBT load 0.302) and goes to B, the lower (50.1k); on A alone it goes to A.
A = DecodePool(replicas=1, profile=KV_PROFILE, running=50, mean_context_tokens=1000)
B = DecodePool(replicas=1, profile=KV_PROFILE, running=10, mean_context_tokens=2000)


@pytest.mark.parametrize(("instances", "waiting", "rule", "seated"), [
    pytest.param((A,), (60_000, 30_000, 10_000), DoorRule.FIFO, None, id="fifo-head-blocks-the-line"),
    pytest.param((A,), (60_000, 30_000, 10_000), DoorRule.FIRST_FIT, (1, 0), id="first-fit-takes-the-oldest-fitting"),
    pytest.param((A,), (30_000, 60_000), DoorRule.FIFO, (0, 0), id="fifo-head-fits"),
    pytest.param((A, B), (60_000,), DoorRule.FIFO, (0, 1), id="goes-where-it-fits"),
    pytest.param((A, B), (30_000,), DoorRule.FIFO, (0, 1), id="goes-where-the-load-is-lowest"),
    pytest.param((A,), (60_000, 51_000), DoorRule.FIRST_FIT, None, id="nobody-fits"),
    pytest.param((A,), (), DoorRule.FIRST_FIT, None, id="nobody-waits"),
    pytest.param((), (10,), DoorRule.FIRST_FIT, None, id="no-decode-instance"),
    pytest.param((replace(A, replicas=0),), (10,), DoorRule.FIFO, None, id="a-pool-without-replicas"),
])
def test_the_door_seats_by_its_rule(instances: tuple[DecodePool, ...], waiting: tuple[float, ...], rule: DoorRule,
                                   seated: tuple[int, int] | None) -> None:
    assert seat_from_door(instances=instances, waiting=waiting, slo=SLO, reserve_tokens=100, rule=rule) == seated


def test_the_door_agrees_with_the_decode_time_check() -> None:
    for prompt in (49_899, 49_900, 49_901):  # 50k + prompt + 100 against 100k
        fits = admit_to_decode(decode=A, slo=SLO, context_tokens=prompt, reserve_tokens=100)
        assert (seat_from_door(instances=(A,), waiting=(prompt,), slo=SLO, reserve_tokens=100) is not None) is fits
    assert [admit_to_decode(decode=A, slo=SLO, context_tokens=p, reserve_tokens=100)
            for p in (49_900, 49_901)] == [True, False]


@pytest.mark.parametrize(("build", "message"), [
    pytest.param(lambda: GatewayConfig(slo=SLO, admit_probability=0.0), "GatewayConfig.admit_probability",
                 id="level-zero"),
    pytest.param(lambda: GatewayConfig(slo=SLO, admit_probability=1.0), "GatewayConfig.admit_probability",
                 id="level-one"),
    pytest.param(lambda: GatewayConfig(slo=SLO, admit_probability=math.nan), "GatewayConfig.admit_probability",
                 id="level-nan"),
    pytest.param(lambda: GatewayConfig(slo=SLO, forecast_error_sd=-0.1), "GatewayConfig.forecast_error_sd",
                 id="negative-error-sd"),
    pytest.param(lambda: GatewayConfig(slo=SLO, forecast_error_sd=math.inf), "GatewayConfig.forecast_error_sd",
                 id="infinite-error-sd"),
    pytest.param(lambda: seat_from_door(instances=(A,), waiting=(1.0,), slo=SLO, reserve_tokens=-1),
                 "seat_from_door.reserve_tokens", id="negative-reserve"),
])
def test_bad_options_are_refused_with_the_field_named(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# Overtakers: requests admitted after this one that finish prefill first. The request is booked on replica 1 until
# 103 s; replica 2 is idle. At 1 arrival/s over the 3 s to 103: slots at 100.5, 101.5 and 102.5 s. Half of the
# sample prefills in 0.5 s (500 tokens), half in 4 s (4000). The first slot starts on replica 2 at 100.5, which it
# then holds for the mean 2.25 s (to 102.75); 0.5 s jobs are done with 2.5 s to spare: 2 s at 20 ms a step = 100
# tokens, so half an entry holding 600 tokens. The second starts at 102.75 (0.25 s left: none done), the third at 103.
TWO_SPEEDS = LaterArrivals.from_sample(rate_per_s=1.0, admitted=[(4.0, 4000), (0.5, 500)])
# At 0.5 arrivals/s, 1.5 expected: a whole slot at 101 s (done at 101.5: 1.5 s = 75 tokens early, 575 held) and a
# half slot at 102.5 s, done at 103 exactly (500 held).
HALF_SLOT = LaterArrivals.from_sample(rate_per_s=0.5, admitted=[(0.5, 500)])


@pytest.mark.parametrize(("later", "free_at", "outputs", "count", "kv_tokens", "kv_squares"), [
    pytest.param(TWO_SPEEDS, (103.0, 100.0), 1000, 0.5, 300.0, 0.5 * 600**2, id="short-half-overtakes"),
    pytest.param(HALF_SLOT, (103.0, 100.0), 1000, 1.5, 575.0 + 250.0, 575.0**2 + 0.5 * 500**2, id="partial-last-slot"),
    pytest.param(TWO_SPEEDS, (103.0,), 1000, 0.0, 0.0, 0.0, id="one-replica-queues-them-behind"),
    pytest.param(TWO_SPEEDS, (103.0, 100.0), 50, 0.0, 0.0, 0.0, id="done-decoding-before-entry"),
    pytest.param(replace(TWO_SPEEDS, rate_per_s=0.0), (103.0, 100.0), 1000, 0.0, 0.0, 0.0, id="no-arrivals"),
])
def test_later_admissions_that_finish_prefill_first_are_expected_in_decode(
        later: LaterArrivals, free_at: tuple[float, ...], outputs: float, count: float, kv_tokens: float,
        kv_squares: float) -> None:
    ahead = expect_overtakers(later, outputs=OutputLengths.fixed(outputs), free_at=free_at, at=103.0, now=NOW,
                              step_s=0.02)
    assert ahead.count == pytest.approx(count)
    assert ahead.kv_tokens == pytest.approx(kv_tokens)
    assert ahead.kv_squares == pytest.approx(kv_squares)


# 380 sequences decoding (outputs of 1000, at 10 tokens: all stay): with the request, 381, step 48.1 ms, load
# 0.962. It prefills 3000 tokens in 3 s on an idle replica. Arrivals at 10/s prefilling in 0.1 s: on a second idle
# replica each starts as it arrives (100.05, 100.15, ...) and the 29 arriving by 102.85 s are done by 103 s:
# 410 sequences, step 51 ms, load 1.02. On one replica they queue behind the request and none overtakes.
BUSY = view(decoding=batch(380, generated=10), outputs=OutputLengths.fixed(1000))
FAST_STREAM = LaterArrivals.from_sample(rate_per_s=10.0, admitted=[(0.1, 100)])


@pytest.mark.parametrize(("pools", "entry_load", "overtaking", "admit"), [
    pytest.param(replace(BUSY, prefill_free_at=(NOW, NOW)), 0.962, 0.0, True, id="off-by-default"),
    pytest.param(replace(BUSY, prefill_free_at=(NOW, NOW), later_arrivals=FAST_STREAM), 1.02, 29.0, False,
                 id="overtakers-on-a-free-replica-reject"),
    pytest.param(replace(BUSY, later_arrivals=FAST_STREAM), 0.962, 0.0, True, id="one-replica-nobody-overtakes"),
])
def test_predictive_counts_the_overtakers_when_asked(pools: PoolsView, entry_load: float, overtaking: float,
                                                      admit: bool) -> None:
    verdict = judge_request(pools, prompt_tokens=3000, now=NOW, config=GatewayConfig(slo=SLO))
    assert verdict.decode_load_at_entry == pytest.approx(entry_load)
    assert verdict.admit is admit
    booked = book_prefill(pools, prompt_tokens=3000, now=NOW)
    outlook = forecast_decode(replace(pools, prefill_free_at=booked.prefill_free_at), at=NOW + 3.0, now=NOW)
    assert outlook.overtaking == pytest.approx(overtaking)
    assert outlook.running == pytest.approx(380 + overtaking)


@pytest.mark.parametrize(("build", "message"), [
    pytest.param(lambda: LaterArrivals.from_sample(rate_per_s=-1.0, admitted=[(1.0, 10)]), "LaterArrivals.rate_per_s",
                 id="negative-rate"),
    pytest.param(lambda: LaterArrivals.from_sample(rate_per_s=1.0, admitted=[]), "must be non-empty", id="no-sample"),
    pytest.param(lambda: LaterArrivals(rate_per_s=1.0, prefill_s=(2.0, 1.0), prompt_tokens=(1, 2)), "ascending",
                 id="unsorted-sample"),
    pytest.param(lambda: LaterArrivals(rate_per_s=1.0, prefill_s=(1.0,), prompt_tokens=(1, 2)), "equal length",
                 id="unequal-sample"),
    pytest.param(lambda: LaterArrivals.from_sample(rate_per_s=1.0, admitted=[(math.nan, 10)]),
                 "LaterArrivals.prefill_s", id="nan-prefill-time"),
])
def test_bad_later_arrivals_are_refused_with_the_field_named(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
