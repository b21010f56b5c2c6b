"""Signals read through a real Prometheus scraping the vLLM emulator: values, legacy names, vanished pods."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest

from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.emulator import EmulatedVariant, Emulator, constant_load
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.signals.histogram import quantile
from autoscaler.signals.parse import parse_buckets
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap, quantile_query
from tests.plugins.prometheus import EmulatedStack, wall_clock

pytestmark = pytest.mark.integration

PROFILE = PerformanceProfile(
    name="test-8b-h100", model="test-8b", accelerator="H100", gpus_per_replica=1,
    prefill_a=0.01, prefill_b=1e-4, prefill_c=1e-9,
    decode_alpha=0.008, decode_beta=1e-4, decode_gamma=2e-8,
    kv_capacity_tokens=200_000, startup_s=5.0,
)
PROMPT, OUTPUT = 1024, 256


def variant(deployment: str, *, role: Role, rate: float, namespace: str = "team-a", hit_rate: float = 0.0,
            seed: int = 0) -> EmulatedVariant:
    # length_sigma=0: every request has exactly the mean lengths, so the mix read back is exact.
    return EmulatedVariant(namespace=namespace, deployment=deployment, model="llama-8b", role=role,
                           accelerator="H100", profile=PROFILE, load=constant_load(rate),
                           mean_prompt_tokens=PROMPT, mean_output_tokens=OUTPUT, length_sigma=0.0,
                           prefix_cache_hit_rate=hit_rate, seed=seed)


def spec_of(v: EmulatedVariant) -> VariantSpec:
    return VariantSpec(ref=VariantRef(v.namespace, v.deployment), model=v.model, role=v.role,
                       accelerator=v.accelerator, target=ScaleTarget("apps/v1", "Deployment", v.deployment))


def source_for(stack: EmulatedStack, **kwargs: object) -> PrometheusSignalSource:
    # Gauges are compared with the frozen emulator's: a cycle shorter than the 1 s scrape interval holds at most
    # the newest sample (else the latest one is read), so the smoothing sees only the frozen values.
    kwargs = {"rate_window": "10s", "cycle": "500ms", "staleness_s": 30.0, **kwargs}
    return PrometheusSignalSource(url=stack.prometheus.url, labels=LabelMap(), **kwargs)  # type: ignore[arg-type]


def run_live(emulator: Emulator, seconds: float, dt: float = 0.1) -> None:
    """Advance the emulator in step with the wall clock, so that Prometheus sees real rates."""
    end = last = time.monotonic()
    end += seconds
    while (now := time.monotonic()) < end:
        time.sleep(dt)
        now = time.monotonic()
        emulator.step(now - last)
        last = now


def pods_of(emulator: Emulator, v: EmulatedVariant) -> list:
    return [p for p in emulator.pods() if p.deployment == v.deployment and p.namespace == v.namespace and p.ready]


def test_values_read_back_through_prometheus_match_the_emulator(emulated_stack: Callable[..., EmulatedStack]):
    pre = variant("pre", role=Role.PREFILL, rate=8.0, hit_rate=0.5)
    dec = variant("dec", role=Role.DECODE, rate=0.0, seed=1)
    quiet = variant("quiet", role=Role.BOTH, rate=0.0, namespace="team-b", seed=2)
    stack = emulated_stack(variants=[pre, dec, quiet], replicas={"pre": 1, "dec": 2, "quiet": 1})
    source = source_for(stack, warmup_s=120.0)
    run_live(stack.emulator, 12.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())  # the emulator is frozen from here on

    collection = source.collect_all([spec_of(pre), spec_of(dec), spec_of(quiet)], now=wall_clock())
    assert collection.stats.queries == len(source.queries) + 1 and collection.stats.failed == 0  # + time()
    for v in (pre, dec):
        sig, pods = collection.variants[spec_of(v)], pods_of(stack.emulator, v)
        assert sig.freshness is Freshness.FRESH, sig.note
        assert sig.pods == len(pods) and sig.warming_pods == tuple(sorted(p.pod for p in pods))
        assert sig.waiting == sum(p.stats.waiting for p in pods)
        assert sig.running == sum(p.stats.running for p in pods)
        assert math.isclose(sig.kv_usage_mean, sum(p.stats.kv_usage for p in pods) / len(pods), abs_tol=1e-12)
        assert math.isclose(sig.kv_usage_max, max(p.stats.kv_usage for p in pods), abs_tol=1e-12)
        assert math.isclose(sig.prompt_tokens_mean, PROMPT)  # rate(_sum)/rate(_count): exact whatever the window
        assert 1000 < sig.prompt_tokens_p90 <= 2000  # histogram_quantile inside the 1-2-5 bucket holding 1024
        assert 0.3 * 8.0 < sig.completions_per_s < 1.7 * 8.0
        assert sig.prompt_tokens_per_s > 0 and sig.generation_tokens_per_s > 0

    prefill = collection.variants[spec_of(pre)]
    assert math.isclose(prefill.prefix_cache_hit_ratio, 0.5)  # hits are whole blocks: 512 of 1024
    ttft = [value for _, value in prefill.ttft_quantiles_s]
    assert len(ttft) == 3 and ttft == sorted(ttft) and prefill.ttft_p90_s == ttft[1]
    decode = collection.variants[spec_of(dec)]
    assert 1 <= decode.generation_tokens_mean <= OUTPUT and decode.itl_p90_s is not None
    assert decode.prefix_cache_hit_ratio == 0.0  # decode pods look nothing up: 0/0 reads as no discount

    idle = collection.variants[spec_of(quiet)]  # zero traffic: zero demand, fresh (Dynamo #6985)
    assert idle.freshness is Freshness.FRESH and idle.idle
    assert (idle.completions_per_s, idle.prompt_tokens_mean, idle.prompt_tokens_p90) == (0.0, 0.0, 0.0)

    model = collection.models[("team-a", "llama-8b", "decode")]
    assert (model.waiting, model.pods, model.prompt_tokens_mean) == (decode.waiting, 2, decode.prompt_tokens_mean)

    # Quantiles computed from bucket rates equal Prometheus's own histogram_quantile on the same data.
    at, plan = source.server_time(), source.plan
    compared = 0
    for metric, q in [("ttft", 0.5), ("ttft", 0.99), ("itl", 0.9), ("prompt_len", 0.9), ("generation_len", 0.5)]:
        theirs = source.query(quantile_query(metric, q)(plan, plan.labels.variant_labels), at=at)
        buckets = parse_buckets(source.query(source.queries[f"{metric}_buckets"], at=at), key_of=plan.labels.key_of)
        for s in theirs:
            expected = float(s["value"][1])
            ours = quantile(q, buckets.get(plan.labels.key_of(s["metric"]), {}))
            assert (ours is None) if math.isnan(expected) else math.isclose(ours, expected, rel_tol=1e-9)
            compared += not math.isnan(expected)
    assert compared >= 8

    end = wall_clock()
    history = source.history([spec_of(pre)], start=end - 8, end=end, step=2)[spec_of(pre)]
    assert len(history) == 5 and all(r is not None and r > 0 for r in history.completions_per_s[-3:])
    assert all(m is None or math.isclose(m, PROMPT) for m in history.prompt_tokens_mean)
    assert history.prompt_tokens_mean[-1] is not None  # points before the first scrapes may be unknown


@pytest.mark.parametrize("names", ["legacy", "auto", "v1"])
def test_legacy_and_current_names_read_the_same_values(emulated_stack: Callable[..., EmulatedStack], names: str):
    dec = variant("both", role=Role.BOTH, rate=6.0)
    stack = emulated_stack(variants=[dec], replicas={"both": 2}, legacy_names=True)
    run_live(stack.emulator, 8.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())
    source = source_for(stack, metric_names=names)

    def complete() -> object:
        # The ITL bucket query is among the last a collection sends; on a loaded machine (about 1 s an answer)
        # the collection budget can skip it. The emulator is frozen, so the next collection reads the same.
        sig = source.collect([spec_of(dec)], now=wall_clock())[spec_of(dec)]
        return sig if sig.freshness is Freshness.FRESH and sig.itl_p90_s is not None else None

    sig = stack.wait_until(complete, timeout_s=60, what="a fresh collection with the ITL p90")
    pods = pods_of(stack.emulator, dec)
    assert math.isclose(sig.kv_usage_mean, sum(p.stats.kv_usage for p in pods) / len(pods), abs_tol=1e-12)
    assert sig.itl_p90_s is not None and sig.itl_p90_s > 0
    # Pods exporting both names are counted once: ``or`` keeps one series per label set.
    engines = stack.prometheus.query(source.queries["kv_engines"])
    assert [float(s["value"][1]) for s in engines] == [2.0]


def test_a_vanished_pod_does_not_break_collection_for_its_variant(emulated_stack: Callable[..., EmulatedStack]):
    """AIBrix #617: one pod going away must not fail the whole variant's read."""
    dec = variant("dec", role=Role.BOTH, rate=10.0)
    other = variant("other", role=Role.BOTH, rate=2.0, namespace="team-b", seed=3)
    stack = emulated_stack(variants=[dec, other], replicas={"dec": 3, "other": 1})
    source = source_for(stack, warmup_s=0.0)
    run_live(stack.emulator, 6.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())
    before = source.collect([spec_of(dec), spec_of(other)], now=wall_clock())
    assert before[spec_of(dec)].pods == 3 and before[spec_of(dec)].freshness is Freshness.FRESH

    stack.replicas["dec"] = 2
    stack.emulator.sync_replicas()
    run_live(stack.emulator, 1.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())  # the removed pod's series have gone stale
    after = source.collect([spec_of(dec), spec_of(other)], now=wall_clock())
    pods = pods_of(stack.emulator, dec)
    sig = after[spec_of(dec)]
    assert sig.freshness is Freshness.FRESH and sig.pods == 2, sig.note
    assert sig.warm_pods == tuple(sorted(p.pod for p in pods))
    assert sig.waiting == sum(p.stats.waiting for p in pods) and sig.completions_per_s > 0
    assert after[spec_of(other)].freshness is Freshness.FRESH


