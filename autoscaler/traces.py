"""Request traces: read the shipped formats into arrays, and reshape them for experiments.

Two formats are read, recognised from the file's content rather than its name, plain or gzip-compressed (told by
the gzip magic bytes, not the ``.gz`` suffix):

- Mooncake JSONL (Qin et al., FAST'25, arXiv 2407.00079): one JSON object per line with ``timestamp``
  (ms from trace start), ``input_length``, ``output_length`` and ``hash_ids`` (512-token prefix blocks).
- Azure LLM inference CSV (Patel et al., Splitwise, ISCA 2024): header ``TIMESTAMP,ContextTokens,GeneratedTokens``
  with ``TIMESTAMP`` as ``YYYY-MM-DD HH:MM:SS.fffffff``.

A :class:`Trace` holds arrival seconds from 0 (sorted), prompt and output tokens, and the prefix hashes when the
format has them. Transforms (:func:`speed_up`, :func:`time_stretch`, :func:`load_scale`, :func:`block_bootstrap`,
:func:`splice`, :func:`window`) return new traces and never modify their input. :func:`speed_up` compresses the clock
(N times the rate for 1/N of the duration); :func:`load_scale` keeps the clock (N times the requests over the same
duration): the one to study a bigger fleet. :func:`bucket` turns a trace into per-interval series (arrival rate and mean
prompt/output tokens) for the forecaster.

Example::

    trace = read_trace("autoscaler/data/traces/mooncake_conversation_trace.jsonl")
    twice_as_fast = speed_up(trace, 2.0)        # Mooncake's Table 3 replays at 2x speed
    first_ten_minutes = window(twice_as_fast, start_s=0.0, end_s=600.0)
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from autoscaler.errors import ConfigError

__all__ = [
    "AZURE",
    "MOONCAKE",
    "BucketedTrace",
    "Trace",
    "block_bootstrap",
    "bucket",
    "load_scale",
    "parse_trace",
    "read_trace",
    "speed_up",
    "splice",
    "time_stretch",
    "window",
]

MOONCAKE = "mooncake"  # values of Trace.format
AZURE = "azure"

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
# Azure timestamps carry 7 fractional digits (100 ns); datetime keeps 6, so the fraction is parsed separately.
AZURE_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?$")


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Requests of a trace, sorted by arrival. Arrays are read-only and share one length."""

    arrival_s: np.ndarray  # float64, seconds from the first request (the first is 0 unless windowed/spliced)
    input_tokens: np.ndarray  # int64, prompt tokens
    output_tokens: np.ndarray  # int64, generated tokens
    hash_ids: tuple[tuple[int, ...], ...] | None = None  # Mooncake prefix-block hashes, per request
    start_epoch_s: float | None = None  # wall-clock time of arrival 0 (UTC seconds) when the format gives it
    source: str = ""
    format: str = ""  # MOONCAKE or AZURE when read from a file; "" when built or spliced from mixed parts

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.input_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("arrival_s, input_tokens and output_tokens must have the same length")
        if self.hash_ids is not None and len(self.hash_ids) != n:
            raise ValueError("hash_ids must have one entry per request")
        if n > 1 and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("arrival_s must be sorted")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Time from arrival 0 to the last arrival (0 for an empty trace)."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def _replace(self, *, order: np.ndarray | None = None, arrival_s: np.ndarray | None = None,
                 **changes: object) -> Trace:
        """A new trace with the rows ``order`` (all when None) and the given fields changed."""
        idx = np.arange(len(self)) if order is None else order
        hashes = None if self.hash_ids is None else tuple(self.hash_ids[i] for i in idx)
        fields: dict[str, object] = {
            "arrival_s": _frozen(np.array(self.arrival_s[idx] if arrival_s is None else arrival_s,
                                          dtype=np.float64)),
            "input_tokens": _frozen(np.array(self.input_tokens[idx], dtype=np.int64)),
            "output_tokens": _frozen(np.array(self.output_tokens[idx], dtype=np.int64)),
            "hash_ids": hashes,
            "start_epoch_s": self.start_epoch_s,
            "source": self.source,
            "format": self.format,
        }
        fields.update(changes)
        return Trace(**fields)  # type: ignore[arg-type]


