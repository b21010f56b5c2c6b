"""Fixtures for real CPU vLLM instances (``autoscaler.localstack.vllm``) as the pods of a variant.

``vllm_engine`` requires the engine `make setup` installs (skip locally, fail with CI=true). ``vllm_stack``
is a factory: each call creates, in a fresh namespace of the session's kube-apiserver, a Deployment and a
VariantAutoscaling per variant, starts vLLM instances that follow the Deployments' ``spec.replicas`` and a
Prometheus scraping them every second; all torn down after the test (or module, for ``vllm_module_stack``).

At most two instances run at once (``MAX_INSTANCES``): each takes about 3.3 GB, and the suite runs beside
them on a 24 GB, 2-core machine; two is also what a prefill/decode pair or a 1 -> 2 scale-up needs.
:class:`LoadGenerator` drives them with streamed completions and records what each request measured.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client as kube_client

from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.emulator.kube_follow import follow_deployments
from autoscaler.kube.client import apply_crd
from autoscaler.localstack import prometheus
from autoscaler.localstack.stack import create_deployment, create_variant_autoscaling
from autoscaler.localstack.vllm import SETUP_HINT, VllmEngine, VllmPods, VllmVariant, locate_engine
from tests.plugins.require import require

MAX_INSTANCES = 2
START_TIMEOUT_S = 420.0  # a cold start on a loaded 2-core machine (imports, process spawns) takes minutes


@pytest.fixture(scope="session")
def vllm_engine() -> VllmEngine:
    found = locate_engine()
    require(found is not None, f"vLLM engine: {SETUP_HINT}")
    assert found is not None
    return found


@dataclass
class VllmStack:
    namespace: str
    pods: VllmPods
    prometheus: prometheus.PrometheusServer
    api: kube_client.ApiClient
    variants: list[VllmVariant]

    def spec_of(self, variant: VllmVariant) -> VariantSpec:
        return VariantSpec(ref=VariantRef(variant.namespace, variant.deployment), model=variant.model,
                           role=variant.role, accelerator=variant.accelerator,
                           target=ScaleTarget("apps/v1", "Deployment", variant.deployment))

    def scale(self, variant: VllmVariant, replicas: int) -> None:
        kube_client.AppsV1Api(self.api).patch_namespaced_deployment_scale(
            variant.deployment, variant.namespace, {"spec": {"replicas": replicas}})

    def wait_for_scrape(self, *, pods: Sequence[str], after: float, timeout_s: float = 30.0) -> None:
        """Until Prometheus holds a sample taken after wall time ``after`` from each of ``pods``."""
        wanted = set(pods)
        self.prometheus.wait_for_series(
            f'timestamp(vllm:num_requests_running{{namespace="{self.namespace}"}})', timeout_s=timeout_s,
            until=lambda result: wanted <= {s["metric"].get("pod") for s in result if float(s["value"][1]) > after})


def _make_stack(api: kube_client.ApiClient, engine: VllmEngine, directory: Path,
                variants_of: Callable[[str], Sequence[VllmVariant]], replicas: dict[str, int],
                stack: contextlib.ExitStack) -> VllmStack:
    apply_crd(api)
    core = kube_client.CoreV1Api(api)
    ns = core.create_namespace(kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(
        generate_name="vas-vllm-"))).metadata.name
    stack.callback(lambda: core.delete_namespace(ns))
    variants = list(variants_of(ns))
    for v in variants:
        create_deployment(api, namespace=ns, name=v.deployment, replicas=replicas.get(v.deployment, 1),
                          labels={"role": v.role.value, "accelerator": v.accelerator})
        create_variant_autoscaling(api, namespace=ns, name=v.deployment, model=v.model, role=v.role.value,
                                   accelerator=v.accelerator, target=v.deployment, min_replicas=1,
                                   max_replicas=MAX_INSTANCES)
    sd = directory / "targets.json"
    pods = VllmPods(variants=variants, replicas_of=follow_deployments(api), file_sd_path=sd,  # type: ignore[arg-type]
                    engine=engine, max_instances=MAX_INSTANCES)
    stack.callback(pods.close)
    pods.start()
    server = prometheus.PrometheusServer(file_sd_path=sd)
    server.start()
    stack.callback(server.stop)
    for v in variants:
        pods.wait_ready(v, replicas.get(v.deployment, 1), timeout_s=START_TIMEOUT_S)
    return VllmStack(namespace=ns, pods=pods, prometheus=server, api=api, variants=variants)


StackFactory = Callable[..., VllmStack]


@pytest.fixture
def vllm_stack(vllm_engine: VllmEngine, kube_api_client: kube_client.ApiClient, prometheus_binary: str,
               tmp_path: Path) -> Iterator[StackFactory]:
    with contextlib.ExitStack() as stack:
        def make(variants_of: Callable[[str], Sequence[VllmVariant]], replicas: dict[str, int]) -> VllmStack:
            return _make_stack(kube_api_client, vllm_engine, tmp_path, variants_of, replicas, stack)
        yield make


@pytest.fixture(scope="module")
def vllm_module_stack(vllm_engine: VllmEngine, kube_api_client: kube_client.ApiClient,
                      prometheus_binary: str) -> Iterator[StackFactory]:
    """As ``vllm_stack``, kept for the whole module: tests that can share the engines' start-up do."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        made: list[VllmStack] = []

        def make(variants_of: Callable[[str], Sequence[VllmVariant]], replicas: dict[str, int]) -> VllmStack:
            if not made:
                made.append(_make_stack(kube_api_client, vllm_engine, Path(tmp), variants_of, replicas, stack))
            return made[0]
        yield make


