"""Render cycle reports for people (rich table) and machines (JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from autoscaler.controller.loop import Controller, CycleReport

__all__ = ["effective_settings", "print_settings", "print_table", "report_rows", "to_json"]

Explained = dict[str, list[dict[str, Any]]]  # variant -> [{"setting", "value", "source"}, ...]


def effective_settings(controller: Controller, report: CycleReport) -> Explained:
    """Per variant of the report: every effective setting, its value and its source (``recommend --explain``)."""
    from autoscaler.core.plan import resolve_profile
    from autoscaler.scaling_settings import explain_variant

    policy = controller.current_policy()
    out: Explained = {}
    for o in report.outcomes:
        rows = explain_variant(o.spec, policy, default_slo=controller.planner.default_slo,
                               profile=resolve_profile(o.spec, controller.profiles, policy))
        out[str(o.spec.ref)] = [{"setting": r.path, "value": r.value, "source": r.source} for r in rows]
    return out


def print_settings(explained: Explained, console: Console | None = None) -> None:
    console = console or Console()
    for variant, rows in explained.items():
        table = Table(title=f"Effective settings of {variant}")
        for col in ("setting", "value", "source"):
            table.add_column(col)
        for r in rows:
            value = r["value"]
            table.add_row(r["setting"], f"{value:g}" if isinstance(value, float) else str(value), r["source"])
        console.print(table)


def report_rows(report: CycleReport) -> list[dict[str, Any]]:
    rows = []
    for o in report.outcomes:
        d, s = o.decision, o.signals
        rows.append({
            "variant": str(o.spec.ref),
            "model": o.spec.model,
            "role": o.spec.role.value,
            "accelerator": o.spec.accelerator,
            "current": d.current if d else None,
            "desired": d.desired if d else None,
            "reason": d.reason.value if d else "Error",
            "message": d.message if d else o.error,
            "freshness": s.freshness.value if s else None,
            "waiting": s.waiting if s else None,
            "kv_usage": s.kv_usage_mean if s else None,
            "applied": o.applied,
        })
    return rows


def print_table(report: CycleReport, console: Console | None = None, *, title: str = "Recommendations") -> None:
    console = console or Console()
    table = Table(title=title)
    for col in ("variant", "role", "current", "desired", "reason", "signals"):
        table.add_column(col)
    for r in report_rows(report):
        sig = "-" if r["waiting"] is None else f"waiting={r['waiting']:.0f} kv={r['kv_usage'] or 0:.2f}"
        table.add_row(r["variant"], r["role"], str(r["current"]), str(r["desired"]), r["reason"],
                      f"{r['freshness']}: {sig}")
    console.print(table)
    for err in report.errors:
        console.print(f"[red]error:[/red] {err}")


def to_json(report: CycleReport, *, settings: Explained | None = None) -> str:
    """``settings``: the effective settings per variant (``--explain``), under each variant's ``settings``."""
    rows = report_rows(report)
    if settings is not None:
        for row in rows:
            row["settings"] = settings.get(row["variant"], [])
    return json.dumps({"cycle": report.cycle, "duration_s": round(report.duration_s, 4),
                       "variants": rows, "errors": list(report.errors)}, indent=2)
