"""The demo's stack on the real engine (``make demo ENGINE=vllm``): CPU vLLM instances serving the tiny model.

A kube-apiserver/etcd with one Deployment (``demo/tiny``, 1 to 2 replicas) and its VariantAutoscaling; vLLM
instances that follow the Deployment's replicas (:class:`~autoscaler.localstack.vllm.VllmPods`, at most 2: an
instance takes about 3.3 GB); Prometheus scraping them; closed-loop clients, spread over the ready instances,
whose number rises from 1 to 16 and falls back (the engine takes 4 at a time, so at the peak about 12 wait).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubernetes import client
from rich.console import Console

from autoscaler.core.types import Role
from autoscaler.emulator.kube_follow import follow_deployments
from autoscaler.kube.client import apply_crd
from autoscaler.localstack.kube import ControlPlane
from autoscaler.localstack.prometheus import PrometheusServer
from autoscaler.localstack.stack import create_deployment, create_variant_autoscaling
from autoscaler.localstack.vllm import VllmPods, VllmVariant
from autoscaler.localstack.vllm_load import LoadGenerator

__all__ = ["PEAK_CLIENTS", "vllm_stack"]

NAMESPACE = "demo"
PEAK_CLIENTS = 16


@contextlib.contextmanager
def vllm_stack(*, duration_s: float, console: Console
               ) -> Iterator[tuple[client.ApiClient, str, Callable[[float], float], Callable[[], None]]]:
    """Yields the API client, Prometheus's URL, the clients at second t of the run, and ``begin`` (starts the
    clock of the load). Everything started is stopped on exit."""
    from autoscaler.demo import rise_and_fall

    clients = rise_and_fall(duration_s=duration_s, low=1, peak=PEAK_CLIENTS)
    variant = VllmVariant(namespace=NAMESPACE, deployment="tiny", model="tiny", role=Role.BOTH)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="vas-demo-") as tmp:
        plane = stack.enter_context(ControlPlane())
        api = stack.enter_context(plane.api_client())
        apply_crd(api)
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        create_deployment(api, namespace=NAMESPACE, name=variant.deployment, replicas=1,
                          labels={"role": variant.role.value, "accelerator": variant.accelerator})
        create_variant_autoscaling(api, namespace=NAMESPACE, name=variant.deployment, model=variant.model,
                                   role=variant.role.value, accelerator=variant.accelerator,
                                   target=variant.deployment, min_replicas=1, max_replicas=2)
        sd = Path(tmp) / "targets.json"
        pods = stack.enter_context(VllmPods(variants=[variant], replicas_of=follow_deployments(api),  # type: ignore[arg-type]
                                            file_sd_path=sd, max_instances=2))
        prometheus = stack.enter_context(PrometheusServer(file_sd_path=sd))
        pods.wait_ready(variant, 1, timeout_s=600)
        turn = itertools.count()

        def next_instance() -> str | None:  # round robin over the ready pods, as a Service would spread them
            ready = pods.ready(variant)
            return ready[next(turn) % len(ready)].url if ready else None

        started: list[float] = []

        def active() -> int:
            return 0 if not started else round(clients(time.monotonic() - started[0]))

        load = LoadGenerator(next_instance, model=variant.model, concurrency=PEAK_CLIENTS, prompt_tokens=128,
                             max_tokens=256, active=active, stream=False)
        stack.callback(load.stop)

        def begin() -> None:
            started.append(time.monotonic())
            load.start()

        console.print(f"vLLM pod {pods.ready(variant)[0].pod} serving; new replicas take a minute or two to start")
        yield api, prometheus.url, clients, begin
        served = len(load.records)
        console.print(f"{served} requests served, {len(load.errors)} failed"
                      + (f" (first: {load.errors[0]})" if load.errors else ""))

