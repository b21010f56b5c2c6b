import pytest

from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSpec
from autoscaler.signals.history import (
    HISTORY_SIGNALS,
    assemble_history,
    duration_s,
    grid,
    history_queries,
)
from autoscaler.signals.parse import parse_matrix
from autoscaler.signals.queries import LabelMap, QueryPlan

PLAN = QueryPlan()
SPEC = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "d"))
METRIC = {"namespace": "ns", "model_name": "m", "role": "decode", "accelerator": "H100"}


def matrix(*values: str | None, start: float = 100.0, step: float = 10.0) -> list:
    samples = [[start + i * step, v] for i, v in enumerate(values) if v is not None]
    return [{"metric": METRIC, "values": samples}]


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1m", 60), ("1h30m", 5400), ("250ms", 0.25)])
def test_parses_prometheus_durations(text, seconds):
    assert duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "m", "1x", "1m 2s"])
def test_refuses_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="duration"):
        duration_s(text)


@pytest.mark.parametrize(
    ("start", "end", "step", "message"),
    [
        pytest.param(0, 10, 0, "step > 0", id="zero-step"),
        pytest.param(10, 0, 1, "start <= end", id="backwards"),
        pytest.param(0, 1e6, 1, "exceeds", id="too-many-points"),
    ],
)
def test_refuses_an_impossible_grid(start, end, step, message):
    with pytest.raises(ValueError, match=message):
        grid(start=start, end=end, step=step)


def test_grid_includes_both_ends():
    assert grid(start=0, end=30, step=10) == (0, 10, 20, 30)


def test_history_rate_window_is_widened_to_the_step():
    queries = history_queries(PLAN, step=300)
    assert set(queries) == set(HISTORY_SIGNALS) and "[300s]" in queries["completions_per_s"]
    assert "[60s]" in history_queries(PLAN, step=15)["completions_per_s"]


def test_matrix_values_land_on_their_grid_points_and_gaps_stay_unknown():
    parsed = parse_matrix(matrix("1", None, "3", start=100, step=10), key_of=LabelMap().key_of, start=100,
                          step=10, points=4)
    assert parsed == {("ns", "m", "decode", "H100"): [1.0, None, 3.0, None]}


def test_history_gives_rate_and_mix_with_idle_points_as_zero_and_gaps_as_unknown():
    timestamps = grid(start=100, end=130, step=10)
    results = {
        "completions_per_s": matrix("2", "0", None, "1"),
        "prompt_len_sum_per_s": matrix("400", "0", None, "50"),
        "prompt_len_count_per_s": matrix("2", "0", None, "1"),
        "prompt_tokens_p90": matrix("300", "NaN", None, "50"),
        "generation_len_sum_per_s": matrix("100", "0", None, "10"),
        "generation_len_count_per_s": matrix("2", "0", None, "1"),
        "generation_tokens_p90": matrix("90", "NaN", None, "10"),
    }
    h = assemble_history(variants=[SPEC], results=results, plan=PLAN, start=100, step=10,
                         timestamps=timestamps)[SPEC]
    assert len(h) == 4
    assert h.completions_per_s == (2.0, 0.0, None, 1.0)
    assert h.prompt_tokens_mean == (200.0, 0.0, None, 50.0)
    assert h.prompt_tokens_p90 == (300.0, 0.0, None, 50.0)
    assert h.generation_tokens_mean == (50.0, 0.0, None, 10.0)


def test_a_variant_without_history_gets_unknown_points_not_zeros():
    other = VariantSpec(ref=VariantRef("ns", "p"), model="m", role=Role.PREFILL, accelerator="H100",
                        target=ScaleTarget("apps/v1", "Deployment", "p"))
    timestamps = grid(start=0, end=20, step=10)
    h = assemble_history(variants=[other], results={}, plan=PLAN, start=0, step=10, timestamps=timestamps)[other]
    assert h.completions_per_s == (None, None, None) and h.prompt_tokens_mean == (None, None, None)
