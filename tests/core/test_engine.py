"""The vLLM replica model: queueing, batching, KV-cache pressure, roles, determinism."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.types import Role
from autoscaler.perf.engine import Completion, Engine, FinishReason, Request
from autoscaler.perf.profile import PerformanceProfile

PROFILE = PerformanceProfile(
    name="test-8b-h100", model="test-8b", accelerator="H100", gpus_per_replica=1,
    prefill_a=0.01, prefill_b=1e-4, prefill_c=1e-9,
    decode_alpha=0.008, decode_beta=1e-4, decode_gamma=2e-8,
    kv_capacity_tokens=200_000, max_num_seqs=64, max_num_batched_tokens=4096,
)


def poisson_requests(*, rate: float, duration_s: float, seed: int, prompt: int = 800, output: int = 200,
                     first_id: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / rate, size=int(rate * duration_s * 2)))
    times = times[times < duration_s]
    prompts = rng.integers(prompt // 2, prompt * 3 // 2, times.size)
    outputs = rng.integers(output // 2, output * 3 // 2, times.size)
    return [Request(id=first_id + i, prompt_tokens=int(p), output_tokens=int(o), arrival_s=float(t))
            for i, (t, p, o) in enumerate(zip(times, prompts, outputs))]


def run(engine: Engine, requests: list[Request], *, duration_s: float, dt: float = 0.5
        ) -> tuple[list[Completion], list[int]]:
    """Submit everything up front (future arrivals wait), advance, and sample the queue every ``dt``."""
    for r in requests:
        engine.submit(r)
    done: list[Completion] = []
    waiting: list[int] = []
    for _ in range(int(duration_s / dt)):
        done += engine.advance(dt)
        waiting.append(engine.snapshot().waiting)
    return done, waiting


def engine(role: Role = Role.BOTH, profile: PerformanceProfile = PROFILE, **kwargs: Any) -> Engine:
    return Engine(profile=profile, role=role, **kwargs)


# ---------------------------------------------------------------------------------------------- load


def test_queue_grows_with_offered_load() -> None:
    mean_queue = {}
    for rate in (2.0, 12.0):
        _, waiting = run(engine(), poisson_requests(rate=rate, duration_s=60, seed=1), duration_s=60)
        mean_queue[rate] = float(np.mean(waiting))
    assert mean_queue[12.0] > 10 * max(mean_queue[2.0], 0.1), mean_queue


def test_splitting_load_over_more_replicas_shortens_each_queue() -> None:
    requests = poisson_requests(rate=10.0, duration_s=60, seed=2)
    _, alone = run(engine(), requests, duration_s=60)
    halves = [requests[0::2], requests[1::2]]
    shared = [run(engine(), half, duration_s=60)[1] for half in halves]
    assert max(np.mean(w) for w in shared) < 0.5 * np.mean(alone), (np.mean(alone), [np.mean(w) for w in shared])


def test_light_load_finishes_every_request_and_counts_its_tokens() -> None:
    requests = poisson_requests(rate=1.0, duration_s=20, seed=3)
    e = engine()
    done, _ = run(e, requests, duration_s=60)
    stats = e.snapshot()
    assert sorted(c.request.id for c in done) == [r.id for r in requests]
    assert stats.successes_total == len(requests)
    assert stats.prompt_tokens_total == sum(r.prompt_tokens for r in requests)
    assert stats.generation_tokens_total == sum(r.output_tokens for r in requests)
    assert (stats.waiting, stats.running, stats.kv_blocks_used) == (0, 0, 0)
    assert all(c.finished_reason is FinishReason.STOP and c.generated_tokens == c.request.output_tokens
               for c in done)


# ---------------------------------------------------------------------------------------------- KV cache


def test_kv_saturation_queues_requests_and_counts_preemptions() -> None:
    small = dataclasses.replace(PROFILE, kv_capacity_tokens=16_000, max_num_seqs=256)
    e = engine(profile=small)
    # Long outputs: admitted sequences keep growing until the cache is full and someone must give way.
    requests = [Request(id=i, prompt_tokens=1000, output_tokens=3000, arrival_s=0.1 * i) for i in range(40)]
    _, waiting = run(e, requests, duration_s=20, dt=0.25)
    stats = e.snapshot()
    assert stats.preemptions_total > 0
    assert max(waiting) >= 30
    assert stats.kv_usage > 0.9
    assert stats.running <= small.kv_capacity_tokens // 1000


def test_kv_usage_never_leaves_zero_to_one_and_running_respects_max_num_seqs() -> None:
    tight = dataclasses.replace(PROFILE, kv_capacity_tokens=40_000, max_num_seqs=8)
    e = engine(profile=tight)
    for r in poisson_requests(rate=8.0, duration_s=30, seed=4, prompt=1500, output=800):
        e.submit(r)
    for _ in range(120):
        e.advance(0.25)
        s = e.snapshot()
        assert 0.0 <= s.kv_usage <= 1.0
        assert s.kv_blocks_used <= s.kv_blocks_total
        assert s.running <= tight.max_num_seqs


# ---------------------------------------------------------------------------------------------- latency


@pytest.mark.parametrize("shorter, longer", [
    pytest.param(100, 1_000, id="100-vs-1k"),
    pytest.param(1_000, 4_000, id="1k-vs-4k-one-chunk"),
    pytest.param(4_000, 16_000, id="4k-vs-16k-chunked"),
])
def test_ttft_grows_with_prompt_length(shorter: int, longer: int) -> None:
    ttft = {}
    for prompt in (shorter, longer):
        e = engine()
        e.submit(Request(id=0, prompt_tokens=prompt, output_tokens=10, arrival_s=0.0))
        (done,) = e.advance(30.0)
        ttft[prompt] = done.ttft_s
    assert ttft[longer] > ttft[shorter] > 0


def test_ttft_of_an_idle_engine_is_the_profile_prefill_time() -> None:
    e = engine()
    e.submit(Request(id=0, prompt_tokens=2000, output_tokens=5, arrival_s=1.5))
    (done,) = e.advance(10.0)
    assert done.ttft_s == pytest.approx(PROFILE.prefill_time(2000))
    assert done.first_token_s == pytest.approx(1.5 + PROFILE.prefill_time(2000))


def test_inter_token_latency_grows_with_batch_size() -> None:
    itl = {}
    for batch in (1, 32):
        e = engine(record_latencies=True)
        for i in range(batch):
            e.submit(Request(id=i, prompt_tokens=500, output_tokens=100, arrival_s=0.0))
        e.advance(30.0)
        obs = e.drain_latencies()
        itl[batch] = float(np.average(obs.itl_s, weights=obs.itl_count))
        assert int(obs.itl_count.sum()) == batch * 99  # every token after the first has one
        assert obs.ttft_s.size == batch
    assert itl[32] > itl[1] >= PROFILE.decode_step_time(1, 500)


def test_advancing_in_small_or_large_windows_gives_the_same_completions() -> None:
    requests = poisson_requests(rate=4.0, duration_s=20, seed=5)
    results = []
    for dt in (0.01, 0.1, 5.0):
        done, _ = run(engine(), requests, duration_s=40, dt=dt)
        results.append({c.request.id: c.finish_s for c in done})
    assert results[0].keys() == results[1].keys() == results[2].keys()
    for other in results[1:]:
        assert max(abs(other[k] - results[0][k]) for k in results[0]) < 1e-6


def test_same_inputs_give_the_same_results() -> None:
    requests = poisson_requests(rate=9.0, duration_s=30, seed=6)
    first = run(engine(), requests, duration_s=30)
    second = run(engine(), requests, duration_s=30)
    assert first == second


# ---------------------------------------------------------------------------------------------- roles


def test_prefill_only_engine_finishes_each_request_after_its_first_token() -> None:
    e = engine(Role.PREFILL)
    requests = [Request(id=i, prompt_tokens=1000, output_tokens=500, arrival_s=0.0) for i in range(5)]
    done, _ = run(e, requests, duration_s=5)
    assert len(done) == 5
    assert all(c.generated_tokens == 1 and c.finished_reason is FinishReason.LENGTH for c in done)
    assert all(c.e2e_s == c.ttft_s for c in done)
    assert e.snapshot().generation_tokens_total == 5


def test_decode_only_engine_starts_from_the_prefilled_context() -> None:
    prompt = 16_000  # would take seconds to prefill here
    e = engine(Role.DECODE)
    e.submit(Request(id=0, prompt_tokens=prompt, output_tokens=20, arrival_s=0.0))
    (done,) = e.advance(10.0)
    assert done.ttft_s == pytest.approx(PROFILE.decode_step_time(1, prompt))
    assert done.ttft_s < PROFILE.prefill_time(prompt) / 10
    assert done.generated_tokens == 20
    assert e.snapshot().prompt_tokens_total == prompt  # vLLM counts the prompt once, at the first token


def test_prefix_cache_hits_shorten_prefill_and_are_counted() -> None:
    ttft = {}
    for rate in (0.0, 0.75):
        e = engine(prefix_cache_hit_rate=rate)
        e.submit(Request(id=0, prompt_tokens=3200, output_tokens=2, arrival_s=0.0))
        (done,) = e.advance(5.0)
        ttft[rate] = done.ttft_s
        stats = e.snapshot()
        assert stats.prefix_cache_queries_total == (3200 if rate else 0)
        assert stats.prefix_cache_hits_total == (2400 if rate else 0)
    assert ttft[0.75] < ttft[0.0]


def test_evicting_hands_back_every_unfinished_request_and_frees_the_cache() -> None:
    e = engine()
    requests = poisson_requests(rate=20.0, duration_s=5, seed=7)
    done, _ = run(e, requests, duration_s=3)
    evicted = e.evict_all()
    assert sorted([r.id for r in evicted] + [c.request.id for c in done]) == [r.id for r in requests]
    stats = e.snapshot()
    assert (stats.waiting, stats.running, stats.kv_blocks_used) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fields, message", [
    pytest.param({"prompt_tokens": 0}, "prompt_tokens", id="empty-prompt"),
    pytest.param({"output_tokens": 0}, "output_tokens", id="no-output"),
    pytest.param({"arrival_s": float("nan")}, "arrival_s", id="nan-arrival"),
])
def test_rejects_a_malformed_request_naming_the_field(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"id": 1, "prompt_tokens": 10, "output_tokens": 10, "arrival_s": 0.0}
    with pytest.raises(ValueError, match=message):
        Request(**{**base, **fields})  # type: ignore[arg-type]


def test_rejects_a_request_that_can_never_fit_in_the_kv_cache() -> None:
    e = engine(profile=dataclasses.replace(PROFILE, kv_capacity_tokens=4096))
    with pytest.raises(ValueError, match="request 9: 5000 tokens can never fit"):
        e.submit(Request(id=9, prompt_tokens=3000, output_tokens=2000, arrival_s=0.0))


@pytest.mark.parametrize("kwargs, message", [
    pytest.param({"block_size": 0}, "block_size", id="block-size"),
    pytest.param({"prefix_cache_hit_rate": 1.0}, "prefix_cache_hit_rate", id="hit-rate"),
    pytest.param({"profile": dataclasses.replace(PROFILE, kv_capacity_tokens=8)}, "kv_capacity_tokens",
                 id="tiny-cache"),
    pytest.param({"profile": dataclasses.replace(PROFILE, max_num_seqs=0)}, "max_num_seqs", id="no-seqs"),
])
def test_rejects_bad_engine_settings_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine(**kwargs)


@pytest.mark.parametrize("dt", [pytest.param(-1.0, id="negative"), pytest.param(float("inf"), id="infinite")])
def test_rejects_a_bad_time_step(dt: float) -> None:
    with pytest.raises(ValueError, match="dt must be"):
        engine().advance(dt)


# ---------------------------------------------------------------------------------------------- invariants


@settings(max_examples=40, deadline=None)
@given(
    role=st.sampled_from(list(Role)),
    kv_blocks=st.integers(min_value=40, max_value=400),
    max_num_seqs=st.integers(min_value=1, max_value=16),
    budget=st.integers(min_value=64, max_value=2048),
    requests=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300), st.floats(0, 5)), min_size=1,
                      max_size=40),
    dt=st.sampled_from([0.01, 0.3, 2.0]),
)
def test_no_request_is_lost_and_the_cache_never_overflows(
    role: Role, kv_blocks: int, max_num_seqs: int, budget: int, requests: list[tuple[int, int, float]],
    dt: float,
) -> None:
    profile = dataclasses.replace(PROFILE, kv_capacity_tokens=kv_blocks * 16, max_num_seqs=max_num_seqs,
                                  max_num_batched_tokens=budget)
    e = engine(role, profile=profile)
    submitted = [Request(id=i, prompt_tokens=p, output_tokens=o, arrival_s=t)
                 for i, (p, o, t) in enumerate(requests)]
    for r in submitted:
        e.submit(r)
    done: list[Completion] = []
    for _ in range(int(10 / dt)):
        done += e.advance(dt)
        s = e.snapshot()
        assert s.kv_blocks_used <= s.kv_blocks_total and s.running <= max_num_seqs
    left = e.evict_all()
    assert sorted([c.request.id for c in done] + [r.id for r in left]) == list(range(len(submitted)))
    expected_tokens = 1 if role is Role.PREFILL else None
    for c in done:
        assert c.generated_tokens == (expected_tokens or c.request.output_tokens)
        assert c.request.arrival_s <= c.first_token_s <= c.finish_s
    assert e.snapshot().successes_total == len(done)
