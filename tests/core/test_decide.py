import pytest

from autoscaler.core.behavior import Behavior, Recommendation
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)

SPEC = VariantSpec(ref=VariantRef("ns", "llama-decode"), model="llama", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "llama-decode"), min_replicas=1, max_replicas=6)
POLICY = ScalingPolicy(behavior=Behavior(scale_down_window_s=0, max_step_up=1, max_step_down=1))


def sig(waiting: float, kv: float, freshness: Freshness = Freshness.FRESH) -> VariantSignals:
    return VariantSignals(freshness=freshness, waiting=waiting, kv_usage_mean=kv)


@pytest.mark.parametrize(
    ("signals", "current", "desired", "reason"),
    [
        pytest.param(sig(30, 0.9), 2, 3, Reason.STEP_LIMITED, id="saturated-moves-one-step"),
        pytest.param(sig(0, 0.05), 3, 2, Reason.UNDERUTILISED, id="idle-drops-one"),
        pytest.param(sig(30, 0.9), 6, 6, Reason.TOO_MANY_REPLICAS, id="saturated-at-max-holds"),
        pytest.param(VariantSignals.unknown("prometheus down"), 3, 3, Reason.SIGNALS_MISSING,
                     id="unknown-holds"),
        pytest.param(VariantSignals.unknown("prometheus down"), 0, 1, Reason.TOO_FEW_REPLICAS,
                     id="unknown-still-respects-min"),
        pytest.param(sig(0, 0.0, Freshness.STALE), 5, 5, Reason.SIGNALS_STALE, id="stale-never-scales-down"),
        pytest.param(VariantSignals.unknown("x"), 9, 6, Reason.TOO_MANY_REPLICAS, id="over-max-comes-down-to-max"),
    ],
)
def test_decides_replicas_for_one_variant(signals, current, desired, reason):
    decision, _ = decide(spec=SPEC, signals=signals, current=current, history=(), policy=POLICY, now=0.0)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert decision.steps[-1].stage == "clamp"


def test_unknown_signals_are_recorded_as_holding_the_current_replicas_and_not_idle():
    history = (Recommendation(0.0, 4),)
    _, after = decide(spec=SPEC, signals=VariantSignals.unknown("x"), current=4, history=history,
                      policy=POLICY, now=5.0)
    assert after == history + (Recommendation(5.0, 4, idle=False),)


def test_decision_is_deterministic():
    args = {"spec": SPEC, "signals": sig(10, 0.5), "current": 2, "history": (), "policy": POLICY, "now": 1.0}
    assert decide(**args) == decide(**args)
