"""The vLLM v1 metric names, types, labels and histogram buckets the emulator serves.

Pinned to what a real vLLM exports by tests/core/test_emulator_matches_vllm.py, against the fixture
scripts/capture-vllm-metrics.py captures from the engine (tests/fixtures/vllm-metrics.json, vLLM 0.32).

Facts taken from vLLM's ``vllm/v1/metrics/loggers.py`` (class ``PrometheusStatLogger``, vllm-project/vllm on
GitHub, 0.10/0.11 era): every metric carries the labels ``model_name`` and ``engine`` (the engine-core index,
"0" for a single engine); ``vllm:request_success`` adds ``finished_reason``; ``vllm:cache_config_info`` is an
info-style gauge fixed at 1 whose labels are the cache config's fields plus ``engine``. Counters are declared
without the ``_total`` suffix, which the client library appends. ``vllm:gpu_cache_usage_perc`` (renamed in
0.9) and ``vllm:time_per_output_token_seconds`` (renamed in 0.11) are the deprecated names still in the field.
"""

from __future__ import annotations

__all__ = [
    "CACHE_CONFIG_INFO",
    "E2E_REQUEST_LATENCY",
    "ENGINE_INDEX",
    "FINISHED_REASONS",
    "GENERATION_TOKENS",
    "GPU_CACHE_USAGE_PERC",
    "INTER_TOKEN_LATENCY",
    "ITL_BUCKETS",
    "KV_CACHE_USAGE_PERC",
    "LABELS",
    "NUM_PREEMPTIONS",
    "NUM_REQUESTS_RUNNING",
    "NUM_REQUESTS_WAITING",
    "NUM_REQUESTS_WAITING_BY_REASON",
    "PREFIX_CACHE_HITS",
    "PREFIX_CACHE_QUERIES",
    "PROMPT_SOURCES",
    "PROMPT_TOKENS",
    "PROMPT_TOKENS_BY_SOURCE",
    "REQUEST_GENERATION_TOKENS",
    "REQUEST_LATENCY_BUCKETS",
    "REQUEST_PREFILL_TIME",
    "REQUEST_PROMPT_TOKENS",
    "REQUEST_QUEUE_TIME",
    "REQUEST_SUCCESS",
    "TIME_PER_OUTPUT_TOKEN",
    "TIME_TO_FIRST_TOKEN",
    "TTFT_BUCKETS",
    "WAITING_REASONS",
    "token_buckets",
]

LABELS = ("model_name", "engine")
ENGINE_INDEX = "0"
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")  # vLLM creates a series for each up front
WAITING_REASONS = ("capacity", "deferred")  # vllm:num_requests_waiting_by_reason{reason}
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")  # vllm:prompt_tokens_by_source

# Gauges
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
NUM_REQUESTS_WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"
KV_CACHE_USAGE_PERC = "vllm:kv_cache_usage_perc"  # 0..1 despite the name
GPU_CACHE_USAGE_PERC = "vllm:gpu_cache_usage_perc"  # legacy name of the above
CACHE_CONFIG_INFO = "vllm:cache_config_info"

# Counters (served with the _total suffix)
PROMPT_TOKENS = "vllm:prompt_tokens"
PROMPT_TOKENS_BY_SOURCE = "vllm:prompt_tokens_by_source"
GENERATION_TOKENS = "vllm:generation_tokens"
REQUEST_SUCCESS = "vllm:request_success"
NUM_PREEMPTIONS = "vllm:num_preemptions"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"

# Histograms
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
TIME_PER_OUTPUT_TOKEN = "vllm:time_per_output_token_seconds"  # legacy name of the above, same observations
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
# Per finished request, with REQUEST_LATENCY_BUCKETS (vLLM docs design/v1/metrics.md, "Request-level metrics"):
# queued to first scheduled, and first scheduled to first token.
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
REQUEST_PREFILL_TIME = "vllm:request_prefill_time_seconds"

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)


def token_buckets(max_model_len: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to ``max_model_len`` (1, 2, 5, 10, 20, 50, ...), for the token-count histograms."""
    if max_model_len < 1:
        raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
    out: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > max_model_len:
                return tuple(out)
            out.append(float(value))
        scale *= 10
