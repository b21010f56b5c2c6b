"""Property: whatever numbers a cycle sees, it decides every variant, holds (with a reason) the ones whose numbers
are not known, finite observations, and scales down or to zero only on known ones (issue 16)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.core.behavior import Behavior
from autoscaler.core.plan import PlannerConfig, PlannerState, VariantObservation, plan_cycle
from autoscaler.core.policyset import ModelPolicy, PolicySet, VariantPolicy
from autoscaler.core.types import (
    Freshness,
    Reason,
    Role,
    ScaleTarget,
    VariantRef,
    VariantSignals,
    VariantSpec,
)
from autoscaler.forecast import ForecastConfig
from autoscaler.perf.profiles import default_profiles

PROFILES = default_profiles()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CONFIG = PlannerConfig(forecast=ForecastConfig(interval_s=15, lead_time_s=60, history_s=3600))
POLICY = PolicySet(
    behavior=Behavior(scale_down_window_s=0, max_step_up=0, max_step_down=0),
    models=(ModelPolicy(MODEL, variants=tuple(VariantPolicy(role, "H100", scale_to_zero=True, idle_window_s=10)
                                              for role in (Role.PREFILL, Role.DECODE))),),
)
SPECS = [VariantSpec(ref=VariantRef("ns", role.value), model=MODEL, role=role, accelerator="H100",
                     target=ScaleTarget("apps/v1", "Deployment", role.value), min_replicas=1, max_replicas=20)
         for role in (Role.PREFILL, Role.DECODE)]

FRACTIONS = {"kv_usage_mean", "kv_usage_max", "kv_usage_window_mean", "prefix_cache_hit_ratio"}
FIELDS = ["waiting", "running", "kv_usage_mean", "kv_usage_max", "completions_per_s", "prompt_tokens_per_s",
          "generation_tokens_per_s", "prompt_tokens_mean", "prompt_tokens_p90", "generation_tokens_mean",
          "generation_tokens_p90", "prefix_cache_hit_ratio", "ttft_p90_s", "itl_p90_s", "preemptions_per_s",
          "itl_mean_s", "decoding", "kv_usage_window_mean", "prefill_time_mean_s", "prompt_tokens_sq_mean"]
BAD_KINDS = {"nan", "inf", "-inf", "negative", "huge"}
KINDS = ["missing", "zero", "normal", "normal", "normal", "nan", "inf", "-inf", "negative", "huge"]


@dataclass(frozen=True)
class Drawn:
    signals: VariantSignals
    kinds: dict[str, str]


def _value(name: str, kind: str, normal: float) -> float | None:
    return {"missing": None, "zero": 0.0, "normal": normal, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
            "negative": -normal - 1.0, "huge": 1e308}[kind]


@st.composite
def drawn_signals(draw: st.DrawFn) -> Drawn:
    kinds, values = {}, {}
    for name in FIELDS:
        kind = draw(st.sampled_from(KINDS))
        upper = 1.0 if name in FRACTIONS else 5_000.0
        normal = draw(st.floats(min_value=0.001, max_value=upper))
        kinds[name], values[name] = kind, _value(name, kind, normal)
    freshness = draw(st.sampled_from([Freshness.FRESH] * 4 + [Freshness.STALE, Freshness.MISSING]))
    pods = draw(st.sampled_from([None, 0, 1, 2, 4]))
    return Drawn(VariantSignals(freshness=freshness, pods=pods, **values), kinds)


def known(d: Drawn, *names: str) -> bool:
    return all(d.kinds[n] in ("zero", "normal") for n in names)


def trusted(d: Drawn) -> bool:
    """A known, finite observation: fresh, nothing impossible anywhere, queue and KV use read."""
    return (d.signals.freshness is Freshness.FRESH and not BAD_KINDS & set(d.kinds.values())
            and known(d, "waiting", "kv_usage_mean"))


def known_idle(d: Drawn) -> bool:
    s = d.signals
    return (trusted(d) and known(d, "running", "completions_per_s") and s.waiting == 0 and s.running == 0
            and s.completions_per_s == 0 and s.kv_usage_mean is not None and s.kv_usage_mean <= 0.01)


HOLD_REASONS = {Reason.SIGNALS_MISSING, Reason.SIGNALS_STALE, Reason.SIGNALS_INVALID}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles=st.lists(st.tuples(drawn_signals(), drawn_signals()), min_size=1, max_size=3),
       currents=st.tuples(st.integers(0, 6), st.integers(0, 6)))
def test_no_signal_value_escapes_a_cycle_or_scales_down_on_what_is_not_known(cycles, currents):
    state, current = PlannerState(), dict(zip(SPECS, currents, strict=True))
    for i, drawn in enumerate(cycles):
        by_spec = dict(zip(SPECS, drawn, strict=True))
        observations = [VariantObservation(s, by_spec[s].signals, current[s]) for s in SPECS]
        plan, state = plan_cycle(observations=observations, state=state, profiles=PROFILES, policy=POLICY,
                                 config=CONFIG, now=1000.0 + 15.0 * i)
        for s in SPECS:
            d, decision = by_spec[s], plan.decision(s.ref)
            assert decision is not None and decision.steps and decision.message
            if decision.desired < current[s]:
                assert trusted(d), (s.role, d.kinds, d.signals.freshness, decision.message)
            if decision.desired == 0 < current[s]:
                assert known_idle(d), (s.role, d.kinds, decision.message)
            if not trusted(d) and decision.desired == current[s] > 0:
                assert decision.steps[0].reason in HOLD_REASONS or decision.reason in HOLD_REASONS, \
                    (d.kinds, decision.message)
            current[s] = decision.desired
