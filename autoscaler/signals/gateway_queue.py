"""The gateway's queue as a signal: requests the endpoint picker holds per model, added to every variant's
signals as ``gateway_waiting``.

At zero replicas vLLM exports nothing, so a variant scaled to zero has no signal of its own; the gateway
(Gateway API Inference Extension's endpoint picker, flow control on) still queues the requests it cannot
place, per ``target_model_name``. That count is what brings a variant back from zero
(:mod:`autoscaler.core.decide`, stage ``scale-from-zero``). One query per cycle, whatever the number of
variants (:func:`autoscaler.signals.queries.gateway_queue_query`).

A failed read leaves ``gateway_waiting`` unknown (None), never 0: unknown is not "nobody waits". A model the
gateway does not list has 0 waiting (the gauge is exported per queue, and an empty one may be dropped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from autoscaler.core.types import VariantSignals, VariantSpec
from autoscaler.errors import SignalError
from autoscaler.logs import get_logger
from autoscaler.signals.parse import parse_vector
from autoscaler.signals.queries import GATEWAY_MODEL_LABEL, GATEWAY_QUEUE_METRIC, gateway_queue_query

__all__ = ["GatewayQueueSource"]


class _Source(Protocol):
    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]: ...


class GatewayQueueSource:
    """A SignalSource that adds the gateway's queue to another's signals. ``query``: PromQL -> the result
    list (raises :class:`SignalError` on failure), e.g. :meth:`PrometheusSignalSource.query`. Anything else
    asked of it (``query``, ``history``, ...) is the inner source's."""

    def __init__(self, inner: _Source, *, query: Callable[[str], list[Any]], metric: str = GATEWAY_QUEUE_METRIC,
                 model_label: str = GATEWAY_MODEL_LABEL) -> None:
        self._inner = inner
        self._query = query
        self._model_label = model_label
        self.promql = gateway_queue_query(metric, model_label=model_label)
        self._log = get_logger("signals")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def queued_by_model(self) -> dict[str, float] | None:
        """Requests queued per model name, or None when the gateway's metric could not be read."""
        try:
            result = self._query(self.promql)
        except SignalError as exc:
            self._log.warning("gateway_queue_unavailable", error=str(exc)[:300])
            return None
        label = self._model_label
        return parse_vector(result, key_of=lambda metric: str(metric.get(label, "")), lower=0.0)

    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        signals = self._inner.collect(variants, now=now)
        queued = self.queued_by_model()
        out: dict[VariantSpec, VariantSignals] = {}
        for spec in variants:
            sig = signals.get(spec) or VariantSignals.unknown("no entry")
            waiting = None if queued is None else queued.get(spec.model, 0.0)
            out[spec] = dataclasses.replace(sig, gateway_waiting=waiting)
        return out