def _make_trace(*, times: list[float], inputs: list[int], outputs: list[int],
                hashes: list[tuple[int, ...]] | None, start_epoch_s: float | None, source: str,
                trace_format: str) -> Trace:
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")  # files are usually sorted; a stable sort keeps ties in file order
    t0 = float(t[order[0]]) if len(t) else 0.0
    return Trace(
        arrival_s=_frozen(t[order] - t0),
        input_tokens=_frozen(np.asarray(inputs, dtype=np.int64)[order]),
        output_tokens=_frozen(np.asarray(outputs, dtype=np.int64)[order]),
        hash_ids=None if hashes is None else tuple(hashes[i] for i in order),
        start_epoch_s=None if start_epoch_s is None else start_epoch_s + t0,
        source=source,
        format=trace_format,
    )


def _error(source: str, line: int, message: str, field: str | None = None) -> ConfigError:
    return ConfigError(f"{source}:{line}: {message}", field=field)


def _count(value: object, *, source: str, line: int, name: str, minimum: int) -> int:
    """A token count: an integer (or integral float) >= minimum."""
    if isinstance(value, bool):
        raise _error(source, line, f"{name} must be an integer, got {value!r}", name)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _error(source, line, f"{name} must be an integer, got {value!r}", name) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise _error(source, line, f"{name} must be an integer, got {value!r}", name)
    if value < minimum:
        raise _error(source, line, f"{name} must be >= {minimum}, got {value}", name)
    return value


def _parse_mooncake(lines: Iterable[tuple[int, str]], *, source: str) -> Trace:
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    hashes: list[tuple[int, ...]] = []
    for number, text in lines:
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error(source, number, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise _error(source, number, "expected a JSON object")
        for name in MOONCAKE_FIELDS:
            if name not in row:
                raise _error(source, number, f"missing field {name!r}", name)
        stamp = row["timestamp"]
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp) or stamp < 0:
            raise _error(source, number, f"timestamp must be a finite number of ms >= 0, got {stamp!r}", "timestamp")
        ids = row.get("hash_ids", [])
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise _error(source, number, "hash_ids must be a list of integers", "hash_ids")
        times.append(float(stamp) / 1000.0)
        inputs.append(_count(row["input_length"], source=source, line=number, name="input_length", minimum=1))
        outputs.append(_count(row["output_length"], source=source, line=number, name="output_length", minimum=0))
        hashes.append(tuple(ids))
    return _make_trace(times=times, inputs=inputs, outputs=outputs, hashes=hashes, start_epoch_s=None,
                       source=source, trace_format=MOONCAKE)


def _azure_seconds(text: str, *, source: str, line: int) -> float:
    match = AZURE_TIMESTAMP.match(text.strip())
    if match is None:
        raise _error(source, line, f"TIMESTAMP must look like YYYY-MM-DD HH:MM:SS.fffffff, got {text!r}",
                     "TIMESTAMP")
    try:
        whole = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
    except ValueError as exc:
        raise _error(source, line, f"TIMESTAMP is not a valid date/time: {text!r}", "TIMESTAMP") from exc
    fraction = float("0." + match.group(2)) if match.group(2) else 0.0
    return whole.timestamp() + fraction


