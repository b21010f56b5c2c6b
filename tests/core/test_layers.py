"""The layers hold: the functional core stays pure (no I/O libraries), and every package imports only the packages
of the project its place allows, as its ``__init__`` docstring says (``May import: ...``)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "autoscaler"
PURE = ["core", "perf"]
FORBIDDEN = {"kubernetes", "prometheus_api_client", "prometheus_client", "requests", "urllib3", "http",
             "socket", "subprocess", "apscheduler", "structlog", "autoscaler.kube", "autoscaler.signals",
             "autoscaler.controller", "autoscaler.emulator", "autoscaler.localstack", "time"}

# Which parts of the project each part may import (its own modules always). Ground floor: errors, logs, certs,
# traces, forecast; the pure decision layer: core with the performance model (perf); settings and policy on it;
# the shell (signals in, kube out, the controller between them) above; the simulator runs the real controller
# on the pure layers; the entry points (cli, demo) may import anything.
ALLOWED: dict[str, frozenset[str]] = {name: frozenset(deps) for name, deps in {
    "__init__": (),
    "errors": (),
    "logs": (),
    "certs": (),
    "traces": ("errors",),
    "forecast": ("errors",),
    "core": ("forecast", "perf"),
    "perf": ("core", "errors"),
    "scaling_settings": ("core", "errors", "perf"),  # on main since the settings branch (issue 18)
    "policy": ("core", "errors", "perf", "scaling_settings"),
    "signals": ("core", "errors", "logs"),
    "config": ("core", "errors", "perf", "scaling_settings", "signals"),
    "metrics": ("controller", "core", "perf"),
    "report": ("controller", "core", "scaling_settings"),
    "kube": ("config", "controller", "core", "errors", "logs"),
    "controller": ("config", "core", "errors", "forecast", "kube", "logs", "metrics", "perf", "policy", "signals"),
    "adapter": ("certs", "config", "controller", "core", "errors", "kube", "logs", "metrics"),
    "emulator": ("core", "errors", "perf"),
    "localstack": ("core", "emulator", "errors", "kube", "logs"),
    "sim": ("config", "controller", "core", "errors", "forecast", "perf", "traces"),
}.items()}
ENTRY_POINTS = {"cli", "demo", "demo_vllm"}
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def part_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("path", [p for pkg in PURE for p in sorted((ROOT / pkg).rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_core_imports_no_io(path):
    bad = {n for n in imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in sorted(ROOT.rglob("*.py")) if part_of(p) not in ENTRY_POINTS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_imports_only_the_parts_its_layer_allows(path):
    part = part_of(path)
    assert part in ALLOWED, f"{part}: a new part of the project needs its row in ALLOWED"
    used = {n.split(".")[1] for n in imports(path) if n.startswith("autoscaler.")} - {part}
    bad = used - ALLOWED[part]
    assert not bad, f"{path.relative_to(ROOT)} ({part}) imports autoscaler.{{{', '.join(sorted(bad))}}}"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_docstring_says_what_it_owns_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    assert doc.strip(), f"autoscaler/{package}/__init__.py has no docstring saying what it owns"
    said = re.search(r"May import: ([^.]*)\.", " ".join(doc.split()))
    assert said, f"autoscaler/{package}/__init__.py does not say what it may import ('May import: a, b.')"
    names = {n.strip().removeprefix("autoscaler.") for n in said.group(1).split(",")} - {"nothing of the project"}
    assert names == set(ALLOWED[package]), \
        f"{package}: docstring says {sorted(names)}, the table {sorted(ALLOWED[package])}"
