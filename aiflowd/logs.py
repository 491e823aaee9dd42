"""Logging setup: structlog JSON lines when not on a terminal (journald), a console otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog once for the process; context bound with contextvars shows on every line."""
    stream = stream or sys.stdout
    as_json = not stream.isatty() if json is None else json
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
