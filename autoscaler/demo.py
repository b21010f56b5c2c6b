"""``make run`` without a cluster: a live local stack autoscaled by the real control loop.

A load that rises and falls drives emulated vLLM prefill and decode pods; Prometheus scrapes them; the
controller reads Prometheus, decides, and patches the Deployments' scale subresource in a real kube-apiserver;
the emulator follows those Deployments, so every decision changes what Prometheus sees next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from autoscaler.config import load_settings
from autoscaler.controller.loop import CycleReport
from autoscaler.controller.wiring import build_controller
from autoscaler.core.types import Role
from autoscaler.emulator.variant import EmulatedVariant
from autoscaler.localstack.stack import LocalStack, StackVariant
from autoscaler.perf.profiles import default_profiles

__all__ = ["demo_variants", "rise_and_fall", "run_demo"]

NAMESPACE = "demo"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def rise_and_fall(*, duration_s: float, low: float, peak: float) -> Callable[[float], float]:
    """Requests/s: low for 10%, ramp to peak by 40%, hold to 55%, back to low by 85%, low to the end."""
    def load(t: float) -> float:
        x = t / duration_s
        if x < 0.10 or x >= 0.85:
            return low
        if x < 0.40:
            return low + (peak - low) * (x - 0.10) / 0.30
        if x < 0.55:
            return peak
        return peak - (peak - low) * (x - 0.55) / 0.30
    return load


def demo_variants(*, duration_s: float, peak_rps: float = 24.0, startup_s: float = 8.0) -> list[StackVariant]:
    profile = default_profiles()["llama-3.1-8b/h100"]
    load = rise_and_fall(duration_s=duration_s, low=peak_rps / 8, peak=peak_rps)
    common = {"namespace": NAMESPACE, "model": MODEL, "accelerator": "H100", "profile": profile, "load": load,
              "mean_prompt_tokens": 3000.0, "mean_output_tokens": 400.0, "startup_s": startup_s, "seed": 7}
    return [
        StackVariant(EmulatedVariant(deployment="llama-prefill", role=Role.PREFILL, **common),  # type: ignore[arg-type]
                     min_replicas=1, max_replicas=8),
        StackVariant(EmulatedVariant(deployment="llama-decode", role=Role.DECODE, **common),  # type: ignore[arg-type]
                     min_replicas=1, max_replicas=8),
    ]


@contextlib.contextmanager
def _emulated_stack(*, duration_s: float) -> Iterator[tuple[Any, str, Callable[[float], float], Callable[[], None]]]:
    variants = demo_variants(duration_s=duration_s)
    with LocalStack(variants=variants) as stack:
        assert stack.api is not None and stack.prometheus is not None
        # Start deciding once Prometheus has scraped every variant, not on the empty first seconds.
        for v in variants:
            stack.prometheus.wait_for_series(
                f'vllm:num_requests_running{{namespace="{NAMESPACE}", role="{v.emulated.role.value}"}}',
                timeout_s=30)
        yield stack.api, stack.prometheus.url, variants[0].emulated.load, lambda: None


@dataclass
class _Tally:
    replicas: list[int] = field(default_factory=list)
    ups: int = 0
    downs: int = 0
    waiting: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)


def run_demo(*, duration_s: float = 150.0, interval_s: float = 5.0, console: Console | None = None,
             engine: str = "emulator") -> dict[str, _Tally]:
    """``engine``: ``emulator`` (emulated prefill and decode pools of a GPU model) or ``vllm`` (real CPU vLLM
    instances serving the tiny model, :func:`vllm_stack`)."""
    if engine not in ("emulator", "vllm"):
        raise ValueError(f"engine must be 'emulator' or 'vllm', got {engine!r}")
    console = console or Console(width=None if Console().is_terminal else 150)
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    started = time.monotonic()
    load: Callable[[float], float]  # the offered load, bound once the stack is up (show runs only after that)
    unit = "req/s"

    def show(report: CycleReport) -> None:
        t = time.monotonic() - started
        parts = []
        for o in sorted(report.outcomes, key=lambda o: o.spec.role.value, reverse=True):
            d, s, name = o.decision, o.signals, o.spec.role.value
            tally = tallies[str(o.spec.ref)]
            if d is None:
                parts.append(f"{name}: error {o.error[:60]}")
                continue
            tally.replicas.append(d.desired)
            tally.ups += d.desired > d.current and o.applied
            tally.downs += d.desired < d.current and o.applied
            if s is not None and s.waiting is not None:
                tally.waiting.append(s.waiting)
            if s is not None and s.ttft_p90_s is not None:
                tally.ttft.append(s.ttft_p90_s)
            arrow = f"{d.current}->{d.desired}" if d.changed else f"{d.current}"
            sig = "no data" if s is None or s.waiting is None else (
                f"queue {s.waiting:4.1f} kv {s.kv_usage_mean or 0:4.2f}")
            parts.append(f"{name:7s} {arrow:>5s} {d.reason.value:<19s} ({sig})")
        console.print(f"t={t:5.0f}s load {load(t):5.1f} {unit} | " + " | ".join(parts))

    overrides: dict[str, Any] = {
        "controller": {"interval_s": interval_s},
        "behavior": {"scale_up": {"max_step": 2}, "scale_down": {"stabilization_window_s": 20, "max_step": 1}},
    }
    if engine == "vllm":
        from autoscaler.demo_vllm import vllm_stack

        console.print("[bold]variant-autoscaler demo[/bold] on real vLLM: starting kube-apiserver/etcd, "
                      "Prometheus and a CPU vLLM instance serving the tiny model (a minute or two) ...")
        stack_cm: Any = vllm_stack(duration_s=duration_s, console=console)
        overrides["planner"] = {"predictive": False}  # the tiny CPU model has no performance profile
        unit = "clients"
    else:
        console.print("[bold]variant-autoscaler demo[/bold]: starting kube-apiserver/etcd, the vLLM emulator "
                      "and Prometheus (first run builds the Kubernetes binaries) ...")
        stack_cm = _emulated_stack(duration_s=duration_s)
    with stack_cm as (api, prometheus_url, load, begin):
        settings = load_settings(None, {
            "prometheus": {"url": prometheus_url, "rate_window": "10s", "staleness_s": 15}, **overrides})
        controller = build_controller(settings, api_client=api, on_cycle=show)
        console.print(f"stack up in {time.monotonic() - started:.0f}s: Prometheus {prometheus_url}; "
                      f"running {duration_s:.0f}s, a cycle every {interval_s:g}s")
        started = time.monotonic()
        begin()
        controller.run(interval_s=interval_s, duration_s=duration_s, stop=threading.Event())

    table = Table(title="Summary")
    for col in ("variant", "min", "max", "final", "scale-ups", "scale-downs", "mean queue", "max TTFT p90 (s)"):
        table.add_column(col)
    for name, t in tallies.items():
        if not t.replicas:
            continue
        table.add_row(name, str(min(t.replicas)), str(max(t.replicas)), str(t.replicas[-1]), str(t.ups),
                      str(t.downs), f"{sum(t.waiting) / max(len(t.waiting), 1):.1f}",
                      f"{max(t.ttft):.2f}" if t.ttft else "-")
    console.print(table)
    return dict(tallies)
