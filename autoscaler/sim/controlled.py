"""Policies that run the product's control loop, :class:`autoscaler.controller.loop.Controller`, unchanged.

The controller is assembled by the product's own wiring (:func:`autoscaler.controller.wiring.assemble_controller`:
planner, policy, online calibration, from the product's settings with the scenario's interval and SLO) on the
simulator's ports (variant source, signal source, scaler, clock) and the scenario's profile:

- ``default``: the planner predictive (forecast upper quantile over the lead time, capacity from the profile,
  cost-optimal allocation, saturation on top, prediction-based early rejection). The gateway applies the
  admission ratio each cycle reports for the model (``CycleReport.outlooks``): that share of new requests is
  admitted, drawn with the scenario's seed;
- ``saturation``: the planner reactive only (``predictive=False``): llm-d WVA-style saturation scaling.

A controller that has been running has stabilisation history and a warmed forecaster; a fresh one has neither
(its first cycle may scale down at once). So the controller first runs in dry-run (it observes, decides and
learns, changes nothing) until ``SimContext.live_from_s``, during the unmeasured warm-up, then goes live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from autoscaler.config import Settings, load_settings
from autoscaler.controller.loop import Controller, CycleReport
from autoscaler.controller.wiring import assemble_controller, planner_config
from autoscaler.core.decide import ScalingPolicy
from autoscaler.core.plan import PlannerConfig
from autoscaler.forecast import Method
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.sim.runner import SimContext
from autoscaler.sim.scenario import Scenario
from autoscaler.sim.sizing import Sizing

__all__ = ["ControllerPolicy", "product_planner", "product_settings", "scenario_profile"]


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out


def product_settings(*, scenario: Scenario, profile: PerformanceProfile, predictive: bool = True,
                     admission_enforced: bool = False, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The product's settings for this scenario: its interval, SLO, lead time and node behaviour.

    ``overrides`` are settings in the shape of the settings file (``{"planner": {"backlog_drain_s": 30}}``),
    applied over the scenario's: how a tuned default is tried without touching the simulator.
    """
    s = scenario
    base: dict[str, Any] = {
        "controller": {"interval_s": s.interval_s},
        "slo": {"ttft_s": s.slo_ttft_s, "itl_s": s.slo_itl_s, "percentile": s.slo_percentile},
        # The signals' rate window is the simulator's (the planner recovers arrivals over it).
        "prometheus": {"rate_window": f"{s.rate_window_s:g}s"},
        "planner": {"predictive": predictive, "gateway_enforces_admission": admission_enforced,
                    # Every pod the simulated cluster adds beyond a free GPU waits for a new node.
                    "nodes_on_demand": s.node_delay(profile) > 0,
                    "forecast_lead_time_s": max(s.interval_s, s.node_delay(profile) + s.pod_delay(profile))},
    }
    return load_settings(None, _merge(base, overrides or {}))


def product_planner(*, scenario: Scenario, profile: PerformanceProfile, predictive: bool = True,
                    quantile: float | None = None,
                    methods: tuple[Method, ...] | None = None,
                    overrides: Mapping[str, Any] | None = None) -> tuple[PlannerConfig, ScalingPolicy]:
    """The planner configuration and scaling policy the product builds from its settings, for this scenario."""
    settings = product_settings(scenario=scenario, profile=profile, predictive=predictive, overrides=overrides)
    config = planner_config(settings)
    if quantile is not None:
        config = replace(config, forecast=replace(config.forecast, quantile=quantile))
    if methods is not None:
        config = replace(config, forecast=replace(config.forecast, methods=methods))
    return config, settings.scaling_policy()


def scenario_profile(scenario: Scenario, profile: PerformanceProfile) -> PerformanceProfile:
    """The profile with the scenario's pod and node start-up (``--pod-delay``, ``--node-delay`` override it)."""
    return replace(profile, startup_s=scenario.pod_delay(profile), node_startup_s=scenario.node_delay(profile))


