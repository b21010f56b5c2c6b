"""A real prefill/decode pair through a real KV connector (issue 15, test 2): each role's signals are its own,
and the decode pod's prompt tokens, which arrive by KV transfer, are read as not prefilled there.

The connector is vLLM's ExampleConnector (KV written to and read from a shared directory), which runs on CPU as
is. The client plays the routing proxy the way vLLM's disaggregation examples do: the prompt goes to the
prefill pod with ``max_tokens=1`` (its KV is saved), then to the decode pod (its KV is loaded, not computed).
"""

from __future__ import annotations

import math
import random
import threading
import time

import pytest

from autoscaler.core.types import Freshness, Role
from autoscaler.localstack.vllm import VllmVariant, completion
from autoscaler.signals.prometheus import PrometheusSignalSource
from autoscaler.signals.queries import LabelMap
from tests.integration.test_vllm_signals import Engine, wait_until
from tests.plugins.vllm import collect_until, scrape

# Engine start-ups (a minute or two each on a loaded 2-core machine) count against the test: more than the default.
pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(900)]

PROMPT, OUTPUT, REQUESTS, CLIENTS = 256, 16, 48, 3


def pair(shared: str):  # type: ignore[no-untyped-def]
    config = {"kv_connector": "ExampleConnector", "kv_role": "kv_both",
              "kv_connector_extra_config": {"shared_storage_path": shared}}

    def variants(ns: str) -> list[VllmVariant]:
        return [VllmVariant(namespace=ns, deployment=name, model="tiny", role=role, kv_transfer_config=config)
                for name, role in (("tiny-prefill", Role.PREFILL), ("tiny-decode", Role.DECODE))]
    return variants


def test_a_prefill_decode_pair_reads_each_role_apart_and_the_decode_pods_transferred_prompt_as_not_prefilled(
        vllm_stack, tmp_path):  # type: ignore[no-untyped-def]
    stack = vllm_stack(pair(str(tmp_path / "kv")), {"tiny-prefill": 1, "tiny-decode": 1})
    prefill_v, decode_v = stack.variants
    prefill, decode = stack.pods.ready(prefill_v)[0], stack.pods.ready(decode_v)[0]
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 2000) for _ in range(PROMPT)] for _ in range(REQUESTS)]  # distinct: no local hits
    errors: list[str] = []
    done: list[float] = []

    def client(mine: list[list[int]]) -> None:
        for prompt in mine:
            try:
                completion(prefill.url, model="tiny", prompt=prompt, max_tokens=1)
                out = completion(decode.url, model="tiny", prompt=prompt, max_tokens=OUTPUT)
                assert out["usage"]["completion_tokens"] == OUTPUT
                done.append(time.time())
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(f"{type(exc).__name__}: {exc}")

    started = time.time()
    threads = [threading.Thread(target=client, args=(prompts[i::CLIENTS],)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    assert len(done) == REQUESTS
    stack.wait_for_scrape(pods=[prefill.pod, decode.pod], after=time.time() + 0.1)
    # One rate window over the whole load, however long a loaded machine took to serve it (a minute or three),
    # evaluated at one instant: a window ending at each retry's now would slide past a load of seconds.
    at = float(stack.prometheus.query("time()")[0]["value"][1])
    window_s = math.ceil(at - started) + 30
    source = PrometheusSignalSource(url=stack.prometheus.url, labels=LabelMap(), rate_window=f"{window_s}s",
                                    cycle="10s", staleness_s=30.0, warmup_s=0.0,
                                    timeout_s=30.0, budget_s=60.0)  # a loaded machine: every query answered
    specs = [stack.spec_of(prefill_v), stack.spec_of(decode_v)]
    # Retried only for a query a crowded machine timed out. A prefill pod's requests have one token each, so no
    # inter-token latency: waiting for an ITL quantile there never ended, and every retry read a later window
    # (in 3 of 5 runs, one past the load: no request on the prefill pod).
    collected = collect_until(source, specs, lambda s: None not in (
        s.completions_per_s, s.generation_tokens_mean, s.prompt_tokens_mean, s.prefix_cache_hit_ratio), at=at)
    pre, dec = collected[specs[0]], collected[specs[1]]
    assert pre.freshness is Freshness.FRESH and dec.freshness is Freshness.FRESH, (pre.note, dec.note)

    # Each role's requests, tokens and mix are its own: one token out of prefill, the rest out of decode.
    assert pre.pods == dec.pods == 1
    assert pre.generation_tokens_mean == 1 and dec.generation_tokens_mean == OUTPUT
    assert pre.prompt_tokens_mean == dec.prompt_tokens_mean == PROMPT
    assert pre.completions_per_s > 0 and dec.completions_per_s > 0
    assert pre.ttft_p90_s is not None and dec.itl_p90_s is not None

    # The decode pod computed only the tail its connector could not supply; the engine's own counters agree.
    engine = Engine(scrape(decode.url))
    by_source = {s: engine.value("vllm:prompt_tokens_by_source_total", source=s)
                 for s in ("local_compute", "local_cache_hit", "external_kv_transfer")}
    assert by_source["external_kv_transfer"] > 0, by_source
    assert engine.value("vllm:prefix_cache_hits_total") < by_source["external_kv_transfer"], (
        "the local prefix-cache counter carries the transfer: the test would not tell the counters apart")
    skipped = (by_source["local_cache_hit"] + by_source["external_kv_transfer"]) / sum(by_source.values())
    assert dec.prefix_cache_hit_ratio == pytest.approx(skipped, rel=0.02)
    # The connector supplies whole KV blocks of all but the prompt's last token (ExampleConnector).
    block = int(next(s.labels["block_size"] for s in engine.samples if s.name == "vllm:cache_config_info"))
    assert dec.prefix_cache_hit_ratio == pytest.approx((PROMPT - 1) // block * block / PROMPT, rel=0.02)
    assert pre.prefix_cache_hit_ratio == pytest.approx(0.0, abs=0.05)
    # Nothing of the pair's waiting is a capacity queue once the load is over.
    wait_until(lambda: source.collect_all(specs, now=time.time()).variants[specs[1]].waiting == 0,
               timeout_s=30, what="the decode queue to read empty")
