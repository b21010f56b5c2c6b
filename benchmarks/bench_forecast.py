"""Forecast accuracy on the shipped real traces, per method and horizon, against the naive last value.

Each trace is bucketed into the cycle interval; the arrival rate and the mean prompt/output tokens per bucket are
fed through the online forecaster (the same code the controller runs, with its refit schedule), and every
method's predictions are scored out of sample at 1 cycle, 1 minute and 5 minutes ahead:

- MAPE of the point forecast (fraction), and its ratio to the last-value forecast's on the same points;
- pinball loss of the upper quantile, and its ratio to the last value's.

``selected`` is what the forecaster actually used: per origin, the method its online back-test ranked best.
A second table gives the CPU cost per cycle of fitting and predicting each method on three days of 30 s samples.

Run: ``/work/main/.venv/bin/python benchmarks/bench_forecast.py [--interval 15] [--quantile 0.9]``
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autoscaler.forecast import ForecastConfig, Method, backtest, make_method, mape, pinball_loss
from autoscaler.traces import bucket, read_trace

TRACES = Path(__file__).resolve().parents[1] / "autoscaler" / "data" / "traces"
TRACE_FILES = ("mooncake_conversation_trace.jsonl", "mooncake_synthetic_trace.jsonl", "azure_llm_2023_conv.csv")
SERIES = ("arrivals_per_s", "mean_input_tokens", "mean_output_tokens")
HORIZONS_S = (None, 60.0, 300.0)  # None = one cycle
WARMUP_S = 300.0  # origins in the first five minutes are not scored: every method needs some history
SELECTED = "selected"


@dataclass(frozen=True)
class Score:
    mape: float
    pinball: float
    mape_ratio: float  # vs last value on the same points
    pinball_ratio: float
    points: int


def score(actual: np.ndarray, mean: np.ndarray, upper: np.ndarray, naive_mean: np.ndarray,
          naive_upper: np.ndarray, quantile: float) -> Score:
    ok = np.isfinite(actual) & np.isfinite(mean) & np.isfinite(upper) & np.isfinite(naive_mean)
    if not ok.any():
        nan = math.nan
        return Score(nan, nan, nan, nan, 0)
    a, m, u, nm, nu = actual[ok], mean[ok], upper[ok], naive_mean[ok], naive_upper[ok]
    own_mape, own_pin = mape(actual=a, predicted=m), pinball_loss(actual=a, upper=u, quantile=quantile)
    base_mape, base_pin = mape(actual=a, predicted=nm), pinball_loss(actual=a, upper=nu, quantile=quantile)
    return Score(own_mape, own_pin, own_mape / base_mape if base_mape else math.nan,
                 own_pin / base_pin if base_pin else math.nan, int(ok.sum()))


def cell(value: float, ratio: float, *, percent: bool) -> str:
    if not math.isfinite(value):
        return "[dim]n/a[/dim]"
    shown = f"{100 * value:.1f}%" if percent else f"{value:.3g}"
    colour = "green" if ratio < 0.97 else ("red" if ratio > 1.03 else "white")
    return f"{shown} [{colour}]({ratio:.2f})[/{colour}]"


def evaluate(*, interval_s: float, quantile: float, console: Console) -> dict[tuple[str, str, str], list[Score]]:
    config = ForecastConfig(interval_s=interval_s, lead_time_s=300.0, quantile=quantile, gbm_refit_every=20)
    horizon_steps = [1 if h is None else max(1, round(h / interval_s)) for h in HORIZONS_S]
    traces = {name: read_trace(TRACES / name) for name in TRACE_FILES}
    buckets = {name: bucket(trace, interval_s=interval_s) for name, trace in traces.items()}
    total = sum(len(b.start_s) for b in buckets.values()) * len(SERIES)
    results: dict[tuple[str, str, str], list[Score]] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)
    with progress:
        task = progress.add_task("back-testing", total=total)
        for name, bucketed in buckets.items():
            start = traces[name].start_epoch_s or 0.0
            for series in SERIES:
                progress.update(task, description=f"{name.split('.')[0]} {series}")
                result = backtest(getattr(bucketed, series), config=config, start_time_s=start,
                                  progress=lambda _t: progress.advance(task))
                warm = round(WARMUP_S / interval_s)
                naive = result.methods.index(Method.LAST_VALUE)
                sel_mean, sel_upper = result.selected_forecast()
                for label in [*(m.value for m in result.methods), SELECTED]:
                    row = []
                    for h in horizon_steps:
                        actual, naive_mean, naive_upper = result.aligned(naive, h)
                        if label == SELECTED:
                            mean, upper = sel_mean[:, h - 1], sel_upper[:, h - 1]
                        else:
                            _, mean, upper = result.aligned(result.methods.index(Method(label)), h)
                        row.append(score(actual[warm:], mean[warm:], upper[warm:], naive_mean[warm:],
                                         naive_upper[warm:], quantile))
                    results[(name, series, label)] = row
    return results


def print_accuracy(results: dict[tuple[str, str, str], list[Score]], *, interval_s: float, quantile: float,
                   console: Console) -> None:
    labels = [f"{interval_s:g} s", "1 min", "5 min"]
    table = Table(title=f"Forecast accuracy on shipped traces ({interval_s:g} s buckets; "
                        f"pinball at q={quantile}; (x) = ratio to last value, lower is better)",
                  show_lines=False)
    table.add_column("trace")
    table.add_column("series")
    table.add_column("method")
    for label in labels:
        table.add_column(f"MAPE {label}", justify="right")
    for label in labels:
        table.add_column(f"pinball {label}", justify="right")
    previous = None
    for (trace, series, method), scores in results.items():
        if previous is not None and previous != (trace, series):
            table.add_section()
        previous = (trace, series)
        style = "bold" if method == SELECTED else None
        table.add_row(trace.split(".")[0], series, method,
                      *(cell(s.mape, s.mape_ratio, percent=True) for s in scores),
                      *(cell(s.pinball, s.pinball_ratio, percent=False) for s in scores), style=style)
    console.print(table)

    summary = Table(title="Geometric mean of the ratio to last value over all traces and series (lower is better)")
    summary.add_column("method")
    for label in labels:
        summary.add_column(f"MAPE {label}", justify="right")
    for label in labels:
        summary.add_column(f"pinball {label}", justify="right")
    methods = list(dict.fromkeys(key[2] for key in results))
    for method in methods:
        rows = [scores for key, scores in results.items() if key[2] == method]
        cells = []
        for attr in ("mape_ratio", "pinball_ratio"):
            for i in range(len(labels)):
                ratios = np.array([getattr(r[i], attr) for r in rows])
                ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
                cells.append(f"{np.exp(np.mean(np.log(ratios))):.3f} ({len(ratios)})" if len(ratios) else "n/a")
        summary.add_row(method, *cells, style="bold" if method == SELECTED else None)
    console.print(summary)


def print_cost(console: Console) -> None:
    """CPU per cycle for one series at production settings (30 s cycle, 3 days of history, 5 min lead)."""
    config = ForecastConfig()
    n = config.history_steps
    rng = np.random.default_rng(0)
    t = np.arange(n)
    history = 5.0 + 2.0 * np.sin(2 * np.pi * t / config.season_steps) + rng.normal(0.0, 0.3, n)
    table = Table(title=f"Cost per series at production settings ({n} samples of {config.interval_s:g} s, "
                        f"H={config.horizon_steps})")
    table.add_column("method")
    table.add_column("fit ms", justify="right")
    table.add_column("predict ms", justify="right")
    table.add_column("refit every", justify="right")
    table.add_column("mean ms per cycle", justify="right")
    total = 0.0
    for method in config.methods:
        impl = make_method(method, config)
        repeats = 2 if method is Method.GBM else 10
        started = time.perf_counter()
        for _ in range(repeats):
            fitted = impl.fit(history=history, end_time_s=float(n))
        fit_ms = 1e3 * (time.perf_counter() - started) / repeats
        assert fitted is not None
        started = time.perf_counter()
        for _ in range(20):
            fitted.predict(history=history, end_time_s=float(n))
        predict_ms = 1e3 * (time.perf_counter() - started) / 20
        every = config.gbm_refit_every if method is Method.GBM else config.refit_every
        per_cycle = fit_ms / every + predict_ms
        total += per_cycle
        table.add_row(method.value, f"{fit_ms:.1f}", f"{predict_ms:.2f}", f"{every} cycles", f"{per_cycle:.1f}")
    table.add_row("all", "", "", "", f"{total:.1f}", style="bold")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=15.0, help="cycle interval / bucket width, seconds")
    parser.add_argument("--quantile", type=float, default=0.9)
    args = parser.parse_args()
    console = Console(width=200)
    results = evaluate(interval_s=args.interval, quantile=args.quantile, console=console)
    print_accuracy(results, interval_s=args.interval, quantile=args.quantile, console=console)
    print_cost(console)


if __name__ == "__main__":
    main()
