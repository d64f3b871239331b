"""OpenTelemetry tracing (`[tracing] enabled`): the producer's trace, continued through the relay.

The journal keeps each event's W3C traceparent (the producer's `SET LOCAL it_relay.traceparent`,
a legacy notification's field, or the scheduler's emission span). Routing an event is a CONSUMER
span under it (an event that came without one keeps its routing span's, so its deliveries join
that trace); each attempt is a CLIENT span (HTTP) or a PRODUCER span (a broker's publish) under
it, and its own traceparent goes out with the webhook or message, so the subscriber's
instrumentation joins the trace.

Off (the default) nothing of OpenTelemetry is imported and the loops hold None: the off path is
one `is None` test per batch and per attempt. On, spans are exported by `relay.span_export`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit
from uuid import UUID

from prometheus_client import Counter

from relay import __version__
from relay.ingest import traceparent as valid_traceparent
from relay.model import Answer, ClaimedDelivery, Rejection, RoutedEvent
from relay.redaction import mask_url

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue

# The journal is a PostgreSQL outbox: what its spans name as the messaging system.
JOURNAL_SYSTEM: Final = "postgresql"
_BROKERS: Final = {"amqp": "rabbitmq", "amqps": "rabbitmq", "nats": "nats", "tls": "nats"}
_PORTS: Final = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671, "nats": 4222, "tls": 4222}
_ERROR_NAME = re.compile(r"([A-Za-z_][\w.]{0,63}):")
# At shutdown, what is still queued gets this long to go out; then the relay stops anyway.
_SHUTDOWN_S: Final = 5.0
# Parent contexts remembered (an event's routing span and its attempts continue the same one).
_PARENTS_KEPT: Final = 4096

# Set once tracing started in this process: until then no span can be current, and the helpers
# the loops call on every delivery return at once.
_started = False


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id (hex), for a log line; None without one."""
    if not _started:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context.is_valid else None


def name_destination(name: str, routing_key: str | None = None) -> None:
    """A broker names where the current attempt's message goes (its publish span; no-op when off)."""
    if not _started:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"publish {name}")
        span.set_attribute("messaging.destination.name", name)
        if routing_key is not None:
            span.set_attribute("messaging.rabbitmq.destination.routing_key", routing_key)


def error_type(answer: Answer) -> str:
    """A low-cardinality name for why an attempt was not delivered (semantic conventions' error.type)."""
    if answer.status is not None:
        return str(answer.status)
    text = answer.error or ""
    if "timeout" in text or "timed out" in text:
        return "timeout"
    match = _ERROR_NAME.match(text)
    return match.group(1) if match else "_OTHER"


def _parent(traceparent: str | None) -> Context:
    """The context a span continues: the event's trace, or none (a new trace)."""
    from opentelemetry import trace
    from opentelemetry.context import Context

    if valid_traceparent(traceparent) is None:
        return Context()
    assert traceparent is not None
    remote = trace.SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(traceparent[53:55], 16)),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())


