"""Time the capacity model: 1,000 variants (profile x role x traffic mix x SLO), capacity plus replica count.

    python benchmarks/bench_capacity.py [--variants 1000] [--seed 0]

Prints the total and per-variant time, overall and per role (prefill and aggregated solve a queue; decode is
closed form). The autoscaler evaluates one variant per cycle per VariantAutoscaling, so per-variant time is
the number that matters.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from autoscaler.core.types import Role
from autoscaler.perf.capacity import SloTargets, TrafficMix, estimate_capacity, replicas_needed
from autoscaler.perf.profiles import default_profiles


def variants(count: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    profiles = list(default_profiles().values())
    out = []
    for _ in range(count):
        mean_in = rng.choice([128, 256, 512, 1024, 2048, 4096, 8000])
        mix = TrafficMix(mean_input_tokens=mean_in, p90_input_tokens=mean_in * rng.uniform(1.1, 3.0),
                         mean_output_tokens=rng.choice([32, 128, 256, 512, 1024]),
                         request_rate_rps=rng.uniform(0, 200))
        slo = SloTargets(ttft_s=rng.choice([0.2, 0.5, 1.0, 2.0, 5.0]), itl_s=rng.choice([0.02, 0.03, 0.05, 0.1]),
                         percentile=rng.choice([0.5, 0.9, 0.95, 0.99]))
        out.append((rng.choice(profiles), rng.choice(list(Role)), mix, slo))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = variants(args.variants, args.seed)

    per_role: dict[Role, list[float]] = {role: [] for role in Role}
    infeasible = 0
    start = time.perf_counter()
    for profile, role, mix, slo in cases:
        t0 = time.perf_counter()
        capacity = estimate_capacity(profile=profile, role=role, mix=mix, slo=slo)
        replicas_needed(rate_rps=mix.request_rate_rps, capacity=capacity)
        per_role[role].append(time.perf_counter() - t0)
        infeasible += not capacity.feasible
    total = time.perf_counter() - start

    print(f"variants: {len(cases)} ({infeasible} with an unattainable SLO)")
    print(f"total: {total * 1e3:.1f} ms   per variant: {total / len(cases) * 1e6:.0f} us")
    for role, times in per_role.items():
        if times:
            print(f"  {role.value:8s} n={len(times):4d}  mean {statistics.fmean(times) * 1e6:6.0f} us  "
                  f"p99 {sorted(times)[int(0.99 * (len(times) - 1))] * 1e6:6.0f} us  max {max(times) * 1e6:6.0f} us")


if __name__ == "__main__":
    main()
