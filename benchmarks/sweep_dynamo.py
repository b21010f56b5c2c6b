"""Tune ``dynamo`` with the budget ``hpa-tuned`` and the default's knobs got: 16 settings of the SLA planner's
arguments, on the shipped one-hour traces, one of them held out; the chosen values are pinned in
``autoscaler/sim/dynamo.py`` (``DYNAMO_TUNED_TTFT_TARGET_FACTOR`` and its two neighbours).

The knobs are planner arguments (ai-dynamo/dynamo, ``components/src/dynamo/planner/config/planner_config.py``
and ``config/defaults.py``): the targets ``ttft`` and ``itl`` (ms; defaults 500 and 50) and
``throughput_adjustment_interval`` (s; default 180). The simulator's SLOs judge every setting; only what the
planner is told changes. Settings (4 x 2 x 2 = 16, the released default, targets = the SLOs and 180 s, first):

- ``ttft`` = the TTFT SLO x {1.0, 0.1, 0.05, 0.02}. In ``core/throughput_scaling.py`` the TTFT target enters the
  prefill count only as a floor, ``ceil(predicted_ttft / ttft)``, when the mean prompt's predicted wall time
  exceeds it (about 0.04 s on Azure conv, 0.9 s on Mooncake conversation, 1.1 s on Mooncake synthetic, for
  8B/H100): factors like 0.7 or 0.35 change nothing on these traces, so the axis goes where the floor bites.
  0.05 of a 10 s SLO is Dynamo's own default target (500 ms), what an operator gets who leaves it.
- ``itl`` = the ITL SLO x {1.0, 0.5}: the decode batch is the largest whose step meets it (0.7 changes nothing
  here either: the KV cache, not the ITL, bounds the batch at a 50 ms target).
- ``throughput_adjustment_interval`` in {180 (default), 60} s.

The load predictor stays the constant one (ARIMA, Dynamo's default, is not available here; see
:mod:`autoscaler.sim.dynamo`). Traces, rule and report: :mod:`autoscaler.sim.sweep`. Writes
``benchmarks/results/sweep_dynamo.json`` with the released default's row as ``released``.

Run: ``nice -n 10 /work/main/.venv/bin/python benchmarks/sweep_dynamo.py [--duration S]``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from autoscaler.sim import sweep
from autoscaler.sim.dynamo import Dynamo

RESULTS = Path(__file__).resolve().parent / "results"
TTFT_FACTORS = (1.0, 0.1, 0.05, 0.02)
ITL_FACTORS = (1.0, 0.5)
INTERVALS_S = (180.0, 60.0)


def settings() -> list[dict[str, Any]]:
    return [{"ttft_target_factor": t, "itl_target_factor": i, "adjustment_interval_s": a}
            for t, i, a in itertools.product(TTFT_FACTORS, ITL_FACTORS, INTERVALS_S)]


def make(setting: dict[str, Any]) -> Dynamo:
    return Dynamo(ttft_target_factor=float(setting["ttft_target_factor"]),
                  itl_target_factor=float(setting["itl_target_factor"]),
                  adjustment_interval_s=float(setting["adjustment_interval_s"]))


if __name__ == "__main__":
    sweep.main(doc=__doc__, settings=settings(), make=make, released=0, out=RESULTS / "sweep_dynamo.json")
