"""One core: the product's controller, built from a settings file, decides as the simulator's ``default`` does.

Both are handed the same cycle: the same simulated pools under load, the same signals (the signal source caches
one collection per instant), a fresh controller each. The simulator's policy goes through its own wiring
(:class:`autoscaler.sim.controlled.ControllerPolicy`), the product through its settings file and profile
catalogue, as ``variant-autoscaler run`` would; only the ports (Kubernetes, Prometheus) are the simulator's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoscaler import traces
from autoscaler.config import load_settings
from autoscaler.controller.wiring import assemble_controller, load_planner_profiles
from autoscaler.sim import Scenario, resolve_profile, simulate
from autoscaler.sim.controlled import ControllerPolicy
from autoscaler.sim.runner import SimContext
from autoscaler.traces import read_trace, window

AZURE = Path(traces.__file__).parent / "data" / "traces" / "azure_llm_2023_conv.csv"
PROFILE = resolve_profile("llama-3.1-8b/h100")


class TwinCycle:
    """Holds the warm-start fleet; at ``at`` runs one cycle of the simulator's default and of the product's
    controller on the same state, keeping both reports."""

    name = "twin"
    instant_capacity = False

    def __init__(self, *, at: float, settings_file: Path) -> None:
        self.at, self.settings_file = at, settings_file
        self.reports: dict[str, object] = {}

    def initial(self, ctx: SimContext):
        return None

    def start(self, ctx: SimContext) -> None:
        self.ctx = ctx

    def cycle(self, now: float) -> None:
        ctx = self.ctx
        if now < self.at:
            ctx.signals.collect(list(ctx.variants.specs.values()), now=now)  # the rate windows fill as they would
            return
        if self.reports:
            return
        sim = ControllerPolicy("default", apply_admission=False)
        sim.start(ctx)
        sim.cycle(now)
        settings = load_settings(self.settings_file)
        product = assemble_controller(settings, variants=ctx.variants, signals=ctx.signals, scaler=ctx.scaler,
                                      clock=ctx.clock, profiles=load_planner_profiles(settings), dry_run=True)
        self.reports = {"simulator": sim.reports[-1], "product": product.run_cycle()}


def decisions(report) -> dict[str, tuple[int, int, str, str]]:
    return {str(o.spec.ref): (o.decision.current, o.decision.desired, o.decision.reason.value, o.decision.message)
            for o in report.outcomes}


@pytest.mark.parametrize("engine_error", [pytest.param(1.0, id="profile-right"),
                                          pytest.param(1.3, id="engine-30pct-slower")])
def test_one_cycle_of_the_product_controller_and_of_the_simulators_default_decide_the_same(tmp_path, engine_error):
    scenario = Scenario(slo_ttft_s=1.0, slo_itl_s=0.05, warmup_s=0.0, tail_s=0.0,
                        engine_prefill_error=engine_error, engine_decode_error=engine_error)
    # What an operator writes for this cluster: the scenario's interval, SLO, lead time, nodes on demand.
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump({
        "controller": {"interval_s": scenario.interval_s},
        "slo": {"ttft_s": scenario.slo_ttft_s, "itl_s": scenario.slo_itl_s, "percentile": scenario.slo_percentile},
        "planner": {"nodes_on_demand": True,
                    "forecast_lead_time_s": scenario.node_delay(PROFILE) + scenario.pod_delay(PROFILE)},
    }))
    twin = TwinCycle(at=180.0, settings_file=settings_file)
    simulate(window(read_trace(AZURE), start_s=0.0, end_s=240.0), scenario, twin, profile=PROFILE)

    sim, product = decisions(twin.reports["simulator"]), decisions(twin.reports["product"])
    assert len(sim) == 2 and sim == product
    assert all("predictive" in message for *_, message in sim.values())  # a cycle the planner sized
    assert twin.reports["simulator"].outlooks == twin.reports["product"].outlooks
