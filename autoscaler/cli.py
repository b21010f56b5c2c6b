"""Command line: ``variant-autoscaler run | recommend | demo | version``."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from autoscaler import __version__
from autoscaler.errors import AutoscalerError, ConfigError


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """A command's errors as one line on stderr: the configuration's fault (a bad kubeconfig, policy or setting)
    exits 2, any other of the product's errors 1."""
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="SLO-aware, cost-optimal autoscaler for disaggregated vLLM serving.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.")]
PromOpt = Annotated[str | None, typer.Option("--prometheus-url", help="Prometheus base URL.")]
KubeOpt = Annotated[Path | None, typer.Option("--kubeconfig", help="kubeconfig path (default: in-cluster).")]
NsOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")]
LogOpt = Annotated[str | None, typer.Option("--log-format", help="auto | json | console")]


def _overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags as a nested settings dict; unset flags are left out so lower sources show through."""
    paths = {
        "prometheus_url": ("prometheus", "url"),
        "kubeconfig": ("kube", "kubeconfig"),
        "namespace": ("kube", "namespace"),
        "interval": ("controller", "interval_s"),
        "dry_run": ("controller", "dry_run"),
        "leader_elect": ("runtime", "leader_elect"),
        "lease_namespace": ("runtime", "lease_namespace"),
        "health_port": ("runtime", "health_port"),
        "metrics_port": ("runtime", "metrics_port"),
        "log_format": ("log_format",),
    }
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        *parents, leaf = paths[name]
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _load(config: Path | None, **flags: Any):  # type: ignore[no-untyped-def]
    from autoscaler.config import load_settings
    from autoscaler.logs import configure_logging

    try:
        settings = load_settings(config, _overrides(**flags))
        if settings.planner.policy_file is not None:
            from autoscaler.policy import load_policy

            # A bad policy file is bad configuration: exit 2 up front.
            load_policy(settings.planner.policy_file, base=settings.layers())
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


@app.command()
def run(
    config: ConfigOpt = None,
    prometheus_url: PromOpt = None,
    kubeconfig: KubeOpt = None,
    namespace: NsOpt = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between cycles.")] = None,
    dry_run: Annotated[bool | None, typer.Option(
        "--dry-run/--no-dry-run", help="Decide and log, write nothing to the cluster (no Lease either).")] = None,
    leader_elect: Annotated[bool | None, typer.Option(
        "--leader-elect/--no-leader-elect", help="Take a Lease before acting (runtime.leader_elect).")] = None,
    lease_namespace: Annotated[str | None, typer.Option(help="Namespace of the Lease.")] = None,
    health_port: Annotated[int | None, typer.Option(help="Port of /healthz and /readyz (0: off).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics (0: off).")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    log_format: LogOpt = None,
) -> None:
    """Run the controller loop against a cluster (runtime: the file's runtime section, VAS_RUNTIME_*, flags)."""
    import signal
    import threading

    from autoscaler.controller.runtime import run_controller

    settings = _load(config, prometheus_url=prometheus_url, kubeconfig=kubeconfig, namespace=namespace,
                     interval=interval, dry_run=dry_run, leader_elect=leader_elect,
                     lease_namespace=lease_namespace, health_port=health_port, metrics_port=metrics_port,
                     log_format=log_format)
    runtime = settings.runtime
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _exit_codes():
        code = run_controller(settings=settings, runtime=runtime, stop=stop, duration_s=duration)
    raise typer.Exit(code)


@app.command()
def recommend(
    config: ConfigOpt = None,
    prometheus_url: PromOpt = None,
    kubeconfig: KubeOpt = None,
    namespace: NsOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    explain: Annotated[bool, typer.Option(
        "--explain", help="Also show each variant's effective settings (behaviour, saturation, SLO, bounds, GPUs, "
                          "price), each with the source it came from.")] = False,
    log_format: LogOpt = None,
) -> None:
    """One dry-run cycle: print what the controller would do, change nothing.

    With no cluster configured (no --kubeconfig, not in a pod, no ~/.kube/config or $KUBECONFIG), the variants
    are discovered from the metrics' labels and their replicas are the pods reporting; no target is read."""
    import dataclasses

    from autoscaler.controller.wiring import build_controller, build_metrics_only_controller
    from autoscaler.kube.client import cluster_configured
    from autoscaler.report import effective_settings, print_settings, print_table, to_json

    if output not in ("table", "json"):
        typer.echo(f"error: --output: expected 'table' or 'json', got {output!r}", err=True)
        raise typer.Exit(2)
    settings = _load(config, prometheus_url=prometheus_url, kubeconfig=kubeconfig, namespace=namespace,
                     log_format=log_format)
    with _exit_codes():
        if cluster_configured(settings.kube.kubeconfig):
            controller = build_controller(settings, dry_run=True)
        else:
            typer.echo(f"note: no Kubernetes cluster configured: variants discovered from the metrics' labels at "
                       f"{settings.prometheus.url}; no VariantAutoscaling or scale target was read (current = "
                       f"pods reporting, bounds are defaults)", err=True)
            controller = build_metrics_only_controller(settings)
        # One cycle has no history: unseeded, a scale-down shows as it would once the scale-down window has
        # passed (seeded, as a new leader is, it never could). The note says so.
        report = dataclasses.replace(controller, seed_histories=False).run_cycle()
        typer.echo("note: one cycle without history: scale-downs are shown as if the scale-down window had "
                   "passed", err=True)
        explained = effective_settings(controller, report) if explain else None
    if output == "json":
        sys.stdout.write(to_json(report, settings=explained) + "\n")
    else:
        print_table(report)
        if explained is not None:
            print_settings(explained)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 150.0,
    interval: Annotated[float, typer.Option(help="Seconds between cycles.")] = 5.0,
    engine: Annotated[str, typer.Option(help="emulator, or vllm: real CPU vLLM instances (make setup-vllm installs "
                                             "them) serving a tiny model.")] = "emulator",
) -> None:
    """Start a local stack (kube-apiserver/etcd, Prometheus, vLLM emulator or real vLLM) and autoscale it live."""
    from autoscaler.demo import run_demo
    from autoscaler.logs import configure_logging

    configure_logging(level="warning", fmt="console")
    try:
        if engine not in ("emulator", "vllm"):
            typer.echo(f"error: --engine must be emulator or vllm, got {engine!r}", err=True)
            raise typer.Exit(2)
        run_demo(duration_s=duration, interval_s=interval, engine=engine)
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def adapter(
    config: ConfigOpt = None,
    prometheus_url: PromOpt = None,
    kubeconfig: KubeOpt = None,
    namespace: NsOpt = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between cycles.")] = None,
    port: Annotated[int, typer.Option(help="HTTPS port of the external metrics API.")] = 6443,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    tls_cert: Annotated[Path | None, typer.Option(help="Serving certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Serving key (PEM).")] = None,
    self_signed: Annotated[bool, typer.Option(help="Generate a self-signed certificate (local runs).")] = False,
    requestheader_ca: Annotated[Path | None, typer.Option(
        help="Front-proxy CA file; default: ConfigMap kube-system/extension-apiserver-authentication.")] = None,
    allowed_name: Annotated[list[str] | None, typer.Option(
        help="Allowed CN of front-proxy client certificates (repeatable; with --requestheader-ca).")] = None,
    stale_after: Annotated[float, typer.Option(
        help="Serve nothing (HTTP 503) for decisions older than this many intervals.")] = 3.0,
    metrics_port: Annotated[int, typer.Option(help="Port of the controller's /metrics (0: off).")] = 9100,
    auth_reload: Annotated[float, typer.Option(
        help="Seconds between re-reads of kube-system/extension-apiserver-authentication.")] = 30.0,
    cert_reload: Annotated[float, typer.Option(
        help="Seconds between checks of the serving certificate files (rotated in place by cert-manager).")] = 10.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    log_format: LogOpt = None,
) -> None:
    """Serve the controller's decisions to the HPA as external metrics (the HPA scales; this changes nothing)."""
    import signal
    import threading

    from autoscaler.adapter.run import AdapterOptions, run_adapter

    settings = _load(config, prometheus_url=prometheus_url, kubeconfig=kubeconfig, namespace=namespace,
                     interval=interval, log_format=log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _exit_codes():
        options = AdapterOptions(host=bind, port=port, cert=tls_cert, key=tls_key, self_signed=self_signed,
                                 requestheader_ca=requestheader_ca, allowed_names=tuple(allowed_name or ()),
                                 stale_after_intervals=stale_after, metrics_port=metrics_port or None,
                                 auth_reload_s=auth_reload, cert_reload_s=cert_reload)
        run_adapter(settings, options, duration_s=duration, stop=stop)


@app.command()
def simulate(
    trace: Annotated[Path, typer.Option(
        "--trace", help="Mooncake JSONL or Azure CSV trace, plain or gzip-compressed (told from content).")],
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="Policy to run (repeatable or comma-separated); default: default, every peer "
                         "and clairvoyant-model.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    profile: Annotated[str, typer.Option(help="Model x accelerator profile (see `profiles`).")] = "llama-3.1-8b/h100",
    slo_ttft: Annotated[float, typer.Option("--slo-ttft", help="TTFT target per request, seconds.")] = 1.0,
    slo_itl: Annotated[float, typer.Option("--slo-itl", help="Mean ITL target per request, seconds.")] = 0.05,
    speed_up: Annotated[float, typer.Option(
        "--speed-up", help="Play the trace N times as fast: compresses time, N times the arrival rate AND 1/N of "
                           "the duration (for N times the load over the same time, --load-scale).")] = 1.0,
    load_scale: Annotated[float, typer.Option(
        "--load-scale", help="N times the requests over the same duration: the trace's rate curve times N minute "
                             "by minute, the extra requests spread within their minute with that minute's lengths "
                             "(seeded by --seed); a fleet serving N times the users.")] = 1.0,
    rate_scale: Annotated[float | None, typer.Option("--rate-scale", hidden=True)] = None,
    resample: Annotated[int, typer.Option(
        "--resample", help="Also run every policy on K block-bootstrap resamples of the trace (1-minute blocks "
                           "drawn with replacement, seeded by --seed) and report the mean and 90% interval of "
                           "GPU-hours and attainment.")] = 0,
    time_stretch: Annotated[float, typer.Option("--time-stretch", help="Stretch the time axis by this factor.")
                            ] = 1.0,
    node_delay: Annotated[float | None, typer.Option("--node-delay", help="GPU node provisioning, seconds "
                                                                          "(default: the profile's).")] = None,
    pod_delay: Annotated[float | None, typer.Option("--pod-delay", help="Pod start-up, seconds (default: the "
                                                                        "profile's).")] = None,
    start: Annotated[float, typer.Option(help="Replay from this second of the trace.")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Replay this many seconds (after --start).")] = None,
    interval: Annotated[float, typer.Option(help="Control-loop interval, seconds (clairvoyant-model's too).")] = 15.0,
    out: Annotated[Path, typer.Option(help="Directory for the PNG plots.")] = Path("."),
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of --load-scale, --resample and policies that draw (the "
                                           "simulation is deterministic for a seed).")] = 0,
    engine_error: Annotated[str, typer.Option(
        "--engine-error", help="The simulated engine's truth apart from the profile every policy believes: "
                               "prefill=F,decode=G runs prefill times x F and decode step times x G "
                               "(e.g. prefill=0.7,decode=1.3).")] = "prefill=1,decode=1",
    engine: Annotated[str, typer.Option(
        "--engine", help="Simulated engine: step (every scheduler iteration), coarse (a fluid per control "
                         "interval, validated against step; for traces of days) or auto (coarse beyond 6 h).")
                      ] = "auto",
    then: Annotated[list[str] | None, typer.Option(
        "--then", help="Splice another trace after it, FILE or FILE@N (that trace sped up N times: N times its "
                       "rate over 1/N of its duration, as --speed-up); repeatable, in order: --speed-up 4 "
                       "--then t.csv@12 --then t.csv@4 builds a surge.")] = None,
) -> None:
    """Replay a trace through a simulated disaggregated cluster under each policy: GPU-hours vs SLO attainment."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from autoscaler.logs import configure_logging
    from autoscaler.sim.policies import STANDARD, check_names
    from autoscaler.sim.scenario import Scenario, engine_mode_for, resolve_profile
    from autoscaler.traces import load_scale as scale_load
    from autoscaler.traces import read_trace, splice, window
    from autoscaler.traces import speed_up as play_faster
    from autoscaler.traces import time_stretch as stretch

    if rate_scale is not None:
        typer.echo("error: --rate-scale is gone (it compressed the clock): use --speed-up N for N times the rate "
                   "over 1/N of the duration, or --load-scale N for N times the requests over the same duration",
                   err=True)
        raise typer.Exit(2)
    configure_logging(level="error", fmt="console")
    names = [n.strip() for item in (policy or list(STANDARD)) for n in item.split(",") if n.strip()]
    try:
        check_names(names)
        chosen = resolve_profile(profile)
        parts = [_spliced_part(text) for text in then or ()]
        prefill_error, decode_error = parse_engine_error(engine_error)
        scenario = Scenario(profile=profile, slo_ttft_s=slo_ttft, slo_itl_s=slo_itl, node_delay_s=node_delay,
                            pod_delay_s=pod_delay, interval_s=interval, speed_up=speed_up, load_scale=load_scale,
                            resample=resample, seed=seed,
                            tick_s=min(0.5, interval), engine_prefill_error=prefill_error,
                            engine_decode_error=decode_error,
                            extra=(("time_stretch", time_stretch), ("start_s", start), ("duration_s", duration),
                                   *((("then", [f"{path}@{factor:g}" for path, factor in parts]),) if parts else ())))
        loaded = read_trace(trace)
        if start or duration is not None:
            loaded = window(loaded, start_s=start, end_s=start + (duration if duration is not None else 1e18))
        if time_stretch != 1.0:
            loaded = stretch(loaded, time_stretch)
        if speed_up != 1.0:
            loaded = play_faster(loaded, speed_up)
        if parts:
            loaded = splice([loaded, *(play_faster(read_trace(path), factor) for path, factor in parts)])
        if load_scale != 1.0:
            loaded = scale_load(loaded, load_scale, seed=seed)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if len(loaded) == 0:
        typer.echo(f"error: {trace}: no requests to replay", err=True)
        raise typer.Exit(2)
    try:
        scenario = dataclasses.replace(scenario, engine_mode=engine_mode_for(engine, duration_s=loaded.duration_s))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    from autoscaler.sim.report import print_table, report_json, run_policies, run_resamples, write_plots

    err = Console(stderr=True)
    total = loaded.duration_s
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TimeRemainingColumn(), console=err, transient=json_output) as bar:
        tasks = {name: bar.add_task(name, total=max(total, 1e-9)) for name in names}

        def progress(name: str, done: float) -> None:
            bar.update(tasks[name], completed=min(done, total))

        resampling = {name: bar.add_task(f"{name} x{resample}", total=max(resample * total, 1e-9))
                      for name in names} if resample else {}

        def resample_progress(name: str, k: int, done: float) -> None:
            bar.update(resampling[name], completed=min(k * total + done, resample * total))

        results = run_policies(loaded, scenario, names, profile=chosen, progress=progress)
        for name in names:
            bar.update(tasks[name], completed=total)
        resamples = run_resamples(loaded, scenario, names, profile=chosen, count=resample, seed=seed,
                                  progress=resample_progress) if resample else None
    shown = [f"{what} x{value:g}" for what, value in (("sped up", speed_up), ("load", load_scale)) if value != 1.0]
    title = f"{' '.join([trace.name, *shown])} on {chosen.name}: TTFT <= {slo_ttft:g} s, ITL <= {slo_itl:g} s"
    written = write_plots(results, directory=out, stem=trace.stem, scenario=scenario, title=title) if plots else {}
    if json_output:
        report = report_json(trace_name=str(trace), trace=loaded, scenario=dataclasses.replace(scenario),
                             profile=chosen, results=results, plots=written, resamples=resamples)
        sys.stdout.write(json.dumps(report) + "\n")
        return
    console = Console(width=None if Console().is_terminal else 140)
    print_table(results, scenario=scenario, console=console, title=title, profile=chosen, resamples=resamples)
    for what, path in written.items():
        console.print(f"{what}: {path}")


def parse_engine_error(text: str) -> tuple[float, float]:
    """``--engine-error prefill=F,decode=G`` (either part may be left out: 1.0) as (F, G); ValueError naming the
    flag when a part is unknown or a factor is not a finite number > 0."""
    factors = {"prefill": 1.0, "decode": 1.0}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in factors:
            raise ValueError(f"--engine-error {text!r}: expected prefill=F,decode=G, got {item!r}")
        try:
            factor = float(value)
        except ValueError:
            raise ValueError(f"--engine-error {text!r}: {key} must be a number, got {value!r}") from None
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"--engine-error {text!r}: {key} must be a finite number > 0, got {value.strip()}")
        factors[key] = factor
    return factors["prefill"], factors["decode"]


def _spliced_part(text: str) -> tuple[Path, float]:
    """``FILE`` or ``FILE@N`` of ``--then`` (N: the speed-up); ValueError naming the flag when N is not a positive
    number."""
    path, sep, factor_text = text.rpartition("@")
    if not sep:
        return Path(text), 1.0
    try:
        factor = float(factor_text)
    except ValueError:
        raise ValueError(f"--then {text!r}: the speed-up N after '@' must be a number") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"--then {text!r}: the speed-up N must be a finite number > 0")
    return Path(path), factor


@app.command()
def profiles() -> None:
    """List the performance profile names (model x accelerator), one a line."""
    from autoscaler.perf.profiles import default_profiles

    try:
        names = sorted(default_profiles())
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for name in names:
        typer.echo(name)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
