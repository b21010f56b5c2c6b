"""Run several policies on one trace and report: the JSON object, a table, the PNGs.

The JSON shape (``variant-autoscaler simulate --json``)::

    {"trace": "path", "requests": N, "duration_s": ...,
     "scenario": {"profile": ..., "slo_ttft_s": ..., "slo_itl_s": ..., "interval_s": ..., ...},
     "policies": {"clairvoyant-model": {"gpu_hours", "cost", "ttft_attainment", "itl_attainment", "rejected",
                             "scale_actions", ..., "interval_s"},
                  "default": {...}, "static-peak": {...}, ...},
     "oracle_with_startup": {"gpu_hours": ..., "startup_s": ..., "gpu_hours_without_startup": ...},
     "plots": {"timeline": "...png", "cost_vs_attainment": "...png"}}

With ``--resample K`` every policy also runs on K block-bootstrap resamples of the trace (1-minute blocks drawn with
replacement, :func:`autoscaler.traces.block_bootstrap`, seeded by ``(seed, k)``) and its entry gets
``"resample": {"gpu_hours": {"mean", "p5", "p95"}, "attainment": {...}, "ttft_attainment": {...},
"itl_attainment": {...}}``: the mean and the 90% interval (5th to 95th percentile) over the resamples.

``oracle_with_startup`` (with ``clairvoyant-model``, "the oracle" below, among the policies) is the clairvoyant
that pays start-up (:mod:`autoscaler.sim.bounds`): the oracle's per-interval replicas, each one added paying the
node and pod delay; every policy's entry then also has ``gpu_hours_vs_oracle_with_startup``. What separates it from the oracle is the
start-up no policy can avoid; what separates a policy from it is the policy's own.

Attainments are fractions of all requests of the trace (a rejected or unfinished request does not attain);
``feasible_fraction`` is the share that can meet both SLOs at all (alone on an idle cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from autoscaler.core.types import Role
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.best_static import BestStatic
from autoscaler.sim.bounds import StartupBound, clairvoyant_with_startup
from autoscaler.sim.plots import plot_cost_vs_attainment, plot_timelines
from autoscaler.sim.policies import make_policy
from autoscaler.sim.runner import RunResult, SimPolicy, simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace, block_bootstrap

CLAIRVOYANT = "clairvoyant-model"
"""The policy the JSON's ``oracle_with_startup`` and ``gpu_hours_vs_oracle*`` extras are computed from (the keys
keep their old name): clairvoyant on the project's own capacity model, not a bound, so no headline uses them."""

__all__ = [
    "CLAIRVOYANT",
    "RESAMPLED",
    "WarmStarts",
    "oracle_with_startup",
    "percentile_interval",
    "print_table",
    "report_json",
    "resample_summary",
    "run_policies",
    "run_resamples",
    "write_plots",
]

Progress = Callable[[str, float], None]  # (policy, simulated seconds done)
ResampleProgress = Callable[[str, int, float], None]  # (policy, resample index, simulated seconds done)

RESAMPLED = ("gpu_hours", "attainment", "ttft_attainment", "itl_attainment")
"""The fields of a policy's result summarised over the resamples."""


class WarmStarts:
    """Makes the policies for a run of similar traces (a trace, then its bootstrap resamples): as
    :func:`make_policy`, except that ``best-static`` searches from the fleet it found on the trace before
    (:attr:`autoscaler.sim.best_static.BestStatic.near`); the first one made searches in full."""

    def __init__(self) -> None:
        self._last: BestStatic | None = None

    def __call__(self, name: str) -> SimPolicy:
        if name != "best-static":
            return make_policy(name)
        near = self._last.search.fleet if self._last is not None and self._last.search is not None else None
        self._last = BestStatic(near=near)
        return self._last


def run_policies(trace: Trace, scenario: Scenario, names: Sequence[str], *, profile: PerformanceProfile,
                 progress: Progress | None = None,
                 make: Callable[[str], SimPolicy] = make_policy) -> list[RunResult]:
    """Every named policy on the same trace and scenario, in order (each made by ``make``)."""
    results = []
    for name in names:
        policy = make(name)

        def tick(done: float, name: str = name) -> None:
            if progress is not None:
                progress(name, done)

        results.append(simulate(trace, scenario, policy, profile=profile, progress=tick))
    return results


