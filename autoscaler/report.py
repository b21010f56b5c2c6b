"""Render cycle reports for people (rich table) and machines (JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from autoscaler.controller.loop import CycleReport

__all__ = ["print_table", "report_rows", "to_json"]


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


def to_json(report: CycleReport) -> str:
    return json.dumps({"cycle": report.cycle, "duration_s": round(report.duration_s, 4),
                       "variants": report_rows(report), "errors": list(report.errors)}, indent=2)
