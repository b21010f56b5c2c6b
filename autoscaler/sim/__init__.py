"""Trace-driven simulator of disaggregated vLLM serving, and the baselines the autoscaler is measured against.

    trace = read_trace("autoscaler/data/traces/azure_llm_2023_conv.csv")
    result = simulate(trace, Scenario(profile="llama-3.1-8b/h100"), make_policy("default"))
    result.gpu_hours, result.ttft_attainment, result.itl_attainment

Modules: :mod:`~autoscaler.sim.cluster` (nodes, pods, engines, routing, KV transfer, cost),
:mod:`~autoscaler.sim.adapters` (the control loop's ports), :mod:`~autoscaler.sim.runner` (the replay),
:mod:`~autoscaler.sim.controlled` (the product's controller as ``default`` and ``saturation``),
:mod:`~autoscaler.sim.baselines`, :mod:`~autoscaler.sim.hpa`, :mod:`~autoscaler.sim.wva`, :mod:`~autoscaler.sim.dynamo`,
:mod:`~autoscaler.sim.best_static` (the peers: static, HPAs, WVA, Dynamo, best static fleet, clairvoyant model),
:mod:`~autoscaler.sim.report` and :mod:`~autoscaler.sim.plots` (JSON, table, PNGs),
:mod:`~autoscaler.sim.theory` (agreement with the capacity model).

Owns the simulated cluster, the peers and the research gateway rules (:mod:`~autoscaler.sim.gateway_rules`); it runs
the real controller. May import: config, controller, core, errors, forecast, perf, traces.
"""

from autoscaler.sim.policies import ABLATIONS, BASELINES, STANDARD, make_policy, policy_names, register
from autoscaler.sim.runner import RunResult, SimContext, SimPolicy, Timeline, simulate
from autoscaler.sim.scenario import DEFAULT_PROFILE, Scenario, resolve_profile

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "DEFAULT_PROFILE",
    "STANDARD",
    "RunResult",
    "Scenario",
    "SimContext",
    "SimPolicy",
    "Timeline",
    "make_policy",
    "policy_names",
    "register",
    "resolve_profile",
    "simulate",
]
