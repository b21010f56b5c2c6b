"""The combination of reactive and predictive recommendations and the anti-flap rules, through decide()."""

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from autoscaler.core.behavior import Behavior, Recommendation
from autoscaler.core.combine import combine
from autoscaler.core.decide import ScalingPolicy, decide
from autoscaler.core.policyset import VariantPolicy
from autoscaler.core.schedule import Schedule, ScheduleWindow
from autoscaler.core.slo_policy import Prediction
from autoscaler.core.types import (
    DecisionStep,
    Freshness,
    Reason,
    ReplicaCounts,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)

SPEC = VariantSpec(ref=VariantRef("ns", "llama-decode"), model="llama", role=Role.DECODE, accelerator="H100",
                   target=ScaleTarget("apps/v1", "Deployment", "llama-decode"), min_replicas=1, max_replicas=20)
FAST = Behavior(scale_down_window_s=0, max_step_up=0, max_step_down=0)


def sig(waiting: float = 0.0, kv: float = 0.3, running: float = 4.0, rps: float = 1.0,
        freshness: Freshness = Freshness.FRESH) -> VariantSignals:
    return VariantSignals(freshness=freshness, waiting=waiting, running=running, kv_usage_mean=kv, completions_per_s=rps)


IDLE = sig(waiting=0, kv=0.0, running=0, rps=0)
SATURATED = sig(waiting=20, kv=0.9)


def step(replicas: int, reason: Reason = Reason.WITHIN_TOLERANCE) -> DecisionStep:
    return DecisionStep("x", replicas, reason, "")


@pytest.mark.parametrize(
    ("reactive", "predictive", "current", "fresh", "floor", "expected", "reason"),
    [
        pytest.param(step(5, Reason.SATURATED), step(3, Reason.SLO_CAPACITY), 3, True, 2, 5, Reason.SATURATED,
                     id="up-reactive-larger-wins"),
        pytest.param(step(3), step(6, Reason.SLO_CAPACITY), 3, True, 2, 6, Reason.SLO_CAPACITY,
                     id="up-predictive-larger-wins"),
        pytest.param(step(3), step(1, Reason.SLO_CAPACITY), 3, True, 2, 2, Reason.UNDERUTILISED,
                     id="down-stops-at-consolidation-floor"),
        pytest.param(step(2, Reason.UNDERUTILISED), step(2, Reason.COST_OPTIMAL), 3, True, 1, 2,
                     Reason.COST_OPTIMAL, id="down-to-predictive-when-load-fits"),
        pytest.param(step(3), step(1, Reason.SLO_CAPACITY), 3, True, 3, 3, Reason.WITHIN_TOLERANCE,
                     id="down-blocked-when-n-minus-1-would-saturate"),
        pytest.param(step(2, Reason.UNDERUTILISED), step(4, Reason.SLO_CAPACITY), 4, True, 1, 4,
                     Reason.SLO_CAPACITY, id="predictive-holds-what-reactive-would-drop"),
        pytest.param(step(3), step(1, Reason.SLO_CAPACITY), 3, True, None, 3, Reason.WITHIN_TOLERANCE,
                     id="down-needs-load-figures"),
        pytest.param(step(3, Reason.SIGNALS_MISSING), step(5, Reason.FORECAST), 3, False, None, 5, Reason.FORECAST,
                     id="missing-signals-still-allow-predictive-up"),
        pytest.param(step(3, Reason.SIGNALS_MISSING), step(1, Reason.FORECAST), 3, False, None, 3,
                     Reason.SIGNALS_MISSING, id="missing-signals-never-scale-down"),
        pytest.param(step(4, Reason.SATURATED), None, 3, True, 2, 4, Reason.SATURATED, id="reactive-only"),
    ],
)
def test_combines_reactive_and_predictive(reactive, predictive, current, fresh, floor, expected, reason):
    out = combine(reactive=reactive, predictive=predictive, current=current, fresh=fresh, floor=floor)
    assert (out.replicas, out.reason) == (expected, reason)


def once(signals=None, current=3, prediction=None, behavior=FAST, **kwargs):
    decision, _ = decide(spec=SPEC, signals=signals or sig(), current=current, history=(),
                         policy=ScalingPolicy(behavior=behavior), now=1000.0, prediction=prediction, **kwargs)
    return decision


