"""One full signal collection for 1,000 variants over 3,000 emulated vLLM pods scraped by a real Prometheus.

    python benchmarks/bench_collection.py [--variants 1000] [--pods-per-variant 3] [--repeat 5] [--recorded]

The pods are served by a light exporter in a child process (one HTTP server, one metrics path per pod, each a
distinct Prometheus target with its own ``pod`` label): the emulator's per-pod engines and servers would cost
more than the thing measured. Every pod serves the vLLM v1 series the collector reads (gauges, counters,
the TTFT/ITL/prompt/generation histograms with vLLM's buckets), with counters that grow, so rates are real.

Prints the collection time (first and steady-state), the number of queries, and the controller process's peak
RSS (``resource.getrusage``: the exporter and Prometheus run in other processes). Bounded: it gives up if the
targets are not all up within --setup-timeout seconds.

The collector runs with the shipped defaults (``prometheus.timeout_s`` 5 s, ``heavy_timeout_s`` 10 s,
``collect_budget_s`` 10 s) unless told otherwise, so a query that would time out in production fails here too.
``--recorded`` loads the recording rules of :mod:`autoscaler.signals.rules` into Prometheus and reads the
recorded series (``prometheus.recording_rules: true``); the rules' own evaluation time is printed as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

NAMESPACES = 10
ACCELERATORS = ("H100", "A100")
ROLES = ("prefill", "decode")
# vLLM's buckets (vllm/v1/metrics/loggers.py); token buckets are the 1-2-5 series up to max_model_len 8192.
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
        40.0, 80.0, 160.0, 640.0, 2560.0)
ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
           960.0, 1920.0, 7680.0)


def variant_keys(n: int) -> list[tuple[str, str, str, str]]:
    """(namespace, model, role, accelerator) for n variants."""
    models = max(1, n // (NAMESPACES * len(ROLES) * len(ACCELERATORS)))
    keys = [(f"ns-{i}", f"model-{m}", role, acc) for i in range(NAMESPACES) for m in range(models)
            for role in ROLES for acc in ACCELERATORS]
    return keys[:n]


# --------------------------------------------------------------------------------------- exporter (child)

def _histogram(name: str, labels: str, bounds: tuple[float, ...], count: int, mean: float, mode: int) -> list[str]:
    # Observations spread around bucket ``mode``: cumulative counts rise to ``count`` at +Inf.
    out, cumulative = [], 0
    share = {mode - 1: 0.2, mode: 0.6, mode + 1: 0.2}
    for i, bound in enumerate(bounds):
        cumulative += int(count * share.get(i, 0.0))
        out.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {min(cumulative, count)}')
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    out.append(f"{name}_sum{{{labels}}} {count * mean:.6g}")
    out.append(f"{name}_count{{{labels}}} {count}")
    return out


def _render(pod: int, model: str, started: float) -> bytes:
    rng = random.Random(pod)
    rate = 0.5 + rng.random() * 4  # finished requests/s of this pod
    done = int(rate * (time.time() - started)) + 1000
    labels = f'model_name="{model}",engine="0"'
    lines = [
        f"vllm:num_requests_waiting{{{labels}}} {rng.randint(0, 8)}",
        f"vllm:num_requests_running{{{labels}}} {rng.randint(1, 64)}",
        f"vllm:kv_cache_usage_perc{{{labels}}} {rng.random():.4f}",
        f"vllm:prompt_tokens_total{{{labels}}} {done * 900}",
        f"vllm:generation_tokens_total{{{labels}}} {done * 200}",
        f"vllm:num_preemptions_total{{{labels}}} {done // 100}",
        f"vllm:prefix_cache_queries_total{{{labels}}} {done * 900}",
        f"vllm:prefix_cache_hits_total{{{labels}}} {done * 300}",
        *(f'vllm:request_success_total{{{labels},finished_reason="{r}"}} {done if r == "stop" else 0}'
          for r in ("stop", "length", "abort")),
        *_histogram("vllm:time_to_first_token_seconds", labels, TTFT, done, 0.3, 8),
        *_histogram("vllm:inter_token_latency_seconds", labels, ITL, done * 200, 0.03, 2),
        *_histogram("vllm:request_prompt_tokens", labels, TOKENS, done, 900.0, 9),
        *_histogram("vllm:request_generation_tokens", labels, TOKENS, done, 200.0, 7),
        *_histogram("vllm:request_prefill_time_seconds", labels, LATENCY, done, 0.2, 2),
        f"process_start_time_seconds {started - 3600}",
    ]
    return ("\n".join(lines) + "\n").encode()


def serve(models: list[str], refresh_s: float, ready: Event, port: Synchronized, stop: Event) -> None:
    """Serve ``/metrics/<pod>`` for every pod from one asyncio server (keep-alive, as Prometheus scrapes).

    Bodies are rendered at most once per ``refresh_s``: the exporter should cost little next to Prometheus,
    with which it shares the machine.
    """
    started = time.time()
    cache: dict[int, tuple[float, bytes]] = {}
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n"

    def body(pod: int) -> bytes:
        now = time.time()
        cached = cache.get(pod)
        if cached is None or now - cached[0] > refresh_s:
            cached = cache[pod] = (now, _render(pod, models[pod], started))
        return cached[1]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                data = body(int(line.split()[1].rsplit(b"/", 1)[-1]))
                writer.write(head % len(data) + data)
                await writer.drain()
        except (ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        server.close()

    asyncio.run(main())


# --------------------------------------------------------------------------------------- benchmark (parent)

def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=1000)
    parser.add_argument("--pods-per-variant", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="collections after the first one")
    parser.add_argument("--parallel", type=int, default=2, help="queries in flight (prometheus.max_parallel_queries)")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="seconds (Prometheus's default)")
    parser.add_argument("--setup-timeout", type=float, default=150.0, help="seconds to get every target up")
    parser.add_argument("--recorded", action="store_true", help="read recording rules (prometheus.recording_rules)")
    parser.add_argument("--timeout", type=float, default=5.0, help="prometheus.timeout_s")
    parser.add_argument("--heavy-timeout", type=float, default=10.0, help="prometheus.heavy_timeout_s")
    parser.add_argument("--budget", type=float, default=10.0, help="prometheus.collect_budget_s")
    args = parser.parse_args()

    from autoscaler.core.types import Freshness, Role, ScaleTarget, VariantRef, VariantSpec
    from autoscaler.errors import SignalError
    from autoscaler.localstack.prometheus import PrometheusServer
    from autoscaler.logs import configure_logging
    from autoscaler.signals.history import history_queries
    from autoscaler.signals.prometheus import PrometheusSignalSource
    from autoscaler.signals.queries import LabelMap, QueryPlan
    from autoscaler.signals.rules import GROUP_NAME, rule_file

    configure_logging(level="error", fmt="console")
    keys = variant_keys(args.variants)
    pods = [(key, i) for key in keys for i in range(args.pods_per_variant)]
    baseline = rss_mib()

    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    port = ctx.Value("i", 0)
    exporter = ctx.Process(target=serve, args=([k[1] for k, _ in pods], args.scrape_interval / 2, ready, port, stop),
                           daemon=True)
    exporter.start()
    if not ready.wait(30):
        print("exporter did not start", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-collection-"))
    targets = [{"targets": [f"127.0.0.1:{port.value}"],
                "labels": {"__metrics_path__": f"/metrics/{n}", "namespace": key[0], "role": key[2],
                           "accelerator": key[3], "pod": f"{key[1]}-{key[2]}-{key[3]}-{i}"}}
               for n, (key, i) in enumerate(pods)]
    (workdir / "targets.json").write_text(json.dumps(targets))
    rules = []
    if args.recorded:  # JSON is YAML
        rules.append(workdir / "rules.yaml")
        rules[0].write_text(json.dumps(rule_file(QueryPlan(labels=LabelMap(), window="1m"))))

    prometheus = PrometheusServer(file_sd_path=workdir / "targets.json", scrape_interval_s=args.scrape_interval,
                                  rule_files=rules)
    try:
        t0 = time.monotonic()
        prometheus.start()
        say(f"prometheus up after {time.monotonic() - t0:.0f}s; waiting for {len(pods)} targets")
        prometheus.wait_for_series("count(up == 1)", timeout_s=args.setup_timeout, poll_s=2.0,
                                   until=lambda r: bool(r) and float(r[0]["value"][1]) >= len(pods))
        say(f"all targets up after {time.monotonic() - t0:.0f}s")
        # Two scrapes of every target in the rate window before measuring (and two rule evaluations after them).
        time.sleep((4 if args.recorded else 2) * args.scrape_interval + 1)
        setup_s = time.monotonic() - t0

        specs = [VariantSpec(ref=VariantRef(ns, f"{model}-{role}-{acc}".lower()), model=model, role=Role(role),
                             accelerator=acc, target=ScaleTarget("apps/v1", "Deployment", f"{model}-{role}"))
                 for ns, model, role, acc in keys]
        source = PrometheusSignalSource(url=prometheus.url, labels=LabelMap(), rate_window="1m",
                                        timeout_s=args.timeout, heavy_timeout_s=args.heavy_timeout,
                                        budget_s=args.budget, max_parallel=args.parallel, recorded=args.recorded)
        durations, cpu, stats = [], [], []
        for _ in range(args.repeat + 1):
            started, started_cpu = time.perf_counter(), time.process_time()
            collection = source.collect_all(specs, now=time.time())
            durations.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            stats.append(collection.stats)
            slowest = ", ".join(f"{n} {t * 1000:.0f}" for n, t in collection.stats.timings[:4])
            say(f"collection {len(durations)}: {durations[-1] * 1000:.0f} ms (slowest, ms: {slowest})")
        # Warm start: the last minute of arrival rate and mix for every variant, as a restarted controller reads.
        end = time.time()
        started, before_rss = time.perf_counter(), rss_mib()
        try:
            history = source.history(specs, start=end - 60, end=end, step=args.scrape_interval)
        except SignalError as exc:  # a timeout here is a finding, not a reason to print nothing
            say(f"history failed: {str(exc)[:300]}")
            history = {}
        history_s = time.perf_counter() - started
        points = sum(1 for h in history.values() for r in h.completions_per_s if r is not None)

        # Prometheus's own evaluation time of each query, asked once more, one at a time, with stats=all.
        evaluation = {}
        for name, promql in source.queries.items():
            url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "stats": "all"})
            with urllib.request.urlopen(url, timeout=60) as resp:
                evaluation[name] = json.load(resp)["data"]["stats"]["timings"]["execTotalTime"]
        fresh = sum(1 for s in collection.variants.values() if s.freshness is Freshness.FRESH)
        warm = sum(len(s.warm_pods) for s in collection.variants.values())
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/status/tsdb", timeout=30) as resp:
            series = json.load(resp)["data"]["headStats"]["numSeries"]
        rules_s = None
        if args.recorded:
            with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=30) as resp:
                groups = json.load(resp)["data"]["groups"]
            rules_s = next(g["evaluationTime"] for g in groups if g["name"] == GROUP_NAME)

        print(f"variants: {len(specs)}, pods: {len(pods)}, Prometheus head series: {series}, "
              f"scrape interval {args.scrape_interval:g}s, setup {setup_s:.0f}s, "
              f"{'recorded series (recording rules)' if args.recorded else 'computed at query time'}; timeouts "
              f"{args.timeout:g}s / heavy {args.heavy_timeout:g}s, budget {args.budget:g}s")
        print(f"queries per collection: {stats[-1].queries}, {args.parallel} at a time (one per signal + the time() probe; "
              f"failed {stats[-1].failed}, skipped {stats[-1].skipped})")
        print(f"collection time: first {durations[0] * 1000:.0f} ms, then median "
              f"{statistics.median(durations[1:]) * 1000:.0f} ms, max {max(durations[1:]) * 1000:.0f} ms "
              f"over {args.repeat}")
        print(f"controller CPU per collection (HTTP, JSON, assembly): median "
              f"{statistics.median(cpu[1:]) * 1000:.0f} ms")
        heavy = sorted(evaluation.items(), key=lambda kv: -kv[1])[:4]
        print(f"Prometheus evaluation, all queries one after another: {sum(evaluation.values()):.2f} s; "
              f"heaviest: {', '.join(f'{n} {t:.2f}s' for n, t in heavy)}")
        if rules_s is not None:
            print(f"recording rules: one group evaluation every {args.scrape_interval:g}s takes {rules_s:.2f} s "
                  f"in Prometheus")
        print(f"failed or skipped queries over all collections: "
              f"{sum(s.failed + s.skipped for s in stats)}")
        print(f"variants fresh: {fresh}/{len(specs)}, pods known warm: {warm}/{len(pods)}, "
              f"models: {len(collection.models)}")
        print(f"history (warm start), {len(history)} variants x {len(next(iter(history.values()), ()))} points: "
              f"{history_s * 1000:.0f} ms, {len(history_queries(source.plan, step=args.scrape_interval))} range queries, "
              f"{points} points with a rate; peak RSS before it {before_rss:.0f} MiB")
        print(f"controller peak RSS: {rss_mib():.0f} MiB (before collecting: {baseline:.0f} MiB)")
        return 0 if fresh == len(specs) else 1
    finally:
        prometheus.stop()
        stop.set()
        exporter.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
