"""Tune ``wva`` with the budget ``hpa-tuned`` and the default's knobs got: 16 settings of the saturation ConfigMap
an operator edits, on the shipped one-hour traces, one of them held out; the chosen values are pinned in
``autoscaler/sim/wva.py`` (:data:`autoscaler.sim.wva.WVA_TUNED`).

The knobs are the four keys of WVA's saturation scaling ConfigMap (llm-d/llm-d-workload-variant-autoscaler,
``deploy/configmap-saturation-scaling.yaml``; its docs' tuning table lists the same four as what an operator
changes, the HPA's behaviour being set on the HPA): ``kvCacheThreshold``, ``queueLengthThreshold``,
``kvSpareTrigger``, ``queueSpareTrigger``. Settings (4 x 2 x 2 = 16, the shipped one first):

- ``kvCacheThreshold`` in {0.8 (shipped), 0.7, 0.6, 0.5};
- ``queueLengthThreshold`` in {5 (shipped), 2};
- spare triggers ``shipped`` (``kvSpareTrigger`` 0.1; ``queueSpareTrigger`` 0.6 x the queue threshold, so the
  queue scale-up point, threshold - trigger, stays 0.4 x the threshold: 3 at threshold 5, as shipped) or
  ``doubled`` (``kvSpareTrigger`` 0.2; the queue headroom before a scale-up halved, trigger 0.8 x the threshold).
  Doubling ``queueSpareTrigger`` itself would put it above the threshold (6 > 5), where the mean spare queue is
  always below it and WVA scales up every cycle (its config validation does not refuse that).

Traces, rule and report: :mod:`autoscaler.sim.sweep` (tuned on ``azure-conv`` and ``mooncake-conversation``,
``mooncake-synthetic`` held out; the cheapest setting within 0.5 point of the best on every tuning trace).
Writes ``benchmarks/results/sweep_wva.json`` with the shipped setting's row as ``released``.

Run: ``nice -n 10 /work/main/.venv/bin/python benchmarks/sweep_wva.py [--duration S]`` (S: replay only the
first S seconds of each trace, for a quick check; the pinned result is from full traces).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from autoscaler.sim import sweep
from autoscaler.sim.wva import Wva, WvaThresholds

RESULTS = Path(__file__).resolve().parent / "results"
KV_THRESHOLDS = (0.8, 0.7, 0.6, 0.5)
QUEUE_THRESHOLDS = (5.0, 2.0)
SPARES = {"shipped": (0.1, 0.6), "doubled": (0.2, 0.8)}
"""Per variant: ``kvSpareTrigger`` and ``queueSpareTrigger`` as a fraction of ``queueLengthThreshold``."""


def settings() -> list[dict[str, Any]]:
    rows = []
    for kv, queue, spare in itertools.product(KV_THRESHOLDS, QUEUE_THRESHOLDS, SPARES):
        kv_spare, queue_ratio = SPARES[spare]
        rows.append({"kv_cache_threshold": kv, "queue_length_threshold": queue, "spare": spare,
                     "kv_spare_trigger": kv_spare, "queue_spare_trigger": round(queue_ratio * queue, 6)})
    return rows


def thresholds(setting: dict[str, Any]) -> WvaThresholds:
    return WvaThresholds(kv_cache_threshold=float(setting["kv_cache_threshold"]),
                         queue_length_threshold=float(setting["queue_length_threshold"]),
                         kv_spare_trigger=float(setting["kv_spare_trigger"]),
                         queue_spare_trigger=float(setting["queue_spare_trigger"]))


def make(setting: dict[str, Any]) -> Wva:
    return Wva(thresholds=thresholds(setting))


def released(rows: list[dict[str, Any]]) -> int:
    return next(i for i, row in enumerate(rows) if thresholds(row) == WvaThresholds())


if __name__ == "__main__":
    grid = settings()
    sweep.main(doc=__doc__, settings=grid, make=make, released=released(grid), out=RESULTS / "sweep_wva.json")