@pytest.mark.parametrize(
    ("kwargs", "desired", "reason"),
    [
        pytest.param({"signals": VariantSignals.unknown("prometheus down"), "current": 4}, 4,
                     Reason.SIGNALS_MISSING, id="missing-signals-hold"),
        pytest.param({"signals": VariantSignals.unknown("down"), "current": 4, "prediction": Prediction(1)}, 4,
                     Reason.SIGNALS_MISSING, id="missing-signals-hold-against-a-low-forecast"),
        pytest.param({"signals": VariantSignals.unknown("down"), "current": 4, "prediction": Prediction(7)}, 7,
                     Reason.SLO_CAPACITY, id="missing-signals-follow-a-high-forecast"),
        pytest.param({"signals": SATURATED, "replicas": ReplicaCounts(ready=2, starting=1)}, 3,
                     Reason.REPLICAS_STARTING, id="no-reactive-step-while-starting"),
        pytest.param({"signals": SATURATED, "replicas": ReplicaCounts(ready=1, unschedulable=2)}, 3,
                     Reason.PENDING_CAPACITY, id="pending-pods-never-cascade-scale-ups"),
        pytest.param({"signals": SATURATED, "replicas": ReplicaCounts(ready=2, starting=1),
                      "prediction": Prediction(6)}, 6, Reason.SLO_CAPACITY,
                     id="predictive-target-not-held-by-starting-replicas"),
        pytest.param({"signals": sig(kv=0.1), "current": 5, "replicas": ReplicaCounts(ready=2, unschedulable=3),
                      "prediction": Prediction(2)}, 2, Reason.SLO_CAPACITY,
                     id="pending-pods-never-block-scale-down"),
        pytest.param({"signals": sig(kv=0.1), "current": 5, "replicas": ReplicaCounts(ready=3, starting=2),
                      "prediction": Prediction(3)}, 3, Reason.SLO_CAPACITY,
                     id="starting-pods-never-block-scale-down"),
        pytest.param({"current": 10, "prediction": Prediction(11), "behavior": Behavior(tolerance=0.1)}, 10,
                     Reason.WITHIN_TOLERANCE, id="predictive-within-tolerance-ignored"),
        pytest.param({"current": 10, "prediction": Prediction(12), "behavior": Behavior(tolerance=0.1,
                                                                                       max_step_up=0)},
                     12, Reason.SLO_CAPACITY, id="predictive-beyond-tolerance-applied"),
        pytest.param({"current": 4, "prediction": Prediction(12),
                      "behavior": Behavior(max_step_up=1, max_step_up_percent=50)}, 6, Reason.STEP_LIMITED,
                     id="percent-step-wins-over-smaller-absolute"),
        pytest.param({"current": 4, "prediction": Prediction(12),
                      "behavior": Behavior(max_step_up=3, max_step_up_percent=25)}, 7, Reason.STEP_LIMITED,
                     id="absolute-step-wins-over-smaller-percent"),
        pytest.param({"current": 10, "signals": sig(kv=0.05), "prediction": Prediction(2),
                      "behavior": Behavior(scale_down_window_s=0, max_step_down=0, max_step_down_percent=30)}, 7,
                     Reason.STEP_LIMITED, id="percent-step-down"),
        pytest.param({"current": 5, "signals": sig(kv=0.05), "prediction": Prediction(2), "last_scaled_at": 950.0,
                      "behavior": Behavior(scale_down_window_s=0, max_step_down=0, cooldown_down_s=120)}, 5,
                     Reason.COOLDOWN, id="cooldown-holds-scale-down"),
        pytest.param({"current": 5, "signals": sig(kv=0.05), "prediction": Prediction(2), "last_scaled_at": 800.0,
                      "behavior": Behavior(scale_down_window_s=0, max_step_down=0, cooldown_down_s=120)}, 2,
                     Reason.SLO_CAPACITY, id="cooldown-over-scale-down-proceeds"),
        pytest.param({"current": 3, "prediction": Prediction(6), "last_scaled_at": 950.0,
                      "behavior": Behavior(max_step_up=0, cooldown_down_s=120)}, 6, Reason.SLO_CAPACITY,
                     id="scale-down-cooldown-does-not-hold-scale-up"),
    ],
)
def test_decides_with_guards_cooldown_and_steps(kwargs, desired, reason):
    decision = once(**kwargs)
    assert (decision.desired, decision.reason) == (desired, reason), decision.message


