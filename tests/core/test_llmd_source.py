"""LlmdVariantSource over a fake API: objects that cannot be decided get WVA's condition and no crash, a
cluster without llm-d's CRD has no llmd.ai variants, a model without prefill is served aggregated."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from autoscaler.core.types import Role
from autoscaler.kube.failures import KubeActuationError
from autoscaler.kube.llmd_source import LlmdVariantSource, MergedVariantSource

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


class FakeCustom:
    def __init__(self, items: list[dict[str, Any]] | None) -> None:
        self.items = items
        self.patches: dict[str, dict[str, Any]] = {}

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      label_selector: str | None = None, **_: Any) -> dict[str, Any]:
        if self.items is None:
            raise ApiException(status=404, reason="Not Found")
        if label_selector:  # equality selectors only, as the API server applies them
            wanted = dict(term.split("=", 1) for term in label_selector.split(","))
            return {"items": [o for o in self.items
                              if wanted.items() <= ((o.get("metadata") or {}).get("labels") or {}).items()]}
        return {"items": self.items}

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any], **_: Any) -> None:
        self.patches[name] = body["status"]


class FakeScales:
    def __init__(self, workloads: dict[str, dict[str, Any]]) -> None:
        self.workloads = workloads

    def read_object(self, *, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        if name not in self.workloads:
            raise KubeActuationError(f"reading {kind}/{name}: not found", status=404, reason="TargetNotFound")
        return self.workloads[name]


def _va(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "llm", "name": name, "generation": 1},
            "spec": {"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": target}, **spec}}


def _pods(role: str) -> dict[str, Any]:
    return {"spec": {"template": {"metadata": {"labels": {"llm-d.ai/role": role,
                                                          "llm-d.ai/accelerator-variant": "H100"}}}}}


def _source(items: list[dict[str, Any]] | None, workloads: dict[str, dict[str, Any]], *,
            label_selector: str | None = None) -> tuple[LlmdVariantSource, FakeCustom]:
    source = LlmdVariantSource(kube_client.ApiClient(), namespaces=("llm",), label_selector=label_selector,
                               now=lambda: NOW)
    custom = FakeCustom(items)
    source._custom = custom  # type: ignore[assignment]
    source._scales = FakeScales(workloads)  # type: ignore[assignment]
    return source, custom


def test_a_variant_cost_that_is_not_a_number_gets_invalid_configuration_not_a_crash() -> None:
    source, custom = _source([_va("bad", "d", variantCost="ten dollars"), _va("good", "d")], {"d": _pods("decode")})
    specs, errors = source.list_variants()
    assert [s.ref.name for s in specs] == ["good"]
    assert len(errors) == 1 and "variantCost" in str(errors[0])
    [condition] = custom.patches["bad"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("OptimizationReady", "False",
                                                                            "InvalidConfiguration")


def test_a_missing_target_gets_target_not_found() -> None:
    source, custom = _source([_va("orphan", "gone")], {})
    specs, errors = source.list_variants()
    assert specs == [] and "not found" in str(errors[0])
    [condition] = custom.patches["orphan"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("TargetResolved", "False",
                                                                            "TargetNotFound")


def test_without_llm_ds_crd_there_are_no_llmd_variants_and_no_error() -> None:
    source, _ = _source(None, {})
    assert source.list_variants() == ([], [])


def test_roles_come_from_the_pods_and_decode_alone_is_aggregated() -> None:
    disaggregated, _ = _source([_va("p", "p"), _va("d", "d")], {"p": _pods("prefill"), "d": _pods("decode")})
    specs, _ = disaggregated.list_variants()
    assert {s.ref.name: s.role for s in specs} == {"p": Role.PREFILL, "d": Role.DECODE}
    alone, _ = _source([_va("d", "d")], {"d": _pods("decode")})
    [spec], _ = alone.list_variants()
    assert spec.role is Role.BOTH


def test_the_same_name_in_both_groups_is_decided_once() -> None:
    first, _ = _source([_va("x", "d")], {"d": _pods("decode")})
    second, _ = _source([_va("x", "d")], {"d": _pods("decode")})
    specs, errors = MergedVariantSource(first, second).list_variants()
    assert len(specs) == 1 and "used by both" in str(errors[0])


def test_only_the_shards_llmd_variants_are_decided() -> None:
    ours, theirs = _va("ours", "pool-a"), _va("theirs", "pool-b")
    ours["metadata"]["labels"] = {"variant-autoscaler.io/shard": "a"}
    theirs["metadata"]["labels"] = {"variant-autoscaler.io/shard": "b"}
    source, _ = _source([ours, theirs], {"pool-a": _pods("decode"), "pool-b": _pods("decode")},
                        label_selector="variant-autoscaler.io/shard=a")
    specs, errors = source.list_variants()
    assert [s.ref.name for s in specs] == ["ours"] and not errors


def test_the_wired_llmd_source_carries_the_shard_selector() -> None:
    from autoscaler.config import RuntimeSettings, Settings
    from autoscaler.controller.wiring import llmd_source

    settings = Settings(runtime=RuntimeSettings(shard_label_selector="variant-autoscaler.io/shard=a"))
    source = llmd_source(settings, kube_client.ApiClient(), may_write=lambda: False)
    assert source._selector == "variant-autoscaler.io/shard=a"
