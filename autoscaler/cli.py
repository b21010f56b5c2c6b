"""Command line: ``variant-autoscaler run | recommend | demo | version``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from autoscaler import __version__
from autoscaler.errors import AutoscalerError, ConfigError

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
    dry_run: Annotated[bool | None, typer.Option("--dry-run/--no-dry-run", help="Change nothing.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    log_format: LogOpt = None,
) -> None:
    """Run the controller loop against a cluster."""
    import signal
    import threading

    from autoscaler.controller.wiring import build_controller

    settings = _load(config, prometheus_url=prometheus_url, kubeconfig=kubeconfig, namespace=namespace,
                     interval=interval, dry_run=dry_run, log_format=log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        controller = build_controller(settings)
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    controller.run(interval_s=settings.controller.interval_s, duration_s=duration, stop=stop)


@app.command()
def recommend(
    config: ConfigOpt = None,
    prometheus_url: PromOpt = None,
    kubeconfig: KubeOpt = None,
    namespace: NsOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    log_format: LogOpt = None,
) -> None:
    """One dry-run cycle: print what the controller would do, change nothing."""
    from autoscaler.controller.wiring import build_controller
    from autoscaler.report import print_table, to_json

    if output not in ("table", "json"):
        typer.echo(f"error: --output: expected 'table' or 'json', got {output!r}", err=True)
        raise typer.Exit(2)
    settings = _load(config, prometheus_url=prometheus_url, kubeconfig=kubeconfig, namespace=namespace,
                     log_format=log_format)
    report = build_controller(settings, dry_run=True).run_cycle()
    if output == "json":
        sys.stdout.write(to_json(report) + "\n")
    else:
        print_table(report)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 150.0,
    interval: Annotated[float, typer.Option(help="Seconds between cycles.")] = 5.0,
) -> None:
    """Start a local stack (kube-apiserver/etcd, Prometheus, vLLM emulator) and autoscale it live."""
    from autoscaler.demo import run_demo
    from autoscaler.logs import configure_logging

    configure_logging(level="warning", fmt="console")
    try:
        run_demo(duration_s=duration, interval_s=interval)
    except AutoscalerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
