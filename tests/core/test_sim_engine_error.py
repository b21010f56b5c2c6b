"""``--engine-error``: the simulated engine runs a truth apart from the profile every policy believes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.cli import parse_engine_error
from autoscaler.sim import Scenario, make_policy, resolve_profile, simulate
from autoscaler.traces import read_trace, window

AZURE = Path(traces.__file__).parent / "data" / "traces" / "azure_llm_2023_conv.csv"


def test_the_true_profile_scales_prefill_and_decode_times_apart():
    belief = resolve_profile("llama-3.1-8b/h100")
    truth = Scenario(engine_prefill_error=0.7, engine_decode_error=1.3).true_profile(belief)
    assert truth.prefill_time(4096) == pytest.approx(0.7 * belief.prefill_time(4096))
    assert truth.decode_step_time(64, 2000) == pytest.approx(1.3 * belief.decode_step_time(64, 2000))
    assert (truth.kv_capacity_tokens, truth.max_num_seqs) == (belief.kv_capacity_tokens, belief.max_num_seqs)
    assert Scenario().true_profile(belief) is belief


def _median_latency(prefill_error: float, decode_error: float) -> tuple[float, float, float]:
    trace = window(read_trace(AZURE), start_s=0.0, end_s=240.0)
    scenario = Scenario(engine_prefill_error=prefill_error, engine_decode_error=decode_error, warmup_s=0.0,
                        tail_s=120.0)
    result = simulate(trace, scenario, make_policy("static-peak"), keep_cluster=True)
    assert result.cluster is not None and result.measured is not None
    out = result.cluster.outcomes
    ttft = out.first_token_s - result.cluster.trace.arrival_s
    itl = (out.finish_s - out.first_token_s) / np.maximum(out.generated - 1, 1)
    served = result.measured & ~np.isnan(ttft) & (out.generated > 1)
    return float(np.median(ttft[served])), float(np.median(itl[served])), result.gpu_hours


def test_a_faster_engine_lowers_measured_latency_and_a_slower_one_raises_it_on_the_same_fleet():
    base_ttft, base_itl, base_gpu = _median_latency(1.0, 1.0)
    fast_ttft, fast_itl, fast_gpu = _median_latency(0.7, 0.7)
    slow_ttft, slow_itl, _ = _median_latency(1.3, 1.3)
    assert fast_ttft < base_ttft < slow_ttft
    assert fast_itl < base_itl < slow_itl
    # static-peak sizes from the belief: the same fleet (the run ends sooner when the engine is faster)
    assert fast_gpu == pytest.approx(base_gpu, rel=0.05)


@pytest.mark.parametrize("text, expected", [
    ("prefill=0.7,decode=1.3", (0.7, 1.3)),
    ("decode=2", (1.0, 2.0)),
    ("prefill=1.5", (1.5, 1.0)),
])
def test_engine_error_flags_parse(text, expected):
    assert parse_engine_error(text) == expected


@pytest.mark.parametrize("text", ["prefill=-1", "prefill=0", "decode=inf", "decode=nan", "gpu=2", "prefill",
                                  "prefill=x"])
def test_bad_engine_error_is_refused_naming_the_flag(text):
    with pytest.raises(ValueError, match="--engine-error"):
        parse_engine_error(text)


def test_scenario_refuses_a_non_positive_engine_error():
    with pytest.raises(ValueError, match="engine_decode_error"):
        Scenario(engine_decode_error=-1.0)
    assert math.isfinite(Scenario(engine_prefill_error=0.7).engine_prefill_error)
