"""The external metrics the adapter serves, and how each is read from one variant's cycle outcome.

Every metric is per variant; an HPA picks its variant with a label selector over :data:`LABELS`. The one
meant for scaling is ``variant_desired_replicas``: with ``target.type: AverageValue`` and ``averageValue: 1``
the HPA computes ``ceil(sum(values) / 1)`` replicas, exactly the controller's decision
(replica_calculator.go ``GetExternalPerPodMetricReplicas``).

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from autoscaler.core.types import Decision, Freshness, VariantSignals, VariantSpec

__all__ = [
    "DESIRED_REPLICAS",
    "LABELS",
    "METRICS",
    "METRICS_BY_NAME",
    "ExternalMetric",
    "label_value",
    "metric_values",
    "variant_labels",
]

LABELS = ("variant", "model", "role", "accelerator")
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
    }


Extractor = Callable[[Decision, VariantSignals | None], float | None]


@dataclass(frozen=True, slots=True)
class ExternalMetric:
    name: str
    description: str
    extract: Extractor


def _fresh(read: Callable[[VariantSignals], float | None]) -> Extractor:
    """An observed load is only served from fresh signals: a stale reading is not today's load."""

    def extract(_decision: Decision, signals: VariantSignals | None) -> float | None:
        if signals is None or signals.freshness is not Freshness.FRESH:
            return None
        return read(signals)

    return extract


def _decision_attribute(name: str) -> Extractor:
    """A value the decision carries only when its policy computes it (forecasts and admission control come
    with the forecasting work); absent, the metric answers "unavailable", never a default."""

    def extract(decision: Decision, _signals: VariantSignals | None) -> float | None:
        value = getattr(decision, name, None)
        return float(value) if isinstance(value, int | float) else None

    return extract


DESIRED_REPLICAS = ExternalMetric(
    "variant_desired_replicas",
    "Replicas the controller decided for the variant (HPA: External, AverageValue 1).",
    lambda decision, _signals: float(decision.desired),
)

METRICS: tuple[ExternalMetric, ...] = (
    DESIRED_REPLICAS,
    ExternalMetric("variant_current_replicas", "Replicas of the scale target when the decision was made.",
                   lambda decision, _signals: float(decision.current)),
    ExternalMetric("variant_request_rate", "Observed requests per second over the variant's pods.",
                   _fresh(lambda s: s.requests_per_s)),
    ExternalMetric("variant_prompt_token_rate", "Observed prompt tokens per second.",
                   _fresh(lambda s: s.prompt_tokens_per_s)),
    ExternalMetric("variant_generation_token_rate", "Observed generated tokens per second.",
                   _fresh(lambda s: s.generation_tokens_per_s)),
    ExternalMetric("variant_admission_ratio", "Share of new requests to admit (0-1), from admission control.",
                   _decision_attribute("admission_ratio")),
    ExternalMetric("variant_predicted_load", "Predicted load of the variant's role at the admission horizon "
                   "(predicted TTFT or ITL over its SLO; 1 = at the SLO).", _decision_attribute("predicted_load")),
)

METRICS_BY_NAME = {m.name: m for m in METRICS}


def metric_values(decision: Decision, signals: VariantSignals | None) -> dict[str, float]:
    """Every metric this outcome has a finite value for."""
    values: dict[str, float] = {}
    for metric in METRICS:
        value = metric.extract(decision, signals)
        if value is not None and math.isfinite(value):
            values[metric.name] = value
    return values
