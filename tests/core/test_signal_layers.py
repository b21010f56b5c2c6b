"""The signal package's pure half stays pure, and each module's public surface is what it says."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "autoscaler" / "signals"
PURE = ["queries", "parse", "histogram", "assemble", "warmup", "history"]
IO = {"requests", "urllib3", "http", "socket", "prometheus_api_client", "subprocess", "time",
      "autoscaler.signals.prometheus", "autoscaler.signals.transport"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_signal_modules_import_no_io(module):
    bad = {n for n in imports(ROOT / f"{module}.py") if any(n == f or n.startswith(f + ".") for f in IO)}
    assert not bad, f"autoscaler/signals/{module}.py imports {sorted(bad)}"


@pytest.mark.parametrize("module", [*PURE, "prometheus", "transport"])
def test_every_public_name_exists(module):
    mod = importlib.import_module(f"autoscaler.signals.{module}")
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"autoscaler.signals.{module}.__all__ names what it lacks: {missing}"
