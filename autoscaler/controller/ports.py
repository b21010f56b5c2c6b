"""The seams of the control loop. Real adapters: Prometheus + Kubernetes; the simulator provides its own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from autoscaler.core.types import Decision, VariantSignals, VariantSpec
from autoscaler.errors import SpecError

__all__ = ["VariantSource", "SignalSource", "Scaler", "Clock", "WallClock"]


class VariantSource(Protocol):
    def list_variants(self) -> tuple[list[VariantSpec], list[SpecError]]:
        """The variants to manage, and the objects that could not be understood."""
        ...


class SignalSource(Protocol):
    def collect(self, variants: Sequence[VariantSpec], *, now: float) -> dict[VariantSpec, VariantSignals]:
        """Signals for every variant; a variant without data maps to a MISSING entry (never raises for one)."""
        ...


class Scaler(Protocol):
    def current_replicas(self, spec: VariantSpec) -> int: ...

    def scale(self, spec: VariantSpec, replicas: int) -> None: ...

    def write_status(self, spec: VariantSpec, decision: Decision, *, scaled_at: float | None) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock) or since the start of a simulation."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()