def _parse_azure(lines: Iterable[tuple[int, str]], *, source: str) -> Trace:
    numbered = list(lines)
    header_line, header_text = numbered[0]
    header = [h.strip() for h in next(csv.reader([header_text]))]
    missing = [c for c in AZURE_COLUMNS if c not in header]
    if missing:
        raise _error(source, header_line, f"CSV header lacks column(s) {', '.join(missing)}", missing[0])
    col = {name: header.index(name) for name in AZURE_COLUMNS}
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    for number, text in numbered[1:]:
        cells = next(csv.reader([text]))
        if len(cells) != len(header):
            raise _error(source, number, f"expected {len(header)} columns, got {len(cells)}")
        times.append(_azure_seconds(cells[col["TIMESTAMP"]], source=source, line=number))
        inputs.append(_count(cells[col["ContextTokens"]], source=source, line=number, name="ContextTokens",
                             minimum=1))
        outputs.append(_count(cells[col["GeneratedTokens"]], source=source, line=number, name="GeneratedTokens",
                              minimum=0))
    t = np.asarray(times, dtype=np.float64)
    epoch0 = float(t.min()) if len(t) else None
    return _make_trace(times=list(t - (epoch0 or 0.0)), inputs=inputs, outputs=outputs, hashes=None,
                       start_epoch_s=epoch0, source=source, trace_format=AZURE)


def parse_trace(text: str, *, source: str = "<string>") -> Trace:
    """Parse trace text; the format is recognised from the first non-blank line.

    Raises :class:`ConfigError` naming ``source`` and the 1-based line of the first malformed row.
    """
    # split on "\n" only, so line numbers match what an editor shows
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        raise ConfigError(f"{source}: empty trace")
    first = lines[0][1].lstrip()
    if first.startswith("{"):
        return _parse_mooncake(lines, source=source)
    header = [h.strip() for h in next(csv.reader([first]))]
    if "TIMESTAMP" in header:
        return _parse_azure(lines, source=source)
    raise ConfigError(
        f"{source}:{lines[0][0]}: unrecognised trace format (expected Mooncake JSONL objects or an Azure CSV "
        f"header with {', '.join(AZURE_COLUMNS)})"
    )


GZIP_MAGIC = b"\x1f\x8b"


def read_trace(path: str | Path) -> Trace:
    """Read a Mooncake JSONL or Azure CSV trace file, plain or gzip-compressed (both recognised from content)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read trace ({exc})") from exc
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:  # truncated (EOFError) or corrupt (BadGzipFile, zlib)
            raise ConfigError(f"{p}: truncated or corrupt gzip file ({str(exc).splitlines()[0]})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: cannot read trace (not UTF-8 text: {exc.reason} at byte {exc.start})") from exc
    return parse_trace(text, source=str(p))


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def speed_up(trace: Trace, factor: float) -> Trace:
    """Play the trace ``factor`` times as fast: arrival times are divided by it, so the arrival rate is ``factor``
    times and the duration 1/``factor`` of the original (the clock is compressed; :func:`load_scale` keeps it)."""
    _positive(factor, "factor")
    return trace._replace(arrival_s=trace.arrival_s / factor)


LOAD_SCALE_MINUTE_S = 60.0
""":func:`load_scale` keeps the trace's rate curve at this resolution."""


def time_stretch(trace: Trace, factor: float) -> Trace:
    """Stretch the time axis by ``factor`` (2.0 makes the trace last twice as long at half the rate)."""
    _positive(factor, "factor")
    return trace._replace(arrival_s=trace.arrival_s * factor)


MINUTE_S = 60.0


