"""Saving and loading forecaster state, one JSON file per model, so a restart does not forget.

What is kept: each series' history, the time of its last sample, the predictions still waiting for their
target, and the back-test scores. What is not: fitted models. The smoothing methods refit every cycle anyway
and the regressor is refitted from the restored history on the first cycle after a load (deterministic, about a
second), which avoids pickles tied to one scikit-learn version.

A file written under other settings (interval, horizons, methods) cannot be lined up with the current ones and
is ignored (the forecaster starts afresh); a file that is not valid is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from autoscaler.errors import ConfigError
from autoscaler.forecast.online import MixState, SeriesState, new_series
from autoscaler.forecast.types import ForecastConfig, Method

__all__ = ["DEFAULT_DIRECTORY", "SCHEMA_VERSION", "load_all", "load_mix", "save_all", "save_mix", "state_path"]

DEFAULT_DIRECTORY = Path("models/forecast")
SCHEMA_VERSION = 1
SUFFIX = ".forecast.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Floats = list[float | None]  # None encodes NaN: JSON has no NaN


class _SeriesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: Floats
    last_time_s: float | None
    pending_mean: list[list[Floats]]
    pending_upper: list[list[Floats]]
    pinball: list[Floats]
    pinball_weight: list[Floats]
    naive_pinball: list[Floats]
    ape: list[Floats]
    naive_ape: list[Floats]
    ape_weight: list[Floats]
    scored: list[list[int]]
    cycles_since_fit: int
    cycles_since_gbm_fit: int


class _MixFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int
    model: str
    interval_s: float
    horizon_steps: int
    methods: list[Method]
    arrival_rate: _SeriesFile
    mean_input_tokens: _SeriesFile
    mean_output_tokens: _SeriesFile


def _encode(array: np.ndarray) -> object:
    if array.dtype.kind != "f":
        return array.tolist()
    boxed = array.astype(object)
    boxed[~np.isfinite(array)] = None
    return boxed.tolist()


def _decode(values: object, *, shape: tuple[int, ...], name: str, source: Path) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # None -> NaN
    if array.shape != shape:
        raise ConfigError(f"{source}: {name} has shape {array.shape}, expected {shape}", field=name)
    return array


def _series_to_file(state: SeriesState) -> _SeriesFile:
    return _SeriesFile(
        values=_encode(state.values),  # type: ignore[arg-type]
        last_time_s=state.last_time_s,
        pending_mean=_encode(state.pending_mean),  # type: ignore[arg-type]
        pending_upper=_encode(state.pending_upper),  # type: ignore[arg-type]
        pinball=_encode(state.pinball),  # type: ignore[arg-type]
        pinball_weight=_encode(state.pinball_weight),  # type: ignore[arg-type]
        naive_pinball=_encode(state.naive_pinball),  # type: ignore[arg-type]
        ape=_encode(state.ape),  # type: ignore[arg-type]
        naive_ape=_encode(state.naive_ape),  # type: ignore[arg-type]
        ape_weight=_encode(state.ape_weight),  # type: ignore[arg-type]
        scored=state.scored.tolist(),
        cycles_since_fit=state.cycles_since_fit,
        cycles_since_gbm_fit=state.cycles_since_gbm_fit,
    )


def _series_from_file(data: _SeriesFile, *, config: ForecastConfig, name: str, source: Path) -> SeriesState:
    m, H = len(config.methods), config.horizon_steps
    blank = new_series(config)
    values = np.array(data.values, dtype=np.float64)[-config.history_steps:]
    if values.ndim != 1:
        raise ConfigError(f"{source}: {name}.values must be a list of numbers", field=f"{name}.values")
    last = data.last_time_s
    if last is not None and not math.isfinite(last):
        raise ConfigError(f"{source}: {name}.last_time_s must be finite", field=f"{name}.last_time_s")

    def grid(field: str, shape: tuple[int, ...]) -> np.ndarray:
        return _decode(getattr(data, field), shape=shape, name=f"{name}.{field}", source=source)

    return SeriesState(
        methods=blank.methods,
        values=values,
        last_time_s=last,
        pending_mean=grid("pending_mean", (m, H + 1, H)),
        pending_upper=grid("pending_upper", (m, H + 1, H)),
        pinball=grid("pinball", (m, H)),
        pinball_weight=grid("pinball_weight", (m, H)),
        naive_pinball=grid("naive_pinball", (m, H)),
        ape=grid("ape", (m, H)),
        naive_ape=grid("naive_ape", (m, H)),
        ape_weight=grid("ape_weight", (m, H)),
        scored=grid("scored", (m, H)).astype(np.int64),
        cycles_since_fit=data.cycles_since_fit,
        cycles_since_gbm_fit=data.cycles_since_gbm_fit,
    )


def state_path(*, model: str, directory: Path = DEFAULT_DIRECTORY) -> Path:
    """File of one model's state. Names like ``meta-llama/Llama-3.1-8B`` are made file-safe; a short hash of the
    real name keeps two names that sanitise alike (``a/b``, ``a_b``) apart."""
    safe = _UNSAFE.sub("_", model).strip("._") or "model"
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:8]
    return directory / f"{safe}-{digest}{SUFFIX}"


def save_mix(state: MixState, *, model: str, config: ForecastConfig, directory: Path = DEFAULT_DIRECTORY) -> Path:
    """Write one model's state atomically (a crash mid-write leaves the previous file)."""
    document = _MixFile(
        schema_version=SCHEMA_VERSION,
        model=model,
        interval_s=config.interval_s,
        horizon_steps=config.horizon_steps,
        methods=list(config.methods),
        arrival_rate=_series_to_file(state.arrival_rate),
        mean_input_tokens=_series_to_file(state.mean_input_tokens),
        mean_output_tokens=_series_to_file(state.mean_output_tokens),
    )
    path = state_path(model=model, directory=directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        handle.write(document.model_dump_json())
        temporary = Path(handle.name)
    os.replace(temporary, path)
    return path


def _read(path: Path) -> _MixFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read forecaster state ({exc})") from exc
    try:
        return _MixFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ConfigError(f"{path}: {where}: {first['msg']}", field=where) from exc


def load_mix(*, model: str, config: ForecastConfig, directory: Path = DEFAULT_DIRECTORY) -> MixState | None:
    """One model's saved state; None when there is none or it was written under other settings."""
    path = state_path(model=model, directory=directory)
    if not path.exists():
        return None
    return _from_document(_read(path), config=config, source=path)


def _from_document(document: _MixFile, *, config: ForecastConfig, source: Path) -> MixState | None:
    if document.schema_version != SCHEMA_VERSION:
        return None
    compatible = (math.isclose(document.interval_s, config.interval_s) and
                  document.horizon_steps == config.horizon_steps and tuple(document.methods) == config.methods)
    if not compatible:
        return None
    return MixState(
        arrival_rate=_series_from_file(document.arrival_rate, config=config, name="arrival_rate", source=source),
        mean_input_tokens=_series_from_file(document.mean_input_tokens, config=config, name="mean_input_tokens",
                                            source=source),
        mean_output_tokens=_series_from_file(document.mean_output_tokens, config=config, name="mean_output_tokens",
                                             source=source),
    )


def save_all(states: Mapping[str, MixState], *, config: ForecastConfig,
             directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    return [save_mix(state, model=model, config=config, directory=directory) for model, state in states.items()]


def load_all(*, config: ForecastConfig, directory: Path = DEFAULT_DIRECTORY) -> dict[str, MixState]:
    """Every compatible model state in ``directory``, keyed by the model name stored in the file."""
    out: dict[str, MixState] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        document = _read(path)
        state = _from_document(document, config=config, source=path)
        if state is not None:
            out[document.model] = state
    return out
