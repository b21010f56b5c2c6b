"""PromQL for every signal, batched: one query per signal for all variants, grouped by the mapped labels.

The cost of a collection is O(signals), never O(variants) or O(pods).
vLLM v1 metric names: vllm/v1/metrics/loggers.py (labels ``model_name``, ``engine``).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.core.types import VariantSpec

__all__ = ["LabelMap", "Signal", "SIGNALS", "REQUIRED", "build_queries", "variant_key", "SeriesKey"]

SeriesKey = tuple[str, str, str, str]  # namespace, model, role, accelerator


@dataclass(frozen=True, slots=True)
class LabelMap:
    namespace: str = "namespace"
    model: str = "model_name"
    role: str = "role"
    accelerator: str = "accelerator"

    @property
    def group(self) -> str:
        return ", ".join((self.namespace, self.model, self.role, self.accelerator))

    def key_of(self, labels: dict[str, str]) -> SeriesKey:
        return (
            labels.get(self.namespace, ""),
            labels.get(self.model, ""),
            labels.get(self.role, ""),
            labels.get(self.accelerator, ""),
        )


def variant_key(spec: VariantSpec) -> SeriesKey:
    return (spec.ref.namespace, spec.model, spec.role.value, spec.accelerator)


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    template: str  # {g} = grouping labels, {w} = rate window


SIGNALS: tuple[Signal, ...] = (
    Signal("pods", "count by ({g}) (vllm:num_requests_running)"),
    Signal("waiting", "sum by ({g}) (vllm:num_requests_waiting)"),
    Signal("running", "sum by ({g}) (vllm:num_requests_running)"),
    Signal("kv_usage_mean", "avg by ({g}) (vllm:kv_cache_usage_perc)"),
    Signal("kv_usage_max", "max by ({g}) (vllm:kv_cache_usage_perc)"),
    Signal("prompt_tokens_per_s", "sum by ({g}) (rate(vllm:prompt_tokens_total[{w}]))"),
    Signal("generation_tokens_per_s", "sum by ({g}) (rate(vllm:generation_tokens_total[{w}]))"),
    Signal("requests_per_s", "sum by ({g}) (rate(vllm:request_success_total[{w}]))"),
    Signal(
        "ttft_p90_s",
        "histogram_quantile(0.9, sum by ({g}, le) (rate(vllm:time_to_first_token_seconds_bucket[{w}])))",
    ),
    Signal(
        "itl_p90_s",
        "histogram_quantile(0.9, sum by ({g}, le) (rate(vllm:inter_token_latency_seconds_bucket[{w}])))",
    ),
    # Age of the newest scrape, to tell fresh from stale.
    Signal("newest_sample", "max by ({g}) (timestamp(vllm:num_requests_waiting))"),
)

# Without these a variant is not decided on (held where it is).
REQUIRED: frozenset[str] = frozenset({"waiting", "kv_usage_mean", "newest_sample"})


def build_queries(labels: LabelMap, window: str) -> dict[str, str]:
    return {s.name: s.template.format(g=labels.group, w=window) for s in SIGNALS}
