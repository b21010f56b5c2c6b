"""How fast the simulator replays a trace, and how well it agrees with the capacity model.

1. Replay speed: simulated seconds per wall second (the speed-up over real time) for every shipped trace under
   ``static-peak`` (the engines alone) and ``default`` (the product's controller each cycle, forecaster
   included), and for the Azure trace at 8x its rate on the 70B profile (tens of GPUs, 155k requests).
2. Theory: at a constant Poisson load, one replica driven at the rate the capacity model says meets a p90
   target; the simulated p90 over the predicted one (prefill TTFT; decode ITL per token), with fixed prompts
   and with the prompt mixes of the shipped traces.

Run: ``/work/main/.venv/bin/python benchmarks/bench_simulator.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autoscaler.logs import configure_logging
from autoscaler.perf.profiles import default_profiles
from autoscaler.sim.policies import make_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.scenario import OBSERVE_S, Scenario, resolve_profile
from autoscaler.sim.theory import check_decode, check_prefill, check_prefill_mix
from autoscaler.traces import read_trace, speed_up, splice

TRACES = Path(__file__).resolve().parents[1] / "autoscaler" / "data" / "traces"
RESULTS = Path(__file__).resolve().parent / "results"

REPLAYS = (
    ("azure-conv", "azure_llm_2023_conv.csv", 1, Scenario()),
    ("mooncake-conversation", "mooncake_conversation_trace.jsonl", 1, Scenario(slo_ttft_s=10.0)),
    ("mooncake-synthetic", "mooncake_synthetic_trace.jsonl", 1, Scenario(slo_ttft_s=10.0)),
    ("azure-conv-x8-70b", "azure_llm_2023_conv.csv", 8, Scenario(profile="llama-3.1-70b/h100-tp4", speed_up=8.0)),
)
THEORY = (  # (profile, role, prompt tokens, target seconds)
    ("llama-3.1-8b/h100", "prefill", 1024, 0.3), ("llama-3.1-8b/h100", "prefill", 1024, 1.0),
    ("llama-3.1-8b/h100", "prefill", 4096, 1.0), ("llama-3.1-8b/h100", "prefill", 4096, 3.0),
    ("llama-3.1-8b/h100", "decode", 1024, 0.03), ("llama-3.1-8b/h100", "decode", 1024, 0.05),
    ("llama-3.1-8b/h100", "decode", 4096, 0.05),
    ("llama-3.1-70b/h100-tp4", "prefill", 1024, 0.3), ("llama-3.1-70b/h100-tp4", "prefill", 1024, 1.0),
    ("llama-3.1-70b/h100-tp4", "prefill", 4096, 1.0), ("llama-3.1-70b/h100-tp4", "prefill", 4096, 3.0),
    ("llama-3.1-70b/h100-tp4", "decode", 1024, 0.03), ("llama-3.1-70b/h100-tp4", "decode", 1024, 0.05),
    ("llama-3.1-70b/h100-tp4", "decode", 4096, 0.05),
)
OUTPUT_TOKENS = 200
MIXES = (  # (trace file, profile, target seconds): the capacity model on the prompt mix of a real trace
    ("azure_llm_2023_conv.csv", "llama-3.1-8b/h100", 1.0),
    ("azure_llm_2023_conv.csv", "llama-3.1-70b/h100-tp4", 1.0),
    ("mooncake_conversation_trace.jsonl", "llama-3.1-8b/h100", 10.0),
    ("mooncake_synthetic_trace.jsonl", "llama-3.1-8b/h100", 10.0),
)


def replay_speed(console: Console, *, quick: bool) -> list[dict[str, object]]:
    table = Table(title="Replay speed (one process)", title_justify="left")
    for column in ("trace", "policy", "requests", "simulated min", "wall s", "speed-up", "per hour of trace"):
        table.add_column(column, justify="left" if column in ("trace", "policy") else "right")
    rows = []
    for name, file, factor, scenario in REPLAYS[:1] if quick else REPLAYS:
        trace = read_trace(TRACES / file)
        if factor != 1:
            trace = splice([speed_up(trace, factor)] * factor)
        for policy in ("static-peak", "default"):
            started = time.perf_counter()
            result = simulate(trace, scenario, make_policy(policy))
            wall = time.perf_counter() - started
            # the warm-up copy is replayed too
            simulated = result.simulated_s + scenario.warmup(resolve_profile(scenario.profile), observe_s=OBSERVE_S)
            per_hour = wall / (trace.duration_s / 3600.0)
            rows.append({"trace": name, "policy": policy, "requests": len(trace), "simulated_s": simulated,
                         "wall_s": wall, "speedup": simulated / wall, "wall_s_per_trace_hour": per_hour})
            table.add_row(name, policy, str(len(trace)), f"{simulated / 60:.0f}", f"{wall:.1f}",
                          f"{simulated / wall:.0f}x", f"{per_hour:.1f} s")
    console.print(table)
    return rows


def theory(console: Console, *, quick: bool) -> list[dict[str, object]]:
    profiles = default_profiles()
    table = Table(title="Simulator vs capacity model at a constant Poisson load (one replica, p90)",
                  title_justify="left")
    for column in ("profile", "role", "prompt", "target s", "rate req/s", "model p90 s", "simulated p90 s",
                   "sim/model"):
        table.add_column(column, justify="left" if column in ("profile", "role") else "right")
    rows = []
    points = THEORY[::3] if quick else THEORY
    for profile, role, prompt, target in points:
        if role == "prefill":
            point = check_prefill(profile=profiles[profile], prompt_tokens=prompt, mean_output_tokens=OUTPUT_TOKENS,
                                  ttft_target_s=target)
        else:
            point = check_decode(profile=profiles[profile], prompt_tokens=prompt, mean_output_tokens=OUTPUT_TOKENS,
                                 itl_target_s=target)
        rows.append({"profile": profile, "role": role, "prompt_tokens": prompt, "target_s": target,
                     "rate_rps": point.rate_rps, "predicted_p90_s": point.predicted_p90_s,
                     "simulated_p90_s": point.simulated_p90_s, "ratio": point.ratio})
        table.add_row(profile, role, str(prompt), f"{target:g}", f"{point.rate_rps:.2f}",
                      f"{point.predicted_p90_s:.4f}", f"{point.simulated_p90_s:.4f}", f"{point.ratio:.2f}")
    console.print(table)
    return rows


def theory_on_traces(console: Console, *, quick: bool) -> list[dict[str, object]]:
    profiles = default_profiles()
    table = Table(title="Prefill on real prompt mixes: one replica at the model's rate (p90 TTFT)",
                  title_justify="left")
    for column in ("trace", "profile", "target s", "rate req/s", "model p90 s", "simulated p90 s", "sim/model"):
        table.add_column(column, justify="left" if column in ("trace", "profile") else "right")
    rows = []
    for file, profile, target in MIXES[:1] if quick else MIXES:
        trace = read_trace(TRACES / file)
        point = check_prefill_mix(profile=profiles[profile], prompts=trace.input_tokens,
                                  outputs=trace.output_tokens, ttft_target_s=target)
        rows.append({"trace": file, "profile": profile, "target_s": target, "rate_rps": point.rate_rps,
                     "predicted_p90_s": point.predicted_p90_s, "simulated_p90_s": point.simulated_p90_s,
                     "ratio": point.ratio})
        table.add_row(file, profile, f"{target:g}", f"{point.rate_rps:.3f}", f"{point.predicted_p90_s:.3f}",
                      f"{point.simulated_p90_s:.3f}", f"{point.ratio:.2f}")
    console.print(table)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one trace, a few theory points")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(level="error", fmt="console")
    console = Console(width=140)
    speed = replay_speed(console, quick=args.quick)
    agreement = theory(console, quick=args.quick)
    mixes = theory_on_traces(console, quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_simulator.json").write_text(
        json.dumps({"replay": speed, "theory": agreement, "theory_on_traces": mixes}, indent=1) + "\n")


if __name__ == "__main__":
    main()