@dataclass
class ControllerPolicy:
    """The real controller on the simulated cluster (see the module docstring)."""

    name: str = "default"
    predictive: bool = True
    apply_admission: bool = True
    """The gateway admits the share of requests the cycle's admission ratio says (early rejection)."""
    per_request_gateway: bool = False
    """With ``apply_admission``: the gateway judges each request on the pools' state instead
    (:class:`autoscaler.sim.gateway.SimGateway`). The planner then reads the admitted rate as it is: its ratio is
    not what was applied, and dividing by it reads a phantom surge."""
    quantile: float | None = None
    """Forecast quantile capacity covers; None = the product's default."""
    methods: tuple[Method, ...] | None = None
    """Forecasting methods; None = the product's default (all of them)."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Product settings to change, in the settings file's shape (see :func:`product_planner`)."""
    instant_capacity: bool = False
    profiled: bool = True
    """False: the controller is given no profile for the scenario's model and accelerator (a model nobody has
    profiled): it starts reactive and learns the engine from its pods."""
    _ctx: SimContext | None = field(default=None, init=False, repr=False)
    _controller: Controller | None = field(default=None, init=False, repr=False)
    _ratio: float = field(default=1.0, init=False, repr=False)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False)
    reports: list[CycleReport] = field(default_factory=list, init=False, repr=False)

    def initial(self, ctx: SimContext) -> Sizing | None:
        return None  # the common warm start, whatever this controller's own settings

    def start(self, ctx: SimContext) -> None:
        self._ctx = ctx
        # The planner recovers arrivals by dividing by its own ratio only where the gateway applies that ratio.
        enforced = self.apply_admission and self.predictive and not self.per_request_gateway
        settings = product_settings(scenario=ctx.scenario, profile=ctx.profile, predictive=self.predictive,
                                    admission_enforced=enforced, overrides=self.overrides)
        controller = assemble_controller(settings, variants=ctx.variants, signals=ctx.signals, scaler=ctx.scaler,
                                         clock=ctx.clock, dry_run=True,
                                         profiles={ctx.profile.name: scenario_profile(ctx.scenario, ctx.profile)}
                                         if self.profiled else {})
        forecast = controller.planner.forecast
        if self.quantile is not None:
            forecast = replace(forecast, quantile=self.quantile)
        if self.methods is not None:
            forecast = replace(forecast, methods=self.methods)
        controller.planner = replace(controller.planner, forecast=forecast)
        self._controller = controller
        self._ratio = 1.0
        self._rng = np.random.default_rng(ctx.scenario.seed)
        self.reports = []
        if self.apply_admission and self.predictive and self.per_request_gateway:
            from autoscaler.core.admission import LatencySLO
            from autoscaler.sim.gateway import SimGateway

            slo = LatencySLO(ttft_s=ctx.scenario.slo_ttft_s, tbt_s=ctx.scenario.slo_itl_s)
            # The planner's own admission decision, per request (issue 18). On azure-surge-70b it serves as the
            # per-sequence rule with the spread of output lengths it replaced did: 43.8% within both SLOs, 47.1
            # GPU-h, 20,099 rejected against 43.7%, 47.8 GPU-h, 19,851.
            ctx.cluster.admission = SimGateway(cluster=ctx.cluster, slo=slo)
        elif self.apply_admission and self.predictive:
            rng = self._rng
            ctx.cluster.admission = lambda _i, _at: self._ratio >= 1.0 or bool(rng.random() < self._ratio)

    def cycle(self, now: float) -> None:
        ctx, controller = self._ctx, self._controller
        assert ctx is not None and controller is not None
        controller.dry_run = now < ctx.live_from_s - 1e-9
        report = controller.run_cycle()
        outlook = report.outlooks.get(ctx.profile.model)
        # Applied in dry-run too (the unmeasured warm-up): the planner sizes from arrivals as the admitted rate
        # over the ratio it set, so the gateway must have applied it.
        self._ratio = outlook.admission_ratio if outlook is not None else 1.0
        self.reports.append(report)
