"""PNG reports of a simulation (matplotlib, Agg backend: no display needed).

- :func:`plot_timelines`: per policy, the load (arrivals per second), the replicas of prefill and decode
  (requested and ready) and the p90 TTFT and ITL of the requests arriving in each interval, against the SLOs;
- :func:`plot_cost_vs_attainment`: GPU-hours against the share of requests meeting both SLOs, one point per
  policy (lower right is better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: renders to files on machines without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from autoscaler.sim.runner import RunResult

__all__ = ["plot_cost_vs_attainment", "plot_timelines"]


def _minutes(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=float) / 60.0


def plot_timelines(results: Sequence[RunResult], *, path: Path, title: str, slo_ttft_s: float,
                   slo_itl_s: float) -> Path:
    """One column per policy: load, replicas, latency over time."""
    cols = max(1, len(results))
    fig, axes = plt.subplots(3, cols, figsize=(3.6 * cols + 1.0, 8.0), sharex="col", squeeze=False)
    top = max((max(r.timeline.prefill_replicas + r.timeline.decode_replicas, default=1) for r in results),
              default=1)
    for c, result in enumerate(results):
        tl = result.timeline
        t = _minutes(tl.t)
        load, reps, lat = axes[0][c], axes[1][c], axes[2][c]
        load.plot(t, tl.arrivals_per_s, color="tab:gray", lw=0.8)
        if any(tl.rejected):
            load.plot(t, np.asarray(tl.rejected, dtype=float) / tl.interval_s, color="tab:red", lw=0.8,
                      label="rejected/s")
            load.legend(loc="upper right", fontsize=7)
        load.set_title(f"{result.policy}\n{result.gpu_hours:.1f} GPU-h, {result.both_attainment:.1%} in SLO",
                       fontsize=9)
        reps.step(t, tl.prefill_replicas, where="post", color="tab:blue", lw=1.0, label="prefill")
        reps.step(t, tl.prefill_ready, where="post", color="tab:blue", lw=0.8, ls=":", label="prefill ready")
        reps.step(t, tl.decode_replicas, where="post", color="tab:orange", lw=1.0, label="decode")
        reps.step(t, tl.decode_ready, where="post", color="tab:orange", lw=0.8, ls=":", label="decode ready")
        reps.set_ylim(0, top * 1.1 + 1)
        ttft = np.asarray(tl.ttft_p90_s, dtype=float) / slo_ttft_s
        itl = np.asarray(tl.itl_p90_s, dtype=float) / slo_itl_s
        lat.plot(t, ttft, color="tab:green", lw=0.8, label="p90 TTFT / SLO")
        lat.plot(t, itl, color="tab:purple", lw=0.8, label="p90 ITL / SLO")
        lat.axhline(1.0, color="black", lw=0.6, ls="--")
        finite = np.concatenate([ttft[np.isfinite(ttft)], itl[np.isfinite(itl)], [1.0]])
        lat.set_ylim(0, min(max(2.0, float(np.quantile(finite, 0.98)) * 1.1), 20.0))
        lat.set_xlabel("minutes")
        if c == 0:
            load.set_ylabel("arrivals / s")
            reps.set_ylabel("replicas")
            lat.set_ylabel("latency / SLO")
            reps.legend(loc="upper left", fontsize=7)
            lat.legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_MARKERS = "*Dosv^<>phP"


def plot_cost_vs_attainment(results: Sequence[RunResult], *, path: Path, title: str,
                            target: float | None = 0.99) -> Path:
    """Left: every policy (GPU-hours on a log scale). Right: the policies near the target, on linear axes."""
    fig, (whole, near) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    close = [r for r in results if r.both_attainment >= 0.9]
    for i, result in enumerate(results):
        style = {"marker": _MARKERS[i % len(_MARKERS)], "s": 110 if result.policy == "default" else 45,
                 "zorder": 3, "color": f"C{i % 10}"}
        label = f"{result.policy}: {result.gpu_hours:.1f} GPU-h, {result.both_attainment:.2%}"
        whole.scatter(result.gpu_hours, result.both_attainment * 100, label=label, **style)  # type: ignore[arg-type]
        if result in close:
            near.scatter(result.gpu_hours, result.both_attainment * 100, **style)  # type: ignore[arg-type]
    if any(r.gpu_hours > 0 for r in results):
        whole.set_xscale("log")
        # Plain numbers at 1-2-5 steps: matplotlib's labelled minor ticks (2x10^0, 3x10^0, ...) run together.
        whole.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        whole.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        whole.xaxis.set_minor_formatter(ticker.NullFormatter())
    for ax in (whole, near):
        if target is not None:
            ax.axhline(target * 100, color="black", lw=0.6, ls="--")
        ax.set_xlabel("GPU-hours")
        ax.grid(alpha=0.3)
    whole.set_ylabel("requests within both SLOs (%)")
    whole.set_ylim(-2, 101)
    whole.set_title("all policies (log scale)", fontsize=9)
    if close:
        low = min(r.both_attainment for r in close) * 100
        near.set_ylim(max(90.0, math.floor(low) - 0.5), 100.2)
        near.set_xlim(0, max(r.gpu_hours for r in close) * 1.1)
    near.set_title("near the target (>= 90%)", fontsize=9)
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
