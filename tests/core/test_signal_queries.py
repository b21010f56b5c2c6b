import re

import pytest

from autoscaler.signals.queries import (
    POD_AGES,
    LabelMap,
    MetricNames,
    QueryPlan,
    build_queries,
    quantile_name,
    quantile_query,
)

AUTO_KV = ("(avg_over_time(vllm:kv_cache_usage_perc[1m]) or vllm:kv_cache_usage_perc) or "
           "(avg_over_time(vllm:gpu_cache_usage_perc[1m]) or vllm:gpu_cache_usage_perc) or "
           "(avg_over_time(vllm_kv_cache_usage_perc[1m]) or vllm_kv_cache_usage_perc) or "
           "(avg_over_time(vllm_gpu_cache_usage_perc[1m]) or vllm_gpu_cache_usage_perc)")
KSERVE = LabelMap(namespace="ns", model="model", role="llm_d_role", accelerator="gpu", pod="kubernetes_pod_name")


def test_builds_one_query_per_signal_whatever_the_fleet_size_and_the_quantiles_asked():
    few, many = QueryPlan(latency_quantiles=(0.9,)), QueryPlan(latency_quantiles=(0.5, 0.9, 0.95, 0.99))
    assert few.queries() == many.queries()  # quantiles come from the bucket rates: no query each
    assert set(few.queries()) == {s.name for s in few.signals} | {POD_AGES}


def test_groups_by_the_mapped_labels():
    queries = build_queries(KSERVE, "2m")
    assert queries["waiting"].startswith("sum by (ns, model, llm_d_role, gpu) (")
    assert "max by (ns, model, llm_d_role, gpu, kubernetes_pod_name, instance, engine)" in queries["waiting"]
    assert queries["ttft_buckets"].startswith("sum by (ns, model, llm_d_role, gpu, le) (")
    assert "[2m]" in queries["ttft_buckets"]


def test_server_side_quantiles_for_history_wrap_the_bucket_query():
    query = quantile_query("ttft", 0.9)(QueryPlan(), LabelMap().variant_labels)
    assert query.startswith("histogram_quantile(0.9, sum by (namespace, model_name, role, accelerator, le) (")


@pytest.mark.parametrize(
    ("names", "present", "absent"),
    [
        pytest.param(MetricNames.V1, ["vllm:kv_cache_usage_perc"], ["vllm:gpu_cache_usage_perc"], id="v1"),
        pytest.param(MetricNames.LEGACY, ["vllm:gpu_cache_usage_perc"], ["vllm:kv_cache_usage_perc"], id="legacy"),
        pytest.param(MetricNames.AUTO, [AUTO_KV], [], id="auto"),
    ],
)
def test_metric_name_switch_picks_kv_cache_names(names, present, absent):
    query = build_queries(LabelMap(), "1m", names=names)["kv_engines"]
    assert all(p in query for p in present) and not any(a in query for a in absent)


@pytest.mark.parametrize(
    ("signal", "v1", "legacy"),
    [
        pytest.param("itl_buckets", "vllm:inter_token_latency_seconds_bucket",
                     "vllm:time_per_output_token_seconds_bucket", id="itl"),
        pytest.param("prefix_hits_per_s", "vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total",
                     id="prefix-hits"),
        pytest.param("prefix_queries_per_s", "vllm:prefix_cache_queries_total",
                     "vllm:gpu_prefix_cache_queries_total", id="prefix-queries"),
    ],
)
def test_auto_reads_both_names_of_renamed_metrics_with_or(signal, v1, legacy):
    query = build_queries(LabelMap(), "1m")[signal]
    assert re.search(rf"rate\({re.escape(v1)}\[1m\]\) or rate\({re.escape(legacy)}\[1m\]\)", query)


def test_metrics_without_a_legacy_name_are_the_same_in_v1_and_legacy_mode():
    queries = {m: build_queries(LabelMap(), "1m", names=m)["waiting"] for m in (MetricNames.V1, MetricNames.LEGACY)}
    assert len(set(queries.values())) == 1 and "vllm_" not in queries[MetricNames.V1]


@pytest.mark.parametrize("signal", ["pods", "waiting", "running", "kv_usage_sum", "sample_age_s", "ttft_buckets",
                                    "prompt_tokens_per_s", "itl_sum_per_s", "prefill_time_count_per_s",
                                    POD_AGES])
def test_auto_also_reads_the_underscore_names_an_openmetrics_exposition_writes(signal):
    """prometheus/client_python#1177: OpenMetrics without escaping turns ``vllm:x`` into ``vllm_x``."""
    query = build_queries(LabelMap(), "1m")[signal]
    colon = set(re.findall(r"vllm:(\w+)", query))
    assert colon and colon == set(re.findall(r"vllm_(\w+)", query))


def test_non_finite_samples_are_dropped_before_aggregation():
    assert "> -Inf < +Inf" in build_queries(LabelMap(), "1m")["running"]


def test_request_rate_keeps_finish_reasons_apart_while_deduplicating():
    assert "engine, finished_reason)" in build_queries(LabelMap(), "1m")["completions_per_s"]


def test_a_label_mapped_twice_appears_once_in_a_by_clause():
    queries = build_queries(LabelMap(pod="instance"), "1m")
    assert "instance, instance" not in queries["pods"] and "instance, instance" not in queries[POD_AGES]


@pytest.mark.parametrize(("q", "name"), [(0.5, "ttft_p50_s"), (0.9, "ttft_p90_s"), (0.995, "ttft_p99.5_s")])
def test_quantile_signal_names(q, name):
    assert quantile_name("ttft", q) == name


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_refuses_quantiles_outside_zero_one(bad):
    with pytest.raises(ValueError, match="latency_quantiles"):
        QueryPlan(latency_quantiles=(0.9, bad))


def test_the_queue_reads_waiting_for_capacity_and_falls_back_to_the_total_per_replica():
    query = build_queries(LabelMap(), "1m", names=MetricNames.V1)["waiting"]
    capacity, total = query.split(") or max by", 1)
    assert 'vllm:num_requests_waiting_by_reason{reason="capacity"}' in capacity
    assert "vllm:num_requests_waiting[" in total and "by_reason" not in total


@pytest.mark.parametrize(("signal", "over"), [("waiting", "avg_over_time"), ("running", "avg_over_time"),
                                              ("kv_usage_sum", "avg_over_time"), ("kv_usage_max", "max_over_time")])
def test_swinging_gauges_are_read_over_the_cycle(signal, over):
    query = QueryPlan(window="1m", cycle="15s", names=MetricNames.V1).queries()[signal]
    assert f"{over}(" in query and "[15s]" in query and "[1m]" not in query


def test_the_request_rate_leaves_out_aborted_and_failed_requests():
    assert 'finished_reason!~"abort|error"' in build_queries(LabelMap(), "1m")["completions_per_s"]
