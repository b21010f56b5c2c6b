"""A model and accelerator nobody has profiled, autoscaled in the simulator (issue 14): the controller is given no
profile, starts reactive, learns the engine from its pods (``learnt:<model>/<accelerator>``), and reaches the
feasible share within 1 point.

The simulated engine runs 1.3x slower than the shipped shape the scratch prior starts from, so what the controller
plans with must be learnt, not carried over. Measured on the whole hour (2026-12-07): 98.64% against a feasible
98.69%, the profiled ``default`` 98.64% on about the same GPU-hours; this test replays the first half hour.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from autoscaler.core.types import Reason
from autoscaler.perf.online import SCRATCH_PREFIX
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.controlled import ControllerPolicy
from autoscaler.sim.policies import make_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import read_trace, window

TRACE = Path(__file__).resolve().parents[2] / "autoscaler" / "data" / "traces" / "mooncake_conversation_trace.jsonl"
PROFILE = default_profiles()["llama-3.1-8b/h100"]


def test_a_variant_without_a_profile_is_learnt_and_reaches_the_feasible_share_within_one_point():
    trace = window(read_trace(TRACE), start_s=0.0, end_s=1800.0)
    scenario = Scenario(slo_ttft_s=10.0, engine_prefill_error=1.3, engine_decode_error=1.3)
    policy = make_policy("default-unprofiled")
    assert isinstance(policy, ControllerPolicy) and not policy.profiled

    result = simulate(trace, scenario, policy, profile=PROFILE)

    learnt = {r.profile for report in policy.reports for r in report.calibrations if r.applied}
    assert any(name.startswith(SCRATCH_PREFIX) for name in learnt), learnt
    assert PROFILE.name not in learnt  # the shipped profile was never the controller's
    # Until both stages are fitted no capacity model sizes the variant (no SLOCapacity stage): it is reactive.
    planned = [all(any(step.reason is Reason.SLO_CAPACITY for step in o.decision.steps)
                   for o in report.outcomes if o.decision) for report in policy.reports]
    assert not planned[0], "a variant nobody profiled starts reactive"
    assert all(planned[len(planned) // 2:]), "the learnt profile plans the variant once both stages are fitted"
    feasible = result.extra["feasible_fraction"]
    assert feasible > 0.9
    assert result.both_attainment >= feasible - 0.01, (result.both_attainment, feasible)


def test_the_unprofiled_policy_differs_from_default_only_in_the_profiles_it_is_given():
    unprofiled, default = make_policy("default-unprofiled"), make_policy("default")
    assert isinstance(unprofiled, ControllerPolicy) and isinstance(default, ControllerPolicy)
    def configured(policy: ControllerPolicy) -> dict[str, object]:
        return {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.init}

    assert configured(unprofiled) | {"name": "default", "profiled": True} == configured(default)
