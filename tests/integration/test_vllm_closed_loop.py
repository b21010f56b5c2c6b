"""The controller scales a real vLLM variant through the real API server (issue 15, test 3): up under a queue,
held while its metrics are missing (the scrape stopped, then answered with garbage, then the engines killed), down
once the load is gone.

The controller runs its real cycle (Prometheus -> decision -> scale subresource -> status); the vLLM instances
follow the Deployment's ``spec.replicas``. Reactive saturation scaling only: the tiny CPU model has no profile.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable

import pytest
from kubernetes import client as kube_client

from autoscaler.config import load_settings
from autoscaler.controller.loop import CycleReport
from autoscaler.controller.wiring import build_controller
from autoscaler.kube.api import GROUP, PLURAL, VERSION
from tests.integration.test_vllm_signals import wait_until
from tests.plugins.vllm import START_TIMEOUT_S, LoadGenerator, one_variant

# Engine start-ups (1.5-4 minutes each on a loaded 2-core machine) count against the test: more than the default.
# Three engine start-ups (the second replica, then two replacements at once) count against it.
pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(2400)]

INTERVAL_S = 6.0  # the queue is smoothed over a cycle: 3 scrapes, not the one of a 2 s cycle
SCALE_DOWN_WINDOW_S = 30.0  # wide enough that one quiet reading between batches does not undo the scale-up
HELD = {"SignalsMissing", "SignalsStale", "SignalsInvalid"}  # the reasons a variant without usable metrics is held


def replicas(stack, variant) -> int:  # type: ignore[no-untyped-def]
    scale = kube_client.AppsV1Api(stack.api).read_namespaced_deployment_scale(variant.deployment, variant.namespace)
    return int(scale.spec.replicas)


def status(stack, variant) -> dict:  # type: ignore[no-untyped-def]
    obj = kube_client.CustomObjectsApi(stack.api).get_namespaced_custom_object(
        GROUP, VERSION, variant.namespace, PLURAL, variant.deployment)
    return obj.get("status") or {}


def cycle_until(controller, condition: Callable[[CycleReport], bool], *, timeout_s: float, what: str,  # type: ignore[no-untyped-def]
                every: Callable[[CycleReport], None] | None = None) -> list[CycleReport]:
    """Run controller cycles ``INTERVAL_S`` apart until ``condition`` holds for the last report."""
    reports: list[CycleReport] = []
    every = every or _log
    deadline = time.monotonic() + timeout_s
    while True:
        started = time.monotonic()
        report = controller.run_cycle()
        reports.append(report)
        if every is not None:
            every(report)
        if condition(report):
            return reports
        if time.monotonic() > deadline:
            last = [(o.decision.reason.value, o.decision.message) for o in report.outcomes if o.decision]
            raise AssertionError(f"timed out waiting for {what}; last decisions {last}, errors {report.errors}")
        time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))


def _log(report: CycleReport) -> None:
    """Each cycle's decisions, in the test's output: what the controller saw when a step fails."""
    for o in report.outcomes:
        if o.decision is not None:
            print(f"{time.strftime('%H:%M:%S')} cycle {report.cycle}: {o.decision.current}->{o.decision.desired} "
                  f"{o.decision.reason.value}: {o.decision.message[:160]}")


class Garbage(http.server.BaseHTTPRequestHandler):
    """A /metrics that answers 200 with text no Prometheus parser accepts."""

    def do_GET(self) -> None:
        body = b"vllm:num_requests_waiting{model_name=\"tiny\" 3 garbage {{{\n\x00\xff not metrics\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_controller_scales_a_real_vllm_variant_up_under_a_queue_holds_without_metrics_and_scales_down(
        vllm_stack):  # type: ignore[no-untyped-def]
    stack = vllm_stack(one_variant(), {"tiny": 1})
    variant = stack.variants[0]
    settings = load_settings(None, {
        "prometheus": {"url": stack.prometheus.url, "rate_window": "10s", "staleness_s": 10},
        "controller": {"interval_s": INTERVAL_S},
        "planner": {"predictive": False},
        "behavior": {"scale_up": {"max_step": 1},
                     "scale_down": {"stabilization_window_s": SCALE_DOWN_WINDOW_S, "max_step": 1}},
    })
    controller = build_controller(settings, api_client=stack.api)
    ref = stack.spec_of(variant).ref  # the controller lists every namespace: only this test's variant is judged
    first = stack.pods.ready(variant)[0]

    # Up: 16 clients on 4 batch slots queue about 12 requests on the one replica, until the controller scales
    # to 2. Then the load stops and no cycle runs while the second engine starts: on a loaded 2-core machine an
    # engine starting beside one serving 16 clients took over 7 minutes, and the controller's part is the
    # decision. The wait ends when the engine serves, or fails at once when it dies.
    load = LoadGenerator(first.url, model="tiny", concurrency=16, prompt_tokens=128, max_tokens=256,
                         stream=False).start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cycle_until(controller, lambda _r: replicas(stack, variant) == 2, timeout_s=300, what="a scale-up to 2")
        load.stop()
        assert not load.errors, load.errors[:3]
        stack.pods.wait_ready(variant, 2, timeout_s=START_TIMEOUT_S)
        assert replicas(stack, variant) == 2

        # Held: the scrape stops; the variant is idle. An idle variant with 2 replicas would scale down; without
        # metrics it must not, whatever the window.
        pods = [i.pod for i in stack.pods.ready(variant)]
        for pod in pods:
            stack.pods.hide(pod)
        stack.prometheus.wait_for_series(f'absent(vllm:num_requests_running{{namespace="{stack.namespace}"}})',
                                         timeout_s=30)
        until = time.monotonic() + SCALE_DOWN_WINDOW_S + 2 * INTERVAL_S
        held = cycle_until(controller, lambda _r: time.monotonic() > until, timeout_s=120,
                           what="a scale-down window without a scrape")
        # Then the pods' /metrics answer garbage (the scrape fails: up == 0) for another window.
        for pod in pods:
            stack.pods.redirect(pod, f"127.0.0.1:{server.server_address[1]}")
            stack.pods.unhide(pod)
        stack.prometheus.wait_for_series(f'count(up{{namespace="{stack.namespace}"}} == 0) == {len(pods)}',
                                         timeout_s=30)
        until = time.monotonic() + SCALE_DOWN_WINDOW_S + 2 * INTERVAL_S
        held += cycle_until(controller, lambda _r: time.monotonic() > until, timeout_s=120,
                            what="a scale-down window of garbage")
        assert replicas(stack, variant) == 2
        decisions = [o.decision for r in held for o in r.outcomes if o.decision is not None and o.decision.variant == ref]
        assert decisions and all(d.desired == 2 for d in decisions), [(d.desired, d.reason) for d in decisions]
        st = status(stack, variant)
        assert st.get("reason") in HELD, st
        assert "signals" in st.get("message", ""), st
    finally:
        load.stop()
        server.shutdown()
        server.server_close()
        for pod in [i.pod for i in stack.pods.instances(variant)]:
            stack.pods.redirect(pod, None)

    # Dead: both engines are killed (an OOM kill, a crash); their pods leave the targets until the
    # replacements serve, a minute or two later. Every cycle meanwhile holds, and the status says why. (Once one
    # replacement serves, its metrics are the variant's again: the hold is for the cycles with no pod serving.)
    for pod in pods:
        stack.pods.kill(pod)
    dead_status: list[dict] = []

    def while_dead(report: CycleReport) -> None:
        _log(report)
        if not stack.pods.ready(variant):
            dead_status.append(status(stack, variant))
    dead = cycle_until(controller, lambda _r: bool(stack.pods.ready(variant)), timeout_s=START_TIMEOUT_S,
                       what="a replacement of the killed pods to serve", every=while_dead)
    decisions = [o.decision for r in dead for o in r.outcomes if o.decision is not None and o.decision.variant == ref]
    assert len(dead_status) >= 3, "a replacement served before three cycles ran without metrics"
    assert decisions and all(d.desired == 2 for d in decisions), [(d.desired, d.reason) for d in decisions]
    # The first cycle may still read the killed pods' last samples; from the next on, no series.
    assert all(st.get("reason") in HELD and "signals" in st.get("message", "") for st in dead_status[1:]), (
        dead_status)
    assert replicas(stack, variant) == 2

    # Down: the metrics are back, nothing waits or runs: one replica is enough.
    cycle_until(controller, lambda _r: replicas(stack, variant) == 1, timeout_s=SCALE_DOWN_WINDOW_S + 150,
                what="a scale-down to 1")
    wait_until(lambda: len(stack.pods.instances(variant)) == 1, timeout_s=60, what="the second pod to stop")
