"""Prometheus recording rules for the heavy signals (pure): evaluated by Prometheus, read back as one series each.

At a thousand variants the histogram queries rate every bucket series of every pod at query time (about 60,000
series each for 3,000 pods) and can outlast a cycle's timeout. A recording rule does the same work once per
evaluation interval, spread out, and the collector then reads ``variant:<signal>:<window>``: one series per
variant (per bucket for histograms), as cheap as a gauge. See ``benchmarks/bench_collection.py --recorded``.

The rules must be generated from the same label mapping and rate window as the controller's collector, since
the recorded series are grouped by them; :func:`rule_file` gives the Prometheus rule file,
:func:`prometheus_rule` the prometheus-operator ``PrometheusRule`` object
(``manifests/recording-rules/prometheus-rule.yaml`` is the latter for the default settings).

All rules sit in one group: Prometheus evaluates a group's rules at one timestamp, so ratios of two recorded
rates (mean tokens, mean ITL) see the same window, as the collector's single evaluation instant ensures for
queries.
"""

from __future__ import annotations

from typing import Any

from autoscaler.signals.queries import QueryPlan, recorded_name

__all__ = ["GROUP_NAME", "prometheus_rule", "recording_rules", "rule_file"]

GROUP_NAME = "variant-autoscaler.signals"


def recording_rules(plan: QueryPlan) -> list[dict[str, str]]:
    """``[{record, expr}, ...]``: one rule per recordable signal, the expression the collector would send."""
    raw = QueryPlan(labels=plan.labels, window=plan.window, names=plan.names, recorded=False)
    return [{"record": recorded_name(s, raw), "expr": s.build(raw, raw.labels.variant_labels)}
            for s in raw.signals if s.recordable]


def rule_file(plan: QueryPlan, *, interval: str | None = None) -> dict[str, Any]:
    """A Prometheus rule file (``rule_files:``); ``interval`` overrides the global evaluation interval."""
    group: dict[str, Any] = {"name": GROUP_NAME, "rules": recording_rules(plan)}
    if interval is not None:
        group["interval"] = interval
    return {"groups": [group]}


def prometheus_rule(plan: QueryPlan, *, name: str = "variant-autoscaler-signals",
                    interval: str | None = None) -> dict[str, Any]:
    """The same rules as a prometheus-operator ``PrometheusRule`` (monitoring.coreos.com/v1)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "variant-autoscaler"}},
        "spec": rule_file(plan, interval=interval),
    }