def run_resamples(trace: Trace, scenario: Scenario, names: Sequence[str], *, profile: PerformanceProfile,
                  count: int, seed: int, progress: ResampleProgress | None = None, reach_s: float | None = None,
                  make: Callable[[str], SimPolicy] | None = None) -> dict[str, list[RunResult]]:
    """Every named policy on each of ``count`` block-bootstrap resamples of ``trace`` (resample k drawn with the
    seed ``(seed, k)``, the same for every policy; with ``reach_s``, a local draw, see
    :func:`autoscaler.traces.block_bootstrap`): per policy, its results in resample order. Policies are made by
    ``make``, by default a fresh :class:`WarmStarts` (pass the one the trace's own run used to start ``best-static``
    from its fleet there)."""
    out: dict[str, list[RunResult]] = {name: [] for name in names}
    make = make if make is not None else WarmStarts()
    for k in range(count):
        resampled = block_bootstrap(trace, seed=(seed, k), reach_s=reach_s)

        def tick(name: str, done: float, k: int = k) -> None:
            if progress is not None:
                progress(name, k, done)

        for name, result in zip(names, run_policies(resampled, scenario, names, profile=profile, progress=tick,
                                                    make=make), strict=True):
            out[name].append(result)
    return out


def percentile_interval(values: Sequence[float], *, digits: int) -> dict[str, float]:
    """Mean and 90% interval (5th and 95th percentile, linear interpolation) of ``values``."""
    p5, p95 = np.percentile(np.asarray(values, dtype=np.float64), [5.0, 95.0])
    return {"mean": round(float(np.mean(values)), digits), "p5": round(float(p5), digits),
            "p95": round(float(p95), digits)}


