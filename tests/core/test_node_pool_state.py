"""A MachineSet object read as the node planner's MachineSetState: bounds from annotations, clear errors."""

from __future__ import annotations

import pytest

from autoscaler.core.nodes import MachineSetState
from autoscaler.errors import SpecError
from autoscaler.kube.nodepool import machineset_state

OURS_MIN, OURS_MAX = "variant-autoscaler.io/min-machines", "variant-autoscaler.io/max-machines"
CA_MIN = "machine.openshift.io/cluster-api-autoscaler-node-group-min-size"
CA_MAX = "machine.openshift.io/cluster-api-autoscaler-node-group-max-size"


def machineset(replicas: int | None, annotations: dict[str, str]) -> dict:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"name": "gpu-a", "namespace": "openshift-machine-api", "annotations": annotations},
            "spec": spec}


@pytest.mark.parametrize(
    ("replicas", "annotations", "bounds"),
    [
        pytest.param(2, {OURS_MIN: "1", OURS_MAX: "6"}, (1, 6), id="our-annotations"),
        pytest.param(2, {CA_MIN: "0", CA_MAX: "5"}, (0, 5), id="the-cluster-autoscalers-annotations"),
        pytest.param(2, {OURS_MAX: "3", CA_MAX: "9"}, (0, 3), id="ours-win-over-the-cluster-autoscalers"),
        pytest.param(3, {}, (0, 3), id="undeclared-max-is-the-current-size"),
        pytest.param(None, {}, (0, 0), id="replicas-omitted-on-the-wire-are-zero"),
        pytest.param(1, {OURS_MIN: " 2 "}, (2, 2), id="undeclared-max-never-below-min"),
    ],
)
def test_reads_bounds_from_annotations(replicas, annotations, bounds):
    state = machineset_state(machineset(replicas, annotations), accelerator="H100", gpus_per_node=8)
    assert state == MachineSetState("gpu-a", "openshift-machine-api", "H100", 8, replicas or 0, *bounds)


@pytest.mark.parametrize(
    ("annotations", "gpus", "message"),
    [
        pytest.param({OURS_MAX: "lots"}, 8, f"annotation {OURS_MAX}: expected a whole number", id="not-a-number"),
        pytest.param({CA_MIN: "-1"}, 8, f"annotation {CA_MIN}: expected a whole number", id="negative"),
        pytest.param({OURS_MIN: "4", OURS_MAX: "2"}, 8, "min_replicas <= max_replicas", id="min-above-max"),
        pytest.param({}, 0, "gpus_per_node must be >= 1", id="no-gpus"),
    ],
)
def test_refuses_a_bad_machineset_naming_it(annotations, gpus, message):
    with pytest.raises(SpecError, match="MachineSet openshift-machine-api/gpu-a") as info:
        machineset_state(machineset(2, annotations), accelerator="H100", gpus_per_node=gpus)
    assert message in str(info.value)
