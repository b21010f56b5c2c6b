"""The benchmark's result cells on disk: the two-day replay merges its policies into the matrix cell without losing
what other runs wrote (other policies, and a bootstrap interval still drawn around the same point)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_long_replay
    import bench_policies

    monkeypatch.setattr(bench_policies, "MATRIX", tmp_path)
    yield bench_long_replay
    sys.modules.pop("bench_long_replay", None)


def _entry(gpu_hours: float, attainment: float, **more: object) -> dict[str, object]:
    return {"gpu_hours": gpu_hours, "attainment": attainment, "feasible_fraction": 0.9998, **more}


def test_a_rerun_two_day_replay_keeps_other_policies_and_an_interval_drawn_around_its_unchanged_point(
        bench, tmp_path):
    interval = {"k": 3, "gpu_hours": [447.2, 452.2], "attainment": [0.9745, 0.9781]}
    on_disk = {"trace": "servegen-2d-70b", "requests": 1777388, "duration_s": 172800.0, "scenario": {},
               "policies": {"default": _entry(459.95, 0.97504, resample=interval),
                            "best-static": _entry(576.05, 0.99655, resample=interval),
                            "static-peak": _entry(768.07, 0.99909, resample=interval)}}
    (tmp_path / "servegen-2d-70b@1.json").write_text(json.dumps(on_disk))
    report = {"requests": 1777388, "duration_h": 48.0, "scenario": {}, "load_scale": 4.0,
              "policies": {"default": _entry(459.95, 0.97504, cpu_s=256.0),  # the same point again
                           "best-static": _entry(570.0, 0.99601, cpu_s=200.0)}}  # a point that moved
    path = bench.update_matrix(report)
    cell = json.loads(path.read_text())["policies"]
    assert cell["default"]["resample"] == interval and "cpu_s" not in cell["default"]
    assert "resample" not in cell["best-static"] and cell["best-static"]["gpu_hours"] == 570.0
    assert cell["static-peak"] == on_disk["policies"]["static-peak"]


def test_the_ablation_table_gives_each_part_against_default_and_skips_what_was_not_run(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_ablations

    base = {"gpu_hours": 10.0, "attainment": 0.95}
    table = bench_ablations.markdown({
        "azure-conv": {"default": base, "default-no-rejection": {"gpu_hours": 12.0, "attainment": 0.9612}},
        "mooncake-synthetic": {"default": None, "default-gateway": {"gpu_hours": 2.0, "attainment": 0.997}},
    }).splitlines()
    assert table[0] == "| scenario | default | default-no-rejection | default-mean-forecast | default-gateway |"
    assert table[2] == "| azure-conv | 10.00 / 95.00% | 12.00 / 96.12% (1.20×, +1.12 pt) | - | - |"
    assert table[3] == "| mooncake-synthetic | - | - | - | 2.00 / 99.70% |"
    assert len(table) == 4  # scenarios with no results have no row
