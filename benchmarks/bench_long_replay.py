"""Two days of production traffic replayed under each policy: wall time and peak memory (issue 13, item 5).

The ServeGen two-day trace at ``--load-scale 4`` (``autoscaler.traces.load_scale``: four times the requests on the
same clock) on Llama-3.1-70B TP4, every policy in the simulator's coarse engine mode
(``autoscaler.perf.fluid.FluidEngine``, validated against the per-step engine in tests/core/test_sim_coarse.py).
Policies run in ``--workers`` processes side by side (one per core); the target is 10 minutes in all on 2 cores.

    python benchmarks/bench_long_replay.py                                   # the whole replay
    python benchmarks/bench_long_replay.py --hours 2 --policies default      # a quick slice

Prints a table and writes ``benchmarks/results/long_replay.json``: per policy the ``simulate --json`` fields, its
wall time, its CPU time and its worker's peak resident memory; the total wall time; the trace and the scenario.
On a shared machine wall time says little, so the report also gives ``unloaded_2core_estimate_s``: the policies'
CPU times scheduled as the pool schedules them (in order, each to the first free worker), what two idle cores
would take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Manager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRACE_CANDIDATES = (ROOT / "autoscaler/data/traces/servegen_m-mid_2d.csv.gz",
                    ROOT / "autoscaler/data/traces/servegen_m-mid_2d.csv",
                    ROOT.parent / "shared/traces/servegen_m-mid_2d.csv",
                    Path("/work/shared/traces/servegen_m-mid_2d.csv"))
PEERS = ("best-static", "hpa-tuned", "wva", "dynamo")  # longest first: the pool takes them in this order
FALLBACK_PEERS = ("static-peak", "saturation", "hpa-queue", "dynamo-style")


def default_policies() -> list[str]:
    """``default`` and the issue's four peers where this checkout has them, else the baselines it has."""
    from autoscaler.sim.policies import policy_names

    known = set(policy_names())
    peers = [p for p in PEERS if p in known]
    return ["default", *(peers or [p for p in FALLBACK_PEERS if p in known])]


def _load(args: argparse.Namespace) -> Any:
    from autoscaler.traces import load_scale, read_trace, window

    trace = read_trace(args.trace)
    if args.hours is not None:
        trace = window(trace, start_s=args.start_hour * 3600.0, end_s=(args.start_hour + args.hours) * 3600.0)
    return load_scale(trace, args.load_scale, seed=args.seed)


def _scenario(args: argparse.Namespace) -> Any:
    from autoscaler.sim.scenario import Scenario

    return Scenario(profile=args.profile, engine_mode=args.engine, seed=args.seed,
                    extra=(("load_scale", args.load_scale), ("trace_hours", args.hours)))


def _run_one(name: str, args: argparse.Namespace, updates: Any) -> dict[str, Any]:
    """One policy in a worker process: its summary, wall time and the process's peak memory."""
    from autoscaler.logs import configure_logging
    from autoscaler.sim.policies import make_policy
    from autoscaler.sim.runner import simulate

    configure_logging(level="error", fmt="console")
    started, cpu_started = time.perf_counter(), time.process_time()
    trace = _load(args)
    loaded_s = time.perf_counter() - started
    last = [0.0]

    def progress(done_s: float) -> None:
        if done_s - last[0] >= 600.0:  # every ten simulated minutes
            last[0] = done_s
            updates.put((name, done_s))

    result = simulate(trace, _scenario(args), make_policy(name), progress=progress)
    updates.put((name, trace.duration_s))
    out = dict(result.summary())
    out["wall_s"] = round(time.perf_counter() - started, 1)
    out["cpu_s"] = round(time.process_time() - cpu_started, 1)  # on a shared machine wall time overstates
    out["trace_load_s"] = round(loaded_s, 1)
    out["simulate_wall_s"] = round(result.wall_s, 1)
    out["peak_rss_mb"] = round(_peak_rss_mb(resource.RUSAGE_SELF), 1)
    out["requests"] = result.requests
    return out


