"""Warm start reads as much history as the forecaster needs (days, for the daily season), in pieces Prometheus
answers, and takes the older past in at once: yesterday at this hour is known from the first cycle."""

from __future__ import annotations

import math

from autoscaler.controller.loop import WARM_START_POINTS, Controller
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.plan import PlannerConfig, PlannerState, warm_start
from autoscaler.core.types import Role, ScaleTarget, VariantRef, VariantSignals, VariantSpec
from autoscaler.forecast import ForecastConfig, Method
from autoscaler.signals.history import HistorySeries
from tests.core.history_series import history_series

DAY = 86400.0
STEP = 15.0
FORECAST = ForecastConfig(interval_s=STEP, lead_time_s=690.0, history_s=2 * DAY)
CONFIG = PlannerConfig(forecast=FORECAST)
MODEL = "m"


def spec(role: Role) -> VariantSpec:
    return VariantSpec(ref=VariantRef("ns", role.value), model=MODEL, role=role, accelerator="H100",
                       target=ScaleTarget("apps/v1", "Deployment", role.value), min_replicas=1, max_replicas=10)


def daily_rate(t: float) -> float:
    return 5.0 + 4.0 * math.sin(2 * math.pi * t / DAY)


def history(start: float, end: float) -> HistorySeries:
    ts = tuple(start + i * STEP for i in range(int((end - start) / STEP + 1e-9) + 1))
    return history_series(ts, tuple(daily_rate(t) for t in ts), (1000.0,) * len(ts), (200.0,) * len(ts))


def test_two_days_of_history_warm_the_forecaster_with_yesterday_and_score_the_last_hour():
    now = 3 * DAY
    past = history(now - 2 * DAY, now - STEP)
    state = warm_start(state=PlannerState(), histories={spec(Role.PREFILL): past, spec(Role.DECODE): past},
                       config=CONFIG)
    series = state.mixes[MODEL].arrival_rate
    assert len(series.values) == FORECAST.history_steps  # the whole two days kept, not one hour
    assert series.values[-1] == daily_rate(now - STEP) and series.last_time_s == now - STEP
    seasonal = series.methods.index(Method.SEASONAL_NAIVE)
    assert series.scored[seasonal].min() > 0  # the last hour was replayed: the back-test has scored it


class Source:
    """A signal source with history; records each read."""

    def __init__(self) -> None:
        self.reads: list[tuple[float, float, float]] = []

    def collect(self, variants, *, now):
        return {s: VariantSignals.unknown("test") for s in variants}

    def history(self, specs, *, start, end, step):
        self.reads.append((start, end, step))
        return {s: history(start, end) for s in specs}


class Variants:
    def list_variants(self):
        return [spec(Role.PREFILL), spec(Role.DECODE)], []


class Scaler:
    def current_replicas(self, spec):
        return 1

    def scale(self, spec, replicas):
        raise AssertionError("dry run")

    def write_status(self, spec, decision, *, scaled_at, insight=None):
        pass


class Clock:
    def now(self) -> float:
        return 3 * DAY


def test_the_controller_reads_the_forecasters_history_in_pieces_prometheus_answers():
    source = Source()
    controller = Controller(variants=Variants(), signals=source, scaler=Scaler(), policy=ScalingPolicy(),
                            clock=Clock(), dry_run=True, planner=CONFIG, warm_start_s=None)
    controller.run_cycle()
    assert source.reads[0][0] == 3 * DAY - FORECAST.history_s  # the forecaster's span, not one hour
    assert len(source.reads) == math.ceil(FORECAST.history_s / STEP / WARM_START_POINTS)
    for (start, end, step), (following, _, _) in zip(source.reads, source.reads[1:], strict=False):
        assert (end - start) / step + 1 <= WARM_START_POINTS and following == end + step  # contiguous
    assert source.reads[-1][1] == 3 * DAY - STEP
    values = controller._state.mixes[MODEL].arrival_rate.values
    assert len(values) == FORECAST.history_steps and values[0] == daily_rate(3 * DAY - FORECAST.history_s + STEP)
