"""Online calibration across cycles: signals in, corrected profiles and a report per profile and stage out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from autoscaler.perf.calibration import Stage

__all__ = ["CalibrationReport"]


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
