"""Scale from zero: requests queued at the gateway for a model with no replica bring its variants to one within
one cycle; without a gateway metric, scale-to-zero is refused when the policy is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.controller.loop import Controller
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.policyset import ModelPolicy, PolicySet, VariantPolicy
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.errors import ConfigError, SignalError
from autoscaler.perf.profiles import default_profiles
from autoscaler.policy.store import PolicyStore, require_gateway_for_scale_to_zero
from autoscaler.signals.gateway_queue import GatewayQueueSource
from autoscaler.signals.queries import gateway_queue_query
from autoscaler.sim.adapters import SimClock, SimScaler, SimSignalSource, SimVariantSource, variant_specs
from autoscaler.sim.cluster import SimCluster
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SPEC = VariantSpec(ref=VariantRef("llm", "llama"), model=MODEL, role=Role.BOTH, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "llama"), min_replicas=0, max_replicas=4)
TO_ZERO = VariantPolicy(role=Role.BOTH, accelerator="H100", min_replicas=0, scale_to_zero=True, idle_window_s=60)


@pytest.mark.parametrize(("queued", "current", "desired"), [
    pytest.param(3.0, 0, 1, id="queued-at-zero-wakes-one"),
    pytest.param(0.0, 0, 0, id="nothing-queued-stays-at-zero"),
    pytest.param(None, 0, 0, id="gateway-unknown-stays-at-zero"),
])
def test_a_variant_at_zero_with_requests_at_the_gateway_gets_one_replica(queued: float | None, current: int,
                                                                         desired: int) -> None:
    # At zero pods vLLM exports nothing: the variant's own signals are MISSING.
    signals = VariantSignals(freshness=Freshness.MISSING, gateway_waiting=queued)
    decision, _ = decide(spec=SPEC, signals=signals, current=current, history=(), policy=ScalingPolicy(), now=100.0,
                         last_scaled_at=90.0, variant_policy=TO_ZERO)  # a cooldown would be in force
    assert decision.desired == desired
    if desired:
        assert decision.reason is Reason.SCALE_FROM_ZERO


def test_requests_waiting_at_the_gateway_mean_the_variant_is_not_idle() -> None:
    quiet = VariantSignals(freshness=Freshness.FRESH, completions_per_s=0, running=0, waiting=0, kv_usage_mean=0.0)
    assert quiet.idle
    assert not VariantSignals(freshness=Freshness.FRESH, completions_per_s=0, running=0, waiting=0, kv_usage_mean=0.0,
                              gateway_waiting=2).idle


# -- the simulator: a request arrives for a model scaled to zero ------------------------------------------------


def _sim(arrivals: list[float]) -> tuple[SimCluster, Controller]:
    n = len(arrivals)
    trace = Trace(arrival_s=np.asarray(arrivals, dtype=float), input_tokens=np.full(n, 512, dtype=np.int64),
                  output_tokens=np.full(n, 32, dtype=np.int64))
    profile = default_profiles()["llama-3.1-8b/h100"]
    cluster = SimCluster(trace=trace, scenario=Scenario(), profile=profile, kv_bytes_per_token=131072)
    specs = variant_specs(model=MODEL, accelerator="H100", min_replicas=0, max_replicas=4)

    def gateway(promql: str) -> list[dict[str, Any]]:
        """The simulated gateway's queue as Prometheus answers the gateway query: requests no pod took."""
        assert promql == gateway_queue_query()
        queued = len(cluster.pools[Role.PREFILL].backlog)
        return [{"metric": {"target_model_name": MODEL}, "value": [cluster.now, str(queued)]}] if queued else []

    signals = GatewayQueueSource(SimSignalSource(cluster, window_s=30.0), query=gateway)
    policy = PolicySet(models=(ModelPolicy(model=MODEL, variants=tuple(
        VariantPolicy(role=r, accelerator="H100", min_replicas=0, scale_to_zero=True, idle_window_s=60)
        for r in (Role.PREFILL, Role.DECODE))),))
    controller = Controller(variants=SimVariantSource(specs), signals=signals, scaler=SimScaler(cluster),
                            policy=policy, clock=SimClock(), calibration=None)
    return cluster, controller


