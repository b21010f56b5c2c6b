"""The break-even admission rule and the bounded decode door of the gateway, checked against hand-computed values.

Profile as in ``test_admission_gateway``: prefill 1 ms per prompt token (1000 tokens = 1 s); a decode step 10 ms +
0.1 ms per sequence, context-free; KV and seats do not bind. TTFT SLO 6 s, TBT SLO 50 ms; requests arrive at 100 s.

The forecast used below: 800 sequences at 30 tokens, output lengths drawn from {40, 100}: step now 90 ms, so any
horizon of 1-5 s (11-56 steps) leaves each a stay probability of 0.5 (past 40 tokens, not past 100). At entry 400
expected plus the request: step 50.1 ms, load 1.002; the count's variance 200, so the load's sd is
0.002 x sqrt(200) = 0.0283 and P(load <= 1) = Phi(-0.002 / 0.0283) = 0.4718.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.core.admission import LatencySLO, RejectionPolicy
from autoscaler.sim.gateway_rules import (
    DecodingSequence,
    GatewayConfig,
    OutputLengths,
    PoolsView,
    PrefillJob,
    break_even_fit_probability,
    door_patience,
    forecast_decode,
    judge_request,
)
from tests.core.test_admission_gateway import PROFILE

SLO = LatencySLO(ttft_s=6.0, tbt_s=0.05)
NOW = 100.0
FIT = statistics.NormalDist().cdf(-0.002 / (0.002 * math.sqrt(200)))  # 0.4718
BREAK_EVEN = GatewayConfig(slo=SLO, break_even=True)


def pools(*, queue_s: float = 0.0, mean_prefill_s: float | None = 1.0, **changes: Any) -> PoolsView:
    base = PoolsView(prefill_profile=PROFILE, decode_profile=PROFILE, prefill_free_at=(NOW + queue_s,),
                     decode_replicas=1, outputs=OutputLengths.from_sample([40, 100]),
                     decoding=tuple(DecodingSequence(context_tokens=1000, generated_tokens=30) for _ in range(800)),
                     mean_prefill_s=mean_prefill_s)
    return replace(base, **changes)


@pytest.mark.parametrize(("prefill_s", "mean_prefill_s", "prefill_load", "level"), [
    pytest.param(1.0, 1.0, 0.0, 0.0, id="idle-prefill-costs-nothing-admit-whatever-may-fit"),
    pytest.param(1.0, 1.0, 0.5, 1.0 / 3.0, id="half-busy-a-mean-prefill-is-worth-half-a-request"),
    pytest.param(1.0, 1.0, 1.0, 0.5, id="saturated-a-mean-prefill-is-worth-a-request"),
    pytest.param(1.0, 1.0, 3.0, 0.5, id="over-saturated-counts-as-saturated"),
    pytest.param(3.0, 1.0, 1.0, 0.75, id="a-long-prefill-needs-margin"),
    pytest.param(0.5, 2.0, 1.0, 0.2, id="a-short-prefill-is-taken-on-doubt"),
])
def test_the_break_even_level_weighs_the_prefill_a_misfit_wastes(prefill_s: float, mean_prefill_s: float,
                                                                 prefill_load: float, level: float) -> None:
    assert break_even_fit_probability(prefill_s=prefill_s, mean_prefill_s=mean_prefill_s,
                                      prefill_load=prefill_load) == pytest.approx(level)


@pytest.mark.parametrize(("view", "prompt", "cached", "level", "admit"), [
    # TTFT 1 s: prefill load 1/6, a mean prefill worth 1/6 of a request: level 1/7.
    pytest.param(pools(), 1000, 0, 1.0 / 7.0, True, id="idle-prefill-admits-on-doubt"),
    # TTFT 5 s: prefill load 5/6, w = 5/6, level 5/11 = 0.4545 < 0.4718.
    pytest.param(pools(queue_s=4.0), 1000, 0, 5.0 / 11.0, True, id="busy-prefill-admits-a-mean-request"),
    # The same request is twice the recent mean: w = 5/3, level 0.625 > 0.4718.
    pytest.param(pools(queue_s=4.0, mean_prefill_s=0.5), 1000, 0, 0.625, False,
                 id="busy-prefill-rejects-a-request-twice-the-mean"),
    # A quarter of the mean: TTFT 4.25 s, w = 0.25 x 4.25 / 6 = 0.177, level 0.150.
    pytest.param(pools(queue_s=4.0), 250, 0, 0.177083 / 1.177083, True, id="busy-prefill-admits-a-small-request"),
    # Fully cached: no prefill to waste, level 0, but a load certain to overflow (all 800 stay, 1.802) never fits.
    pytest.param(pools(outputs=OutputLengths.fixed(100)), 1000, 1000, 0.0, False,
                 id="a-certain-overflow-is-rejected-even-at-level-zero"),
    pytest.param(pools(decoding=()), 1000, 1000, 0.0, True, id="a-certain-fit-is-admitted-at-level-zero"),
])
def test_predictive_admits_when_the_fit_probability_beats_the_break_even_level(
        view: PoolsView, prompt: float, cached: float, level: float, admit: bool) -> None:
    verdict = judge_request(view, prompt_tokens=prompt, cached_tokens=cached, now=NOW, config=BREAK_EVEN)
    assert verdict.required_probability == pytest.approx(level, rel=1e-5)
    assert verdict.admit is admit
    assert ("admit" if admit else "P(decode within TBT SLO and KV when it would start decoding)") in verdict.reason


def test_without_a_prefill_pool_the_ttft_check_rejects() -> None:
    # TTFT infinite: its prefill counts as saturated (w = 1, level 1/2) and the TTFT check rejects first.
    verdict = judge_request(pools(prefill_free_at=()), prompt_tokens=1000, now=NOW, config=BREAK_EVEN)
    assert verdict.required_probability == pytest.approx(0.5)
    assert verdict.admit is False
    assert "TTFT over SLO" in verdict.reason


def test_the_fit_probability_is_the_forecasts() -> None:
    verdict = judge_request(pools(queue_s=4.0), prompt_tokens=1000, now=NOW, config=BREAK_EVEN)
    assert verdict.decode_load_at_entry == pytest.approx(1.002)
    assert verdict.fit_probability == pytest.approx(FIT, rel=1e-6)


@pytest.mark.parametrize(("policy", "admit"), [
    pytest.param(RejectionPolicy.REACTIVE, True, id="reactive-admits-on-the-ttft"),
    pytest.param(RejectionPolicy.EARLY, False, id="early-rejects-on-load-now"),
])
def test_the_break_even_rule_leaves_the_other_policies_alone(policy: RejectionPolicy, admit: bool) -> None:
    # No mean prefill given: only PREDICTIVE needs it. Load now 801 sequences: 1.802.
    config = GatewayConfig(slo=SLO, policy=policy, break_even=True)
    verdict = judge_request(pools(mean_prefill_s=None), prompt_tokens=1000, now=NOW, config=config)
    assert verdict.admit is admit
    assert math.isnan(verdict.required_probability)


# An idle pool (step 10.1 ms) and one job done at 100.5 s: by 101 s it has decoded 0.5 / 0.0101 = 49.5 tokens and,
# with outputs of 1000, is still there if it got a seat at all.
@pytest.mark.parametrize(("seat_probability", "running", "running_var"), [
    pytest.param(1.0, 1.0, 0.0, id="a-door-that-waits-seats-it-surely"),
    pytest.param(0.4, 0.4, 0.24, id="a-door-that-rejects-seats-it-at-its-fit-probability"),
    pytest.param(0.0, 0.0, 0.0, id="one-certain-to-be-turned-away-adds-nothing"),
])
def test_a_job_in_prefill_enters_the_forecast_at_its_seat_probability(seat_probability: float, running: float,
                                                                      running_var: float) -> None:
    job = PrefillJob(done_at=NOW + 0.5, prompt_tokens=1000, seat_probability=seat_probability)
    forecast = forecast_decode(pools(decoding=(), outputs=OutputLengths.fixed(1000), prefill_jobs=(job,)),
                               at=NOW + 1.0, now=NOW)
    held = 1000 + 0.5 / 0.0101
    assert (forecast.entering, forecast.running, forecast.running_var) == pytest.approx((running, running, running_var))
    assert forecast.kv_tokens == pytest.approx(running * held)
    assert forecast.kv_var == pytest.approx(running_var * held ** 2)


@pytest.mark.parametrize(("step_s", "output_tokens", "patience"), [
    pytest.param(0.04, 101, 1.0, id="ten-ms-slack-over-a-hundred-tokens-is-a-second"),
    pytest.param(0.049, 343, 0.342, id="a-pool-at-its-limit-leaves-little"),
    pytest.param(0.05, 343, 0.0, id="a-step-at-the-slo-leaves-none"),
    pytest.param(0.06, 343, 0.0, id="a-step-over-the-slo-leaves-none"),
    pytest.param(0.01, 1, 0.0, id="a-request-done-at-its-first-token-has-no-tokens-to-spread-a-wait-over"),
])
def test_the_door_waits_as_long_as_the_tbt_slack_of_the_output_allows(step_s: float, output_tokens: float,
                                                                      patience: float) -> None:
    assert door_patience(slo=SLO, step_s=step_s, output_tokens=output_tokens) == pytest.approx(patience)


@pytest.mark.parametrize(("build", "message"), [
    pytest.param(lambda: judge_request(pools(mean_prefill_s=None), prompt_tokens=1000, now=NOW, config=BREAK_EVEN),
                 "PoolsView.mean_prefill_s", id="break-even-without-a-mean-prefill"),
    pytest.param(lambda: GatewayConfig(slo=SLO, break_even=True, admit_probability=0.5),
                 "break_even and admit_probability", id="two-levels-at-once"),
    pytest.param(lambda: PrefillJob(done_at=NOW, prompt_tokens=10, seat_probability=1.5), "PrefillJob.seat_probability",
                 id="a-seat-probability-over-one"),
    pytest.param(lambda: pools(mean_prefill_s=0.0), "PoolsView.mean_prefill_s", id="zero-mean-prefill"),
    pytest.param(lambda: pools(mean_prefill_s=math.nan), "PoolsView.mean_prefill_s", id="nan-mean-prefill"),
    pytest.param(lambda: break_even_fit_probability(prefill_s=-1.0, mean_prefill_s=1.0, prefill_load=0.5),
                 "break_even_fit_probability.prefill_s", id="negative-prefill"),
    pytest.param(lambda: break_even_fit_probability(prefill_s=1.0, mean_prefill_s=0.0, prefill_load=0.5),
                 "break_even_fit_probability.mean_prefill_s", id="zero-mean"),
    pytest.param(lambda: break_even_fit_probability(prefill_s=1.0, mean_prefill_s=1.0, prefill_load=math.inf),
                 "break_even_fit_probability.prefill_load", id="infinite-prefill-load"),
    pytest.param(lambda: door_patience(slo=SLO, step_s=-0.01, output_tokens=10), "door_patience.step_s",
                 id="negative-step"),
    pytest.param(lambda: door_patience(slo=SLO, step_s=0.01, output_tokens=0.5), "door_patience.output_tokens",
                 id="no-output"),
])
def test_bad_input_to_the_break_even_rule_is_refused_with_the_field_named(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
