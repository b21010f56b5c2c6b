"""Idle means known idle, scale-to-zero fires after the idle window on any cycle spacing, and an outage does not
shorten the scale-down window (issue 16, items 1, 2 and 5)."""

from __future__ import annotations

import pytest

from autoscaler.core.behavior import Behavior, Recommendation
from autoscaler.core.combine import is_idle
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.policyset import VariantPolicy
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)

SPEC = VariantSpec(ref=VariantRef("ns", "d"), model="m", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "d"), min_replicas=1, max_replicas=10)
IDLE = VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=0.0, completions_per_s=0.0, kv_usage_mean=0.0)
BUSY = VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=3.0, completions_per_s=5.5, kv_usage_mean=0.35)


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param(VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=None, completions_per_s=None,
                                    kv_usage_mean=0.35), id="running-and-rate-unknown"),
        pytest.param(VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=None, completions_per_s=0.0,
                                    kv_usage_mean=0.0), id="running-unknown"),
        pytest.param(VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=0.0, completions_per_s=None,
                                    kv_usage_mean=0.0), id="rate-unknown"),
        pytest.param(VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=0.0, completions_per_s=0.0,
                                    kv_usage_mean=None), id="kv-unknown"),
        pytest.param(VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=0.0, completions_per_s=0.0,
                                    kv_usage_mean=0.35), id="kv-in-use"),
        pytest.param(VariantSignals(Freshness.STALE, pods=1, waiting=0.0, running=0.0, completions_per_s=0.0,
                                    kv_usage_mean=0.0), id="stale"),
    ],
)
def test_a_variant_is_not_idle_unless_every_demand_signal_is_known_to_be_zero(signals):
    assert not signals.idle
    assert not is_idle(signals=signals, prediction=None)


def test_a_variant_with_every_demand_signal_at_zero_is_idle():
    assert IDLE.idle
    assert is_idle(signals=IDLE, prediction=None)
    assert not is_idle(signals=IDLE, prediction=Prediction(1))


ZERO_OK = VariantPolicy(role=Role.DECODE, accelerator="H100", scale_to_zero=True, idle_window_s=60)


def run(signals_per_cycle, *, interval_s: float, behavior: Behavior, current: int = 1,
        history: tuple[Recommendation, ...] = ()) -> list[tuple[float, int]]:
    seen = []
    for i, signals in enumerate(signals_per_cycle):
        now = 1000.0 + i * interval_s
        decision, history = decide(spec=SPEC, signals=signals, current=current, history=history,
                                   policy=ScalingPolicy(behavior=behavior), now=now, variant_policy=ZERO_OK)
        current = decision.desired
        seen.append((now, current))
    return seen


@pytest.mark.parametrize("interval_s", [5.0, 5.01, 4.99, 5.3, 15.02, 61.0])
def test_scale_to_zero_fires_once_the_idle_window_has_passed_on_any_cycle_spacing(interval_s):
    seen = run([IDLE] * (int(200 / interval_s) + 2), interval_s=interval_s, behavior=Behavior(scale_down_window_s=0))
    zero_at = next((t for t, n in seen if n == 0), None)
    assert zero_at is not None, seen
    assert 60 <= zero_at - 1000.0 < 60 + interval_s + 1e-9


def test_scale_to_zero_fires_on_a_default_policy_with_fifteen_second_cycles():
    seen = run([IDLE] * 200, interval_s=15.02, behavior=Behavior())
    assert any(n == 0 for _, n in seen)


def test_a_variant_serving_traffic_whose_running_and_rate_read_unknown_is_never_scaled_to_zero():
    unknown = VariantSignals(Freshness.FRESH, pods=1, waiting=0.0, running=None, completions_per_s=None,
                             kv_usage_mean=0.35)
    seen = run([BUSY] * 3 + [unknown] * 40, interval_s=5.0, behavior=Behavior(scale_down_window_s=0))
    assert all(n == 1 for _, n in seen), seen


def test_an_unknown_cycle_breaks_an_idle_run():
    missing = VariantSignals.unknown("prometheus down")
    seen = run([IDLE] * 8 + [missing] + [IDLE] * 8, interval_s=5.0, behavior=Behavior(scale_down_window_s=0))
    assert all(n == 1 for _, n in seen), seen  # 40 s then 40 s of idle: neither run spans the 60 s window


def test_the_first_fresh_cycle_after_an_outage_still_waits_the_scale_down_window():
    low = VariantSignals(Freshness.FRESH, pods=4, waiting=0.0, running=1.0, completions_per_s=1.0, kv_usage_mean=0.02)
    outage = [VariantSignals.unknown("prometheus down")] * 40  # 200 s, longer than the 120 s window
    behavior = Behavior(scale_down_window_s=120, max_step_down=1)
    loaded = VariantSignals(Freshness.FRESH, pods=4, waiting=0.0, running=9.0, completions_per_s=6.0,
                            kv_usage_mean=0.6)
    seen = run([loaded] + outage + [low] * 30, interval_s=5.0, behavior=behavior, current=4,
               history=(Recommendation(999.0, 4),))
    first_fresh = seen[41][0]
    first_down = next(t for t, n in seen if n < 4)
    assert first_down - first_fresh >= 120, seen


def test_an_outage_leaves_a_held_reason_on_the_decision():
    decision, _ = decide(spec=SPEC, signals=VariantSignals.unknown("prometheus down"), current=3, history=(),
                         policy=ScalingPolicy(), now=0.0)
    assert (decision.desired, decision.reason) == (3, Reason.SIGNALS_MISSING)
