"""The tuning harness every tunable peer goes through (``benchmarks/sweep_hpa.py``, ``sweep_wva.py``,
``sweep_dynamo.py``), so each gets the same budget and the same rule as the default's knobs did.

- *Traces*: tuned on :data:`TUNING` (the shipped one-hour 8B traces, Azure conv with TTFT 1 s and Mooncake
  conversation with TTFT 10 s); :data:`HELD_OUT` (Mooncake synthetic, TTFT 10 s) is replayed for every setting
  and reported, never used to choose.
- *Rule* (:func:`choose`): among the settings whose attainment (both SLOs) is within :data:`WITHIN` (0.5 point)
  of the best setting's on every tuning trace, the one with the fewest GPU-hours summed over the tuning traces;
  ties go to the setting listed first.
- *Report* (:func:`report`): every setting's GPU-hours and attainment per trace, the rule, the chosen setting
  (with its held-out numbers) and, where the peer has a released default among the settings, that one too.

A sweep script gives a list of settings (plain dicts, written to the JSON as they are) and a function that
builds the peer's policy from one; :func:`main` does the rest.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaler.sim.runner import SimPolicy, simulate
from autoscaler.sim.scenario import Scenario
from autoscaler.traces import Trace, read_trace, window

__all__ = ["HELD_OUT", "TUNING", "WITHIN", "SweepTrace", "choose", "load", "main", "measure", "report", "sweep"]

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
WITHIN = 0.005
"""How far below the best setting's attainment (a share, 0.005 = 0.5 point) a setting may be on each tuning trace
and still be chosen for being cheaper."""


@dataclass(frozen=True)
class SweepTrace:
    """One shipped trace under the scenario (SLOs, profile) it is judged by."""

    name: str
    file: str
    scenario: Scenario


TUNING = (
    SweepTrace("azure-conv", "azure_llm_2023_conv.csv", Scenario()),
    SweepTrace("mooncake-conversation", "mooncake_conversation_trace.jsonl", Scenario(slo_ttft_s=10.0)),
)
HELD_OUT = (SweepTrace("mooncake-synthetic", "mooncake_synthetic_trace.jsonl", Scenario(slo_ttft_s=10.0)),)

Setting = dict[str, Any]
Row = dict[str, Any]


def load(traces: Sequence[SweepTrace], *, duration_s: float | None = None) -> dict[str, tuple[Trace, Scenario]]:
    """Each trace read from the shipped files, cut to its first ``duration_s`` seconds when given (quick checks)."""
    loaded = {}
    for t in traces:
        trace = read_trace(TRACES / t.file)
        if duration_s:
            trace = window(trace, start_s=0.0, end_s=duration_s)
        loaded[t.name] = (trace, t.scenario)
    return loaded


def measure(policy: SimPolicy, trace: Trace, scenario: Scenario) -> dict[str, float]:
    """One replay: GPU-hours, share within both SLOs, and the ceiling (the feasible share)."""
    r = simulate(trace, scenario, policy)
    return {"gpu_hours": round(r.gpu_hours, 4), "attainment": round(r.both_attainment, 5),
            "feasible_fraction": r.extra["feasible_fraction"]}  # type: ignore[dict-item]


def choose(rows: Sequence[Row], tuning: Sequence[str], *, within: float = WITHIN) -> int:
    """Index of the chosen row: the fewest GPU-hours summed over ``tuning`` among the rows within ``within`` of
    the best attainment on every one of them (ties: the first listed). Rows carry ``results[trace]`` entries
    with ``gpu_hours`` and ``attainment``."""
    if not rows:
        raise ValueError("no settings to choose from")
    best = {t: max(float(row["results"][t]["attainment"]) for row in rows) for t in tuning}
    ok = [i for i, row in enumerate(rows)
          if all(float(row["results"][t]["attainment"]) >= best[t] - within - 1e-12 for t in tuning)]
    return min(ok, key=lambda i: sum(float(rows[i]["results"][t]["gpu_hours"]) for t in tuning))


def sweep(settings: Sequence[Setting], make: Callable[[Setting], SimPolicy],
          traces: Mapping[str, tuple[Trace, Scenario]], *,
          log: Callable[[str], None] | None = None) -> list[Row]:
    """Every setting replayed on every trace: ``{**setting, "results": {trace: measure(...)}}`` per setting.
    A fresh policy is built for each replay (policies keep state)."""
    rows: list[Row] = []
    for setting in settings:
        results = {name: measure(make(setting), trace, scenario) for name, (trace, scenario) in traces.items()}
        rows.append({**setting, "results": results})
        if log is not None:
            log(f"{setting} {({n: (r['gpu_hours'], r['attainment']) for n, r in results.items()})}")
    return rows


def report(*, about: str, rows: Sequence[Row], tuning: Sequence[str], held_out: Sequence[str],
           duration_s: float | None, wall_s: float, released: int | None = None) -> dict[str, Any]:
    """The sweep's JSON: the rule, every row, the chosen row (held-out numbers included, as each row has them)
    and, given its index, the released default's row for comparison."""
    chosen = choose(rows, tuning)
    out: dict[str, Any] = {
        "about": about,
        "tuning_traces": list(tuning), "held_out": list(held_out),
        "rule": f"fewest GPU-hours summed over the tuning traces among the settings within {WITHIN * 100:g} point "
                "of the best attainment on every tuning trace",
        "duration_s": duration_s, "wall_s": round(wall_s, 1),
        "settings": list(rows), "chosen": {"index": chosen, **rows[chosen]},
    }
    if released is not None:
        out["released"] = {"index": released, **rows[released]}
    return out


def main(*, doc: str, settings: Sequence[Setting], make: Callable[[Setting], SimPolicy], out: Path,
         released: int | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """A sweep script's command line: ``[--duration S] [--out FILE]``; writes the report and returns it."""
    about = doc.split("\n\n")[0]
    parser = argparse.ArgumentParser(description=about)
    parser.add_argument("--duration", type=float, default=None, help="replay only the first S seconds")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    traces = load((*TUNING, *HELD_OUT), duration_s=args.duration)
    started = time.perf_counter()
    rows = sweep(settings, make, traces, log=lambda line: print(line, flush=True))
    result = report(about=about, rows=rows, tuning=[t.name for t in TUNING], held_out=[t.name for t in HELD_OUT],
                    duration_s=args.duration, wall_s=time.perf_counter() - started, released=released)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("chosen:", result["chosen"])
    return result
