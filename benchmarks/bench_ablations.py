"""What each part of ``default`` buys (issue 14: "write down what each change bought"): ``default`` against itself
with one part taken out or swapped, on every benchmark scenario at engine error 1.0, GPU-hours and attainment.

- ``default-no-rejection``: no early rejection (every request is admitted and queues);
- ``default-mean-forecast``: sized for the forecast's mean instead of its upper quantile;
- ``default-gateway``: the planner's admission decision applied per request by a gateway, instead of the cycle's
  admission ratio (:data:`autoscaler.sim.policies.ABLATIONS`).

Each runs on the same trace, scenario and seed as ``bench_policies.py``'s cell at 1.0x (points, no intervals);
``default``'s own point is read from that cell. Jobs run two at a time (one per core).

    python benchmarks/bench_ablations.py                      # every scenario
    python benchmarks/bench_ablations.py --scenario azure-conv

Writes ``benchmarks/results/ablations.json`` (merged: scenarios not run now are kept) and ``ablations.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policies import BY_NAME, RESULTS, SCENARIOS, SEED, cell_path

from autoscaler.sim.policies import ABLATIONS

OUT = RESULTS / "ablations.json"
FIELDS = ("gpu_hours", "attainment", "ttft_attainment", "itl_attainment", "rejected", "feasible_fraction")


def run_one(scenario_name: str, policy: str) -> dict[str, Any]:
    """One ablation on one scenario at engine error 1.0: its ``simulate --json`` fields."""
    from autoscaler.logs import configure_logging
    from autoscaler.sim.policies import make_policy
    from autoscaler.sim.runner import simulate
    from autoscaler.sim.scenario import resolve_profile

    configure_logging(level="error", fmt="console")
    bench = BY_NAME[scenario_name]
    scenario = dataclasses.replace(bench.scenario, engine_prefill_error=1.0, engine_decode_error=1.0, seed=SEED)
    started = time.perf_counter()
    result = simulate(bench.trace(), scenario, make_policy(policy), profile=resolve_profile(scenario.profile))
    summary = result.summary()
    return {**{k: summary[k] for k in FIELDS}, "wall_s": round(time.perf_counter() - started, 1)}


def default_point(scenario_name: str) -> dict[str, Any] | None:
    path = cell_path(scenario_name, 1.0)
    if not path.exists():
        return None
    entry = json.loads(path.read_text())["policies"].get("default")
    return None if entry is None else {k: entry[k] for k in FIELDS}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The table: per scenario, ``default`` and each ablation as GPU-h / attainment, with the change from
    ``default`` (GPU-h as a ratio, attainment in points)."""
    head = "| scenario | default | " + " | ".join(ABLATIONS) + " |"
    lines = [head, "| --- | ---: | " + " | ".join("---:" for _ in ABLATIONS) + " |"]
    for name in (s.name for s in SCENARIOS):
        row = results.get(name)
        if row is None:
            continue
        base = row.get("default")
        cells = [f"{base['gpu_hours']:.2f} / {100 * base['attainment']:.2f}%" if base else "-"]
        for policy in ABLATIONS:
            r = row.get(policy)
            if r is None:
                cells.append("-")
                continue
            cell = f"{r['gpu_hours']:.2f} / {100 * r['attainment']:.2f}%"
            if base and base["gpu_hours"] > 0:
                cell += (f" ({r['gpu_hours'] / base['gpu_hours']:.2f}×, "
                         f"{100 * (r['attainment'] - base['attainment']):+.2f} pt)")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=list(BY_NAME))
    parser.add_argument("--policy", action="append", choices=list(ABLATIONS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    names = args.scenario or [s.name for s in SCENARIOS]
    policies = args.policy or list(ABLATIONS)
    results: dict[str, dict[str, Any]] = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names:
        results.setdefault(name, {})["default"] = default_point(name)
    started = time.perf_counter()
    # the two-day replays first: they are the long ones
    jobs = sorted(((n, p) for n in names for p in policies), key=lambda job: job[0] != "servegen-2d-70b")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, n, p): (n, p) for n, p in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            n, p = futures[future]
            results[n][p] = future.result()
            r = results[n][p]
            print(f"[{done}/{len(jobs)}] {n} {p}: {r['gpu_hours']:.2f} GPU-h / {100 * r['attainment']:.2f}% "
                  f"in {r['wall_s']:.0f} s", flush=True)
            OUT.write_text(json.dumps(results, indent=1) + "\n")  # nothing lost if a later job fails
    (RESULTS / "ablations.md").write_text(markdown(results))
    print(f"total {time.perf_counter() - started:.0f} s; table in {RESULTS / 'ablations.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