def _advance(cluster: SimCluster, controller: Controller, until: float) -> None:
    while cluster.now < until - 1e-9:
        cluster.step(cluster.now + cluster.scenario.tick_s)
    controller.clock.t = cluster.now  # type: ignore[attr-defined]


def test_in_the_simulator_a_request_queued_for_a_model_at_zero_brings_it_to_one_within_one_cycle() -> None:
    cluster, controller = _sim([5.0])
    _advance(cluster, controller, 4.0)
    report = controller.run_cycle()
    assert {o.decision.desired for o in report.outcomes if o.decision} == {0}  # nothing queued yet
    _advance(cluster, controller, 6.0)  # the request arrived and waits: no pod to take it
    assert cluster.replicas(Role.PREFILL) == 0 and len(cluster.pools[Role.PREFILL].backlog) == 1
    report = controller.run_cycle()
    assert cluster.replicas(Role.PREFILL) == 1 and cluster.replicas(Role.DECODE) == 1
    assert {o.decision.reason for o in report.outcomes if o.decision} == {Reason.SCALE_FROM_ZERO}


# -- the gateway source ------------------------------------------------------------------------------------------


class _Inner:
    def collect(self, variants: Any, *, now: float) -> dict[VariantSpec, VariantSignals]:
        return {s: VariantSignals.unknown("no pods") for s in variants}


def test_the_gateway_queue_of_the_variants_model_is_added_and_a_failed_read_is_unknown_not_zero() -> None:
    other = VariantSpec(ref=VariantRef("llm", "other"), model="other-model", role=Role.BOTH, accelerator="L4",
                        target=ScaleTarget("apps/v1", "Deployment", "other"))
    answer = [{"metric": {"target_model_name": MODEL}, "value": [0, "2"]},
              {"metric": {"target_model_name": MODEL, "priority": "10"}, "value": [0, "1"]}]
    source = GatewayQueueSource(_Inner(), query=lambda q: answer)
    got = source.collect([SPEC, other], now=0.0)
    assert (got[SPEC].gateway_waiting, got[other].gateway_waiting) == (3.0, 0.0)

    def down(q: str) -> list[Any]:
        raise SignalError("prometheus down")

    failed = GatewayQueueSource(_Inner(), query=down).collect([SPEC], now=0.0)
    assert failed[SPEC].gateway_waiting is None


# -- load time ---------------------------------------------------------------------------------------------------

POLICY = """
version: 1
models:
  - name: meta-llama/Llama-3.1-8B-Instruct
    variants:
      - {role: both, accelerator: H100, min_replicas: 0, max_replicas: 4, scale_to_zero: true}
"""


def test_scale_to_zero_without_a_gateway_metric_is_refused_when_the_policy_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    store = PolicyStore(path, check=require_gateway_for_scale_to_zero(None))
    assert not store.reload()
    assert isinstance(store.error, ConfigError)
    assert "scale_to_zero needs prometheus.gateway_queue_metric" in str(store.error)
    assert "could never scale back up" in str(store.error)
    with_gateway = PolicyStore(path, check=require_gateway_for_scale_to_zero(
        "inference_extension_flow_control_queue_size"))
    assert with_gateway.reload()


def test_the_controller_refuses_to_start_with_scale_to_zero_and_no_gateway_metric(tmp_path: Path) -> None:
    from kubernetes import client as kube_client

    from autoscaler.config import load_settings
    from autoscaler.controller.wiring import build_controller

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    settings = load_settings(None, {"planner": {"policy_file": str(path)}})
    with pytest.raises(ConfigError, match="scale_to_zero needs prometheus.gateway_queue_metric") as refused:
        build_controller(settings, api_client=kube_client.ApiClient())
    assert refused.value.field == "prometheus.gateway_queue_metric"
