"""Calibration against the real engine (issue 15, test 4): from the profile of a GPU model, far off for the CPU
toy, the online fit learns the CPU engine well enough to predict its TTFT at a load it never saw.

One CPU vLLM instance in the prefill role. The prior is what a model without a profile is learnt from
(:func:`autoscaler.perf.online.scratch_prior`), shaped on Llama-3.1-70B on four A100s: it puts a lone prompt's
prefill at 2-8x what the toy takes (depending on the machine's load). The fit reads the real signals through the
real Prometheus: light-load windows of prompts of three lengths (the prefill-time path of
:func:`prefill_observation`, so a few requests a second), one length per window so that the windows span the prefill
model's terms. The fresh level is prompts of a length the fit never saw; a lone prompt's predicted TTFT is the
fitted ``a + b*N + c*N^2`` (no queue at that rate), and what the engine measures is its own TTFT histogram over
those requests.

The machine is shared (2 cores, other suites beside): the engine's speed drifts over minutes. Learning and fresh
blocks therefore alternate (a fresh block after every learning block), so that both see the same drift, and the
comparison is with what the engine measured over the very requests of the fresh level, never with a wall-clock
expectation.

The engine's speed swings several-fold within minutes when other suites share its core (a 1,024-token prefill
measured 23 to 166 ms), so what the engine measured is the median over the fresh blocks of each block's TTFT mean:
one block caught in a stall does not move it.

What the 25% needed (issue 15): the prior is a GPU model's, 7x slower than the toy here, and the fit's blend with
it (n / (n + 2) of the fit) left the prediction 27-33% above the engine after 40 windows; a scratch profile's
borrowed scale is no prior any more (:attr:`autoscaler.perf.calibration.CalibrationSettings.prior_scale_known`),
and the same windows' fit lands within a few percent. The engine's TTFT also carries a front-end share (request
intake, IPC to the engine core, output) that the prefill-time histogram the fit reads does not: 10-45% of a lone
prompt's TTFT on this CPU toy, a few milliseconds, inside the bar; the fit does not learn it.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from dataclasses import dataclass

import pytest

from autoscaler.core.types import Role
from autoscaler.localstack.vllm import completion
from autoscaler.perf.calibration import Stage
from autoscaler.perf.online import (
    CalibrationReport,
    OnlineCalibration,
    calibrated_profiles,
    observe,
    scratch_prior,
)
from autoscaler.perf.profiles import default_profiles
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from tests.integration.test_vllm_signals import Engine
from tests.plugins.vllm import one_variant, scrape

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(900)]

REFERENCE = "llama-3.1-70b/a100-tp4"
# (prompt tokens, requests/s): light enough that the prior (which the utilisation check reads) calls each
# window lightly loaded, so its prefill-time mean is one prompt's prefill, not a shared forward pass.
LEARN = ((64, 3.0), (384, 2.0), (1792, 0.6))
FRESH = (1024, 1.0)  # between the learnt lengths, none of them: the fit must have the curve, not a point
ROUNDS = 2  # of the three learning blocks and one fresh block
WINDOW_S = 8
BLOCK_S = 22.0
"""A learning block: observed once a scrape (as the controller observes every cycle over a longer rate window)
from one window into it, so that every window holds this block's requests only: about 6 windows a block, 36 in
all. The fit blends with the prior by n / (n + 2): from a prior 4-5x off, 12 windows would leave the fit
40-60% slow on the prior's side, 36 leave about 15%."""
FRESH_S = 6.0  # after every learning block: 36 s of fresh requests in all
TTFT, PREFILL = "vllm:time_to_first_token_seconds", "vllm:request_prefill_time_seconds"


def mean_between(before: Engine, after: Engine, histogram: str) -> tuple[float, float]:
    """(sum, count) of ``histogram`` between two scrapes of the engine."""
    return (after.value(f"{histogram}_sum") - before.value(f"{histogram}_sum"),
            after.value(f"{histogram}_count") - before.value(f"{histogram}_count"))


def paced(url: str, tokens: int, rate: float, seconds: float, rng: random.Random) -> int:
    """Requests of ``tokens`` distinct random prompt tokens, one token out, started ``1/rate`` apart (one at a
    time: a slow response delays the next, so the engine never queues them). Returns how many were sent."""
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + sent / rate
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the load, not waiting for a condition
        completion(url, model="tiny", prompt=[rng.randrange(3, 2000) for _ in range(tokens)], max_tokens=1)
        sent += 1
    return sent


