"""structlog set-up: JSON lines off a TTY (in-cluster, machine-read), a readable console on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging", "get_logger"]


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a CLI run under a
    test runner (or anything that swaps stderr for a while) would otherwise leave every later log line, from any
    thread, writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or _CurrentStderr()  # type: ignore[assignment]
    assert stream is not None
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **context: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name).bind(**context)  # type: ignore[no-any-return]
