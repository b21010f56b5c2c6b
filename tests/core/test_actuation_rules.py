"""The pure rules behind actuation: conditions and status patches, which pods go first, how many machines."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import Decision, DecisionStep, Reason, Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.kube.api import VariantAutoscalingStatus
from autoscaler.kube.drain import QueryPodLoad, choose_pods_to_remove
from autoscaler.kube.failures import Request, to_actuation_error
from autoscaler.kube.status import (
    ABLE_TO_SCALE,
    SCALING_ACTIVE,
    SCALING_LIMITED,
    ConditionUpdate,
    find_condition,
    next_status,
    status_patch,
)

T0 = dt.datetime(2025, 6, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)
REF = VariantRef("ns", "llama-decode")
SPEC = VariantSpec(ref=REF, model='meta/"llama"', role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "decode"))


def decision(*steps: tuple[str, int, Reason, bool], current: int = 2) -> Decision:
    return Decision(REF, current, steps[-1][1], tuple(DecisionStep(n, r, why, f"{n} says {r}", c)
                                                       for n, r, why, c in steps))


SATURATED = decision(("recommend", 3, Reason.SATURATED, False), ("clamp", 3, Reason.DESIRED_WITHIN_RANGE, False))
MISSING = decision(("recommend", 2, Reason.SIGNALS_MISSING, False), ("clamp", 2, Reason.DESIRED_WITHIN_RANGE, False))
CLAMPED = decision(("recommend", 9, Reason.SATURATED, False), ("clamp", 4, Reason.TOO_MANY_REPLICAS, True))


# -- conditions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("made", "active", "limited"),
    [
        pytest.param(SATURATED, ("True", "Saturated"), ("False", "DesiredWithinRange"), id="acting-in-range"),
        pytest.param(MISSING, ("False", "SignalsMissing"), ("False", "DesiredWithinRange"), id="holding"),
        pytest.param(CLAMPED, ("True", "Saturated"), ("True", "TooManyReplicas"), id="clamped-at-max"),
    ],
)
def test_a_decision_sets_scaling_active_and_scaling_limited(made: Decision, active: tuple[str, str],
                                                            limited: tuple[str, str]) -> None:
    status = next_status(previous=VariantAutoscalingStatus(), generation=3, now=T0, decision=made)
    got = {c.type: (c.status, c.reason) for c in status.conditions}
    assert (got[SCALING_ACTIVE], got[SCALING_LIMITED]) == (active, limited)
    assert {c.observed_generation for c in status.conditions} == {3}
    assert (status.current_replicas, status.desired_replicas, status.observed_generation) == (
        made.current, made.desired, 3)


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = next_status(previous=VariantAutoscalingStatus(), generation=1, now=T0, decision=SATURATED)
    later = T0 + dt.timedelta(minutes=5)
    same = next_status(previous=first, generation=1, now=later, decision=SATURATED)
    flipped = next_status(previous=same, generation=1, now=later, decision=MISSING)
    active = [find_condition(s.conditions, SCALING_ACTIVE) for s in (first, same, flipped)]
    assert [c.last_transition_time for c in active if c] == [T0.replace(microsecond=0)] * 2 + [
        later.replace(microsecond=0)]


def test_other_writers_fields_are_kept() -> None:
    previous = VariantAutoscalingStatus.model_validate({"admissionRatio": "0.8", "forecast": {"horizon": "5m"}})
    status = next_status(previous=previous, generation=1, now=T0, decision=SATURATED)
    assert (status.admission_ratio, status.forecast and status.forecast.horizon) == ("0.8", "5m")


def test_status_patch_carries_only_what_changed() -> None:
    first = next_status(previous=VariantAutoscalingStatus(), generation=1, now=T0, decision=SATURATED)
    assert set(status_patch(VariantAutoscalingStatus(), first)["status"]) == {
        "observedGeneration", "currentReplicas", "desiredReplicas", "reason", "message", "conditions"}
    again = next_status(previous=first, generation=1, now=T0 + dt.timedelta(seconds=30), decision=SATURATED)
    assert status_patch(first, again) == {}
    able = next_status(previous=first, generation=1, now=T0, decision=SATURATED,
                       able=ConditionUpdate(ABLE_TO_SCALE, "False", "Forbidden", "missing permission: patch"))
    assert set(status_patch(first, able)["status"]) == {"conditions"}


def test_the_patch_survives_a_round_trip_through_json() -> None:
    """What the API server stores and returns must compare equal, or every cycle would rewrite the status."""
    status = next_status(previous=VariantAutoscalingStatus(), generation=1, now=T0, decision=CLAMPED,
                         scaled_at=T0)
    stored = VariantAutoscalingStatus.model_validate(json.loads(json.dumps(status_patch(
        VariantAutoscalingStatus(), status)["status"])))
    assert status_patch(stored, status) == {}


# -- failures -----------------------------------------------------------------------------------------------------


def _api_exception(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


@pytest.mark.parametrize(
    ("status", "reason", "fragment"),
    [
        pytest.param(404, "TargetNotFound", "not found", id="gone"),
        pytest.param(403, "Forbidden", 'missing permission: patch deployments/scale in API group "apps" in '
                                       'namespace "ns"', id="rbac"),
        pytest.param(409, "Conflict", "conflict", id="conflict"),
        pytest.param(504, "ApiTimeout", "timeout", id="gateway-timeout"),
        pytest.param(500, "ApiError", "HTTP 500", id="server-error"),
    ],
)
def test_api_failures_map_onto_condition_reasons(status: int, reason: str, fragment: str) -> None:
    request = Request("patch", "deployments/scale", "apps", "ns", "decode")
    err = to_actuation_error("patching", request, _api_exception(status, "x" * 2000),
                             not_found_reason="TargetNotFound")
    assert (err.status, err.reason) == (status, reason)
    assert fragment in str(err) and len(str(err)) < 600  # bodies are cut before they reach status or logs


# -- scale-down order ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loads", "count", "expected"),
    [
        pytest.param({"a": 5, "b": 0, "c": 2}, 1, ("b",), id="least-loaded"),
        pytest.param({"a": 5, "b": 0, "c": 2}, 2, ("b", "c"), id="two-least-loaded"),
        pytest.param({"a": 1, "b": 1, "c": 1}, 1, ("a",), id="ties-by-name"),
        pytest.param({"a": 3, "c": 9}, 2, ("a", "c"), id="unknown-load-goes-last"),
        pytest.param({"a": math.nan, "b": 4, "c": 9}, 1, ("b",), id="nan-is-unknown"),
        pytest.param({"a": 0, "b": 0, "c": 0}, 0, (), id="nothing-to-remove"),
    ],
)
def test_pods_to_remove_are_the_least_loaded(loads: dict[str, float], count: int, expected: tuple[str, ...]) -> None:
    assert choose_pods_to_remove(pods=["a", "b", "c"], loads=loads, count=count) == expected


def test_pod_load_is_one_query_per_variant_with_quoted_labels() -> None:
    asked: list[str] = []

    def query(promql: str) -> list[dict[str, Any]]:
        asked.append(promql)
        return [{"metric": {"pod": "p0"}, "value": [0, "3"]}, {"metric": {"pod": "p1"}, "value": [0, "NaN"]},
                {"metric": {}, "value": [0, "1"]}]

    loads = QueryPodLoad(query).running_requests(SPEC)
    assert loads == {"p0": 3.0}
    assert asked == ['sum by (pod) (vllm:num_requests_running{namespace="ns",model_name="meta/\\"llama\\""})']


def test_pod_load_is_unknown_when_prometheus_fails() -> None:
    def query(promql: str) -> list[Any]:
        raise SignalError("down")

    assert QueryPodLoad(query).running_requests(SPEC) is None

