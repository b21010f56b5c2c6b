"""The control loop against the real stack: kube-apiserver/etcd, Prometheus, the vLLM emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import structlog
from kubernetes import client

from autoscaler.config import load_settings
from autoscaler.controller.loop import Controller
from autoscaler.controller.wiring import build_controller
from autoscaler.core.types import Freshness, Reason, Role
from autoscaler.emulator.variant import EmulatedVariant, constant_load
from autoscaler.kube.api import GROUP, PLURAL, VERSION
from autoscaler.localstack.stack import (
    LocalStack,
    StackVariant,
    create_deployment,
    create_variant_autoscaling,
)
from autoscaler.perf.profiles import default_profiles

pytestmark = pytest.mark.integration

PROFILE = "llama-3.1-8b/h100"


def variant(namespace: str, *, rate: float, role: Role = Role.PREFILL) -> StackVariant:
    return StackVariant(
        EmulatedVariant(namespace=namespace, deployment=f"llama-{role.value}", model="llama", role=role,
                        accelerator="H100", profile=default_profiles()[PROFILE], load=constant_load(rate),
                        mean_prompt_tokens=4000, mean_output_tokens=200, startup_s=2.0, seed=1),
        min_replicas=1, max_replicas=6, initial_replicas=1,
    )


@pytest.fixture
def saturated_stack(control_plane, kube_namespace, prometheus_binary) -> Iterator[LocalStack]:
    """One prefill variant under far more load than one replica can take."""
    with LocalStack(variants=[variant(kube_namespace, rate=40.0)], control_plane=control_plane) as stack:
        yield stack


def controller_for(stack: LocalStack, *, dry_run: bool = False, prometheus_url: str | None = None) -> Controller:
    assert stack.prometheus is not None and stack.api is not None
    settings = load_settings(None, {
        "prometheus": {"url": prometheus_url or stack.prometheus.url, "rate_window": "10s", "staleness_s": 15,
                       "timeout_s": 2},
        "kube": {"namespace": stack.variants[0].emulated.namespace},
        "behavior": {"scale_up": {"max_step": 2}},
    })
    return build_controller(settings, api_client=stack.api, dry_run=dry_run)


def wait_for_queue(stack: LocalStack, namespace: str, *, at_least: float, timeout_s: float = 30.0) -> None:
    assert stack.prometheus is not None
    query = f'sum(vllm:num_requests_waiting{{namespace="{namespace}"}})'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        values = stack.prometheus.query_values(query)
        if values and max(values.values()) >= at_least:
            return
        time.sleep(0.5)
    pytest.fail(f"no queue of {at_least} seen in Prometheus within {timeout_s}s: {query}")


def deployment_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    return client.AppsV1Api(api).read_namespaced_deployment_scale(name, namespace).spec.replicas


def test_one_cycle_scales_a_saturated_deployment_through_the_api_server(saturated_stack, kube_namespace):
    wait_for_queue(saturated_stack, kube_namespace, at_least=5)
    report = controller_for(saturated_stack).run_cycle()

    [outcome] = report.outcomes
    assert outcome.signals is not None and outcome.signals.freshness is Freshness.FRESH
    assert outcome.applied and outcome.decision is not None
    assert outcome.decision.desired == 3  # 1 + max_step_up
    assert deployment_replicas(saturated_stack.api, kube_namespace, "llama-prefill") == 3
    status = client.CustomObjectsApi(saturated_stack.api).get_namespaced_custom_object_status(
        GROUP, VERSION, kube_namespace, PLURAL, "llama-prefill")["status"]
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 3)


def test_dry_run_decides_but_changes_nothing(saturated_stack, kube_namespace):
    wait_for_queue(saturated_stack, kube_namespace, at_least=5)
    report = controller_for(saturated_stack, dry_run=True).run_cycle()

    [outcome] = report.outcomes
    assert outcome.decision is not None and outcome.decision.desired > 1 and not outcome.applied
    assert deployment_replicas(saturated_stack.api, kube_namespace, "llama-prefill") == 1
    obj = client.CustomObjectsApi(saturated_stack.api).get_namespaced_custom_object(
        GROUP, VERSION, kube_namespace, PLURAL, "llama-prefill")
    assert "status" not in obj or not obj["status"]


def test_unreachable_prometheus_holds_every_variant_and_the_loop_goes_on(saturated_stack, kube_namespace,
                                                                         capsys):
    from autoscaler.localstack.ports import free_port
    from autoscaler.logs import configure_logging

    configure_logging(fmt="json")
    try:
        controller = controller_for(saturated_stack, prometheus_url=f"http://127.0.0.1:{free_port()}")
        first, second = controller.run_cycle(), controller.run_cycle()
    finally:
        structlog.reset_defaults()  # the logger holds capsys' stream, closed after this test

    for report in (first, second):
        [outcome] = report.outcomes
        assert outcome.decision is not None and outcome.decision.reason is Reason.SIGNALS_MISSING
        assert outcome.decision.desired == 1 and not outcome.applied
    assert deployment_replicas(saturated_stack.api, kube_namespace, "llama-prefill") == 1
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    cycles = [e for e in events if e.get("event") == "cycle"]
    assert len(cycles) == 2 and all("duration_ms" in e for e in cycles)
    why = [e for e in events if e.get("event") == "signals_unavailable"]
    assert len(why) == 2 and all("query failed" in e["note"] and e["freshness"] == "missing" for e in why)


def test_variant_without_data_is_left_as_it_is(saturated_stack, kube_namespace):
    # A second variant whose pods nobody emulates: no series in Prometheus.
    api = saturated_stack.api
    create_deployment(api, namespace=kube_namespace, name="ghost", replicas=4, labels={"role": "decode"})
    create_variant_autoscaling(api, namespace=kube_namespace, name="ghost", model="ghost-model", role="decode",
                               accelerator="H100", target="ghost", min_replicas=1, max_replicas=6)
    wait_for_queue(saturated_stack, kube_namespace, at_least=1)
    report = controller_for(saturated_stack).run_cycle()

    ghost = next(o for o in report.outcomes if o.spec.ref.name == "ghost")
    assert ghost.signals is not None and ghost.signals.freshness is Freshness.MISSING
    assert ghost.decision is not None and ghost.decision.desired == 4 and not ghost.applied
    assert deployment_replicas(api, kube_namespace, "ghost") == 4


def test_a_new_controller_warms_its_forecaster_from_prometheus_history(saturated_stack, kube_namespace, capsys):
    from autoscaler.logs import configure_logging

    wait_for_queue(saturated_stack, kube_namespace, at_least=5)
    time.sleep(8)  # some seconds of history at a 1 s step
    assert saturated_stack.prometheus is not None and saturated_stack.api is not None
    settings = load_settings(None, {
        "prometheus": {"url": saturated_stack.prometheus.url, "rate_window": "5s", "staleness_s": 15},
        "kube": {"namespace": kube_namespace},
        "controller": {"interval_s": 1},
        "planner": {"forecast_lead_time_s": 5},
    })
    configure_logging(fmt="json")
    try:
        report = build_controller(settings, api_client=saturated_stack.api, dry_run=True).run_cycle()
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "warm_started" for e in events), events
    [outlook] = report.outlooks.values()
    assert outlook.forecast_method not in (None, "observed")
