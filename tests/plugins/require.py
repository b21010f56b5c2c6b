"""Skip locally, fail in CI: a test that needs a missing real component must not pass silently there."""

from __future__ import annotations

import os

import pytest

__all__ = ["in_ci", "require"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Skip (locally) or fail (CI=true) when ``what`` is not available."""
    if available:
        return
    if in_ci():
        pytest.fail(f"required component missing in CI: {what}", pytrace=False)
    pytest.skip(f"component missing: {what}")
