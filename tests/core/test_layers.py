"""The functional core stays pure: it may not import I/O libraries (kopf enforces this with import-linter)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "autoscaler"
PURE = ["core", "perf"]
FORBIDDEN = {"kubernetes", "prometheus_api_client", "prometheus_client", "requests", "urllib3", "http",
             "socket", "subprocess", "apscheduler", "structlog", "autoscaler.kube", "autoscaler.signals",
             "autoscaler.controller", "autoscaler.emulator", "autoscaler.localstack", "time"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", [p for pkg in PURE for p in sorted((ROOT / pkg).rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_core_imports_no_io(path):
    bad = {n for n in imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