def run(inputs, *, current, behavior, variant_policy=None, interval=15.0, replicas_of=None):
    """Feed (signals, prediction) pairs through decide() as the controller would; return replicas per cycle."""
    history: tuple[Recommendation, ...] = ()
    seen = []
    for i, (signals, prediction) in enumerate(inputs):
        decision, history = decide(spec=SPEC, signals=signals, current=current, history=history,
                                   policy=ScalingPolicy(behavior=behavior), now=i * interval,
                                   prediction=prediction, variant_policy=variant_policy)
        current = decision.desired
        seen.append(current)
    return seen


def direction_changes(series):
    moves = [b - a for a, b in itertools.pairwise(series) if b != a]
    return sum(1 for a, b in itertools.pairwise(moves) if (a > 0) != (b > 0))


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([(SATURATED, None), (sig(kv=0.05), None)] * 12, id="reactive-saturated-then-idle"),
        pytest.param([(sig(), Prediction(8)), (sig(kv=0.05), Prediction(2))] * 12, id="forecast-high-then-low"),
        pytest.param([(sig(kv=0.95), Prediction(2)), (sig(kv=0.05), Prediction(2))] * 12,
                     id="kv-spikes-every-other-cycle"),
    ],
)
def test_flapping_input_does_not_oscillate(inputs):
    behavior = Behavior(scale_up_window_s=0, scale_down_window_s=120, max_step_up=4, max_step_down=1)
    seen = run(inputs, current=3, behavior=behavior)
    assert max(seen) > 3  # it did react to the high samples
    assert direction_changes(seen) == 0, seen


def test_sustained_low_load_scales_down_after_the_window_one_step_at_a_time():
    behavior = Behavior(scale_down_window_s=60, max_step_down=1)
    seen = run([(sig(), Prediction(5))] + [(sig(kv=0.05), Prediction(1))] * 12, current=5, behavior=behavior)
    assert seen[:5] == [5, 5, 5, 5, 5]  # the 5 recommended at 0 s holds through the 60 s window
    assert seen[5:9] == [4, 3, 2, 1]


ZERO_OK = VariantPolicy(role=Role.DECODE, accelerator="H100", scale_to_zero=True, idle_window_s=60)


@pytest.mark.parametrize(
    ("variant_policy", "inputs", "expected_last", "zero_at"),
    [
        pytest.param(None, [(IDLE, Prediction(0))] * 20, 1, None, id="zero-traffic-without-scale-to-zero-keeps-min"),
        pytest.param(ZERO_OK, [(IDLE, Prediction(0))] * 20, 0, 4, id="zero-traffic-with-scale-to-zero-after-window"),
        pytest.param(ZERO_OK, [(IDLE, Prediction(0))] * 3 + [(sig(), Prediction(1))] + [(IDLE, Prediction(0))] * 4,
                     1, None, id="one-busy-cycle-restarts-the-idle-window"),
        pytest.param(ZERO_OK, [(IDLE, Prediction(1))] * 20, 1, None, id="forecast-demand-is-not-idle"),
        pytest.param(ZERO_OK, [(IDLE, None)] * 6 + [(sig(waiting=2, running=0, kv=0.0), None)], 1, 4,
                     id="demand-at-zero-wakes-one-replica"),
    ],
)
def test_zero_traffic(variant_policy, inputs, expected_last, zero_at):
    behavior = Behavior(scale_down_window_s=0, max_step_down=1)
    seen = run(inputs, current=1, behavior=behavior, variant_policy=variant_policy)
    assert seen[-1] == expected_last, seen
    assert (seen.index(0) if 0 in seen else None) == zero_at, seen


def test_schedule_raises_the_minimum_with_its_own_reason():
    monday_nine = dt.datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    policy = VariantPolicy(role=Role.DECODE, accelerator="H100", schedule=Schedule(
        "Europe/Paris", (ScheduleWindow(days=frozenset(range(5)), start_s=8 * 3600, end_s=20 * 3600,
                                        min_replicas=4, name="business"),)))
    decision, _ = decide(spec=SPEC, signals=sig(kv=0.05), current=2, history=(), policy=ScalingPolicy(),
                         now=monday_nine, variant_policy=policy)
    assert (decision.desired, decision.reason) == (4, Reason.SCHEDULE_MINIMUM)
    assert "business" in decision.message


def test_policy_bounds_tighten_the_variant_autoscalings():
    policy = VariantPolicy(role=Role.DECODE, accelerator="H100", min_replicas=2, max_replicas=5)
    decision = once(signals=SATURATED, current=5, variant_policy=policy, behavior=Behavior(max_step_up=0))
    assert (decision.desired, decision.reason) == (5, Reason.TOO_MANY_REPLICAS)
