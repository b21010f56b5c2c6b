"""Online calibration across cycles: signals in, corrected profiles and a report per profile and stage out.

Each cycle, :func:`observe` turns one variant's window of signals into calibration observations and keeps
them in a bounded window per (profile, stage); :func:`calibrated_profiles` fits each window
(:mod:`autoscaler.perf.calibration`: Huber, relative to the prior, bounded, blended) and returns the profiles
with the fitted coefficients where there is enough data. Pure: the state is a value, passed in and returned.

What one window says (all rates and means over the collector's rate window, so they describe the same
requests and steps):

- **Decode** (decode pods): the mean inter-token latency (ITL histogram ``_sum / _count``) is the mean step
  time; the batch is the time-averaged number of sequences in decode steps per pod (the ITL ``_sum`` rate:
  each step adds its duration once per sequence); ``batch * mean context`` is the KV tokens held per pod (the
  window-averaged KV usage times the profile's KV capacity), which is what the ``gamma`` term reads.
- **Prefill** (prefill pods): the mean of vLLM's ``request_prefill_time_seconds`` (first scheduled to first
  token: queueing excluded) against the mean prompt tokens computed (prefix-cache hits discounted) and
  E[N^2] for the attention term. Only while the pods are lightly loaded: under load several prompts share
  one forward pass and each reports the whole pass, which would read as a slower profile.
- **Prefill under load** (prefill pods, when the engines' busy time and pass count are read): the busy seconds
  per request against the passes, computed tokens and attention pairs per request. The busy time of a prefill
  pod is the sum of its passes, ``a*passes + b*tokens + c*pairs`` whatever the batching, so this holds at any
  load, and loaded windows (where capacity is decided) are the ones it reads best: many requests per window.

Aggregated (``both``) pods mix prompt chunks into decode steps, so neither stage is measured cleanly; they
are skipped unless :attr:`OnlineSettings.aggregated` says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from autoscaler.core.types import Role, VariantSignals
from autoscaler.perf.calibration import (
    CalibrationSettings,
    DecodeObservation,
    PrefillObservation,
    Stage,
    calibrate_decode,
    calibrate_prefill,
)
from autoscaler.perf.profile import PerformanceProfile

__all__ = [
    "SCRATCH_PREFIX",
    "CalibrationReport",
    "OnlineCalibration",
    "OnlineSettings",
    "calibrated_profiles",
    "decode_observation",
    "learnt_profiles",
    "observe",
    "prefill_observation",
    "scratch_prior",
]

SCRATCH_PREFIX = "learnt:"
"""Names of the profiles learnt from scratch for a model and accelerator no profile describes."""

Observation = DecodeObservation | PrefillObservation
WindowKey = tuple[str, Stage]  # profile name, stage


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """How one profile's stage (prefill or decode) compares with what its pods measure."""

    profile: str
    stage: Stage
    samples: int
    factor: float
    """Observed / prior-predicted latency at the operating point (1 = the profile is right)."""
    relative_error: float | None = None
    """Mean |observed - calibrated prediction| / observed over the samples; None before any fit."""
    coefficients: Mapping[str, float] = field(default_factory=dict)
    """The coefficients in use after calibration (e.g. alpha, beta, gamma for decode)."""
    applied: bool = False
    """Whether the fitted coefficients replaced the profile's (enough samples), or the prior was kept."""


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    window_samples: int = 240
    """Observations kept per profile and stage, newest last: at a 15 s cycle one variant fills it in an hour."""
    max_age_s: float = 3600.0
    """Observations older than this are dropped when a new one arrives: a driver, vLLM or model-config change
    alters the real coefficients, and an hour-old fit should not outvote it for long."""
    fit: CalibrationSettings = field(default_factory=CalibrationSettings)
    """The regression: minimum samples, prior weight, bound (see :class:`CalibrationSettings`)."""
    aggregated: bool = False
    """Also learn from aggregated (``both``) pods, whose steps mix prefill chunks into decode (biased)."""
    max_prefill_utilisation: float = 0.3
    """Prefill windows are used only while the prior says pods are busy less than this share of the time."""
    min_decode_batch: float = 0.5
    """Decode windows with fewer sequences per pod on average are mostly idle steps: too little to learn from."""
    scratch_bound: float = 30.0
    """Bound on a scratch profile's multipliers (see :func:`scratch_prior`): a generic prior may be off by an
    order of magnitude (a 70B on four GPUs against an 8B on one), where a shipped one is off by tens of percent."""

    def __post_init__(self) -> None:
        if self.window_samples < self.fit.min_samples:
            raise ValueError(f"window_samples ({self.window_samples}) must be >= min_samples "
                             f"({self.fit.min_samples}): a window that small could never be fitted")
        for name in ("max_age_s", "max_prefill_utilisation", "min_decode_batch", "scratch_bound"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class OnlineCalibration:
    """Per (profile name, stage), the latest observations with the time each was made (oldest first).

    A value: :func:`observe` returns a new one. Treat ``windows`` as read-only.
    """

    windows: Mapping[WindowKey, tuple[tuple[float, Observation], ...]] = field(default_factory=dict)

    def samples(self, profile: str, stage: Stage) -> int:
        return len(self.windows.get((profile, stage), ()))


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def decode_observation(*, profile: PerformanceProfile, signals: VariantSignals,
                       settings: OnlineSettings = OnlineSettings()) -> DecodeObservation | None:
    """One decode observation from a variant's window, or None when the window does not measure decode."""
    itl, decoding, kv = _positive(signals.itl_mean_s), _positive(signals.decoding), signals.kv_usage_window_mean
    pods = signals.pods
    if itl is None or decoding is None or kv is None or not math.isfinite(kv) or not pods:
        return None
    batch = decoding / pods
    if batch < settings.min_decode_batch:
        return None
    kv_tokens = max(kv, 0.0) * profile.kv_capacity_tokens
    return DecodeObservation(batch=batch, mean_context=kv_tokens / batch, itl_s=itl)


def prefill_observation(*, profile: PerformanceProfile, signals: VariantSignals,
                        settings: OnlineSettings = OnlineSettings()) -> PrefillObservation | None:
    """One prefill observation from a variant's window, or None when the window does not measure prefill.

    From the busy time when the window has it (any load), else from the prefill-time mean (light load only)."""
    prompt = _positive(signals.prompt_tokens_mean)
    rate, pods = _positive(signals.completions_per_s), signals.pods
    if prompt is None or rate is None or not pods:
        return None
    hit = signals.prefix_cache_hit_ratio or 0.0
    hit = min(max(hit, 0.0), 1.0) if math.isfinite(hit) else 0.0
    squares = _positive(signals.prompt_tokens_sq_mean) or prompt * prompt
    # Hits skip the first h*N tokens: N(1-h) computed, attending over N^2 - (hN)^2 token pairs (engine model).
    computed, pairs = prompt * (1.0 - hit), squares * (1.0 - hit * hit)
    if computed <= 0:
        return None
    busy, passes = _positive(signals.busy_per_s), _positive(signals.iterations_per_s)
    if busy is not None and passes is not None:
        # Per request: the window's busy seconds and passes over the requests it finished.
        return PrefillObservation(prompt_tokens=computed, prefill_s=busy / rate, sum_squared_tokens=pairs,
                                  passes=passes / rate)
    prefill_s = _positive(signals.prefill_time_mean_s)
    if prefill_s is None:
        return None
    utilisation = rate / pods * profile.prefill_time(computed)
    if utilisation > settings.max_prefill_utilisation:
        return None
    return PrefillObservation(prompt_tokens=computed, prefill_s=prefill_s, sum_squared_tokens=pairs)


def observe(state: OnlineCalibration, *, profile: PerformanceProfile, role: Role, signals: VariantSignals,
            now: float, settings: OnlineSettings = OnlineSettings()) -> OnlineCalibration:
    """``state`` with this cycle's observations of one variant added (unchanged when it has none).

    Only windows that are fresh, with every pod past its warm-up and traffic flowing count
    (:attr:`VariantSignals.calibration_ready`).
    """
    if not signals.calibration_ready:
        return state
    learn_both = role is Role.BOTH and settings.aggregated
    new: list[tuple[Stage, Observation]] = []
    if role is Role.DECODE or learn_both:
        decode = decode_observation(profile=profile, signals=signals, settings=settings)
        if decode is not None:
            new.append((Stage.DECODE, decode))
    if role is Role.PREFILL or learn_both:
        prefill = prefill_observation(profile=profile, signals=signals, settings=settings)
        if prefill is not None:
            new.append((Stage.PREFILL, prefill))
    if not new:
        return state
    windows = dict(state.windows)
    for stage, observation in new:
        key = (profile.name, stage)
        kept = tuple(s for s in windows.get(key, ()) if now - s[0] <= settings.max_age_s)
        windows[key] = (*kept, (now, observation))[-settings.window_samples:]
    return OnlineCalibration(windows=windows)


def calibrated_profiles(state: OnlineCalibration, *, profiles: Mapping[str, PerformanceProfile],
                        settings: OnlineSettings = OnlineSettings()
                        ) -> tuple[dict[str, PerformanceProfile], tuple[CalibrationReport, ...]]:
    """The profiles with fitted coefficients where a window has ``fit.min_samples`` observations (unchanged
    elsewhere), and one report per (profile, stage) with observations, in name order.

    Each stage is fitted from the profile as given (the prior), never from an earlier fit, so corrections do
    not compound across cycles.
    """
    out = dict(profiles)
    reports: list[CalibrationReport] = []
    for (name, stage), window in sorted(state.windows.items()):
        prior = profiles.get(name)
        if prior is None or not window:
            continue
        observations = [o for _, o in window]
        fit_settings = settings.fit
        if name.startswith(SCRATCH_PREFIX):
            # Only the borrowed shape is a prior: its scale is some other model's (see scratch_prior).
            fit_settings = dataclasses.replace(fit_settings, bound=max(fit_settings.bound, settings.scratch_bound),
                                               prior_scale_known=False)
        if stage is Stage.DECODE:
            fit = calibrate_decode(profile=prior, observations=[o for o in observations
                                                                if isinstance(o, DecodeObservation)],
                                   settings=fit_settings)
        else:
            fit = calibrate_prefill(profile=prior, observations=[o for o in observations
                                                                 if isinstance(o, PrefillObservation)],
                                    settings=fit_settings)
        applied = fit.samples >= settings.fit.min_samples
        if applied:
            out[name] = fit.apply(out[name])
        reports.append(CalibrationReport(profile=name, stage=stage, samples=fit.samples, factor=fit.correction,
                                         relative_error=fit.relative_error if applied else None,
                                         coefficients=fit.coefficients, applied=applied))
    return out, tuple(reports)


def scratch_prior(*, model: str, accelerator: str, reference: PerformanceProfile) -> PerformanceProfile:
    """The prior a model and accelerator without a profile are learnt from: ``reference``'s shape (latency terms,
    scheduler limits, start-up) under this model's and accelerator's names, named ``learnt:<model>/<accelerator>``.

    Only the shape carries over; the loaded pods' windows fit its scale (within :attr:`OnlineSettings.scratch_bound`),
    and until both stages are fitted the variant is decided reactively (see ``learnt_profiles``)."""
    return dataclasses.replace(reference, name=f"{SCRATCH_PREFIX}{model.lower()}/{accelerator.lower()}", model=model,
                               accelerator=accelerator)


def learnt_profiles(state: OnlineCalibration, profiles: Mapping[str, PerformanceProfile],
                    reports: tuple[CalibrationReport, ...]) -> dict[str, PerformanceProfile]:
    """``profiles`` without the scratch profiles not yet fitted on both stages: a variant planned with one of those
    would be sized by a generic guess, so it stays reactive until its pods have taught both stages."""
    applied = {(r.profile, r.stage) for r in reports if r.applied}
    return {name: p for name, p in profiles.items()
            if not name.startswith(SCRATCH_PREFIX) or all((name, st) in applied for st in Stage)}
