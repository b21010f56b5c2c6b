"""Capture what a real vLLM exports on /metrics (names, types, label names, enumerated label values, histogram
bucket bounds) into tests/fixtures/vllm-metrics.json, the fixture the emulator is pinned to
(tests/core/test_emulator_matches_vllm.py), and print how it differs from the fixture already there.

Re-run it against a newer vLLM to upgrade: the diff it prints is the checklist (a renamed family, a new label,
moved buckets), and the emulator test then fails where the emulator no longer matches.

    make setup-vllm   # or VAS_VLLM_PYTHON=<python with the newer vllm>
    PYTHONPATH=. .venv/bin/python scripts/capture-vllm-metrics.py [--out PATH]

It starts one CPU instance serving the tiny model, sends a few requests (histogram series and labelled
counters exist from the start, but this also checks that they move), scrapes it and stops it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.types import Role
from autoscaler.localstack.vllm import SETUP_HINT, VllmPods, VllmVariant, completion, locate_engine

FIXTURE = REPO / "tests" / "fixtures" / "vllm-metrics.json"
IDENTITY_LABELS = {"model_name", "engine"}
# Labels whose values are a fixed vocabulary worth pinning (the project filters on them).
ENUMERATED = {"finished_reason", "reason", "source"}


def describe(exposition: str) -> dict[str, dict[str, Any]]:
    """Per ``vllm:`` family: type, sorted label names, the values of enumerated labels, histogram bounds."""
    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("vllm:") or family.name.endswith("_created"):
            continue  # the client library's creation timestamps, one per counter and histogram: not vLLM's
        labels: set[str] = set()
        values: dict[str, set[str]] = {}
        bounds: set[float] = set()
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name == "le":
                    if sample.name.endswith("_bucket") and value != "+Inf":
                        bounds.add(float(value))
                    continue
                labels.add(name)
                if name in ENUMERATED:
                    values.setdefault(name, set()).add(value)
        entry: dict[str, Any] = {"type": family.type, "labels": sorted(labels)}
        if values:
            entry["label_values"] = {k: sorted(v) for k, v in sorted(values.items())}
        if family.type == "histogram":
            entry["buckets"] = sorted(bounds)
        out[family.name] = entry
    return dict(sorted(out.items()))


def diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"+ {name} ({new[name]['type']})" for name in sorted(set(new) - set(old))]
    lines += [f"- {name} ({old[name]['type']})" for name in sorted(set(old) - set(new))]
    for name in sorted(set(old) & set(new)):
        for key in sorted(set(old[name]) | set(new[name])):
            if old[name].get(key) != new[name].get(key):
                lines.append(f"~ {name} {key}: {old[name].get(key)} -> {new[name].get(key)}")
    return lines


def engine_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], check=True,
                          capture_output=True, text=True).stdout.strip()


def capture() -> tuple[str, str]:
    engine = locate_engine()
    if engine is None:
        raise SystemExit(f"no vLLM engine: {SETUP_HINT}")
    variant = VllmVariant(namespace="capture", deployment="capture", model="tiny", role=Role.BOTH)
    with tempfile.TemporaryDirectory() as tmp, VllmPods(variants=[variant], replicas_of=lambda _v: 1,
                                                        file_sd_path=Path(tmp) / "sd.json", engine=engine) as pods:
        instance = pods.wait_ready(variant, 1, timeout_s=600)[0]
        for max_tokens in (8, 16, 32):
            completion(instance.url, model=variant.model, prompt=list(range(10, 110)), max_tokens=max_tokens)
        with urllib.request.urlopen(f"{instance.url}/metrics", timeout=10) as response:
            exposition = response.read().decode()
    return engine_version(engine.python), exposition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    version, exposition = capture()
    new = describe(exposition)
    old = json.loads(args.out.read_text())["families"] if args.out.exists() else {}
    changes = diff(old, new)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"vllm_version": version, "families": new}, indent=1) + "\n")
    print(f"vLLM {version}: {len(new)} vllm: families written to {args.out}")
    print("\n".join(changes) if changes else "no change against the previous fixture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
