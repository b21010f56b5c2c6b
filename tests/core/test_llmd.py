"""llm-d's llmd.ai VariantAutoscaling read as WVA defines it, its target's pod template giving role and
accelerator, and the status written the way WVA writes it (pure parts of autoscaler.kube.llmd)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.core.types import Decision, DecisionStep, Reason, Role, VariantRef
from autoscaler.errors import SpecError
from autoscaler.kube import llmd

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "wva" / "variantautoscaling-with-cost.yaml"
NOW = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)


def _samples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SAMPLES.read_text()) if d]


def test_every_sample_of_wva_is_read_with_its_model_target_and_cost() -> None:
    read = {va.name: va for va in map(llmd.parse_llmd_variant, _samples())}
    assert len(read) == 6
    premium = read["llama-70b-premium-h100"]
    assert (premium.model_id, premium.target.kind, premium.target.name, premium.variant_cost) == (
        "meta/llama-3.1-70b", "Deployment", "llama-70b-premium-h100", 80.0)
    assert premium.target.api_version == "apps/v1"  # absent in the sample: the HPA's default group
    assert read["llama-8b-default-cost"].variant_cost == 10.0  # WVA's default when variantCost is absent


@pytest.mark.parametrize("cost", ["cheap", "-3", "1e3", True, ["1"]])
def test_a_variant_cost_that_is_not_a_number_is_kept_as_an_error_not_raised(cost: Any) -> None:
    obj = _samples()[0]
    obj["spec"]["variantCost"] = cost
    va = llmd.parse_llmd_variant(obj)
    assert va.variant_cost is None and "variantCost" in va.cost_error


@pytest.mark.parametrize(("path", "field"), [(("spec", "modelID"), "modelID"),
                                             (("spec", "scaleTargetRef"), "scaleTargetRef")])
def test_an_object_without_model_or_target_is_refused_naming_the_field(path: tuple[str, str], field: str) -> None:
    obj = _samples()[0]
    del obj[path[0]][path[1]]
    with pytest.raises(SpecError, match=field):
        llmd.parse_llmd_variant(obj)


def _deployment(labels: dict[str, str], node_selector: dict[str, str] | None = None, gpus: int = 1) -> dict:
    return {"spec": {"template": {"metadata": {"labels": labels}, "spec": {
        "nodeSelector": node_selector or {},
        "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}}


@pytest.mark.parametrize(("labels", "selector", "va_labels", "role", "accelerator"), [
    pytest.param({"llm-d.ai/role": "prefill", "llm-d.ai/accelerator-variant": "nvidia-h100-80gb"}, None, {},
                 Role.PREFILL, "H100", id="llm-d-pod-labels"),
    pytest.param({"llm-d.ai/role": "decode"}, {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, {},
                 Role.DECODE, "A100", id="gpu-feature-discovery-node-selector"),
    pytest.param({}, {"cloud.google.com/gke-accelerator": "nvidia-l4"}, {}, None, "L4", id="gke-node-selector"),
    pytest.param({}, None, {"inference.optimization/acceleratorName": "H100"}, None, "H100",
                 id="wva-label-on-the-object"),
    pytest.param({"llm-d.ai/accelerator": "NVIDIA-H100-80GB-HBM3"}, {"nvidia.com/gpu.product": "NVIDIA-L40S"},
                 {}, None, "H100", id="the-pod-label-prometheus-sees-comes-first"),
    pytest.param({}, None, {}, None, "UNKNOWN", id="nothing-says"),
])
def test_role_and_accelerator_come_from_the_targets_pod_template(labels: dict, selector: dict | None,
                                                                 va_labels: dict, role: Role | None,
                                                                 accelerator: str) -> None:
    found = llmd.template_identity(_deployment(labels, selector, gpus=2), va_labels=va_labels)
    assert (found.role, found.accelerator, found.gpus_per_replica) == (role, accelerator, 2)


def _required_affinity(*terms: list[dict]) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions} for expressions in terms]}}}


@pytest.mark.parametrize(("affinity", "accelerator"), [
    pytest.param(_required_affinity([{"key": "nvidia.com/gpu.product", "operator": "In",
                                      "values": ["NVIDIA-H100-80GB-HBM3"]}]), "H100", id="pinned-to-one-value"),
    pytest.param(_required_affinity([{"key": "nvidia.com/gpu.product", "operator": "In",
                                      "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"]}]), "UNKNOWN",
                 id="several-values-name-none"),
    pytest.param(_required_affinity([{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L40S"]}],
                                    [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}]),
                 "UNKNOWN", id="terms-that-disagree-name-none"),
    pytest.param(_required_affinity([{"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["NVIDIA-L4"]}]),
                 "UNKNOWN", id="not-in-names-none"),
])
def test_the_accelerator_is_read_from_a_required_node_affinity_that_pins_one(affinity: dict, accelerator: str) -> None:
    workload = _deployment({"llm-d.ai/role": "decode"})
    workload["spec"]["template"]["spec"]["affinity"] = affinity
    assert llmd.template_identity(workload, va_labels={}).accelerator == accelerator


def test_a_decode_pool_of_a_model_without_prefill_is_served_aggregated() -> None:
    va = llmd.parse_llmd_variant(_samples()[0])
    ident = llmd.template_identity(_deployment({"llm-d.ai/role": "decode"}), va_labels={})
    assert llmd.to_variant_spec(va, ident, aggregated=True).role is Role.BOTH
    assert llmd.to_variant_spec(va, ident, aggregated=False).role is Role.DECODE


def test_the_pod_templates_gpu_limit_is_the_variants_gpus_per_replica() -> None:
    va = llmd.parse_llmd_variant(_samples()[0])
    spec = llmd.to_variant_spec(va, llmd.template_identity(_deployment({}, gpus=4), va_labels={}), aggregated=True)
    assert spec.gpus_per_replica == 4  # the one count quotas, prices and node sizing use


def _decision(reason: Reason, desired: int = 3) -> Decision:
    return Decision(VariantRef("llm-inference", "llama-70b-premium-h100"), current=2, desired=desired,
                    steps=(DecisionStep("saturation", desired, reason, "why"),))


@pytest.mark.parametrize(("reason", "metrics", "ready"), [
    (Reason.SATURATED, ("True", "MetricsFound"), ("True", "OptimizationSucceeded")),
    (Reason.SIGNALS_MISSING, ("False", "MetricsMissing"), ("False", "MetricsUnavailable")),
    (Reason.SIGNALS_STALE, ("False", "MetricsStale"), ("False", "MetricsUnavailable")),
])
def test_conditions_carry_wvas_types_and_reasons(reason: Reason, metrics: tuple, ready: tuple) -> None:
    got = {c["type"]: (c["status"], c["reason"]) for c in llmd.wva_conditions(_decision(reason))}
    assert got == {"MetricsAvailable": metrics, "OptimizationReady": ready}


def test_the_status_has_wvas_shape_and_keeps_the_target_condition() -> None:
    va = llmd.parse_llmd_variant({**_samples()[0], "status": {"conditions": [
        {"type": "TargetResolved", "status": "True", "reason": "TargetFound", "message": "",
         "lastTransitionTime": "2026-12-07T10:00:00Z"}]}})
    status = llmd.wva_status(va, now=NOW, conditions=llmd.wva_conditions(_decision(Reason.SATURATED)),
                             decision=_decision(Reason.SATURATED), accelerator="H100", applied=False)
    assert status["desiredOptimizedAlloc"] == {"lastRunTime": "2026-12-07T12:00:00Z", "accelerator": "H100",
                                               "numReplicas": 3}
    assert status["actuation"] == {"applied": False}
    types = [c["type"] for c in status["conditions"]]
    assert types == ["TargetResolved", "MetricsAvailable", "OptimizationReady"]
    assert status["conditions"][0]["lastTransitionTime"] == "2026-12-07T10:00:00Z"  # unchanged status


def test_only_the_run_time_moving_is_not_a_status_change_until_it_is_five_minutes_old() -> None:
    va = llmd.parse_llmd_variant(_samples()[0])
    first = llmd.wva_status(va, now=NOW, conditions=[], decision=_decision(Reason.SATURATED), accelerator="H100")
    later = llmd.wva_status(llmd.parse_llmd_variant({**_samples()[0], "status": first}),
                            now=NOW + dt.timedelta(minutes=1), conditions=[], decision=_decision(Reason.SATURATED),
                            accelerator="H100")
    assert not llmd.status_changed(first, later)
    much_later = llmd.wva_status(llmd.parse_llmd_variant({**_samples()[0], "status": first}),
                                 now=NOW + dt.timedelta(minutes=6), conditions=[],
                                 decision=_decision(Reason.SATURATED), accelerator="H100")
    assert llmd.status_changed(first, much_later)  # lastRunTime is refreshed now and then: the controller lives
    moved = llmd.wva_status(va, now=NOW, conditions=[], decision=_decision(Reason.SATURATED, desired=4),
                            accelerator="H100")
    assert llmd.status_changed(first, moved)
