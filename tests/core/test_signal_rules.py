"""Recording rules for the heavy signals, and a collector that reads them when configured."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoscaler.signals.history import HISTORY_SIGNALS, history_queries
from autoscaler.signals.queries import SIGNALS, LabelMap, QueryPlan
from autoscaler.signals.rules import prometheus_rule, recording_rules, rule_file
from tests.core.test_signal_source import SPEC, healthy, make_source

MANIFEST = Path(__file__).parents[2] / "manifests" / "recording-rules" / "prometheus-rule.yaml"
KSERVE = LabelMap(namespace="ns", model="model", role="llm_d_role", accelerator="gpu", pod="kubernetes_pod_name")


@pytest.mark.parametrize("plan", [
    pytest.param(QueryPlan(), id="defaults"),
    pytest.param(QueryPlan(labels=KSERVE, window="2m"), id="other-labels-and-window"),
])
def test_recorded_plan_reads_each_rule_by_name_and_the_rule_holds_the_live_query(plan):
    live = plan.queries()
    recorded = QueryPlan(labels=plan.labels, window=plan.window, recorded=True).queries()
    rules = {r["record"]: r["expr"] for r in recording_rules(plan)}
    for signal in SIGNALS:
        if signal.recordable:
            assert rules[recorded[signal.name]] == live[signal.name], signal.name
            assert recorded[signal.name] == f"variant:{signal.name}:{plan.window}"
        else:  # gauges, pod count and sample age stay raw: cheap and fresher than a rule's evaluation
            assert recorded[signal.name] == live[signal.name], signal.name
    assert set(rules) == {recorded[s.name] for s in SIGNALS if s.recordable}


def test_every_histogram_and_rate_is_recorded():
    recordable = {s.name for s in SIGNALS if s.recordable}
    assert {s.name for s in SIGNALS if s.name.endswith(("_buckets", "_per_s"))} <= recordable


def test_rules_sit_in_one_group_so_that_ratios_share_an_evaluation_instant():
    groups = rule_file(QueryPlan(), interval="15s")["groups"]
    assert len(groups) == 1 and groups[0]["interval"] == "15s" and len(groups[0]["rules"]) == sum(s.recordable for s in SIGNALS)


def test_shipped_prometheus_rule_matches_the_default_settings():
    shipped = yaml.safe_load(MANIFEST.read_text())
    expected = prometheus_rule(QueryPlan(window="1m"), interval="15s")
    assert shipped["metadata"].pop("namespace") == "variant-autoscaler"
    assert shipped == expected, "regenerate manifests/recording-rules/prometheus-rule.yaml (see its header)"


@pytest.mark.parametrize(("recorded", "bucket_timeout"), [
    pytest.param(False, "12s", id="computed-buckets-get-the-heavy-timeout"),
    pytest.param(True, "3s", id="recorded-buckets-are-light"),
])
def test_each_query_is_sent_with_the_timeout_of_its_kind(recorded, bucket_timeout):
    source, fake = make_source(healthy, timeout_s=3.0, heavy_timeout_s=12.0, recorded=recorded)
    source.collect_all([SPEC], now=0.0)
    names = {q: n for n, q in source.queries.items()}
    sent = {names.get(p["query"], p["query"]): p["timeout"] for p in fake.sent}
    assert {t for n, t in sent.items() if n.endswith("_buckets")} == {bucket_timeout}
    assert {t for n, t in sent.items() if not n.endswith("_buckets")} == {"3s"}
    assert (source.queries["ttft_buckets"] == "variant:ttft_buckets:1m") is recorded


@pytest.mark.parametrize(("step", "recorded_read"), [
    pytest.param(15.0, True, id="step-within-the-window-reads-the-rules"),
    pytest.param(120.0, False, id="step-beyond-the-window-widens-raw-queries"),
])
def test_warm_start_reads_recorded_series_when_they_cover_every_point(step, recorded_read):
    queries = history_queries(QueryPlan(window="1m", recorded=True), step=step)
    assert set(queries) == set(HISTORY_SIGNALS)
    assert all(("variant:" in q) is recorded_read for q in queries.values())
    if recorded_read:
        assert queries["completions_per_s"] == "variant:completions_per_s:1m"
        assert queries["prompt_tokens_p90"] == "histogram_quantile(0.9, variant:prompt_len_buckets:1m)"
