"""Run several policies on one trace and report: the JSON object, a table, the PNGs.

The JSON shape (``variant-autoscaler simulate --json``)::

    {"trace": "path", "requests": N, "duration_s": ...,
     "scenario": {"profile": ..., "slo_ttft_s": ..., "slo_itl_s": ..., "interval_s": ..., ...},
     "policies": {"oracle": {"gpu_hours", "cost", "ttft_attainment", "itl_attainment", "rejected",
                             "scale_actions", ..., "interval_s"},
                  "default": {...}, "static-peak": {...}, ...},
     "plots": {"timeline": "...png", "cost_vs_attainment": "...png"}}

Attainments are fractions of all requests of the trace (a rejected or unfinished request does not attain);
``feasible_fraction`` is the share that can meet both SLOs at all (alone on an idle cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.plots import plot_cost_vs_attainment, plot_timelines
from autoscaler.sim.policies import make_policy
from autoscaler.sim.runner import RunResult, simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace

__all__ = ["print_table", "report_json", "run_policies", "write_plots"]

Progress = Callable[[str, float], None]  # (policy, simulated seconds done)


def run_policies(trace: Trace, scenario: Scenario, names: Sequence[str], *, profile: PerformanceProfile,
                 progress: Progress | None = None) -> list[RunResult]:
    """Every named policy on the same trace and scenario, in order."""
    results = []
    for name in names:
        policy = make_policy(name)

        def tick(done: float, name: str = name) -> None:
            if progress is not None:
                progress(name, done)

        results.append(simulate(trace, scenario, policy, profile=profile, progress=tick))
    return results


def report_json(*, trace_name: str, trace: Trace, scenario: Scenario, profile: PerformanceProfile,
                results: Sequence[RunResult], plots: dict[str, str] | None = None) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for r in results:
        entry = r.summary()
        if r.policy == "oracle":
            entry["interval_s"] = scenario.interval_s
        policies[r.policy] = entry
    out: dict[str, Any] = {
        "trace": trace_name,
        "requests": len(trace),
        "duration_s": round(trace.duration_s, 3),
        "scenario": scenario.to_json(profile),
        "policies": policies,
    }
    oracle = next((r for r in results if r.policy == "oracle"), None)
    if oracle is not None and oracle.gpu_hours > 0:
        for r in results:
            policies[r.policy]["gpu_hours_vs_oracle"] = round(r.gpu_hours / oracle.gpu_hours, 3)
    if plots:
        out["plots"] = plots
    return out


def print_table(results: Sequence[RunResult], *, scenario: Scenario, console: Console, title: str) -> None:
    oracle = next((r for r in results if r.policy == "oracle"), None)
    table = Table(title=title, title_justify="left")
    for column in ("policy", "GPU-h", "vs oracle", "cost $", "TTFT ok", "ITL ok", "both ok", "rejected",
                   "scale actions", "wall s"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        ratio = f"{r.gpu_hours / oracle.gpu_hours:.2f}x" if oracle and oracle.gpu_hours > 0 else "-"
        table.add_row(r.policy, f"{r.gpu_hours:.2f}", ratio, f"{r.cost:.2f}", f"{r.ttft_attainment:.2%}",
                      f"{r.itl_attainment:.2%}", f"{r.both_attainment:.2%}", str(r.rejected), str(r.scale_actions),
                      f"{r.wall_s:.1f}")
    console.print(table)
    feasible = results[0].extra.get("feasible_fraction") if results else None
    console.print(f"SLO: TTFT <= {scenario.slo_ttft_s:g} s and mean ITL <= {scenario.slo_itl_s:g} s per request; "
                  f"{feasible:.2%} of requests can meet both at all (alone on an idle cluster); oracle interval "
                  f"{scenario.interval_s:g} s." if feasible is not None else "")


def write_plots(results: Sequence[RunResult], *, directory: Path, stem: str, scenario: Scenario,
                title: str) -> dict[str, str]:
    timeline = plot_timelines(results, path=directory / f"{stem}_timeline.png", title=title,
                              slo_ttft_s=scenario.slo_ttft_s, slo_itl_s=scenario.slo_itl_s)
    cost = plot_cost_vs_attainment(results, path=directory / f"{stem}_cost_vs_attainment.png", title=title)
    return {"timeline": str(timeline), "cost_vs_attainment": str(cost)}