def traceparent_of(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class Tracing:
    """The relay's tracer: the spans of routing, attempts and scheduler passes."""

    def __init__(self, provider: TracerProvider, channel: str) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("it-relay", __version__)
        self._channel = channel
        self._targets: dict[tuple[str, str], _Target] = {}
        self._parents: dict[str | None, Context] = {}

    def routing(self) -> RoutingSpans:
        return RoutingSpans(self._tracer, self._channel, self._parent)

    def _parent(self, traceparent: str | None) -> Context:
        """The context a span continues, remembered: an event's routing and attempts share it."""
        known = self._parents.get(traceparent)
        if known is None:
            if len(self._parents) >= _PARENTS_KEPT:
                self._parents.clear()
            known = self._parents[traceparent] = _parent(traceparent)
        return known

    def attempt(self, url: str, subscriber: str, item: ClaimedDelivery, attempt: int) -> AttemptSpan:
        """An attempt's span, under the event's trace, made current for the rest of the delivery's
        task (a broker names its destination on it, the round's log lines carry its ids): each
        delivery runs in a task of its own, whose context ends with it."""
        from opentelemetry import context, trace

        target = self._targets.get((url, subscriber)) or self._target(url, subscriber)
        # Few attributes: each costs the SDK a check and the exporter an encoding, per attempt.
        attributes = {**target.attributes, "it_relay.event_id": str(item.event_id)}
        if target.system == "rabbitmq":
            attributes["messaging.message.id"] = str(item.event_id)
        elif target.system == "nats":
            attributes["messaging.message.id"] = f"{item.event_id}:{subscriber}:{item.generation}"
        elif attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        span = self._tracer.start_span(
            target.name, context=self._parent(item.traceparent), kind=target.kind, attributes=attributes
        )
        context.attach(trace.set_span_in_context(span))
        return AttemptSpan(span)

    def _target(self, url: str, subscriber: str) -> _Target:
        from opentelemetry.trace import SpanKind

        parts = urlsplit(url)
        try:
            port = parts.port or _PORTS.get(parts.scheme, 0)
        except ValueError:
            port = 0
        attributes: dict[str, AttributeValue] = {
            "server.address": parts.hostname or "",
            "server.port": port,
            "it_relay.subscriber": subscriber,
        }
        system = _BROKERS.get(parts.scheme)
        if system is None:
            attributes |= {"http.request.method": "POST", "url.full": mask_url(url)}
            target = _Target("POST", SpanKind.CLIENT, None, attributes)
        else:
            attributes |= {
                "messaging.system": system,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
            }
            target = _Target("publish", SpanKind.PRODUCER, system, attributes)
        self._targets[(url, subscriber)] = target
        return target

    @contextlib.contextmanager
    def scheduler_pass(self) -> Iterator[None]:
        """A scheduler pass: a trace of its own, current while it runs."""
        from opentelemetry.context import Context

        with self._tracer.start_as_current_span("scheduler pass", context=Context()):
            yield

    @contextlib.contextmanager
    def emitting(self, event_type: str, event_id: UUID) -> Iterator[str]:
        """A scheduled event's publish span (under the pass's); yields the traceparent the journal keeps."""
        from opentelemetry.trace import SpanKind

        attributes: dict[str, AttributeValue] = {
            "messaging.system": JOURNAL_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": self._channel,
            "messaging.message.id": str(event_id),
            "it_relay.event_type": event_type,
        }
        name = f"publish {self._channel}"
        with self._tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
            yield traceparent_of(span)

    def flush(self) -> None:
        self.provider.force_flush()

    async def aclose(self) -> None:
        """Export what is queued (bounded: an unreachable collector never holds up the stop)."""
        done = threading.Event()

        def shutdown() -> None:
            with contextlib.suppress(Exception):
                self.provider.shutdown()
            done.set()

        # A daemon thread: a shutdown stuck on the network must not keep the process alive either.
        threading.Thread(target=shutdown, name="tracing-shutdown", daemon=True).start()
        await asyncio.to_thread(done.wait, _SHUTDOWN_S)


class _Target:
    """What every attempt's span to one destination shares."""

    __slots__ = ("attributes", "kind", "name", "system")

    def __init__(
        self, name: str, kind: SpanKind, system: str | None, attributes: dict[str, AttributeValue]
    ) -> None:
        self.name = name
        self.kind = kind
        self.system = system
        self.attributes = attributes


class AttemptSpan:
    """One attempt's span: its trace context goes out with the request; the answer ends it."""

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span) -> None:
        self._span = span
        self.headers = {"traceparent": traceparent_of(span)}
        state = span.get_span_context().trace_state
        if state:
            self.headers["tracestate"] = state.to_header()

    def answered(self, answer: Answer) -> None:
        span = self._span
        if span.is_recording():
            if answer.status is not None:
                span.set_attribute("http.response.status_code", answer.status)
            if answer.outcome != "delivered":
                self._error(error_type(answer))
        span.end()

    def failed(self, exc: BaseException) -> None:
        """The attempt raised (a bug, or the relay stopping): its span ends with the error's name."""
        self._error(type(exc).__qualname__)
        self._span.end()

    def _error(self, name: str) -> None:
        from opentelemetry.trace import StatusCode

        self._span.set_attribute("error.type", name)
        self._span.set_status(StatusCode.ERROR)


