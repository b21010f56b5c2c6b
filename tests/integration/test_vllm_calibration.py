"""Calibration against the real engine (issue 15, test 4): from the profile of a GPU model, far off for the CPU
toy, the online fit learns the CPU engine well enough to predict its TTFT at a load it never saw.

One CPU vLLM instance in the prefill role. The prior is what a model without a profile is learnt from
(:func:`autoscaler.perf.online.scratch_prior`), shaped on Llama-3.1-70B on four A100s: it puts a lone prompt's
prefill at 4-5x what the toy takes. The fit reads the real signals through the real Prometheus: light-load
windows of prompts of three lengths (the prefill-time path of :func:`prefill_observation`, so a few requests a
second), one length per window so that the windows span the prefill model's terms. The fresh level is prompts of
a length the fit never saw; a lone prompt's predicted TTFT is the fitted ``a + b*N + c*N^2`` (no queue at that
rate), and what the engine measures is its own TTFT histogram's mean over those requests.

The machine is shared (2 cores, other suites beside): the engine's speed drifts by 2x over minutes. Learning
and fresh blocks therefore alternate, so that both see the same drift, and the comparison is with what the
engine measured over the very requests of the fresh level, never with a wall-clock expectation.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from autoscaler.core.types import Role
from autoscaler.localstack.vllm import completion
from autoscaler.perf.calibration import Stage
from autoscaler.perf.online import OnlineCalibration, calibrated_profiles, observe, scratch_prior
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
FRESH_S = 12.0
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
        time.sleep(max(0.0, due - time.monotonic()))  # noqa: pacing the load, not waiting for a condition
        completion(url, model="tiny", prompt=[rng.randrange(3, 2000) for _ in range(tokens)], max_tokens=1)
        sent += 1
    return sent


def test_the_online_fit_from_a_gpu_profile_predicts_the_cpu_engines_ttft_at_a_fresh_load_within_25_percent(
        vllm_stack):  # type: ignore[no-untyped-def]
    stack = vllm_stack(one_variant("tiny-prefill", Role.PREFILL), {"tiny-prefill": 1})
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
    fresh: dict[str, list[float]] = {TTFT: [0.0, 0.0], PREFILL: [0.0, 0.0]}  # sum, count
    for _ in range(ROUNDS):
        for tokens, rate in LEARN:
            started = time.monotonic()
            errors: list[BaseException] = []

            def learn(tokens: int = tokens, rate: float = rate) -> None:
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
                assert signals.calibration_ready, signals.note
                assert signals.prompt_tokens_mean == pytest.approx(tokens), "the window mixed two blocks"
                state = observe(state, profile=prior, role=Role.PREFILL, signals=signals, now=at)
            load.join()
            assert not errors, errors
        before = Engine(scrape(instance.url))
        paced(instance.url, FRESH[0], FRESH[1], FRESH_S, rng)
        after = Engine(scrape(instance.url))
        for histogram, acc in fresh.items():
            total, count = mean_between(before, after, histogram)
            acc[0] += total
            acc[1] += count

    profiles, reports = calibrated_profiles(state, profiles={prior.name: prior})
    fitted = profiles[prior.name]
    report = next(r for r in reports if r.stage is Stage.PREFILL)
    measured, prefill = fresh[TTFT][0] / fresh[TTFT][1], fresh[PREFILL][0] / fresh[PREFILL][1]
    predicted, guessed = fitted.prefill_time(FRESH[0]), prior.prefill_time(FRESH[0])
    print(f"fresh level {FRESH[0]} tokens: engine TTFT {measured * 1e3:.1f} ms, prefill {prefill * 1e3:.1f} ms "
          f"over {fresh[TTFT][1]:.0f} requests; fitted {predicted * 1e3:.1f} ms, prior {guessed * 1e3:.1f} ms; "
          f"{report}")
    assert report.applied and report.samples >= 24, report
    assert guessed / measured > 2, "the prior is not far off: the test would not show the fit at work"
    assert predicted == pytest.approx(measured, rel=0.25)
