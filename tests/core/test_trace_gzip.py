"""Gzip-compressed traces: recognised from the magic bytes (not the name), read as the plain file, a truncated or
corrupt one refused in one line; the shipped two-day ServeGen trace read whole."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.errors import ConfigError
from autoscaler.traces import read_trace

SHIPPED = Path(traces.__file__).parent / "data" / "traces"
AZURE = SHIPPED / "azure_llm_2023_conv.csv"
MOONCAKE = SHIPPED / "mooncake_synthetic_trace.jsonl"


@pytest.mark.parametrize(("plain", "name"), [
    pytest.param(AZURE, "trace.csv.gz", id="azure-gz"),
    pytest.param(AZURE, "trace.csv", id="azure-gzip-named-csv"),
    pytest.param(MOONCAKE, "trace.jsonl.gz", id="mooncake-gz"),
])
def test_a_gzip_compressed_trace_reads_as_the_plain_file(tmp_path: Path, plain: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(plain.read_bytes()))
    packed, unpacked = read_trace(path), read_trace(plain)
    assert len(packed) == len(unpacked) > 0
    np.testing.assert_array_equal(packed.arrival_s, unpacked.arrival_s)
    np.testing.assert_array_equal(packed.input_tokens, unpacked.input_tokens)
    np.testing.assert_array_equal(packed.output_tokens, unpacked.output_tokens)
    assert packed.format == unpacked.format


@pytest.mark.parametrize("cut", [pytest.param(0.5, id="half"), pytest.param(0.999, id="last-bytes-missing")])
def test_a_truncated_gzip_trace_is_a_one_line_config_error_naming_the_file(tmp_path: Path, cut: float) -> None:
    data = gzip.compress(AZURE.read_bytes())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ConfigError, match="truncated or corrupt gzip") as caught:
        read_trace(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_gzip_file_of_binary_content_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 4))
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_trace(path)


def test_the_shipped_servegen_trace_holds_two_days_of_requests() -> None:
    trace = read_trace(SHIPPED / "servegen_m-mid_2d.csv.gz")
    assert len(trace) == 444_347
    assert trace.duration_s == pytest.approx(48 * 3600, abs=60)
    assert trace.format == traces.AZURE
    assert 400 < trace.input_tokens.mean() < 600  # input mean 492 (the README's figure)
