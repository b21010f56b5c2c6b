"""What ``benchmarks/bench_early_rejection.py`` reports of a replay: load amplitude and phase, overtaking, plots."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from early_rejection.replay import POLICIES, SAMPLE_S, WARMUP_S, WINDOW_S, Outcome


def amplitude(values: list[float], times: list[float], *, start: float, stop: float) -> tuple[float, float]:
    """(standard deviation, mean peak-to-peak over WINDOW_S windows) of a load series within [start, stop)."""
    v, t = np.asarray(values), np.asarray(times)
    v = v[(t >= start) & (t < stop)]
    per_window = int(WINDOW_S / SAMPLE_S)
    windows = [v[i:i + per_window] for i in range(0, len(v) - per_window + 1, per_window)]
    peak_to_peak = float(np.mean([w.max() - w.min() for w in windows])) if windows else math.nan
    return float(np.std(v)), peak_to_peak


def anti_phase(o: Outcome, *, start: float, stop: float) -> float:
    t = np.asarray(o.times)
    keep = (t >= start) & (t < stop)
    p, d = np.asarray(o.prefill_load)[keep], np.asarray(o.decode_load)[keep]
    return float(np.corrcoef(p, d)[0, 1]) if p.std() > 0 and d.std() > 0 else math.nan


def smoothed(values: list[float], width: int) -> np.ndarray:
    v = np.asarray(values)
    if width <= 1 or len(v) < width:
        return v
    return np.convolve(v, np.ones(width) / width, mode="same")


def plot(outcomes: list[Outcome], *, path: Path, title: str, threshold: float, stop: float) -> None:
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(13, 2.6 * len(outcomes)), sharex=True, sharey=True)
    for ax, o in zip(np.atleast_1d(axes), outcomes, strict=True):
        t = np.asarray(o.times) / 60.0
        ax.plot(t, o.prefill_load, color="tab:blue", alpha=0.25, linewidth=0.6)
        ax.plot(t, o.decode_load, color="tab:red", alpha=0.25, linewidth=0.6)
        ax.plot(t, smoothed(o.prefill_load, 15), color="tab:blue", linewidth=1.3, label="prefill load (TTFT / SLO)")
        ax.plot(t, smoothed(o.decode_load, 15), color="tab:red", linewidth=1.3,
                label="decode load (max of TBT / SLO, KV share)")
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="rejection threshold")
        p_std, _ = amplitude(o.prefill_load, o.times, start=WARMUP_S, stop=stop)
        d_std, _ = amplitude(o.decode_load, o.times, start=WARMUP_S, stop=stop)
        ax.set_title(f"{o.policy}: rejected {o.rejected} ({o.rejected_at_arrival} at arrival, "
                     f"{o.rejected_after_prefill} after prefill = {o.wasted_prefill_gpu_s / 3600:.1f} GPU-h of "
                     f"prefill wasted); goodput {o.good}; load std prefill {p_std:.3f}, decode {d_std:.3f}", fontsize=9.5)
        ax.set_ylabel("load")
        ax.set_ylim(0, 1.15)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(loc="lower center", fontsize=8, ncol=3, framealpha=0.9)
    np.atleast_1d(axes)[-1].set_xlabel("minutes (thin: 1 s samples, thick: 15 s moving mean)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle above the first panel's title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_pools(text: str) -> tuple[int, int]:
    prefill, _, decode = text.partition("x")
    return int(prefill), int(decode)


def describe(o: Outcome, *, stop: float) -> dict[str, float]:
    p_std, p_p2p = amplitude(o.prefill_load, o.times, start=WARMUP_S, stop=stop)
    d_std, d_p2p = amplitude(o.decode_load, o.times, start=WARMUP_S, stop=stop)
    t = np.asarray(o.times)
    d_mean = float(np.mean(np.asarray(o.decode_load)[(t >= WARMUP_S) & (t < stop)]))
    return {"p_std": p_std, "p_p2p": p_p2p, "d_std": d_std, "d_p2p": d_p2p, "d_mean": d_mean,
            "corr": anti_phase(o, start=WARMUP_S, stop=stop)}


def overtaking(o: Outcome) -> tuple[str, str, str, str]:
    """How much of the forecast miss the requests admitted after each one and decoding before it explain: their
    mean load at entry; the same for the shortest and longest quarter of prompts; the miss had they been known
    (predicted - load at entry without them); and the share of the miss's variance they account for."""
    miss, over = np.asarray(o.prediction_error), np.asarray(o.overtaken_load)
    prompts = np.asarray(o.entry_prompts)
    keep = np.isfinite(miss) & np.isfinite(over)
    if keep.sum() < 2:
        return "-", "-", "-", "-"
    miss, over, prompts = miss[keep], over[keep], prompts[keep]
    rest = miss + over
    short, long = np.quantile(prompts, [0.25, 0.75])
    explained = 1.0 - rest.var() / miss.var() if miss.var() > 0 else math.nan
    if POLICIES[o.policy].overtakers:  # already in its forecast: adding them again would count them twice
        return f"{over.mean():.3f}", f"{over[prompts <= short].mean():.3f}/{over[prompts >= long].mean():.3f}", \
            "in forecast", "-"
    return (f"{over.mean():.3f}", f"{over[prompts <= short].mean():.3f}/{over[prompts >= long].mean():.3f}",
            f"{rest.mean():+.3f}/{rest.std():.3f}", f"{100 * explained:.0f}")