def _peak_rss_mb(who: int) -> float:
    rss = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=next((p for p in TRACE_CANDIDATES if p.exists()), None))
    parser.add_argument("--load-scale", type=float, default=4.0)
    parser.add_argument("--profile", default="llama-3.1-70b/h100-tp4")
    parser.add_argument("--policies", default=None, help="comma-separated (default: default and the peers)")
    parser.add_argument("--engine", choices=("coarse", "step"), default="coarse")
    parser.add_argument("--workers", type=int, default=2, help="policies run side by side (default: 2 cores)")
    parser.add_argument("--hours", type=float, default=None, help="replay only this many hours (a quick slice)")
    parser.add_argument("--start-hour", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/long_replay.json")
    args = parser.parse_args(argv)
    if args.trace is None:
        parser.error("no ServeGen trace found; pass --trace")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    names = [n.strip() for n in args.policies.split(",")] if args.policies else default_policies()
    from autoscaler.sim.policies import check_names

    check_names(names)
    console = Console(stderr=True)
    started = time.perf_counter()
    trace = _load(args)
    total_s = max(trace.duration_s, 1.0)
    console.print(f"{args.trace.name} x{args.load_scale:g}: {len(trace):,} requests over {total_s / 3600:.1f} h; "
                  f"{', '.join(names)} on {args.profile}, engine {args.engine}, {args.workers} workers")
    results: dict[str, dict[str, Any]] = {}
    with Manager() as manager, Progress(TextColumn("{task.description:<14}"), BarColumn(),
                                        TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                                        console=console) as bar:
        updates = manager.Queue()
        logged: dict[str, float] = {}
        tasks = {name: bar.add_task(name, total=total_s) for name in names}
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(_run_one, name, args, updates): name for name in names}
            pending = set(futures)
            while pending:
                while not updates.empty():
                    name, done_s = updates.get()
                    bar.update(tasks[name], completed=min(done_s, total_s))
                    if not console.is_terminal and int(done_s / 3600) > int(logged.get(name, -1.0) / 3600):
                        logged[name] = done_s  # no live bar without a terminal: a line per simulated hour
                        print(f"{name}: {done_s / 3600:.0f} h of {total_s / 3600:.0f} h after "
                              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
                for future in [f for f in pending if f.done()]:
                    results[futures[future]] = future.result()
                    pending.discard(future)
                time.sleep(0.5)
    wall_s = time.perf_counter() - started
    cpu = [results[name]["cpu_s"] for name in names]
    report = {
        "benchmark": "long_replay",
        "trace": str(args.trace.name), "load_scale": args.load_scale, "requests": len(trace),
        "duration_h": round(total_s / 3600.0, 3), "profile": args.profile, "engine_mode": args.engine,
        "workers": args.workers, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s_total": round(wall_s, 1),
        "cpu_s_total": round(sum(cpu), 1),
        "unloaded_2core_estimate_s": round(schedule_s(cpu, args.workers), 1),
        "peak_rss_mb_max_worker": max((r["peak_rss_mb"] for r in results.values()), default=0.0),
        "peak_rss_mb_parent": round(_peak_rss_mb(resource.RUSAGE_SELF), 1),
        "scenario": _scenario(args).to_json(_profile(args.profile)),
        "policies": {name: results[name] for name in names},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.hours is None and args.load_scale == 4.0 and args.engine == "coarse" and args.seed == 0 \
            and args.profile == "llama-3.1-70b/h100-tp4":
        console.print(f"updated {update_matrix(report)}")
    table = Table(title=f"two-day replay: {len(trace):,} requests, {wall_s:.0f} s wall in all, "
                        f"{sum(cpu):.0f} s CPU, ~{report['unloaded_2core_estimate_s']:.0f} s on {args.workers} idle cores")
    for column in ("policy", "GPU-hours", "attainment", "feasible", "wall s", "CPU s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in names:
        r = results[name]
        table.add_row(name, f"{r['gpu_hours']:.1f}", f"{100 * r['attainment']:.2f}%",
                      f"{100 * float(r['feasible_fraction']):.2f}%", f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}",
                      f"{r['peak_rss_mb']:.0f}")
    Console().print(table)
    console.print(f"wrote {args.out}")
    return 0


BENCH_FIELDS = ("cpu_s", "trace_load_s", "simulate_wall_s", "peak_rss_mb", "requests")


def update_matrix(report: dict[str, Any]) -> Path:
    """This replay is ``bench_policies.py``'s ``servegen-2d-70b`` cell at engine 1.0x (same trace, load, seed,
    profile and engine; its ``load_scale`` field is a label): its policies replace theirs in that cell, the
    others are kept, so the README table gets the two-day row from here. A policy's bootstrap interval
    (``resample``, from ``bench_policies.py --resample``) is kept while the rerun lands on the same point (GPU-hours
    and attainment) it was drawn around, and dropped when the point moved."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_policies import cell_path, update_cell

    fresh = {name: {k: v for k, v in entry.items() if k not in BENCH_FIELDS}
             for name, entry in report["policies"].items()}

    def merged(cell: dict[str, Any] | None) -> dict[str, Any]:
        cell = cell or {"trace": "servegen-2d-70b", "requests": report["requests"],
                        "duration_s": report["duration_h"] * 3600.0,
                        "scenario": {**report["scenario"], "load_scale": report["load_scale"]}, "policies": {}}
        return {**cell, "policies": {**cell["policies"], **{name: _keep_interval(cell["policies"].get(name), entry)
                                                            for name, entry in fresh.items()}}}

    path = cell_path("servegen-2d-70b", 1.0)
    update_cell(path, merged)
    return path


def _keep_interval(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None or "resample" not in old or any(old.get(k) != new.get(k) for k in ("gpu_hours", "attainment")):
        return new
    return {**new, "resample": old["resample"]}


def schedule_s(durations: list[float], workers: int) -> float:
    """When the last of ``durations`` ends, each started in order on the first free of ``workers``."""
    free = [0.0] * max(1, workers)
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def _profile(name: str) -> Any:
    from autoscaler.sim.scenario import resolve_profile

    return resolve_profile(name)


if __name__ == "__main__":
    raise SystemExit(main())
