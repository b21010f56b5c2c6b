"""Learning the engine under load: the simulated pods' signals (truth 30% off the profile) teach the profile.

The simulator's engines run the profile scaled by ``--engine-error`` and its signal source reports what the
Prometheus source would (busy time, passes, token rates, ITL, KV usage). Online calibration must bring the
profile's predictions at the operating point within 10% of the true engine in a bounded number of cycles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler import traces
from autoscaler.core.types import Role
from autoscaler.perf.calibration import Stage
from autoscaler.perf.online import OnlineCalibration, OnlineSettings, calibrated_profiles, observe
from autoscaler.sim import Scenario, resolve_profile, simulate
from autoscaler.sim.runner import SimContext
from autoscaler.traces import read_trace, window

AZURE = Path(traces.__file__).parent / "data" / "traces" / "azure_llm_2023_conv.csv"
CYCLES_BOUND = 16
"""Cycles (15 s each) from the first usable window to within 10%: 10 to fit (min_samples), the prior is worth 2."""


class Learner:
    """A fixed fleet whose every cycle feeds the controller's online calibration, recording the fitted profile's
    error against the true engine at the pools' operating point."""

    name = "learner"
    instant_capacity = False

    def __init__(self) -> None:
        self.errors: dict[Stage, list[float]] = {Stage.PREFILL: [], Stage.DECODE: []}
        """Per stage, from its first usable window on: the fitted profile's relative error, cycle by cycle."""

    def initial(self, ctx: SimContext):
        return None

    def start(self, ctx: SimContext) -> None:
        self.ctx, self.state, self.settings = ctx, OnlineCalibration(), OnlineSettings()
        self.truth = ctx.scenario.true_profile(ctx.profile)

    def cycle(self, now: float) -> None:
        ctx = self.ctx
        specs = list(ctx.variants.specs.values())
        signals = ctx.signals.collect(specs, now=now)
        for spec in specs:
            self.state = observe(self.state, profile=ctx.profile, role=spec.role, signals=signals[spec], now=now,
                                 settings=self.settings)
        fitted, _ = calibrated_profiles(self.state, profiles={ctx.profile.name: ctx.profile},
                                        settings=self.settings)
        learnt = fitted[ctx.profile.name]
        prefill, decode = signals[ctx.variants.specs[Role.PREFILL]], signals[ctx.variants.specs[Role.DECODE]]
        prompt = prefill.prompt_tokens_mean or 1000.0
        batch = (decode.decoding or 8.0) / max(decode.pods or 1, 1)
        context = 1500.0
        errors = {
            Stage.PREFILL: abs(learnt.prefill_time(prompt) / self.truth.prefill_time(prompt) - 1.0),
            Stage.DECODE: abs(learnt.decode_step_time(batch, context) / self.truth.decode_step_time(batch, context)
                              - 1.0),
        }
        for stage, error in errors.items():
            if self.state.samples(ctx.profile.name, stage):
                self.errors[stage].append(error)


def cycles_to_converge(errors: list[float], *, within: float = 0.10) -> int | None:
    """The first cycle (1-based, counted from the first usable window) from which the error stays within."""
    for i in range(len(errors)):
        if all(e <= within for e in errors[i:]):
            return i + 1
    return None


@pytest.mark.parametrize("error", [pytest.param(0.7, id="engine-30pct-faster"),
                                   pytest.param(1.3, id="engine-30pct-slower")])
def test_a_profile_30_percent_off_is_learnt_within_10_percent_from_loaded_pods_in_bounded_cycles(error):
    trace = window(read_trace(AZURE), start_s=0.0, end_s=600.0)
    scenario = Scenario(engine_prefill_error=error, engine_decode_error=error, warmup_s=0.0, tail_s=0.0)
    learner = Learner()
    simulate(trace, scenario, learner, profile=resolve_profile("llama-3.1-8b/h100"))

    for stage in (Stage.PREFILL, Stage.DECODE):
        errors = learner.errors[stage]
        assert errors[0] == pytest.approx(abs(1 / error - 1), rel=0.2)  # the profile starts 30% off the truth
        cycles = cycles_to_converge(errors)
        print(f"{stage.value}: within 10% of the true engine after {cycles} cycles (engine error {error})")
        assert cycles is not None and cycles <= CYCLES_BOUND, (stage, cycles, " ".join(f"{e:.3f}" for e in errors))
        assert np.mean(errors[-5:]) < errors[0] / 3, stage  # and keeps closing in as windows accumulate
