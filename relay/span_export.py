"""Where finished spans go: the OTLP exporter the standard OTEL_* variables choose, behind a bounded
queue that drops (and counts) rather than wait. Imported only when tracing is on.

`OTEL_TRACES_EXPORTER` (otlp, console or none) and `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` /
`OTEL_EXPORTER_OTLP_PROTOCOL` (http/protobuf, the default, or grpc) choose the exporter; the
exporters read their endpoint, headers, timeout and certificates from their own OTEL_* variables,
and the batch processor its delays from OTEL_BSP_*. A delivery never waits for an export: at most
OTEL_BSP_MAX_QUEUE_SIZE spans wait, the rest are dropped, and so are the spans of a failed export
(it_relay_trace_spans_dropped_total{reason}).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Final

import structlog
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import Counter

from relay.errors import ConfigError

PROTOCOLS: Final = ("http/protobuf", "grpc")
EXPORTERS: Final = ("otlp", "console", "none")
_DEFAULT_QUEUE: Final = 2048
# The SDK's own log lines (an export failed, retrying): at most one per this many seconds each.
_LOG_EVERY_S: Final = 60.0


def exporter_from_environment() -> SpanExporter | None:
    """The exporter OTEL_TRACES_EXPORTER and the OTLP protocol variables name (None: `none`)."""
    chosen = [
        name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()
    ]
    for name in chosen:
        if name not in EXPORTERS:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: {name[:40]!r} is not one of {', '.join(EXPORTERS)}")
    if "otlp" in chosen:
        return _otlp()
    if "console" in chosen:
        return ConsoleSpanExporter()
    return None


def _otlp() -> SpanExporter:
    variable = (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol = os.environ.get(variable, "").strip() or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    raise ConfigError(f"{variable}: {protocol[:40]!r} is not one of {', '.join(PROTOCOLS)}")


def queue_size() -> int:
    """OTEL_BSP_MAX_QUEUE_SIZE: how many finished spans may wait for the exporter."""
    text = os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip()
    if not text:
        return _DEFAULT_QUEUE
    if not text.isdigit() or int(text) == 0:
        raise ConfigError(f"OTEL_BSP_MAX_QUEUE_SIZE: {text[:40]!r} is not a positive integer")
    return int(text)


class CountingExporter(SpanExporter):
    """An exporter that counts what it was handed, and what a failed export lost."""

    def __init__(self, exporter: SpanExporter, dropped: Counter) -> None:
        self._exporter = exporter
        self._failed = dropped.labels("export_failed")
        # Written by the batch processor's thread only; read by the gate in the event loop's.
        self.taken = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self._exporter.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failed.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class BoundedBatch(SpanProcessor):
    """The SDK's batch processor behind a gate: at most `limit` spans wait for the exporter; past
    that a finished span is dropped here, at once, and counted (`queue_full`).

    The gate counts spans handed on minus spans the exporter took, which is never less than what
    waits in the batch processor's queue; that queue is made larger than the limit, so it never
    drops one uncounted.
    """

    def __init__(self, exporter: SpanExporter, dropped: Counter, limit: int) -> None:
        self._exporter = CountingExporter(exporter, dropped)
        self._full = dropped.labels("queue_full")
        self._limit = limit
        self._handed = 0
        batch = int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip() or 512)
        self._batch = BatchSpanProcessor(self._exporter, max_queue_size=limit + max(batch, 1))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._handed - self._exporter.taken >= self._limit:
            self._full.inc()
            return
        self._handed += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


class SdkLogs(logging.Handler):
    """The SDK's and the exporters' own log lines (stdlib logging) as the relay's JSON lines, each
    kind at most once a minute: a collector that is down says so without flooding the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._log = structlog.get_logger("relay.tracing")
        self._last: dict[tuple[str, int], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        key = (record.pathname, record.lineno)
        if now - self._last.get(key, -_LOG_EVERY_S) < _LOG_EVERY_S:
            return
        self._last[key] = now
        try:
            self._log.warning("tracing: " + record.getMessage()[:300], source=record.name)
        except Exception:
            self.handleError(record)