class RoutingSpans:
    """One routing batch's spans: a CONSUMER span per event, ended once the batch's routing committed."""

    def __init__(self, tracer: Tracer, channel: str, parent: Callable[[str | None], Context]) -> None:
        self._tracer = tracer
        self._channel = channel
        self._parent = parent
        self._spans: dict[UUID, tuple[Span, bool]] = {}

    def start(self, event_id: UUID, traceparent: str | None) -> None:
        from opentelemetry.trace import SpanKind

        attributes: dict[str, AttributeValue] = {
            "messaging.system": JOURNAL_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "route",
            "messaging.destination.name": self._channel,
            "messaging.message.id": str(event_id),
        }
        span = self._tracer.start_span(
            f"process {self._channel}",
            context=self._parent(traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        self._spans[event_id] = (span, valid_traceparent(traceparent) is None)

    def routed(self, event: RoutedEvent) -> RoutedEvent:
        """The event routed; one that came without a trace context takes its routing span's."""
        span, fresh = self._spans[event.event_id]
        if span.is_recording():
            span.set_attribute("it_relay.event_type", event.event_type)
        return replace(event, traceparent=traceparent_of(span)) if fresh else event

    def rejected(self, event_id: UUID, rejection: Rejection) -> None:
        """A rejection: an event on the span with its reason (never the payload, nor the errors)."""
        from opentelemetry.trace import StatusCode

        span, _ = self._spans[event_id]
        if span.is_recording():
            span.add_event("it_relay.rejected", {"it_relay.rejection.reason": rejection.reason})
            span.set_attribute("error.type", rejection.reason)
            span.set_status(StatusCode.ERROR)

    @contextlib.contextmanager
    def about(self, event_id: UUID) -> Iterator[None]:
        """The event's span current (for a log line about it)."""
        from opentelemetry import trace

        with trace.use_span(self._spans[event_id][0], end_on_exit=False):
            yield

    def forget(self, event_ids: Iterable[UUID]) -> None:
        """Events another instance routed: their spans are never ended, so never exported."""
        for event_id in event_ids:
            self._spans.pop(event_id, None)

    def end(self) -> None:
        for span, _ in self._spans.values():
            span.end()


def about(spans: RoutingSpans | None, event_id: UUID) -> contextlib.AbstractContextManager[None]:
    """Log lines about `event_id` inside this carry its routing span's ids (nothing when off)."""
    return spans.about(event_id) if spans is not None else contextlib.nullcontext()


def start(
    enabled: bool, dropped: Counter, channel: str, *, exporter: SpanExporter | None = None
) -> Tracing | None:
    """The relay's tracing, or None when `enabled` is false or OTEL_SDK_DISABLED is true (then
    nothing of OpenTelemetry is loaded). `exporter` replaces the one OTEL_* variables choose."""
    global _started
    if not enabled or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider

    from relay import span_export

    chosen = exporter if exporter is not None else span_export.exporter_from_environment()
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the relay's own name.
    resource = Resource.create({SERVICE_NAME: "it-relay", SERVICE_VERSION: __version__}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    if chosen is not None:
        provider.add_span_processor(span_export.BoundedBatch(chosen, dropped, span_export.queue_size()))
    sdk_logs = logging.getLogger("opentelemetry")
    if not any(isinstance(h, span_export.SdkLogs) for h in sdk_logs.handlers):
        sdk_logs.addHandler(span_export.SdkLogs())
        sdk_logs.propagate = False
    _started = True
    return Tracing(provider, channel)
