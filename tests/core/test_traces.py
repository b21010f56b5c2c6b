"""Trace readers and transforms: formats recognised from content, malformed rows named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.errors import ConfigError
from autoscaler.traces import (
    Trace,
    bucket,
    load_scale,
    parse_trace,
    read_trace,
    speed_up,
    splice,
    time_stretch,
    window,
)

SHIPPED = Path(traces.__file__).parent / "data" / "traces"

MOONCAKE = "\n".join(
    json.dumps(row)
    for row in (
        {"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [0]},
        {"timestamp": 500, "input_length": 200, "output_length": 20, "hash_ids": [0, 1]},
        {"timestamp": 2000, "input_length": 300, "output_length": 30, "hash_ids": [2]},
    )
) + "\n"

AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.0000000,374,44\n"
    "2023-11-16 18:15:46.1234567,396,109\n"
    "2023-11-16 18:15:50.5000000,10,0\n"
)


def make_trace(arrivals: list[float], *, hashes: bool = True) -> Trace:
    n = len(arrivals)
    return Trace(
        arrival_s=np.asarray(arrivals, dtype=np.float64),
        input_tokens=np.arange(1, n + 1, dtype=np.int64) * 100,
        output_tokens=np.arange(1, n + 1, dtype=np.int64) * 10,
        hash_ids=tuple((i,) for i in range(n)) if hashes else None,
    )


# --- reading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    pytest.param("mooncake_conversation_trace.jsonl", id="mooncake-conversation"),
    pytest.param("mooncake_synthetic_trace.jsonl", id="mooncake-synthetic"),
    pytest.param("azure_llm_2023_conv.csv", id="azure-conv"),
])
def test_reads_every_row_of_the_shipped_traces_sorted_from_zero(name: str) -> None:
    path = SHIPPED / name
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    expected = len(rows) - (1 if name.endswith(".csv") else 0)
    trace = read_trace(path)
    assert len(trace) == expected
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.input_tokens.min() >= 1 and trace.output_tokens.min() >= 0
    assert (trace.hash_ids is not None) == name.endswith(".jsonl")


def test_reads_the_mooncake_fields_in_seconds_with_hashes() -> None:
    trace = parse_trace(MOONCAKE)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.5, 2.0])
    assert trace.input_tokens.tolist() == [100, 200, 300]
    assert trace.output_tokens.tolist() == [10, 20, 30]
    assert trace.hash_ids == ((0,), (0, 1), (2,))
    assert trace.start_epoch_s is None


def test_reads_azure_timestamps_to_the_hundred_nanoseconds() -> None:
    trace = parse_trace(AZURE)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.1234567, 4.5], atol=1e-7)
    assert trace.input_tokens.tolist() == [374, 396, 10]
    assert trace.output_tokens.tolist() == [44, 109, 0]
    assert trace.start_epoch_s == pytest.approx(1700158546.0)


@pytest.mark.parametrize(("content", "suffix", "expected_format", "expected_inputs"), [
    pytest.param(MOONCAKE, ".csv", traces.MOONCAKE, [100, 200, 300], id="mooncake-named-csv"),
    pytest.param(AZURE, ".jsonl", traces.AZURE, [374, 396, 10], id="azure-named-jsonl"),
    pytest.param(AZURE, ".txt", traces.AZURE, [374, 396, 10], id="azure-named-txt"),
])
def test_recognises_the_format_from_content_not_the_file_name(
    tmp_path: Path, content: str, suffix: str, expected_format: str, expected_inputs: list[int]
) -> None:
    path = tmp_path / f"trace{suffix}"
    path.write_text(content)
    trace = read_trace(path)
    assert trace.format == expected_format
    assert trace.input_tokens.tolist() == expected_inputs


def test_sorts_unsorted_rows_and_keeps_each_rows_hashes() -> None:
    text = "\n".join(json.dumps(r) for r in (
        {"timestamp": 3000, "input_length": 3, "output_length": 1, "hash_ids": [3]},
        {"timestamp": 1000, "input_length": 1, "output_length": 1, "hash_ids": [1]},
        {"timestamp": 2000, "input_length": 2, "output_length": 1, "hash_ids": [2]},
    ))
    trace = parse_trace(text)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.0, 2.0])
    assert trace.input_tokens.tolist() == [1, 2, 3]
    assert trace.hash_ids == ((1,), (2,), (3,))


def test_arrays_of_a_trace_are_read_only() -> None:
    trace = parse_trace(MOONCAKE)
    with pytest.raises(ValueError):
        trace.arrival_s[0] = 5.0


# --- malformed input -------------------------------------------------------------------------------------

GOOD_ROW = '{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": []}'


@pytest.mark.parametrize(("bad_row", "field"), [
    pytest.param('{"timestamp": 5, "input_length": 1', None, id="truncated-json"),
    pytest.param('[1, 2, 3]', None, id="not-an-object"),
    pytest.param('{"timestamp": 5, "output_length": 1}', "input_length", id="missing-input"),
    pytest.param('{"timestamp": -1, "input_length": 1, "output_length": 1}', "timestamp", id="negative-time"),
    pytest.param('{"timestamp": "soon", "input_length": 1, "output_length": 1}', "timestamp", id="text-time"),
    pytest.param('{"timestamp": 5, "input_length": 0, "output_length": 1}', "input_length", id="empty-prompt"),
    pytest.param('{"timestamp": 5, "input_length": 2.5, "output_length": 1}', "input_length", id="fractional"),
    pytest.param('{"timestamp": 5, "input_length": 1, "output_length": -3}', "output_length", id="neg-output"),
    pytest.param('{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": "x"}', "hash_ids",
                 id="bad-hashes"),
])
def test_a_malformed_mooncake_row_names_the_file_line_and_field(
    tmp_path: Path, bad_row: str, field: str | None
) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{GOOD_ROW}\n\n{GOOD_ROW}\n{bad_row}\n{GOOD_ROW}\n")
    with pytest.raises(ConfigError) as caught:
        read_trace(path)
    assert f"{path}:4:" in str(caught.value)  # the blank line still counts
    assert caught.value.field == field


@pytest.mark.parametrize(("bad_row", "field"), [
    pytest.param("2023-11-16 18:15:47,1", None, id="missing-column"),
    pytest.param("16/11/2023 18:15:47,1,1", "TIMESTAMP", id="wrong-date-format"),
    pytest.param("2023-13-16 18:15:47.0,1,1", "TIMESTAMP", id="impossible-month"),
    pytest.param("2023-11-16 18:15:47.0,many,1", "ContextTokens", id="text-tokens"),
    pytest.param("2023-11-16 18:15:47.0,5,-1", "GeneratedTokens", id="negative-output"),
])
def test_a_malformed_azure_row_names_the_file_line_and_field(tmp_path: Path, bad_row: str, field: str | None) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0,1,1\n{bad_row}\n")
    with pytest.raises(ConfigError) as caught:
        read_trace(path)
    assert f"{path}:3:" in str(caught.value)
    assert caught.value.field == field


@pytest.mark.parametrize(("content", "message"), [
    pytest.param("", "empty trace", id="empty"),
    pytest.param("\n  \n", "empty trace", id="blank"),
    pytest.param("time,prompt,output\n1,2,3\n", "unrecognised trace format", id="unknown-csv"),
    pytest.param("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.0,1\n", "GeneratedTokens", id="azure-missing-column"),
])
def test_a_file_of_no_known_format_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_trace(path)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(ConfigError, match="absent.jsonl"):
        read_trace(path)


# --- transforms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [pytest.param(2.0, id="double"), pytest.param(0.5, id="half")])
def test_speed_up_multiplies_the_rate_and_divides_the_duration(factor: float) -> None:
    trace = make_trace([0.0, 1.0, 3.0, 6.0])
    scaled = speed_up(trace, factor)
    assert scaled.duration_s == pytest.approx(trace.duration_s / factor)
    np.testing.assert_allclose(scaled.arrival_s, trace.arrival_s / factor)
    assert len(scaled) / scaled.duration_s == pytest.approx(factor * len(trace) / trace.duration_s)
    assert scaled.input_tokens.tolist() == trace.input_tokens.tolist()
    assert scaled.hash_ids == trace.hash_ids
    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.0, 3.0, 6.0])  # input untouched


def test_time_stretch_undoes_speed_up() -> None:
    trace = make_trace([0.0, 1.5, 2.0, 7.25])
    np.testing.assert_allclose(time_stretch(trace, 3.0).arrival_s, [0.0, 4.5, 6.0, 21.75])
    np.testing.assert_allclose(time_stretch(speed_up(trace, 3.0), 3.0).arrival_s, trace.arrival_s)


@pytest.mark.parametrize("factor", [
    pytest.param(0.0, id="zero"), pytest.param(-1.0, id="negative"), pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
])
def test_scaling_by_a_non_positive_or_non_finite_factor_is_refused(factor: float) -> None:
    trace = make_trace([0.0, 1.0])
    with pytest.raises(ValueError, match="factor"):
        speed_up(trace, factor)
    with pytest.raises(ValueError, match="factor"):
        time_stretch(trace, factor)
    with pytest.raises(ValueError, match="factor"):
        load_scale(trace, factor, seed=0)


@pytest.mark.parametrize(("gap_s", "expected"), [
    pytest.param(0.0, [0.0, 2.0, 2.0, 3.0, 3.0, 5.0], id="no-gap"),
    pytest.param(10.0, [0.0, 2.0, 12.0, 13.0, 23.0, 25.0], id="ten-second-gap"),
])
def test_splice_starts_each_part_after_the_previous_one(gap_s: float, expected: list[float]) -> None:
    first, second, third = make_trace([0.0, 2.0]), make_trace([0.0, 1.0]), make_trace([0.0, 2.0])
    spliced = splice([first, second, make_trace([]), third], gap_s=gap_s)
    np.testing.assert_allclose(spliced.arrival_s, expected)
    assert spliced.input_tokens.tolist() == [100, 200, 100, 200, 100, 200]
    assert spliced.hash_ids is not None and len(spliced.hash_ids) == 6


def test_splice_drops_hashes_when_a_part_has_none() -> None:
    spliced = splice([make_trace([0.0]), make_trace([0.0], hashes=False)])
    assert spliced.hash_ids is None


def test_window_keeps_a_half_open_interval_rebased_to_zero() -> None:
    trace = make_trace([0.0, 1.0, 2.0, 3.0, 4.0])
    kept = window(trace, start_s=1.0, end_s=3.0)
    np.testing.assert_allclose(kept.arrival_s, [0.0, 1.0])
    assert kept.input_tokens.tolist() == [200, 300]
    assert kept.hash_ids == ((1,), (2,))
    np.testing.assert_allclose(window(trace, start_s=1.0, end_s=3.0, rebase=False).arrival_s, [1.0, 2.0])


def test_window_moves_the_wall_clock_start_with_the_rebase() -> None:
    trace = parse_trace(AZURE)
    assert trace.start_epoch_s is not None
    assert window(trace, start_s=1.0, end_s=10.0).start_epoch_s == pytest.approx(trace.start_epoch_s + 1.0)


def test_bucket_gives_rates_and_means_with_nan_for_empty_steps() -> None:
    trace = make_trace([0.0, 1.0, 9.5, 25.0])  # inputs 100..400, outputs 10..40
    bucketed = bucket(trace, interval_s=10.0)
    np.testing.assert_allclose(bucketed.start_s, [0.0, 10.0, 20.0])
    np.testing.assert_allclose(bucketed.arrivals_per_s, [0.3, 0.0, 0.1])
    np.testing.assert_allclose(bucketed.mean_input_tokens, [200.0, np.nan, 400.0])
    np.testing.assert_allclose(bucketed.mean_output_tokens, [20.0, np.nan, 40.0])
