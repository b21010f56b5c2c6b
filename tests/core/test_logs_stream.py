"""Log lines go to the stderr of the moment: a CLI run under a test runner must not poison later logging."""

from __future__ import annotations

import io
import sys

from autoscaler.logs import configure_logging, get_logger


def test_logging_configured_under_a_swapped_stderr_writes_to_the_current_one(monkeypatch):
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    configure_logging(fmt="json")
    swapped.close()  # what a CLI runner does with its capture buffer
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    get_logger("test").warning("still_heard", n=1)
    assert '"event": "still_heard"' in now.getvalue()