def resample_summary(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """One policy's results over the resamples as ``{field: {mean, p5, p95}}`` for each field of RESAMPLED."""
    if not results:
        raise ValueError("resample_summary needs at least one result")
    summaries = [r.summary() for r in results]
    return {name: percentile_interval([float(s[name]) for s in summaries],  # type: ignore[arg-type]
                                      digits=4 if name == "gpu_hours" else 5) for name in RESAMPLED}


def oracle_with_startup(results: Sequence[RunResult], *, scenario: Scenario,
                        profile: PerformanceProfile) -> StartupBound | None:
    """The clairvoyant-with-start-up bound from the oracle's run among ``results`` (None without one).

    The oracle's capacity arrives at once, so its timeline's replicas per interval are its needs; the start-up is
    the scenario's node + pod delay (the oracle itself ran without them), and the measured window ends where the
    oracle's run did."""
    oracle = next((r for r in results if r.policy == CLAIRVOYANT), None)
    if oracle is None or not oracle.timeline.t:
        return None
    timeline = oracle.timeline
    interval = scenario.interval_s
    for i, t in enumerate(timeline.t):
        if abs(t - i * interval) > 1e-6:
            raise ValueError(f"oracle timeline: entry {i} is at {t:g} s, not on the {interval:g} s control grid")
    return clairvoyant_with_startup(
        needs={Role.PREFILL: timeline.prefill_replicas, Role.DECODE: timeline.decode_replicas},
        interval_s=interval, startup_s=scenario.node_delay(profile) + scenario.pod_delay(profile),
        gpus_per_replica=profile.gpus_per_replica,
        end_s=min(oracle.simulated_s, len(timeline.t) * interval))


def report_json(*, trace_name: str, trace: Trace, scenario: Scenario, profile: PerformanceProfile,
                results: Sequence[RunResult], plots: dict[str, str] | None = None,
                resamples: dict[str, list[RunResult]] | None = None) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for r in results:
        entry = r.summary()
        if r.policy == CLAIRVOYANT:
            entry["interval_s"] = scenario.interval_s
        if resamples and resamples.get(r.policy):
            entry["resample"] = resample_summary(resamples[r.policy])
        policies[r.policy] = entry
    out: dict[str, Any] = {
        "trace": trace_name,
        "requests": len(trace),
        "duration_s": round(trace.duration_s, 3),
        "scenario": scenario.to_json(profile),
        "policies": policies,
    }
    oracle = next((r for r in results if r.policy == CLAIRVOYANT), None)
    if oracle is not None and oracle.gpu_hours > 0:
        for r in results:
            policies[r.policy]["gpu_hours_vs_oracle"] = round(r.gpu_hours / oracle.gpu_hours, 3)
    bound = oracle_with_startup(results, scenario=scenario, profile=profile)
    if bound is not None:
        out["oracle_with_startup"] = {"gpu_hours": round(bound.gpu_hours, 4), "startup_s": bound.startup_s,
                                      "gpu_hours_without_startup": round(bound.gpu_hours_without_startup, 4)}
        if bound.gpu_hours > 0:
            for r in results:
                policies[r.policy]["gpu_hours_vs_oracle_with_startup"] = round(r.gpu_hours / bound.gpu_hours, 3)
    if plots:
        out["plots"] = plots
    return out


def print_table(results: Sequence[RunResult], *, scenario: Scenario, console: Console, title: str,
                profile: PerformanceProfile | None = None,
                resamples: dict[str, list[RunResult]] | None = None) -> None:
    """The results as a table; with ``profile`` and ``clairvoyant-model`` among them, a line with the clairvoyant
    that pays start-up; with ``resamples``, the mean and 90% interval of GPU-hours and attainment over them."""
    bound = oracle_with_startup(results, scenario=scenario, profile=profile) if profile is not None else None
    table = Table(title=title, title_justify="left")
    # No column divides by the clairvoyant model: it measures agreement with our own capacity model.
    columns = ["policy", "GPU-h", "cost $", "TTFT ok", "ITL ok", "both ok", "rejected", "scale actions", "wall s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(r.policy, f"{r.gpu_hours:.2f}", f"{r.cost:.2f}", f"{r.ttft_attainment:.2%}",
                      f"{r.itl_attainment:.2%}", f"{r.both_attainment:.2%}", str(r.rejected), str(r.scale_actions),
                      f"{r.wall_s:.1f}")
    console.print(table)
    feasible = results[0].extra.get("feasible_fraction") if results else None
    console.print(f"SLO: TTFT <= {scenario.slo_ttft_s:g} s and mean ITL <= {scenario.slo_itl_s:g} s per request; "
                  f"{feasible:.2%} of requests can meet both at all (alone on an idle cluster); control interval "
                  f"{scenario.interval_s:g} s." if feasible is not None else "")
    if bound is not None:
        console.print(f"clairvoyant-model+start-up: its replicas, each one added paying {bound.startup_s:g} s of node "
                      f"and pod start-up first: {bound.gpu_hours:.2f} GPU-h.")
    if resamples:
        _print_resamples(results, resamples=resamples, seed=scenario.seed, console=console)


def _print_resamples(results: Sequence[RunResult], *, resamples: dict[str, list[RunResult]], seed: int,
                     console: Console) -> None:
    """Per policy, the mean and 90% interval of GPU-hours and attainment over the resamples."""
    count = max(len(runs) for runs in resamples.values())
    table = Table(title=f"{count} block-bootstrap resamples (1-minute blocks, seed {seed}): mean and 90% interval",
                  title_justify="left")
    for column in ("policy", "GPU-h", "GPU-h 90%", "both ok", "both ok 90%", "TTFT ok", "ITL ok"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        runs = resamples.get(r.policy)
        if not runs:
            continue
        summary = resample_summary(runs)
        g, a = summary["gpu_hours"], summary["attainment"]
        table.add_row(r.policy, f"{g['mean']:.2f}", f"{g['p5']:.2f}-{g['p95']:.2f}", f"{a['mean']:.2%}",
                      f"{a['p5']:.2%}-{a['p95']:.2%}", f"{summary['ttft_attainment']['mean']:.2%}",
                      f"{summary['itl_attainment']['mean']:.2%}")
    console.print(table)


def write_plots(results: Sequence[RunResult], *, directory: Path, stem: str, scenario: Scenario,
                title: str) -> dict[str, str]:
    timeline = plot_timelines(results, path=directory / f"{stem}_timeline.png", title=title,
                              slo_ttft_s=scenario.slo_ttft_s, slo_itl_s=scenario.slo_itl_s)
    cost = plot_cost_vs_attainment(results, path=directory / f"{stem}_cost_vs_attainment.png", title=title)
    return {"timeline": str(timeline), "cost_vs_attainment": str(cost)}
