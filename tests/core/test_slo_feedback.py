"""The measured SLO quantiles trim the modelled capacity: tighten near the target, relax slowly with slack."""

from __future__ import annotations

import math

import pytest

from autoscaler.core.slo_feedback import SloFeedback, measured_ratio, update_trim, update_trims
from autoscaler.core.types import Freshness, Role, VariantRef, VariantSignals

SETTINGS = SloFeedback()


def window(*, ttft=((0.5, 1.0), (0.9, 2.0), (0.99, 4.0)), itl=((0.5, 0.02), (0.9, 0.03), (0.99, 0.04)),
           **changes) -> VariantSignals:
    base = {"freshness": Freshness.FRESH, "pods": 2, "waiting": 0.0, "running": 4.0, "completions_per_s": 3.0,
                "ttft_quantiles_s": ttft, "itl_quantiles_s": itl}
    base.update(changes)
    return VariantSignals(**base)


@pytest.mark.parametrize("role, signals, expected", [
    pytest.param(Role.PREFILL, window(), (0.2, 0.4), id="prefill-reads-ttft"),
    pytest.param(Role.BOTH, window(), (0.2, 0.4), id="aggregated-reads-ttft"),
    pytest.param(Role.DECODE, window(), (0.6, 0.8), id="decode-reads-itl"),
    pytest.param(Role.PREFILL, window(freshness=Freshness.STALE), None, id="stale-says-nothing"),
    pytest.param(Role.PREFILL, window(completions_per_s=0.0, running=0.0, waiting=0.0), None, id="idle-says-nothing"),
    pytest.param(Role.PREFILL, window(ttft=((0.5, 1.0),)), None, id="no-quantile-at-the-percentile"),
    pytest.param(Role.PREFILL, window(ttft=((0.9, math.nan),)), None, id="nan-quantile"),
])
def test_reads_the_stage_quantile_at_the_slo_percentile_over_its_target(role, signals, expected):
    ratio = measured_ratio(role=role, signals=signals, ttft_s=10.0, itl_s=0.05, percentile=0.9)
    assert ratio == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize("trim, ratio, expected", [
    pytest.param(1.0, (1.0, 1.5), 0.9, id="at-the-target-cuts-the-most"),
    pytest.param(1.0, (3.0, 5.0), 0.9, id="far-past-the-target-cuts-no-more-per-cycle"),
    pytest.param(1.0, (0.9, 1.2), 0.95, id="halfway-to-the-target-cuts-half"),
    pytest.param(1.0, (0.7, 0.9), 1.0, id="between-slack-and-near-holds"),
    pytest.param(1.0, (0.3, 0.6), 1.0, id="slack-at-the-model-holds"),
    pytest.param(1.0, (0.3, 0.9), 1.0, id="slack-with-the-tail-near-the-target-holds"),
    pytest.param(1.0, (0.1, 0.2), 1.0, id="relaxes-no-further-than-the-ceiling"),
    pytest.param(0.8, (0.1, 0.2), 0.808, id="slack-gives-back-headroom-a-breach-took"),
    pytest.param(0.5, (2.0, 2.0), 0.5, id="tightens-no-further-than-the-floor"),
    pytest.param(0.8, None, 0.8, id="nothing-measured-holds"),
])
def test_trim_moves_by_the_rules(trim, ratio, expected):
    assert update_trim(trim, ratio, settings=SETTINGS) == pytest.approx(expected)


def test_a_variant_held_in_breach_reaches_the_floor_in_a_bounded_number_of_cycles():
    trim, cycles = 1.0, 0
    while trim > SETTINGS.floor + 1e-9:
        trim = update_trim(trim, (1.5, 2.0), settings=SETTINGS)
        cycles += 1
    assert cycles <= 7  # 0.9^7 < 0.5: under two minutes at a 15 s cycle


def test_disabled_feedback_leaves_the_trim_alone():
    assert update_trim(1.0, (2.0, 2.0), settings=SloFeedback(enabled=False)) == 1.0


def test_variants_no_longer_measured_are_dropped_and_new_ones_start_at_one():
    a, b = VariantRef("ns", "a"), VariantRef("ns", "b")
    assert update_trims({a: 0.7, VariantRef("ns", "gone"): 0.6}, {a: None, b: (0.7, 0.8)},
                        settings=SETTINGS) == {a: 0.7, b: 1.0}


@pytest.mark.parametrize("changes", [
    pytest.param({"near": 0.4}, id="near-below-slack"),
    pytest.param({"near": 1.2}, id="near-past-the-target"),
    pytest.param({"floor": 1.2}, id="floor-above-one"),
    pytest.param({"ceiling": 0.9}, id="ceiling-below-one"),
    pytest.param({"tail_slack": -1.0}, id="negative-tail-slack"),
    pytest.param({"relax": math.nan}, id="nan-relax"),
    pytest.param({"max_tighten": 1.0}, id="cut-everything"),
])
def test_settings_that_cannot_work_are_refused(changes):
    with pytest.raises(ValueError):
        SloFeedback(**changes)
