"""One accelerator, many spellings: the CRD, Prometheus labels, the policy, quotas, profiles and MachineSets all
resolve ``H100``, ``nvidia-h100-80gb`` and ``NVIDIA-H100-80GB-HBM3`` to one accelerator."""

from __future__ import annotations

import pytest
import yaml

from autoscaler.core.accelerators import canonical_accelerator
from autoscaler.core.nodes import MachineSetState
from autoscaler.core.plan import resolve_profile
from autoscaler.core.policyset import PolicySet
from autoscaler.kube.api import to_variant_spec
from autoscaler.perf.profiles import default_profiles
from autoscaler.policy.schema import PolicyFile, to_policy_set
from autoscaler.signals.queries import LabelMap, variant_key

H100_SPELLINGS = ("H100", "h100", "nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3", "NVIDIA H100 80GB HBM3",
                  "nvidia_h100_sxm5_80gb", "NVIDIA-H100-SXM5-80GB", "nvidia-h100-mega-80gb")


@pytest.mark.parametrize("name", H100_SPELLINGS)
def test_every_spelling_of_the_h100_is_one_accelerator(name: str) -> None:
    assert canonical_accelerator(name) == "H100"


@pytest.mark.parametrize(("name", "canonical"), [
    pytest.param("NVIDIA-A100-SXM4-80GB", "A100", id="gfd-a100"),
    pytest.param("nvidia-tesla-a100", "A100", id="gke-a100"),
    pytest.param("nvidia-tesla-t4", "T4", id="gke-t4"),
    pytest.param("nvidia-l4", "L4", id="gke-l4"),
    pytest.param("NVIDIA-L40S", "L40S", id="gfd-l40s"),
    pytest.param("AMD-Instinct-MI300X", "MI300X", id="amd"),
    pytest.param("H100-NVL-94GB", "H100-NVL", id="a-different-board-keeps-its-word"),
    pytest.param("NVIDIA-GH200-480GB", "GH200", id="gh200"),
    pytest.param("", "", id="unknown-stays-empty"),
])
def test_vendor_prefixes_and_memory_suffixes_are_dropped_but_the_chip_is_kept(name: str, canonical: str) -> None:
    assert canonical_accelerator(name) == canonical


def test_a100_and_h100_stay_different() -> None:
    assert canonical_accelerator("nvidia-a100-80gb") != canonical_accelerator("nvidia-h100-80gb")


def _crd(accelerator: str) -> dict:
    return {"metadata": {"namespace": "serving", "name": "llama-decode"},
            "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "role": "decode", "accelerator": accelerator,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
                     "minReplicas": 1, "maxReplicas": 8}}


_POLICY = """
version: 1
models:
  - name: meta-llama/Llama-3.1-8B-Instruct
    variants:
      - {role: decode, accelerator: nvidia-h100-80gb, min_replicas: 2, max_replicas: 6}
bounds:
  gpu_quota: {NVIDIA-H100-80GB-HBM3: 12}
  gpu_hour_usd: {nvidia-h100-80gb: 2.5}
"""


def _policy() -> PolicySet:
    return to_policy_set(PolicyFile.model_validate(yaml.safe_load(_POLICY)))


@pytest.mark.parametrize("crd_spelling", ["H100", "NVIDIA-H100-80GB-HBM3"])
@pytest.mark.parametrize("label_spelling", ["nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3", "h100"])
def test_the_crd_the_labels_the_policy_and_the_quotas_name_one_accelerator(crd_spelling: str,
                                                                          label_spelling: str) -> None:
    spec = to_variant_spec(_crd(crd_spelling))
    policy = _policy()
    labels = {"namespace": "serving", "model_name": "meta-llama/Llama-3.1-8B-Instruct", "role": "decode",
              "accelerator": label_spelling}
    assert LabelMap().key_of(labels) == variant_key(spec)  # Prometheus series -> this variant
    found = policy.variant_policy(spec)  # the policy's variant entry applies
    assert found is not None and found.max_replicas == 6
    assert policy.bounds.gpu_quota[spec.accelerator] == 12  # the quota binds this variant's GPUs
    assert policy.bounds.gpu_hour_price[spec.accelerator] == 2.5
    machines = MachineSetState("gpu-h100", "openshift-machine-api", label_spelling, gpus_per_node=8, replicas=1,
                               max_replicas=4)
    assert machines.accelerator == spec.accelerator  # the node pool supplies this variant
    profile = resolve_profile(spec, default_profiles(), policy)  # the shipped profile says nvidia-h100-80gb
    assert profile is not None and profile.name.startswith("llama-3.1-8b/h100")


def test_a_quota_given_twice_under_two_spellings_with_different_values_is_refused() -> None:
    text = _POLICY.replace("gpu_quota: {NVIDIA-H100-80GB-HBM3: 12}", "gpu_quota: {H100: 12, nvidia-h100-80gb: 8}")
    with pytest.raises(ValueError, match="given twice"):
        to_policy_set(PolicyFile.model_validate(yaml.safe_load(text)))
