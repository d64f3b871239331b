"""structlog configuration: JSON lines off a terminal, console on one, redaction always on."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from relay import redaction, tracing
from relay.model import LogFormat

# Whether DEBUG lines are kept. Module loggers are lazy proxies that bind a new logger on every
# call (so a later configure() reaches them); a per-delivery DEBUG line asks this first.
_debug = False


def configure(level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog process-wide; safe to call again (tests, CLI)."""
    global _debug
    out = stream if stream is not None else sys.stderr
    threshold = logging.getLevelNamesMapping()[level.upper()]
    _debug = threshold <= logging.DEBUG
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _trace_ids,
            # Last before rendering, so nothing added by an earlier processor escapes it.
            redaction.structlog_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A line logged inside a span (an event routed, an attempt) carries its trace_id and span_id."""
    ids = tracing.current_ids()
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


def debugging() -> bool:
    """Whether a DEBUG line would be written: ask before building one on a hot path."""
    return _debug


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
