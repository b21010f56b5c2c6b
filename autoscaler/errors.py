"""The project's exceptions, one tree so callers can catch at the right depth.

    AutoscalerError
     ├── ConfigError        bad settings, policy or profile file (names the field)
     ├── SpecError          a VariantAutoscaling spec the controller cannot act on
     ├── SignalError        Prometheus unreachable or answering nonsense
     ├── ActuationError     the Kubernetes API refused or failed a change
     └── StackError         a local component (Prometheus, kube-apiserver, etcd) failed to build or start

Errors raised at an I/O boundary chain the original with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ActuationError",
    "AutoscalerError",
    "ConfigError",
    "SignalError",
    "SpecError",
    "StackError",
]


class AutoscalerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AutoscalerError):
    """Invalid configuration; ``field`` names the offending setting when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SpecError(AutoscalerError):
    """A VariantAutoscaling spec that cannot be acted on."""


class SignalError(AutoscalerError):
    """Signals could not be read (transport failure, bad response)."""


class ActuationError(AutoscalerError):
    """A change to the cluster failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StackError(AutoscalerError):
    """A local component failed to build or start."""