def load_scale(trace: Trace, factor: float, *, seed: int | Sequence[int]) -> Trace:
    """``factor`` times the requests over the same duration: the trace's rate curve multiplied by ``factor``
    minute by minute (the clock is kept; :func:`speed_up` compresses it instead).

    Each request is replaced by floor(factor) or ceil(factor) copies (ceil with probability the fractional part,
    so below 1 this thins the trace): the request itself at its own time, and the extra copies at uniform random
    times within the same minute, each with the prompt and output lengths of a random request of that minute (the
    minute's mix, lengths kept together). Prefix hashes are dropped when copies are added: a copy stands for
    another user, whose prefixes the trace does not know.

    Sub-minute burstiness: the minute's rate is multiplied by ``factor`` exactly (in expectation), but the bursts
    inside a minute are not: the original arrivals keep theirs and the copies arrive independently, so the
    relative spread of per-second counts shrinks, about as 1/sqrt(factor), while the absolute bursts stay (on the
    shipped Azure conversation trace, the standard deviation of per-second counts over their minute's mean is
    0.46, 0.31, 0.22 and 0.15 at x1, x2, x4 and x8). That is what a fleet serving ``factor`` times the users sees: the rate over the day and the
    minute follows common causes (time of day, events) and scales with the users, while bursts come from
    individual clients and sessions that do not line up with each other, and a superposition of many independent
    streams is smoother than any one of them (Palm-Khintchine). Multiplying every burst by ``factor``, as
    :func:`speed_up` or copying the trace onto itself would, overstates the peaks a larger fleet has to absorb.

    Deterministic for a ``seed``; the input is not modified.
    """
    _positive(factor, "factor")
    if factor == 1.0:
        return trace
    rng = np.random.default_rng(seed)
    n = len(trace)
    whole = math.floor(factor)
    copies = whole + (rng.random(n) < factor - whole)
    keep = np.flatnonzero(copies >= 1)
    extra = np.maximum(copies - 1, 0)
    if not extra.any():
        return trace._replace(order=keep)
    source = np.repeat(np.arange(n), extra)  # the request each extra copy stands for
    minute = (trace.arrival_s // MINUTE_S).astype(np.int64)
    m = minute[source]
    lo = m * MINUTE_S
    hi = np.minimum(lo + MINUTE_S, trace.duration_s)  # the last minute is cut at the last arrival: same duration
    times = lo + rng.random(len(source)) * (hi - lo)
    first = np.searchsorted(minute, m, side="left")  # requests of a minute are contiguous (sorted arrivals)
    count = np.searchsorted(minute, m, side="right") - first
    donor = first + np.minimum((rng.random(len(source)) * count).astype(np.int64), count - 1)
    arrival = np.concatenate([trace.arrival_s[keep], times])
    order = np.argsort(arrival, kind="stable")
    rows = np.concatenate([keep, donor])[order]
    return trace._replace(order=rows, arrival_s=arrival[order], hash_ids=None)


def block_bootstrap(trace: Trace, *, seed: int | Sequence[int], block_s: float = MINUTE_S,
                    reach_s: float | None = None) -> Trace:
    """A block-bootstrap resample: the trace cut into ``block_s`` blocks from arrival 0, and as many blocks drawn
    with replacement (seeded) laid end to end, each keeping its requests' times within the block and their lengths.

    The result has the same number of blocks, so about the same duration and (in expectation) the same requests;
    within-block burstiness is kept, the order of blocks is not (so the slow cycle of a long trace is blurred:
    resample a window when that matters). The last, partial block is drawn like the others.

    With ``reach_s`` the draw is local: block i is drawn among the blocks starting within ``reach_s`` of its own
    start (fewer at the ends), so what happens at a time of day, or in a surge, stays about then; a daily cycle
    or a surge that is the point of a trace survives the resample (a local block bootstrap). 0 is the trace.
    """
    _positive(block_s, "block_s")
    if reach_s is not None and not (math.isfinite(reach_s) and reach_s >= 0):
        raise ValueError(f"reach_s must be a finite number >= 0, got {reach_s}")
    rng = np.random.default_rng(seed)
    blocks = max(1, math.ceil((trace.duration_s + 1e-9) / block_s))
    edges = np.searchsorted(trace.arrival_s, np.arange(blocks + 1) * block_s, side="left")
    edges[-1] = len(trace)
    if reach_s is None:
        drawn = rng.integers(0, blocks, size=blocks)
    else:
        reach = math.floor(reach_s / block_s + 1e-9)
        own = np.arange(blocks)
        drawn = rng.integers(np.maximum(own - reach, 0), np.minimum(own + reach, blocks - 1) + 1)
    counts = edges[drawn + 1] - edges[drawn]
    total = int(counts.sum())
    starts_out = np.cumsum(counts) - counts
    rows = np.repeat(edges[drawn] - starts_out, counts) + np.arange(total)
    shift = np.repeat((np.arange(blocks) - drawn) * block_s, counts)
    return trace._replace(order=rows, arrival_s=trace.arrival_s[rows] + shift)


def splice(traces: Sequence[Trace], *, gap_s: float = 0.0) -> Trace:
    """Concatenate traces: each starts ``gap_s`` after the previous one's last arrival.

    Prefix hashes are kept only when every part has them (they are not remapped, so parts may share hash ids).
    """
    if not traces:
        raise ValueError("splice needs at least one trace")
    if not (math.isfinite(gap_s) and gap_s >= 0):
        raise ValueError(f"gap_s must be a finite number >= 0, got {gap_s}")
    offsets: list[float] = []
    offset = 0.0
    for part in traces:
        offsets.append(offset)
        if len(part):  # an empty part adds neither requests nor a gap
            offset += float(part.arrival_s[-1]) + gap_s
    arrival = np.concatenate([p.arrival_s + o for p, o in zip(traces, offsets, strict=True)])
    keep_hashes = all(p.hash_ids is not None for p in traces)
    hashes = tuple(h for p in traces for h in (p.hash_ids or ())) if keep_hashes else None
    return Trace(
        arrival_s=_frozen(arrival.astype(np.float64)),
        input_tokens=_frozen(np.concatenate([p.input_tokens for p in traces]).astype(np.int64)),
        output_tokens=_frozen(np.concatenate([p.output_tokens for p in traces]).astype(np.int64)),
        hash_ids=hashes,
        start_epoch_s=traces[0].start_epoch_s,
        source="+".join(p.source for p in traces),
        format=traces[0].format if len({p.format for p in traces}) == 1 else "",
    )


def window(trace: Trace, *, start_s: float, end_s: float, rebase: bool = True) -> Trace:
    """The requests arriving in ``[start_s, end_s)``; with ``rebase`` their times start from ``start_s`` = 0."""
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s:
        raise ValueError(f"need finite start_s <= end_s, got {start_s} and {end_s}")
    lo, hi = np.searchsorted(trace.arrival_s, [start_s, end_s], side="left")
    order = np.arange(lo, hi)
    shift = start_s if rebase else 0.0
    epoch = None if trace.start_epoch_s is None else trace.start_epoch_s + shift
    return trace._replace(order=order, arrival_s=trace.arrival_s[lo:hi] - shift, start_epoch_s=epoch)


@dataclass(frozen=True, slots=True, eq=False)
class BucketedTrace:
    """A trace summarised per interval, as a forecaster sees it: one value (or NaN) per step."""

    interval_s: float
    start_s: np.ndarray  # bucket start, seconds from arrival 0
    arrivals_per_s: np.ndarray
    mean_input_tokens: np.ndarray  # NaN for an empty bucket: no information about the mix
    mean_output_tokens: np.ndarray


def bucket(trace: Trace, *, interval_s: float) -> BucketedTrace:
    """Bucket arrivals into ``interval_s`` steps from 0 up to the last arrival."""
    _positive(interval_s, "interval_s")
    steps = max(1, math.ceil((trace.duration_s + 1e-9) / interval_s))
    index = np.minimum((trace.arrival_s // interval_s).astype(np.int64), steps - 1)
    counts = np.bincount(index, minlength=steps).astype(np.float64)
    inputs = np.bincount(index, weights=trace.input_tokens.astype(np.float64), minlength=steps)
    outputs = np.bincount(index, weights=trace.output_tokens.astype(np.float64), minlength=steps)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.where(counts > 0, inputs / counts, np.nan)
        mean_out = np.where(counts > 0, outputs / counts, np.nan)
    return BucketedTrace(
        interval_s=interval_s,
        start_s=np.arange(steps, dtype=np.float64) * interval_s,
        arrivals_per_s=counts / interval_s,
        mean_input_tokens=mean_in,
        mean_output_tokens=mean_out,
    )
