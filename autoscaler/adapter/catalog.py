"""The external metrics the adapter serves, and how each is read from one variant's cycle outcome.

Every metric is per variant; an HPA picks its variant with a label selector over :data:`LABELS`. The one
meant for scaling is ``variant_desired_replicas``: with ``target.type: AverageValue`` and ``averageValue: 1``
the HPA computes ``ceil(sum(values) / 1)`` replicas, exactly the controller's decision
(replica_calculator.go ``GetExternalPerPodMetricReplicas``).

WVA's output metrics are served too, under WVA's names, and every item also carries WVA's labels
(``variant_name``, ``accelerator_type``; the namespace is the request's), so the HPA llm-d documents and
KServe generates (``wva_desired_replicas``, ``selector.matchLabels.variant_name``, ``AverageValue: 1``;
llm-d/llm-d-workload-variant-autoscaler config/samples/hpa-integration.yaml) is served unchanged.

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from autoscaler.core.plan import ModelOutlook
from autoscaler.core.types import Decision, Freshness, Role, VariantSignals, VariantSpec

__all__ = [
    "DESIRED_REPLICAS",
    "LABELS",
    "METRICS",
    "METRICS_BY_NAME",
    "ExternalMetric",
    "MetricSource",
    "label_value",
    "metric_values",
    "variant_labels",
]

LABELS = ("variant", "model", "role", "accelerator", "variant_name", "accelerator_type")
"""Labels on every item, usable in an HPA's ``metric.selector``."""

_LABEL_VALUE_MAX = 63
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def label_value(text: str) -> str:
    """``text`` as a valid label value (the API server rejects an HPA selector with any other): characters
    outside ``[A-Za-z0-9._-]`` become ``_`` (``meta-llama/Llama-3.1-8B`` -> ``meta-llama_Llama-3.1-8B``),
    at most 63 characters, alphanumeric at both ends."""
    return _EDGE.sub("", _NOT_LABEL_CHAR.sub("_", text)[:_LABEL_VALUE_MAX])


def variant_labels(spec: VariantSpec) -> dict[str, str]:
    return {
        "variant": spec.ref.name,
        "model": label_value(spec.model),
        "role": spec.role.value,
        "accelerator": label_value(spec.accelerator),
        "variant_name": spec.ref.name,  # WVA's label names (internal/constants/metrics.go)
        "accelerator_type": label_value(spec.accelerator),
    }


@dataclass(frozen=True, slots=True)
class MetricSource:
    """What a metric is read from: one variant's decision and signals, and its model's outlook this cycle."""

    decision: Decision
    signals: VariantSignals | None
    role: Role
    outlook: ModelOutlook | None = None


Extractor = Callable[[MetricSource], float | None]


@dataclass(frozen=True, slots=True)
class ExternalMetric:
    name: str
    description: str
    extract: Extractor


def _fresh(read: Callable[[VariantSignals], float | None]) -> Extractor:
    """An observed load is only served from fresh signals: a stale reading is not today's load."""

    def extract(src: MetricSource) -> float | None:
        if src.signals is None or src.signals.freshness is not Freshness.FRESH:
            return None
        return read(src.signals)

    return extract


def _admission_ratio(src: MetricSource) -> float | None:
    """The model's admission ratio, served only when early rejection or the cost bounds computed one: without
    a prediction the metric answers "unavailable", never a default of 1."""
    return None if src.outlook is None else src.outlook.computed_admission_ratio


def _predicted_load(src: MetricSource) -> float | None:
    """Prefill: predicted TTFT over its SLO; decode: predicted step time over the ITL SLO when a request
    admitted now reaches decode (Mooncake's prediction-based early rejection)."""
    if src.outlook is None or src.outlook.admission is None:
        return None
    admission = src.outlook.admission
    return admission.prefill_load if src.role is Role.PREFILL else admission.decode_load_at_horizon


def _rejection_threshold(src: MetricSource) -> float | None:
    """The predicted load above which a gateway rejects: compare ``variant_predicted_load`` against it."""
    if src.outlook is None or src.outlook.admission is None:
        return None
    return src.outlook.admission.reject_threshold


DESIRED_REPLICAS = ExternalMetric(
    "variant_desired_replicas",
    "Replicas the controller decided for the variant (HPA: External, AverageValue 1).",
    lambda src: float(src.decision.desired),
)

METRICS: tuple[ExternalMetric, ...] = (
    DESIRED_REPLICAS,
    ExternalMetric("variant_current_replicas", "Replicas of the scale target when the decision was made.",
                   lambda src: float(src.decision.current)),
    ExternalMetric("variant_completion_rate", "Requests completed per second over the variant's pods "
                   "(vllm:request_success_total, aborts and errors excluded): not the arrival rate.",
                   _fresh(lambda s: s.completions_per_s)),
    ExternalMetric("variant_prompt_token_rate", "Observed prompt tokens per second.",
                   _fresh(lambda s: s.prompt_tokens_per_s)),
    ExternalMetric("variant_generation_token_rate", "Observed generated tokens per second.",
                   _fresh(lambda s: s.generation_tokens_per_s)),
    ExternalMetric("variant_admission_ratio", "Share of new requests to admit (0-1), from admission control.",
                   _admission_ratio),
    ExternalMetric("variant_predicted_load", "Predicted load of the variant's role at the admission horizon "
                   "(predicted TTFT or ITL over its SLO; 1 = at the SLO).", _predicted_load),
    ExternalMetric("variant_rejection_threshold", "Predicted load above which new requests are rejected "
                   "(early rejection; compare variant_predicted_load).", _rejection_threshold),
    ExternalMetric("variant_model_demand", "Requests per second the model's variants are sized for (forecast "
                   "upper quantile over the provisioning lead time plus the waiting backlog).",
                   lambda src: None if src.outlook is None else src.outlook.demand_rps),
)

WVA_METRICS: tuple[ExternalMetric, ...] = (
    ExternalMetric("wva_desired_replicas", "WVA's name for variant_desired_replicas (llm-d's and KServe's HPAs).",
                   DESIRED_REPLICAS.extract),
    ExternalMetric("wva_current_replicas", "WVA's name for variant_current_replicas.",
                   lambda src: float(src.decision.current)),
    ExternalMetric("wva_desired_ratio", "Desired over current replicas (the desired count when current is 0), "
                   "as WVA publishes it.",
                   lambda src: src.decision.desired / src.decision.current if src.decision.current
                   else float(src.decision.desired)),
)
METRICS = METRICS + WVA_METRICS

METRICS_BY_NAME = {m.name: m for m in METRICS}


def metric_values(source: MetricSource) -> dict[str, float]:
    """Every metric this outcome has a finite value for."""
    values: dict[str, float] = {}
    for metric in METRICS:
        value = metric.extract(source)
        if value is not None and math.isfinite(value):
            values[metric.name] = value
    return values
