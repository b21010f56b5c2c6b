"""The Prometheus adapter: runs the batched queries and hands the results to the pure assembler."""

from __future__ import annotations

from collections.abc import Sequence

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

from autoscaler.core.types import VariantSignals, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.signals.assemble import QueryOutcome, assemble
from autoscaler.signals.queries import LabelMap, build_queries

__all__ = ["PrometheusSignalSource"]


class PrometheusSignalSource:
    def __init__(
        self, *, url: str, labels: LabelMap, rate_window: str = "1m", timeout_s: float = 5.0,
        staleness_s: float = 60.0,
    ) -> None:
        self._client = PrometheusConnect(url=url, disable_ssl=False, timeout=timeout_s)
        self._labels = labels
        self._queries = build_queries(labels, rate_window)
        self._staleness_s = staleness_s
        self.url = url

    @property
    def queries(self) -> dict[str, str]:
        return dict(self._queries)

    def query(self, promql: str) -> list[dict[str, object]]:
        try:
            result = self._client.custom_query(promql)
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise SignalError(f"Prometheus query failed ({self.url}): {str(exc)[:300]}") from exc
        if not isinstance(result, list):
            raise SignalError(f"Prometheus answered a {type(result).__name__}, expected a vector")
        return result

    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        outcomes: dict[str, QueryOutcome] = {}
        for name, promql in self._queries.items():
            try:
                outcomes[name] = self.query(promql)
            except SignalError as exc:
                outcomes[name] = exc
        return assemble(variants=variants, outcomes=outcomes, labels=self._labels, now=now,
                        staleness_s=self._staleness_s)
