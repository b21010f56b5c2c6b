"""The README's "Metrics it reads" table lists exactly the metrics the queries read: no more, no fewer."""

import re
from pathlib import Path

from autoscaler.signals.queries import METRICS, MetricNames, QueryPlan

README = Path(__file__).resolve().parents[2] / "README.md"
_NAME = re.compile(r"\b(?:vllm:[a-z0-9_]+|process_start_time_seconds)\b")
_SERIES_SUFFIX = re.compile(r"_(bucket|sum|count)$")  # a histogram's series, read under its family's name


def table_rows() -> list[str]:
    section = README.read_text().split("## Metrics it reads", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def names_in_table() -> set[str]:
    return {name for row in table_rows() for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def names_read() -> set[str]:
    """Every metric family any query reads, in the v1 and the legacy spellings (``auto`` adds only the
    underscore spelling of the same names)."""
    read: set[str] = set()
    for names in (MetricNames.V1, MetricNames.LEGACY):
        for query in QueryPlan(names=names).queries().values():
            read |= {_SERIES_SUFFIX.sub("", n) for n in _NAME.findall(query)}
    return read


def test_the_readme_metrics_table_lists_exactly_the_metrics_the_queries_read():
    in_table, read = names_in_table(), names_read()
    assert not read - in_table, f"read but not in the README table: {sorted(read - in_table)}"
    assert not in_table - read, f"in the README table but read by no query: {sorted(in_table - read)}"


def test_the_legacy_row_names_exactly_the_legacy_names_accepted():
    legacy = next(row for row in table_rows() if "| legacy |" in row)
    assert set(re.findall(r"`([^`]+)`", legacy.split("|")[1])) == {m.legacy for m in METRICS.values() if m.legacy}


def test_the_table_check_sees_a_metric_missing_from_the_table(monkeypatch):
    """The check can fail: a query reading a metric the table lacks is caught."""
    extra = QueryPlan.queries

    def with_unlisted(self):
        return extra(self) | {"unlisted": "sum(vllm:e2e_request_latency_seconds_bucket)"}

    monkeypatch.setattr(QueryPlan, "queries", with_unlisted)
    assert "vllm:e2e_request_latency_seconds" in names_read() - names_in_table()
