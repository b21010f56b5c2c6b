"""The vLLM emulator seen through a real Prometheus: names, values, counters, histograms, targets coming and
going; and the emulator following a real Deployment's replicas."""

from __future__ import annotations

import http.client
import math
import re
import tempfile
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kubernetes import client as kube_client
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.types import Role
from autoscaler.emulator import EmulatedVariant, Emulator, TrafficSampler, constant_load
from autoscaler.emulator import vllm_metrics as vm
from autoscaler.emulator.cli import load_config
from autoscaler.emulator.kube_follow import DeploymentReplicas
from autoscaler.errors import ConfigError, StackError
from autoscaler.localstack.prometheus import PrometheusServer
from autoscaler.perf.profile import PerformanceProfile
from tests.plugins.prometheus import EmulatedStack, wall_clock

pytestmark = pytest.mark.integration

PROFILE = PerformanceProfile(
    name="test-8b-h100", model="test-8b", accelerator="H100", gpus_per_replica=1,
    prefill_a=0.01, prefill_b=1e-4, prefill_c=1e-9,
    decode_alpha=0.008, decode_beta=1e-4, decode_gamma=2e-8,
    kv_capacity_tokens=200_000, startup_s=5.0,
)


def variant(deployment: str, *, role: Role = Role.BOTH, rate: float = 4.0, namespace: str = "team-a",
            model: str = "llama-8b", seed: int = 0) -> EmulatedVariant:
    return EmulatedVariant(namespace=namespace, deployment=deployment, model=model, role=role,
                           accelerator="H100", profile=PROFILE, load=constant_load(rate),
                           mean_prompt_tokens=1000, mean_output_tokens=200, seed=seed)


def run_for(emulator: Emulator, seconds: float, dt: float = 0.1) -> None:
    for _ in range(round(seconds / dt)):
        emulator.step(dt)


def own_sums(emulator: Emulator, field: str) -> dict[tuple[str, str], float]:
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for pod in emulator.pods():
        if pod.stats is not None:
            sums[(pod.namespace, pod.role.value)] += getattr(pod.stats, field)
    return dict(sums)


def prom_sums(stack: EmulatedStack, metric: str) -> dict[tuple[str, str], float]:
    return {(s["metric"]["namespace"], s["metric"]["role"]): float(s["value"][1])
            for s in stack.prometheus.query(f"sum by (namespace, role) ({metric})")}


def scrape(address: str) -> dict[str, Metric]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


# ---------------------------------------------------------------------------------------------- values


def test_promql_sums_equal_the_emulators_own_totals(emulated_stack: Callable[..., EmulatedStack]) -> None:
    stack = emulated_stack(
        variants=[variant("agg", rate=16.0),
                  variant("pre", role=Role.PREFILL, rate=6.0, namespace="team-b", seed=1),
                  variant("dec", role=Role.DECODE, namespace="team-b", seed=2)],
        replicas={"agg": 2, "pre": 1, "dec": 2},
    )
    run_for(stack.emulator, 20.0)  # then frozen: every scrape from now on reads the same values
    stack.wait_for_scrape_of_every_pod(after=wall_clock())

    for metric, field in [("vllm:num_requests_waiting", "waiting"), ("vllm:num_requests_running", "running"),
                          ("vllm:kv_cache_usage_perc", "kv_usage"),
                          ("vllm:generation_tokens_total", "generation_tokens_total"),
                          ("vllm:request_success_total", "successes_total")]:
        expected = own_sums(stack.emulator, field)
        seen = prom_sums(stack, metric)
        assert seen.keys() == expected.keys() == {("team-a", "both"), ("team-b", "prefill"), ("team-b", "decode")}
        for key, value in expected.items():
            assert seen[key] == pytest.approx(value, rel=1e-9), (metric, key)
    assert sum(v for (ns, _), v in own_sums(stack.emulator, "waiting").items() if ns == "team-a") > 0, \
        "the aggregated pool should be queueing at this load"

    reasons = {(s["metric"]["role"], s["metric"]["finished_reason"]): float(s["value"][1]) for s in
               stack.prometheus.query("sum by (role, finished_reason) (vllm:request_success_total)")}
    assert reasons[("prefill", "length")] > 0 and reasons[("prefill", "stop")] == 0  # max_tokens=1 upstream
    assert 0 < reasons[("decode", "stop")] <= reasons[("prefill", "length")]  # decode gets what prefill did