def one_variant(deployment: str = "tiny", role: Role = Role.BOTH, **kwargs: object) -> Callable[[str], list[VllmVariant]]:
    return lambda ns: [VllmVariant(namespace=ns, deployment=deployment, model="tiny", role=role, **kwargs)]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- load


@dataclass
class Served:
    """One request as the client saw it (wall-clock seconds)."""

    started: float
    first_token: float | None = None
    finished: float | None = None
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    aborted: bool = False

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


def stream_completion(url: str, *, model: str, prompt: list[int], max_tokens: int, abort_after: int | None = None,
                      timeout_s: float = 300.0, extra: dict | None = None) -> Served:
    """A streamed /v1/completions request; ``abort_after`` tokens closes the connection early (vLLM aborts it)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}, **(extra or {})})
    record = Served(started=time.time())
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"completion failed: {response.status} {response.read()[:300]!r}")
        last, chunks = None, 0
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):  # the last chunk (include_usage): the engine's own count
                record.tokens = chunk["usage"]["completion_tokens"]
            if not chunk.get("choices"):
                continue
            # One chunk per engine step that produced a token (its text may be empty: a byte-level token that
            # ends inside a UTF-8 character is held back by the detokenizer).
            now = time.time()
            if record.first_token is None:
                record.first_token = now
            elif last is not None:
                record.gaps.append(now - last)
            last = now
            chunks += 1
            if abort_after is not None and chunks >= abort_after:
                record.aborted = True
                break
        record.finished = time.time()
    finally:
        conn.close()
    return record


class LoadGenerator:
    """``concurrency`` client threads, each sending the next request when its last one ends (closed loop)."""

    def __init__(self, url: str, *, model: str, concurrency: int, prompt_tokens: int, max_tokens: int,
                 abort_every: int = 0) -> None:
        self.url, self.model = url, model
        self.concurrency = concurrency
        self.prompt = [7 + (i % 1000) for i in range(prompt_tokens)]
        self.max_tokens = max_tokens
        self.abort_every = abort_every
        self.records: list[Served] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._count += 1
                n = self._count
            abort = self.abort_every > 0 and n % self.abort_every == 0
            try:
                record = stream_completion(self.url, model=self.model, prompt=self.prompt,
                                           max_tokens=self.max_tokens, abort_after=2 if abort else None)
            except Exception as exc:  # noqa: BLE001 - kept for the test to report
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)
                continue
            with self._lock:
                self.records.append(record)

    def start(self) -> LoadGenerator:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def served_between(self, t0: float, t1: float) -> list[Served]:
        with self._lock:
            return [r for r in self.records if not r.aborted and r.finished is not None and t0 <= r.finished < t1]


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return response.read().decode()
