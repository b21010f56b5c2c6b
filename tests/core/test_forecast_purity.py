"""The forecaster is pure: none of its modules touches files, the network or the clock."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest

from autoscaler import forecast

PACKAGE = Path(forecast.__file__).parent
IO_MODULES = {"os", "io", "pathlib", "tempfile", "shutil", "json", "pickle", "joblib", "time", "datetime",
              "socket", "http", "requests", "subprocess", "kubernetes", "prometheus_api_client",
              "prometheus_client", "structlog"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")),
                         ids=lambda p: p.name)
def test_forecast_modules_do_no_io(path: Path) -> None:
    bad = {n for n in imported(path) if any(n == m or n.startswith(m + ".") for m in IO_MODULES)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_public_surface_is_what_all_lists() -> None:
    public = {name for name, value in vars(forecast).items()
              if not name.startswith("_") and not isinstance(value, ModuleType)}
    assert set(forecast.__all__) == public