def test_underscore_names_of_an_openmetrics_exposition_are_read_in_auto_mode(
        emulated_stack: Callable[..., EmulatedStack]):
    """prometheus/client_python#1177: asked for OpenMetrics, prometheus-client writes ``vllm_...``."""
    both = variant("both", role=Role.BOTH, rate=6.0)
    stack = emulated_stack(variants=[both], replicas={"both": 2}, openmetrics=True)
    run_live(stack.emulator, 8.0)
    stack.prometheus.wait_for_series("timestamp(vllm_num_requests_waiting)", until=lambda r: len(r) == 2)
    assert stack.prometheus.query("vllm:num_requests_waiting") == []  # only the renamed spelling is stored
    pods = pods_of(stack.emulator, both)

    read = {names: source_for(stack, metric_names=names, warmup_s=0.0).collect([spec_of(both)], now=wall_clock())
            [spec_of(both)] for names in ("auto", "v1")}

    sig = read["auto"]
    assert sig.freshness is Freshness.FRESH and sig.pods == 2 and sig.calibration_ready, sig.note
    assert math.isclose(sig.kv_usage_mean, sum(p.stats.kv_usage for p in pods) / len(pods), abs_tol=0.05)
    assert sig.itl_mean_s is not None and sig.completions_per_s > 0
    assert read["v1"].freshness is Freshness.MISSING  # the strict switch does not guess
