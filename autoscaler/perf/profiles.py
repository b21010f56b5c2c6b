"""Performance profiles as files: the YAML schema (pydantic, the boundary) and the loader.

One file per model x accelerator (x tensor parallelism) under ``models/profiles/``; the coefficients are
role-agnostic (see ``models/README.md``). A file looks like::

    name: llama-3.1-8b/h100
    model: meta-llama/Llama-3.1-8B-Instruct
    accelerator: nvidia-h100-80gb
    gpus_per_replica: 1
    prefill: {a: 0.00645, b: 2.95e-5, c: 8.84e-10}       # s, s/token, s/token^2
    decode: {alpha: 0.00645, beta: 3.75e-5, gamma: 5.02e-8}  # s, s/seq, s/(seq*token)
    kv_cache: {capacity_tokens: 436080, bytes_per_token: 131072}
    scheduler: {max_num_seqs: 1024, max_num_batched_tokens: 8192}
    startup: {pod_s: 90, node_s: 600}
    cost: {usd_per_gpu_hour: 4.0}
    source:
      summary: ...
      provenance: {prefill.a: "derived: ...", ...}   # every number says where it came from
      references: [...]

This module reads files, so it is the one place in ``autoscaler.perf`` that does I/O; everything it returns is
a frozen :class:`PerformanceProfile`. A broken file raises :class:`ConfigError` naming the file and the field,
e.g. ``models/profiles/x.yaml: decode.alpha: Input should be greater than 0``.

Where the profiles live: ``$VAS_MODELS_DIR/profiles`` when ``VAS_MODELS_DIR`` is set, else ``models/profiles``
at the root of the repository this package was imported from (an editable install or a checkout), else the
copy the wheel carries in ``autoscaler/_models/profiles`` (setup.py copies ``models/`` in at build time, so an
installed package and the container image start without a checkout). ``models/`` stays the one place to edit
them; an operator who tunes profiles mounts a directory and sets ``VAS_MODELS_DIR`` or ``planner.models_dir``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from autoscaler.errors import ConfigError
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "MODELS_DIR_ENV",
    "ProfileFile",
    "default_models_dir",
    "default_profiles",
    "load_profile",
    "load_profiles",
]

MODELS_DIR_ENV = "VAS_MODELS_DIR"

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]

# Every number a profile carries must say where it came from (measured, fitted, derived or assumed).
COEFFICIENT_PATHS = (
    "prefill.a", "prefill.b", "prefill.c",
    "decode.alpha", "decode.beta", "decode.gamma",
    "kv_cache.capacity_tokens",
    "startup.pod_s", "startup.node_s",
    "cost.usd_per_gpu_hour",
)
OPTIONAL_PATHS = ("kv_cache.bytes_per_token", "scheduler.max_num_seqs", "scheduler.max_num_batched_tokens")
PROVENANCE_KINDS = ("measured", "fitted", "derived", "assumed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefillCoefficients(_Strict):
    """Seconds to prefill a batch: ``a + b * tokens + c * sum(prompt_tokens^2)``."""

    a: Positive
    b: Positive
    c: NonNegative


class DecodeCoefficients(_Strict):
    """Seconds per decode step of B sequences with mean context C: ``alpha + beta * B + gamma * B * C``."""

    alpha: Positive
    beta: NonNegative
    gamma: NonNegative


class KvCache(_Strict):
    capacity_tokens: Annotated[int, Field(gt=0)]
    bytes_per_token: Annotated[int, Field(gt=0)] | None = None  # informational: 2*layers*kv_heads*head_dim*dtype


class Scheduler(_Strict):
    max_num_seqs: Annotated[int, Field(gt=0)] = 256
    max_num_batched_tokens: Annotated[int, Field(gt=0)] = 8192


class Startup(_Strict):
    pod_s: Positive
    node_s: Positive


class Cost(_Strict):
    usd_per_gpu_hour: Positive


class Source(_Strict):
    summary: Annotated[str, StringConstraints(min_length=1)]
    provenance: dict[str, str]
    references: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]

    @field_validator("provenance")
    @classmethod
    def _every_number_has_a_provenance(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COEFFICIENT_PATHS) - set(OPTIONAL_PATHS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; provenance keys are {list(COEFFICIENT_PATHS)}")
        missing = [p for p in COEFFICIENT_PATHS if p not in value]
        if missing:
            raise ValueError(f"no provenance for {missing}")
        for path, text in value.items():
            if text.split(":", 1)[0].strip() not in PROVENANCE_KINDS:
                raise ValueError(f"{path} must start with one of {'/'.join(PROVENANCE_KINDS)} and a colon")
        return value


_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*/[a-z0-9][a-z0-9.\-]*$")


class ProfileFile(_Strict):
    """The schema of one ``models/profiles/*.yaml`` file."""

    name: Annotated[str, StringConstraints(pattern=_NAME.pattern)]
    model: Annotated[str, StringConstraints(min_length=1)]
    accelerator: Annotated[str, StringConstraints(min_length=1)]
    gpus_per_replica: Annotated[int, Field(gt=0)]
    prefill: PrefillCoefficients
    decode: DecodeCoefficients
    scheduler: Scheduler = Scheduler()  # before kv_cache: its validator reads the scheduler
    kv_cache: KvCache
    startup: Startup
    cost: Cost
    source: Source
    kind: Literal["vllm"] = "vllm"

    @field_validator("kv_cache")
    @classmethod
    def _one_batch_fits_in_the_cache(cls, value: KvCache, info: ValidationInfo) -> KvCache:
        # vLLM refuses to start when the KV cache cannot hold one scheduler batch; so do we.
        scheduler = info.data.get("scheduler")
        if scheduler is not None and value.capacity_tokens < scheduler.max_num_batched_tokens:
            raise ValueError(
                f"capacity_tokens ({value.capacity_tokens}) is below "
                f"scheduler.max_num_batched_tokens ({scheduler.max_num_batched_tokens})"
            )
        return value

    def to_profile(self) -> PerformanceProfile:
        return PerformanceProfile(
            name=self.name,
            model=self.model,
            accelerator=self.accelerator,
            gpus_per_replica=self.gpus_per_replica,
            prefill_a=self.prefill.a,
            prefill_b=self.prefill.b,
            prefill_c=self.prefill.c,
            decode_alpha=self.decode.alpha,
            decode_beta=self.decode.beta,
            decode_gamma=self.decode.gamma,
            kv_capacity_tokens=self.kv_cache.capacity_tokens,
            max_num_seqs=self.scheduler.max_num_seqs,
            max_num_batched_tokens=self.scheduler.max_num_batched_tokens,
            startup_s=self.startup.pod_s,
            node_startup_s=self.startup.node_s,
            cost_per_gpu_hour=self.cost.usd_per_gpu_hour,
        )


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(file)"


def load_profile(path: Path) -> PerformanceProfile:
    """Load and validate one profile file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return ProfileFile.model_validate(raw).to_profile()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {field}: {first['msg']}{more}", field=field) from exc


def load_profiles(directory: Path | str) -> dict[str, PerformanceProfile]:
    """Load every ``*.yaml`` under ``directory`` (sorted), keyed by profile name. Names must be unique."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory of profiles")
    profiles: dict[str, PerformanceProfile] = {}
    origin: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        profile = load_profile(path)
        if profile.name in profiles:
            raise ConfigError(f"{path}: name: {profile.name!r} is already defined in {origin[profile.name]}",
                              field="name")
        profiles[profile.name] = profile
        origin[profile.name] = path
    if not profiles:
        raise ConfigError(f"{directory}: no *.yaml profiles found")
    return profiles


def default_models_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    """``$VAS_MODELS_DIR`` if set, else ``models/`` at the root of the checkout holding this package, else the
    copy inside the installed package."""
    env = os.environ if environ is None else environ
    override = env.get(MODELS_DIR_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "models"
    if (checkout / "profiles").is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "_models"


def default_profiles(*, environ: Mapping[str, str] | None = None) -> dict[str, PerformanceProfile]:
    """The repository's profiles (``<models dir>/profiles``). Fails with a hint when they cannot be found."""
    models_dir = default_models_dir(environ=environ)
    profiles_dir = models_dir / "profiles"
    if not profiles_dir.is_dir():
        raise ConfigError(
            f"{profiles_dir}: profiles directory not found; set {MODELS_DIR_ENV} to the directory that holds "
            "profiles/ (the repository's models/; an installed wheel carries a copy in autoscaler/_models)"
        )
    return load_profiles(profiles_dir)
