"""Prometheus history as the planner's warm start is given it (:class:`autoscaler.signals.history.HistorySeries`),
built from the columns the tests care about; the p90 columns unknown."""

from __future__ import annotations

from collections.abc import Sequence

from autoscaler.signals.history import HistorySeries


def history_series(timestamps: Sequence[float], completions_per_s: Sequence[float | None],
                   prompt_tokens_mean: Sequence[float | None],
                   generation_tokens_mean: Sequence[float | None]) -> HistorySeries:
    unknown = (None,) * len(timestamps)
    return HistorySeries(tuple(timestamps), tuple(completions_per_s), tuple(prompt_tokens_mean), unknown,
                         tuple(generation_tokens_mean), unknown)
