"""Every write of a scale, first try or retry after a 409, asks the lease first (issue 16, item 4)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.kube.client import KubeScaler
from autoscaler.kube.failures import KubeActuationError
from autoscaler.kube.scale import ScaleClient

SPEC = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "d"))
DISCOVERY = {"resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True},
                           {"name": "deployments/scale", "kind": "Scale", "namespaced": True}]}


class Lease:
    def __init__(self) -> None:
        self.held = True

    def __call__(self) -> bool:
        return self.held


class FakeApi:
    """What ScaleClient sends: discovery and GETs answer, each PATCH is recorded and may answer 409."""

    def __init__(self, lease: Lease, *, conflicts: int, lose_lease_on_conflict: bool) -> None:
        self.lease, self.conflicts, self.lose = lease, conflicts, lose_lease_on_conflict
        self.patches: list[dict[str, Any]] = []
        self.version = 1

    def __call__(self, api: Any, method: str, path: str, *, body: Any = None, content_type: str | None = None,
                 timeout_s: float) -> Any:
        if path == "/apis/apps/v1":
            return DISCOVERY
        if method == "GET":
            return {"spec": {"replicas": 2}, "status": {"replicas": 2}, "metadata": {"resourceVersion": str(self.version)}}
        self.patches.append(body)
        if self.conflicts:
            self.conflicts -= 1
            self.version += 1  # the new leader's write moved the object on
            if self.lose:
                self.lease.held = False
            raise ApiException(status=409, reason="Conflict")
        return {"spec": body["spec"], "status": {"replicas": 2}, "metadata": {"resourceVersion": "99"}}


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch):
    def build(*, conflicts: int, lose: bool) -> tuple[KubeScaler, FakeApi, Lease]:
        lease = Lease()
        fake = FakeApi(lease, conflicts=conflicts, lose_lease_on_conflict=lose)
        monkeypatch.setattr("autoscaler.kube.scale.request_json", fake)
        scaler = KubeScaler(client.ApiClient(), may_write=lease)
        monkeypatch.setattr(scaler, "_variant", lambda spec: None)
        return scaler, fake, lease
    return build


def test_a_retry_after_a_conflict_is_not_sent_once_the_lease_is_lost(wire):
    scaler, api, _ = wire(conflicts=1, lose=True)
    assert scaler.current_replicas(SPEC) == 2
    with pytest.raises(KubeActuationError) as caught:
        scaler.scale(SPEC, 5)
    assert caught.value.reason == "NotLeader"
    assert len(api.patches) == 1  # the first try only; the old leader's retry never reached the API


def test_a_retry_after_a_conflict_is_sent_while_the_lease_is_held(wire):
    scaler, api, _ = wire(conflicts=2, lose=False)
    scaler.current_replicas(SPEC)
    scaler.scale(SPEC, 5)
    assert len(api.patches) == 3
    assert [p["metadata"]["resourceVersion"] for p in api.patches] == ["1", "2", "3"]


def test_the_scale_client_refuses_to_patch_without_the_lease(monkeypatch: pytest.MonkeyPatch):
    lease = Lease()
    lease.held = False
    fake = FakeApi(lease, conflicts=0, lose_lease_on_conflict=False)
    monkeypatch.setattr("autoscaler.kube.scale.request_json", fake)
    scales = ScaleClient(client.ApiClient(), may_write=lease)
    with pytest.raises(KubeActuationError) as caught:
        scales.patch(api_version="apps/v1", kind="Deployment", name="d", namespace="ns", replicas=3)
    assert caught.value.reason == "NotLeader" and fake.patches == []
