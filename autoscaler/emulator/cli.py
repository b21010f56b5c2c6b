"""``python -m autoscaler.emulator CONFIG``: run the emulator standalone from a small YAML file.

    file_sd: ./targets.json          # Prometheus file_sd list the emulator keeps up to date
    speedup: 1.0                     # emulated seconds per wall second
    legacy_names: false              # also serve vllm:gpu_cache_usage_perc, vllm:time_per_output_token_seconds
    variants:
      - namespace: team-a
        deployment: llama-8b-h100
        model: meta-llama/Llama-3.1-8B-Instruct
        role: both                   # prefill | decode | both
        profile: llama-3.1-8b/h100   # a name under models/profiles, or a path to a profile file
        replicas: 2                  # followed from the Deployment instead when --kubeconfig is given
        rate: 5.0                    # requests/s; with amplitude and period_s: rate + amplitude*sin(2*pi*t/period_s)
        mean_prompt_tokens: 1000
        mean_output_tokens: 250
        startup_s: 30
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscaler.core.types import Role
from autoscaler.emulator.emulator import Emulator
from autoscaler.emulator.variant import EmulatedVariant
from autoscaler.errors import ConfigError
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import default_profiles, load_profile

__all__ = ["EmulatorConfig", "app", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantConfig(_Strict):
    namespace: str = Field(min_length=1)
    deployment: str = Field(min_length=1)
    model: str = Field(min_length=1)
    role: Literal["prefill", "decode", "both"]
    profile: str = Field(min_length=1)
    accelerator: str | None = None
    """Defaults to the profile's accelerator."""
    replicas: int = Field(default=1, ge=0)
    rate: float = Field(default=1.0, ge=0)
    amplitude: float = Field(default=0.0, ge=0)
    period_s: float = Field(default=600.0, gt=0)
    mean_prompt_tokens: float = Field(default=1024.0, ge=1)
    mean_output_tokens: float = Field(default=256.0, ge=1)
    startup_s: float | None = Field(default=None, ge=0)
    prefix_cache_hit_rate: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0


class EmulatorConfig(_Strict):
    file_sd: Path
    tick_s: float = Field(default=0.1, gt=0)
    speedup: float = Field(default=1.0, gt=0)
    legacy_names: bool = False
    variants: list[VariantConfig] = Field(min_length=1)


def _load(rate: float, amplitude: float, period_s: float) -> Callable[[float], float]:
    return lambda t: max(0.0, rate + amplitude * math.sin(2 * math.pi * t / period_s))


def _profile(ref: str, *, base: Path, known: Mapping[str, PerformanceProfile] | None) -> PerformanceProfile:
    path = (base / ref) if not Path(ref).is_absolute() else Path(ref)
    if ref.endswith((".yaml", ".yml")):
        return load_profile(path)
    profiles = known if known is not None else default_profiles()
    if ref not in profiles:
        raise ConfigError(f"profile {ref!r} is neither a profile file nor one of {sorted(profiles)}",
                          field="profile")
    return profiles[ref]


def load_config(path: Path, *, profiles: Mapping[str, PerformanceProfile] | None = None
                ) -> tuple[EmulatorConfig, list[tuple[EmulatedVariant, int]]]:
    """Parse ``path``; returns the settings and each variant with its configured replica count."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    try:
        config = EmulatorConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ConfigError(f"{path}: {field}: {first['msg']}", field=field) from exc
    variants = []
    for i, v in enumerate(config.variants):
        try:
            profile = _profile(v.profile, base=path.parent, known=profiles)
            variant = EmulatedVariant(
                namespace=v.namespace, deployment=v.deployment, model=v.model, role=Role(v.role),
                accelerator=v.accelerator or profile.accelerator, profile=profile,
                load=_load(v.rate, v.amplitude, v.period_s), mean_prompt_tokens=v.mean_prompt_tokens,
                mean_output_tokens=v.mean_output_tokens, startup_s=v.startup_s,
                prefix_cache_hit_rate=v.prefix_cache_hit_rate, seed=v.seed,
            )
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}: variants.{i}: {exc}", field=f"variants.{i}") from exc
        variants.append((variant, v.replicas))
    return config, variants


app = typer.Typer(add_completion=False, help="Emulate vLLM pods serving vLLM's metrics to Prometheus.")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Emulator YAML file (see the module docstring).")],
    kubeconfig: Annotated[Path | None, typer.Option(
        help="Follow each Deployment's spec.replicas through this cluster instead of the file's counts.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many wall seconds.")] = None,
) -> None:
    """Run the emulator until interrupted (or for --duration seconds)."""
    try:
        settings, variants = load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    replicas_of: Callable[[EmulatedVariant], int]
    if kubeconfig is not None:
        from kubernetes import config as kube_config  # only needed when following a cluster

        from autoscaler.emulator.kube_follow import follow_deployments

        api_client = kube_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        replicas_of = follow_deployments(api_client)
    else:
        counts = {v.key: n for v, n in variants}
        replicas_of = lambda v: counts[v.key]
    stop = threading.Event()
    with Emulator(variants=[v for v, _ in variants], replicas_of=replicas_of, file_sd_path=settings.file_sd,
                  tick_s=settings.tick_s, speedup=settings.speedup, legacy_names=settings.legacy_names) as emu:
        emu.start()
        typer.echo(f"emulating {len(variants)} variant(s); Prometheus file_sd: {settings.file_sd}")
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            pass
        for pod in emu.pods():
            s = pod.stats
            typer.echo(f"{pod.namespace}/{pod.pod} {pod.role} {pod.address or 'starting'}"
                       + (f" waiting={s.waiting} running={s.running} kv={s.kv_usage:.2f} done={s.successes_total}"
                          if s else ""))