@dataclass
class Learnt:
    prior_s: float  # the prior's TTFT of a lone fresh prompt
    fitted_s: float  # the fitted profile's
    engine_s: float  # the engine's own TTFT: the median of the fresh blocks' means
    prefill_s: float  # and its prefill time, likewise (what the fit reads)
    report: CalibrationReport


@pytest.fixture(scope="module")
def learnt(vllm_module_stack) -> Learnt:  # type: ignore[no-untyped-def]
    stack = vllm_module_stack(one_variant("tiny-prefill", Role.PREFILL), {"tiny-prefill": 1})
    variant = stack.variants[0]
    instance = stack.pods.ready(variant)[0]
    spec = stack.spec_of(variant)
    prior = scratch_prior(model="tiny", accelerator="cpu", reference=default_profiles(environ={})[REFERENCE])
    source = PrometheusSignalSource(url=stack.prometheus.url, labels=LabelMap(), rate_window=f"{WINDOW_S}s",
                                    cycle=f"{WINDOW_S}s", staleness_s=30.0, warmup_s=0.0,
                                    timeout_s=30.0, budget_s=60.0)  # a loaded machine: every query answered
    rng = random.Random(0)
    for tokens, _ in (*LEARN, FRESH):  # first passes of each shape are slow (allocations, caches): not learnt
        for _ in range(3):
            completion(instance.url, model="tiny", prompt=[rng.randrange(3, 2000) for _ in range(tokens)],
                       max_tokens=1)

    state = OnlineCalibration()
    fresh: dict[str, list[float]] = {TTFT: [], PREFILL: []}  # each fresh block's mean
    requests = 0.0
    for _ in range(ROUNDS):
        for tokens, rate in LEARN:
            started = time.monotonic()
            errors: list[BaseException] = []

            def learn(tokens: int = tokens, rate: float = rate, errors: list[BaseException] = errors) -> None:
                try:
                    paced(instance.url, tokens, rate, BLOCK_S, rng)
                except Exception as exc:  # noqa: BLE001 - raised in the test below
                    errors.append(exc)
            load = threading.Thread(target=learn)
            load.start()
            while load.is_alive():
                stack.wait_for_scrape(pods=[instance.pod], after=time.time() + 0.1, timeout_s=60)
                if time.monotonic() - started < WINDOW_S + 1 or not load.is_alive():
                    continue  # the window still reaches into the block before (or past this one's end)
                at = source.server_time()
                signals = source.collect_all([spec], now=at).variants[spec]
                if not signals.calibration_ready:
                    continue  # no request finished in it (a stalled core): observe() would skip it too
                assert signals.prompt_tokens_mean == pytest.approx(tokens), "the window mixed two blocks"
                state = observe(state, profile=prior, role=Role.PREFILL, signals=signals, now=at)
            load.join()
            assert not errors, errors
            before = Engine(scrape(instance.url))
            paced(instance.url, FRESH[0], FRESH[1], FRESH_S, rng)
            after = Engine(scrape(instance.url))
            for histogram, means in fresh.items():
                total, count = mean_between(before, after, histogram)
                if count:
                    means.append(total / count)
            requests += mean_between(before, after, TTFT)[1]

    profiles, reports = calibrated_profiles(state, profiles={prior.name: prior})
    report = next(r for r in reports if r.stage is Stage.PREFILL)
    result = Learnt(prior_s=prior.prefill_time(FRESH[0]), fitted_s=profiles[prior.name].prefill_time(FRESH[0]),
                    engine_s=statistics.median(fresh[TTFT]), prefill_s=statistics.median(fresh[PREFILL]),
                    report=report)
    print(f"fresh level {FRESH[0]} tokens over {requests:.0f} requests in {len(fresh[TTFT])} blocks "
          f"(TTFT means {[round(m * 1e3, 1) for m in fresh[TTFT]]} ms): {result}")
    return result


def test_the_online_fit_from_a_gpu_profile_moves_the_predicted_ttft_most_of_the_way_to_the_cpu_engines(
        learnt: Learnt):
    assert learnt.report.applied and learnt.report.samples >= 24, learnt.report
    assert learnt.prior_s / learnt.engine_s > 2, "the prior is not far off: the test would not show the fit at work"
    # In log terms (a factor off either way counts the same): at most half the prior's error is left.
    assert abs(math.log(learnt.fitted_s / learnt.engine_s)) < 0.5 * abs(math.log(learnt.prior_s / learnt.engine_s))


def test_the_online_fit_from_a_gpu_profile_predicts_the_cpu_engines_ttft_at_a_fresh_load_within_25_percent(
        learnt: Learnt):
    assert learnt.fitted_s == pytest.approx(learnt.engine_s, rel=0.25)
