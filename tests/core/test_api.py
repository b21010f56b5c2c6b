import pytest

from autoscaler.core.types import Role
from autoscaler.errors import SpecError
from autoscaler.kube.api import DRY_RUN_ANNOTATION, to_variant_spec


def obj(**spec_overrides):
    spec = {"model": "llama", "role": "decode", "accelerator": "H100",
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
            "minReplicas": 1, "maxReplicas": 4}
    spec.update(spec_overrides)
    return {"metadata": {"namespace": "ns", "name": "llama-decode"}, "spec": spec}


def test_converts_a_valid_object():
    v = to_variant_spec(obj())
    assert (v.role, v.max_replicas, v.target.name, v.dry_run) == (Role.DECODE, 4, "llama-decode", False)


def test_dry_run_annotation_is_honoured():
    o = obj()
    o["metadata"]["annotations"] = {DRY_RUN_ANNOTATION: "true"}
    assert to_variant_spec(o).dry_run


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"minReplicas": 5, "maxReplicas": 2}, "minReplicas", id="min-above-max"),
        pytest.param({"role": "router"}, "role", id="unknown-role"),
        pytest.param({"scaleTargetRef": {"kind": "Deployment"}}, "scaleTargetRef", id="target-without-name"),
        pytest.param({"maxReplicas": 0}, "maxReplicas", id="zero-max"),
    ],
)
def test_invalid_spec_is_refused_naming_the_field(overrides, field):
    with pytest.raises(SpecError) as info:
        to_variant_spec(obj(**overrides))
    assert field in str(info.value) and "ns/llama-decode" in str(info.value)
