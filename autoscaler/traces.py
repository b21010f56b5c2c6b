"""Request traces: read the shipped formats into arrays, and reshape them for experiments.

Two formats are read, recognised from the file's content rather than its name:

- Mooncake JSONL (Qin et al., FAST'25, arXiv 2407.00079): one JSON object per line with ``timestamp``
  (ms from trace start), ``input_length``, ``output_length`` and ``hash_ids`` (512-token prefix blocks).
- Azure LLM inference CSV (Patel et al., Splitwise, ISCA 2024): header ``TIMESTAMP,ContextTokens,GeneratedTokens``
  with ``TIMESTAMP`` as ``YYYY-MM-DD HH:MM:SS.fffffff``.

A :class:`Trace` holds arrival seconds from 0 (sorted), prompt and output tokens, and the prefix hashes when the
format has them. Transforms (:func:`load_scale`, :func:`rate_scale`, :func:`time_stretch`, :func:`splice`, :func:`window`) return new
traces and never modify their input. :func:`bucket` turns a trace into per-interval series (arrival rate and mean
prompt/output tokens) for the forecaster.

Example::

    trace = read_trace("autoscaler/data/traces/mooncake_conversation_trace.jsonl")
    twice_as_fast = rate_scale(trace, 2.0)      # Mooncake's Table 3 replays at 2x speed
    first_ten_minutes = window(twice_as_fast, start_s=0.0, end_s=600.0)
"""

from __future__ import annotations

import csv
import json
import math
import re
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
    "bucket",
    "load_scale",
    "parse_trace",
    "rate_scale",
    "read_trace",
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


def read_trace(path: str | Path) -> Trace:
    """Read a Mooncake JSONL or Azure CSV trace file (format recognised from content)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read trace ({exc})") from exc
    return parse_trace(text, source=str(p))


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def rate_scale(trace: Trace, factor: float) -> Trace:
    """Multiply the arrival rate by ``factor`` keeping the shape: arrival times are divided by it."""
    _positive(factor, "factor")
    return trace._replace(arrival_s=trace.arrival_s / factor)


LOAD_SCALE_MINUTE_S = 60.0
""":func:`load_scale` keeps the trace's rate curve at this resolution."""


def load_scale(trace: Trace, factor: float, *, seed: int) -> Trace:
    """``factor`` times the requests over the same duration: the fleet serving ``factor`` times the users.

    The rate curve is multiplied by ``factor`` minute by minute. Each minute's requests are kept, and
    ``floor(factor) - 1`` more copies of that minute are added (plus one more copy of a random ``frac(factor)``
    share of its requests). A copy is the minute's own arrival pattern rotated by a random offset within the
    minute (circularly, so it stays in the minute), and its lengths are drawn at random from the same minute's
    (prompt, output) pairs: the minute's mix, its joint prompt/output law included. So every minute carries
    ``factor`` x its requests (+-1 per fractional share), and the duration stays within a minute of the input's.

    Sub-minute burstiness: each copy keeps the clustering of the original minute (a user's session stays a
    burst), but the copies' bursts are independent of one another. Counts per second then have ``factor`` x the
    mean and about ``factor`` x the variance (not ``factor**2`` x, as compressing the clock or stacking aligned
    copies would give), so their relative spread (coefficient of variation) falls as ``1/sqrt(factor)``. That is
    what ``factor`` times the users do: independent users superpose, the aggregate rate adds up and its relative
    fluctuations average out, while the daily and minute-scale shape (common to all users) is kept whole.
    Unlike :func:`rate_scale`, the clock is not touched, so node and pod start-up keep their weight.

    Prefix hashes are dropped when requests are added (the copies are other users' prompts). ``factor`` 1 returns
    ``trace`` itself; ``seed`` fixes the copies. ValueError for a ``factor`` not finite and > 0.
    """
    _positive(factor, "factor")
    if factor == 1.0 or not len(trace):
        return trace
    rng = np.random.default_rng(seed)
    minute = LOAD_SCALE_MINUTE_S
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    n = len(arrival)
    index = (arrival // minute).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])  # first request of each non-empty minute
    counts = np.diff(np.r_[starts, n])
    minute_of = np.repeat(np.arange(len(starts)), counts)
    begin = index[starts].astype(np.float64) * minute
    # the last minute may be cut short by the end of the trace: rotate within what it spans
    span = np.minimum(minute, np.maximum(arrival[-1] - begin, 0.0))
    span = np.where(span > 0, span, minute)[minute_of]
    offset_in = arrival - begin[minute_of]

    whole, share = int(math.floor(factor)), factor - math.floor(factor)
    parts_t = [arrival] if whole >= 1 else []
    parts_src = [np.arange(n)] if whole >= 1 else []
    copies: list[np.ndarray] = []  # masks of the original rows each extra copy takes its times from
    copies += [np.ones(n, dtype=bool)] * max(whole - 1, 0)
    if share > 0:
        copies.append(rng.random(n) < share)
    for mask in copies:
        rows = np.flatnonzero(mask)
        shift = rng.random(len(starts))[minute_of[rows]] * span[rows]
        t = begin[minute_of[rows]] + np.mod(offset_in[rows] + shift, span[rows])
        # lengths: a random request of the same minute (its prompt and output together)
        pick = starts[minute_of[rows]] + (rng.random(len(rows)) * counts[minute_of[rows]]).astype(np.int64)
        parts_t.append(t)
        parts_src.append(pick)
    times = np.concatenate(parts_t)
    source_rows = np.concatenate(parts_src)
    order = np.argsort(times, kind="stable")
    return Trace(
        arrival_s=_frozen(times[order]),
        input_tokens=_frozen(np.array(trace.input_tokens[source_rows[order]], dtype=np.int64)),
        output_tokens=_frozen(np.array(trace.output_tokens[source_rows[order]], dtype=np.int64)),
        hash_ids=None,
        start_epoch_s=trace.start_epoch_s,
        source=trace.source,
        format=trace.format,
    )


def time_stretch(trace: Trace, factor: float) -> Trace:
    """Stretch the time axis by ``factor`` (2.0 makes the trace last twice as long at half the rate)."""
    _positive(factor, "factor")
    return trace._replace(arrival_s=trace.arrival_s * factor)


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
    requests_per_s: np.ndarray
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
        requests_per_s=counts / interval_s,
        mean_input_tokens=mean_in,
        mean_output_tokens=mean_out,
    )