def test_counters_rise_and_histogram_quantiles_are_finite(emulated_stack: Callable[..., EmulatedStack]) -> None:
    stack = emulated_stack(variants=[variant("agg", rate=6.0)], replicas={"agg": 2}, speedup=2.0)
    stack.emulator.start()
    prom = stack.prometheus
    prom.wait_for_series("vllm:prompt_tokens_total", timeout_s=15)
    first = prom.query_values("sum(vllm:prompt_tokens_total)")[""]
    rate = prom.wait_for_series("sum(rate(vllm:generation_tokens_total[4s]))", timeout_s=10,
                                until=lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    later = prom.query_values("sum(vllm:prompt_tokens_total)")[""]
    assert later > first
    assert float(rate[0]["value"][1]) > 0

    for histogram in (vm.TIME_TO_FIRST_TOKEN, vm.INTER_TOKEN_LATENCY, vm.E2E_REQUEST_LATENCY):
        q = prom.query_values(f"histogram_quantile(0.9, sum by (le) (rate({histogram}_bucket[4s])))")[""]
        assert math.isfinite(q) and q > 0, (histogram, q)
    itl = prom.query_values(f"histogram_quantile(0.5, sum by (le) (rate({vm.INTER_TOKEN_LATENCY}_bucket[4s])))")[""]
    assert itl >= PROFILE.decode_step_time(1, 0) * 0.5  # a quantile interpolates inside its bucket
    assert stack.emulator.failure is None


# ---------------------------------------------------------------------------------------------- targets


def test_scaling_up_adds_targets_after_the_startup_delay_and_lowers_the_per_pod_queue(
    emulated_stack: Callable[..., EmulatedStack],
) -> None:
    stack = emulated_stack(variants=[variant("agg", rate=14.0)], replicas={"agg": 1})
    run_for(stack.emulator, 20.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())
    queue_alone = stack.prometheus.query_values("avg(vllm:num_requests_waiting)")[""]
    assert queue_alone > 10, "one pod should be overloaded at this rate"

    stack.replicas["agg"] = 3
    stack.emulator.sync_replicas()
    run_for(stack.emulator, PROFILE.startup_s - 0.5)
    starting = [p for p in stack.emulator.pods() if not p.ready]
    assert len(starting) == 2 and all(p.address is None for p in starting)
    assert stack.emulator.file_sd_path.read_text().count("127.0.0.1:") == 1

    run_for(stack.emulator, 20.0)
    assert stack.emulator.file_sd_path.read_text().count("127.0.0.1:") == 3
    stack.wait_for_scrape_of_every_pod(after=wall_clock())
    assert stack.prometheus.query_values('count(up{job="vllm"} == 1)')[""] == 3
    queue_shared = stack.prometheus.query_values("avg(vllm:num_requests_waiting)")[""]
    assert queue_shared < queue_alone / 2


def test_a_removed_pod_drops_out_and_its_requests_are_rerouted(
    emulated_stack: Callable[..., EmulatedStack],
) -> None:
    stack = emulated_stack(variants=[variant("agg", rate=12.0)], replicas={"agg": 2})
    run_for(stack.emulator, 10.0)
    stack.wait_for_scrape_of_every_pod(after=wall_clock())
    assert stack.prometheus.query_values("count(vllm:num_requests_waiting)")[""] == 2

    pods = stack.emulator.pods()
    in_flight = sum(p.stats.waiting + p.stats.running for p in pods if p.stats)
    leaving = max(pods, key=lambda p: p.pod)  # the newest goes first
    stack.replicas["agg"] = 1
    stack.emulator.sync_replicas()
    assert [p.pod for p in stack.emulator.pods()] == [min(p.pod for p in pods)]
    assert stack.emulator.backlog(variant("agg")) == in_flight - sum(
        p.stats.waiting + p.stats.running for p in pods if p.stats and p.pod != leaving.pod)
    stack.emulator.step(0.0)  # route the orphans without letting time pass
    (staying,) = stack.emulator.pods()
    assert staying.stats is not None and staying.stats.waiting + staying.stats.running == in_flight
    assert leaving.address is not None and leaving.address not in {p.address for p in stack.emulator.pods()}
    try:  # its server is closed; the port may since have been taken by another process, which is not ours
        urllib.request.urlopen(f"http://{leaving.address}/metrics", timeout=2).close()
    except (OSError, http.client.HTTPException):
        pass

    # The vanished pod's series go stale once Prometheus's service discovery reloads (up to 5 s) and a scrape
    # misses it: on a loaded machine that can take far longer than the usual 6 s, so wait for the condition.
    stack.wait_until(lambda: stack.prometheus.query_values("count(vllm:num_requests_waiting)").get("") == 1,
                     timeout_s=90, what="the removed pod's series to go stale")


# ---------------------------------------------------------------------------------------------- exposition


@pytest.mark.parametrize("legacy", [pytest.param(False, id="current-names"), pytest.param(True, id="legacy-too")])
def test_pods_serve_vllm_names_types_labels_and_buckets(tmp_path: Path, legacy: bool) -> None:
    with Emulator(variants=[variant("agg", rate=5.0)], replicas_of=lambda _v: 1,
                  file_sd_path=tmp_path / "targets.json", legacy_names=legacy) as emulator:
        emulator.sync_replicas()
        run_for(emulator, 5.0)
        (pod,) = emulator.pods()
        assert pod.address is not None
        families = scrape(pod.address)

    expected_types = {
        vm.NUM_REQUESTS_RUNNING: "gauge", vm.NUM_REQUESTS_WAITING: "gauge", vm.KV_CACHE_USAGE_PERC: "gauge",
        vm.CACHE_CONFIG_INFO: "gauge", vm.PROMPT_TOKENS: "counter", vm.GENERATION_TOKENS: "counter",
        vm.REQUEST_SUCCESS: "counter", vm.NUM_PREEMPTIONS: "counter", vm.PREFIX_CACHE_QUERIES: "counter",
        vm.PREFIX_CACHE_HITS: "counter", vm.TIME_TO_FIRST_TOKEN: "histogram", vm.INTER_TOKEN_LATENCY: "histogram",
        vm.E2E_REQUEST_LATENCY: "histogram", vm.REQUEST_PROMPT_TOKENS: "histogram",
        vm.REQUEST_GENERATION_TOKENS: "histogram", vm.REQUEST_PREFILL_TIME: "histogram",
        vm.REQUEST_QUEUE_TIME: "histogram", vm.NUM_REQUESTS_WAITING_BY_REASON: "gauge",
        vm.PROMPT_TOKENS_BY_SOURCE: "counter",
    }
    legacy_types = {vm.GPU_CACHE_USAGE_PERC: "gauge", vm.TIME_PER_OUTPUT_TOKEN: "histogram"}
    if legacy:
        expected_types |= legacy_types
    assert {name: f.type for name, f in families.items()} == expected_types

    for name, family in families.items():
        for sample in family.samples:
            if name == vm.CACHE_CONFIG_INFO:
                assert sample.labels["engine"] == "0" and sample.value == 1
                continue
            assert sample.labels["model_name"] == "llama-8b" and sample.labels["engine"] == "0"
    reasons = {s.labels["finished_reason"] for s in families[vm.REQUEST_SUCCESS].samples}
    assert reasons == set(vm.FINISHED_REASONS)

    def bounds(name: str) -> list[float]:
        return [float(s.labels["le"]) for s in families[name].samples
                if s.name.endswith("_bucket")]

    assert bounds(vm.TIME_TO_FIRST_TOKEN) == [*vm.TTFT_BUCKETS, math.inf]
    assert bounds(vm.INTER_TOKEN_LATENCY) == [*vm.ITL_BUCKETS, math.inf]
    assert bounds(vm.E2E_REQUEST_LATENCY) == [*vm.REQUEST_LATENCY_BUCKETS, math.inf]
    assert bounds(vm.REQUEST_PROMPT_TOKENS)[:7] == [1, 2, 5, 10, 20, 50, 100]
    assert bounds(vm.REQUEST_PROMPT_TOKENS)[-2:] == [20000, math.inf]  # 1-2-5 up to max_model_len 32768
    if legacy:
        assert bounds(vm.TIME_PER_OUTPUT_TOKEN) == bounds(vm.INTER_TOKEN_LATENCY)


# ---------------------------------------------------------------------------------------------- kube


def test_emulator_follows_a_deployments_replicas(kube_api_client: kube_client.ApiClient, kube_namespace: str,
                                                 tmp_path: Path) -> None:
    apps = kube_client.AppsV1Api(kube_api_client)
    labels = {"app": "agg"}
    apps.create_namespaced_deployment(kube_namespace, kube_client.V1Deployment(
        metadata=kube_client.V1ObjectMeta(name="agg"),
        spec=kube_client.V1DeploymentSpec(
            replicas=2, selector=kube_client.V1LabelSelector(match_labels=labels),
            template=kube_client.V1PodTemplateSpec(
                metadata=kube_client.V1ObjectMeta(labels=labels),
                spec=kube_client.V1PodSpec(containers=[kube_client.V1Container(name="vllm", image="vllm")]))),
    ))
    now = [0.0]
    replicas_of = DeploymentReplicas(kube_api_client, clock=lambda: now[0])
    followed = variant("agg", namespace=kube_namespace)
    missing = variant("gone", namespace=kube_namespace)
    assert replicas_of(followed) == 2
    assert replicas_of(missing) == 0

    with Emulator(variants=[followed], replicas_of=replicas_of,
                  file_sd_path=tmp_path / "targets.json") as emulator:
        emulator.sync_replicas()
        assert len(emulator.pods()) == 2
        apps.patch_namespaced_deployment_scale("agg", kube_namespace, {"spec": {"replicas": 3}})
        now[0] += 0.5
        emulator.sync_replicas()
        assert len(emulator.pods()) == 2, "polled again within a second: the cached count holds"
        now[0] += 1.0
        emulator.sync_replicas()
        assert len(emulator.pods()) == 3
        assert sum(p.ready for p in emulator.pods()) == 2  # the new pod is still starting


def test_rejects_variants_and_settings_it_cannot_emulate(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    with pytest.raises(ValueError, match="duplicate namespace/deployment team-a/agg"):
        Emulator(variants=[variant("agg"), variant("agg")], replicas_of=lambda _v: 1, file_sd_path=path)
    with pytest.raises(ValueError, match="poll_interval_s"):
        Emulator(variants=[variant("agg")], replicas_of=lambda _v: 1, file_sd_path=path, poll_interval_s=0.2)
    with pytest.raises(ValueError, match="mean_prompt_tokens"):
        EmulatedVariant(namespace="a", deployment="b", model="m", role=Role.BOTH, accelerator="H100",
                        profile=PROFILE, load=constant_load(1), mean_prompt_tokens=0)
    negative = EmulatedVariant(namespace="a", deployment="b", model="m", role=Role.BOTH, accelerator="H100",
                               profile=PROFILE, load=lambda _t: -1.0)
    with Emulator(variants=[negative], replicas_of=lambda _v: 1, file_sd_path=path) as emulator:
        emulator.sync_replicas()
        with pytest.raises(ValueError, match=r"variant b: load\(0.000\) must be >= 0, got -1.0"):
            emulator.step(0.1)


def test_a_failing_replica_poll_keeps_the_last_count(tmp_path: Path) -> None:
    answers: Iterator[int | Exception] = iter([2, RuntimeError("api down"), 1])

    def replicas_of(_v: EmulatedVariant) -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with Emulator(variants=[variant("agg")], replicas_of=replicas_of,
                  file_sd_path=tmp_path / "targets.json") as emulator:
        counts = []
        for _ in range(3):
            emulator.sync_replicas()
            counts.append(len(emulator.pods()))
    assert counts == [2, 2, 1]


# ---------------------------------------------------------------------------------------------- traffic, config


def test_traffic_is_reproducible_from_its_seed_and_centred_on_the_means() -> None:
    def draw(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sampler = TrafficSampler(variant("agg", rate=50.0, seed=seed))
        times = sampler.arrivals(0.0, 100.0)
        return (times, *sampler.lengths(times.size))

    first, again, other = draw(1), draw(1), draw(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    times, prompts, outputs = first
    assert abs(times.size - 5000) < 4 * math.sqrt(5000)  # Poisson: within four standard deviations
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < 100
    assert np.mean(prompts) == pytest.approx(1000, rel=0.05)
    assert np.mean(outputs) == pytest.approx(200, rel=0.05)


@pytest.mark.parametrize("body, message", [
    pytest.param("file_sd: t.json\nvariants: []\n", "variants: List should have at least 1 item", id="no-variants"),
    pytest.param("file_sd: t.json\nvariants:\n  - {namespace: a, deployment: b, model: m, role: both, "
                 "profile: p, rate: -1}\n", "variants.0.rate: Input should be greater than or equal to 0",
                 id="negative-rate"),
    pytest.param("file_sd: t.json\nvariants:\n  - {namespace: a, deployment: b, model: m, role: mixed, "
                 "profile: p}\n", "variants.0.role", id="unknown-role"),
    pytest.param("file_sd: t.json\nvariants:\n  - {namespace: a, deployment: b, model: m, role: both, "
                 "profile: nope}\n", "variants.0: profile 'nope' is neither", id="unknown-profile"),
    pytest.param("file_sd: t.json\nvariants: [\n", "invalid YAML", id="broken-yaml"),
])
def test_config_file_errors_name_the_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "emulator.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        load_config(path, profiles={"p": PROFILE})


def test_config_file_builds_the_variants_it_describes(tmp_path: Path) -> None:
    path = tmp_path / "emulator.yaml"
    path.write_text("file_sd: t.json\nspeedup: 3\nvariants:\n"
                    "  - {namespace: a, deployment: pre, model: m, role: prefill, profile: p, replicas: 2,"
                    " rate: 4, amplitude: 2, period_s: 40}\n")
    config, [(built, replicas)] = load_config(path, profiles={"p": PROFILE})
    assert (config.speedup, replicas, built.role, built.accelerator) == (3.0, 2, Role.PREFILL, "H100")
    assert [round(built.load(t), 6) for t in (0.0, 10.0, 30.0)] == [4.0, 6.0, 2.0]


# ---------------------------------------------------------------------------------------------- prometheus harness


def test_a_prometheus_that_fails_to_start_reports_its_log_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = tmp_path / "prometheus"
    broken.write_text("#!/bin/sh\necho 'err=\"opening storage failed: disk on fire\"'\nexit 1\n")
    broken.chmod(0o755)
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**kwargs: str) -> str:
        made.append(Path(real_mkdtemp(**kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    server = PrometheusServer(file_sd_path=tmp_path / "targets.json", binary=str(broken))
    with pytest.raises(StackError, match="(?s)did not become ready.*disk on fire"):
        server.start()
    assert len(made) == 1 and not made[0].exists()
    assert server.directory is None
    with pytest.raises(StackError, match="not running"):
        _ = server.url


def test_prometheus_answers_queries_and_stops_cleanly(prometheus_binary: str, tmp_path: Path) -> None:
    with PrometheusServer(file_sd_path=tmp_path / "targets.json", binary=prometheus_binary) as server:
        directory, url = server.directory, server.url
        assert directory is not None and (directory / "prometheus.yml").is_file()
        assert server.query_values("vector(42)")[""] == 42
        with pytest.raises(StackError, match="HTTP 400"):
            server.query("sum(")
    assert not directory.exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/-/ready", timeout=1)
