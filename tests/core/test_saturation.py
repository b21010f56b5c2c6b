import pytest

from autoscaler.core.saturation import SaturationThresholds, recommend_saturation
from autoscaler.core.types import Freshness, Reason, VariantSignals

T = SaturationThresholds(queue_per_replica_high=2.0, kv_high=0.8, queue_per_replica_low=0.25, kv_low=0.4)


def fresh(waiting: float, kv: float, running: float = 0.0) -> VariantSignals:
    return VariantSignals(freshness=Freshness.FRESH, waiting=waiting, running=running, kv_usage_mean=kv)


@pytest.mark.parametrize(
    ("signals", "current", "replicas", "reason"),
    [
        pytest.param(fresh(12, 0.5), 2, 6, Reason.SATURATED, id="queue-over-threshold-scales-up-proportionally"),
        pytest.param(fresh(0, 0.95), 4, 5, Reason.SATURATED, id="kv-over-threshold-scales-up"),
        pytest.param(fresh(40, 0.5), 2, 20, Reason.SATURATED, id="deep-queue-recommends-many"),
        pytest.param(fresh(2, 0.5), 2, 2, Reason.WITHIN_TOLERANCE, id="in-band-holds"),
        pytest.param(fresh(0, 0.1), 4, 3, Reason.UNDERUTILISED, id="clearly-low-drops-one"),
        pytest.param(fresh(0, 0.4), 2, 2, Reason.WITHIN_TOLERANCE, id="consolidation-check-blocks-drop"),
        pytest.param(fresh(0, 0.1), 1, 1, Reason.WITHIN_TOLERANCE, id="never-below-one-by-itself"),
        pytest.param(fresh(0.6, 0.1), 2, 2, Reason.WITHIN_TOLERANCE, id="queue-not-low-enough-holds"),
        pytest.param(fresh(3, 0.0), 0, 1, Reason.SATURATED, id="demand-at-zero-wakes-one"),
        pytest.param(fresh(0, 0.0), 0, 0, Reason.WITHIN_TOLERANCE, id="idle-at-zero-stays"),
        pytest.param(VariantSignals(freshness=Freshness.MISSING), 3, 3, Reason.SIGNALS_MISSING, id="missing-holds"),
        pytest.param(VariantSignals(freshness=Freshness.STALE, waiting=0, kv_usage_mean=0), 3, 3,
                     Reason.SIGNALS_STALE, id="stale-holds"),
        pytest.param(VariantSignals(freshness=Freshness.FRESH, waiting=None, kv_usage_mean=0.1), 3, 3,
                     Reason.SIGNALS_MISSING, id="fresh-but-no-queue-holds"),
    ],
)
def test_recommends_replicas_from_saturation(signals, current, replicas, reason):
    step = recommend_saturation(signals=signals, current=current, thresholds=T)
    assert (step.replicas, step.reason) == (replicas, reason)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"kv_low": 0.9, "kv_high": 0.8}, id="kv-low-above-high"),
        pytest.param({"queue_per_replica_low": 3, "queue_per_replica_high": 2}, id="queue-low-above-high"),
        pytest.param({"kv_high": 1.5}, id="kv-high-above-one"),
    ],
)
def test_rejects_inconsistent_thresholds(kwargs):
    with pytest.raises(ValueError):
        SaturationThresholds(**kwargs)
