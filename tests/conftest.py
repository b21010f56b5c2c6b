"""Shared fixtures. Real-component fixtures live in tests/plugins/ and are loaded here."""

import collections.abc

import pytest
import structlog

pytest_plugins = [
    "tests.plugins.kube",
    "tests.plugins.prometheus",
    "tests.plugins.vllm",
]


@pytest.fixture(autouse=True)
def _structlog_configuration_restored() -> collections.abc.Iterator[None]:
    """Each test starts from the logging configuration the session started with: a command run in-process
    (``simulate`` configures level ``error``) would otherwise filter out the info events a later test captures
    with ``structlog.testing.capture_logs``."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
