"""Fixtures for real CPU vLLM instances (``autoscaler.localstack.vllm``) as the pods of a variant.

``vllm_engine`` requires the engine `make setup-vllm` installs (skip locally, fail with CI=true; VAS_SKIP_VLLM=1, the
explicit opt-out, skips). ``vllm_stack`` is a factory: each call creates, in a fresh namespace of the session's
kube-apiserver, a Deployment and a VariantAutoscaling per variant, starts vLLM instances that follow the
Deployments' ``spec.replicas`` and a Prometheus scraping them every 2 s; all torn down after the test (or
module, for ``vllm_module_stack``).

At most two instances run at once (``MAX_INSTANCES``): each takes about 3.3 GB, and the suite runs beside
them on a 24 GB, 2-core machine; two is also what a prefill/decode pair or a 1 -> 2 scale-up needs.
:class:`LoadGenerator` drives them with streamed completions and records what each request measured.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as kube_client

from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSignals, VariantSpec
from autoscaler.emulator.kube_follow import follow_deployments
from autoscaler.kube.api import GROUP, PLURAL, VERSION
from autoscaler.kube.client import apply_crd
from autoscaler.localstack import prometheus
from autoscaler.localstack.stack import create_deployment, create_variant_autoscaling
from autoscaler.localstack.vllm import SETUP_HINT, VllmEngine, VllmPods, VllmVariant, locate_engine
from autoscaler.localstack.vllm_load import LoadGenerator, Served, stream_completion
from autoscaler.signals.prometheus import PrometheusSignalSource
from tests.plugins.require import require

__all__ = ["LoadGenerator", "Served", "collect_until", "one_variant", "scrape", "stream_completion"]

MAX_INSTANCES = 2
START_TIMEOUT_S = 600.0  # a cold start on a loaded 2-core machine (imports, process spawns) takes 1.5-4 minutes
SCRAPE_INTERVAL_S = 2.0


@pytest.fixture(scope="session")
def vllm_engine() -> VllmEngine:
    if os.environ.get("VAS_SKIP_VLLM") == "1":  # the user's explicit opt-out (scripts/setup-vllm.sh honours it too)
        pytest.skip("VAS_SKIP_VLLM=1: the real-vLLM tests are opted out")
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
    custom, apps = kube_client.CustomObjectsApi(api), kube_client.AppsV1Api(api)
    for v in variants:
        create_deployment(api, namespace=ns, name=v.deployment, replicas=replicas.get(v.deployment, 1),
                          labels={"role": v.role.value, "accelerator": v.accelerator})
        create_variant_autoscaling(api, namespace=ns, name=v.deployment, model=v.model, role=v.role.value,
                                   accelerator=v.accelerator, target=v.deployment, min_replicas=1,
                                   max_replicas=MAX_INSTANCES)
        # Deleted one by one: the test API server runs no namespace controller, so a deleted namespace keeps its
        # objects, and a later test's controller (which lists every namespace) would find this variant there.
        stack.callback(lambda v=v: apps.delete_namespaced_deployment(v.deployment, ns))
        stack.callback(lambda v=v: custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, v.deployment))
    sd = directory / "targets.json"
    pods = VllmPods(variants=variants, replicas_of=follow_deployments(api), file_sd_path=sd,  # type: ignore[arg-type]
                    engine=engine, max_instances=MAX_INSTANCES)
    stack.callback(pods.close)
    pods.start()
    # Every 2 s (and a 2 s scrape timeout): an engine on one busy core answers /metrics in over a second at times,
    # and a timed-out scrape is a hole in every series.
    server = prometheus.PrometheusServer(file_sd_path=sd, scrape_interval_s=SCRAPE_INTERVAL_S)
    server.start()
    stack.callback(server.stop)
    for v in variants:
        pods.wait_ready(v, replicas.get(v.deployment, 1), timeout_s=START_TIMEOUT_S)
    made = VllmStack(namespace=ns, pods=pods, prometheus=server, api=api, variants=variants)
    # Ready to a test once Prometheus has scraped every pod: a counter's first sample is its baseline, and what
    # a pod served before it no rate() can see. (A disaggregated pair's prefill requests, one token each, were
    # all served before their pod's first scrape in 3 of 5 runs: the prefill pod read no request at all.)
    made.wait_for_scrape(pods=[i.pod for v in variants for i in pods.ready(v)], after=0.0, timeout_s=60.0)
    return made


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


def collect_until(source: PrometheusSignalSource, specs: Sequence[VariantSpec],
                  known: Callable[[VariantSignals], bool], *, timeout_s: float = 120.0,
                  at: float | None = None) -> dict[VariantSpec, VariantSignals]:
    """Collect until ``known`` holds for every variant: on a crowded machine one query can time out and leave a
    signal unknown for that collection (the controller would read it next cycle). Each collection evaluates at
    ``at`` when given (the same windows every time), else at its own now."""
    deadline = time.monotonic() + timeout_s
    while True:
        collected = source.collect_all(list(specs), now=time.time() if at is None else at).variants
        if all(known(collected[s]) for s in specs) or time.monotonic() > deadline:
            return collected
        time.sleep(1.0)


def one_variant(deployment: str = "tiny", role: Role = Role.BOTH, **kwargs: object) -> Callable[[str], list[VllmVariant]]:
    return lambda ns: [VllmVariant(namespace=ns, deployment=deployment, model="tiny", role=role, **kwargs)]  # type: ignore[arg-type]


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return response.read().decode()
