"""Tracing end to end: the daemon, a producer's `SET LOCAL it_relay.traceparent` (through a
trigger-less publish(), the reference schema's trigger and a legacy notification), a local OTLP/HTTP
receiver decoding what the relay exports, and a webhook whose traceparent continues the producer's
trace (a retried attempt with its resend count); with tracing off, nothing is exported."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from relay import codec
from relay.contracts.examples import example
from tests.support.reference import make_org, make_ticket
from tests.support.relay import SECRET, relay_settings, running, wait_until
from tests.support.sink import Reply, Sink

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
LEGACY_TRACE = "5b8efff798038103d269b633813fc60c"


def producer(trace_id: str, span_id: str = "00f067aa0ba902b7") -> str:
    return f"00-{trace_id}-{span_id}-01"


@dataclass(frozen=True)
class Exported:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class Collector:
    """A local OTLP/HTTP receiver: decodes every export request (protobuf) and keeps its spans."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests += 1
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                self.spans += [
                    Exported(
                        s.name,
                        s.kind,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        _attributes(s.attributes),
                        resource,
                    )
                    for s in scope.spans
                ]
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def of(self, trace_id: str, kind: int) -> list[Exported]:
        return [s for s in self.spans if s.trace_id == trace_id and s.kind == kind]

    async def start(self) -> Collector:
        app = web.Application()
        app.router.add_post("/v1/traces", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site.name.rsplit(":", 1)[1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    receiver = await Collector().start()
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    yield receiver
    await receiver.stop()


def _ticket_requests(sink: Sink, ticket: Any) -> list[Any]:
    return [r for r in sink.at("/pf-10") if codec.loads(r.body).get("ticket_id") == str(ticket)]


async def test_one_trace_from_the_producers_transaction_to_the_subscribers_request(
    ref_db: str, ref: asyncpg.Connection, sink: Sink, collector: Collector
) -> None:
    org = await make_org(ref)
    settings = relay_settings(ref_db, sink, ["PF-10"], tracing={"enabled": True})
    async with running(settings):
        # Through the reference schema's trigger; its first attempt is answered 503, then retried.
        sink.script("/pf-10", Reply(503))
        async with ref.transaction():
            await ref.execute(f"SET LOCAL it_relay.traceparent = '{producer(TRACE)}'")
            ticket = await make_ticket(ref, org)
        await sink.wait_for(lambda _: len(_ticket_requests(sink, ticket)) == 2, within=20)
        # Through a trigger-less publish(), and a legacy producer's full-payload notification.
        async with ref.transaction():
            await ref.execute("SELECT set_config('it_relay.traceparent', $1, true)", producer(OTHER_TRACE))
            published = await ref.fetchval(
                "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
            )
        legacy = example("it_ticket_created") | {"subject": "legacy", "traceparent": producer(LEGACY_TRACE)}
        await ref.execute("SELECT pg_notify('it_events', $1)", codec.dumps(legacy).decode())
        await sink.wait_for(lambda r: len(r) == 4, within=20)
        await wait_until(
            lambda: (
                all(len(collector.of(t, Span.SPAN_KIND_CLIENT)) >= 1 for t in (OTHER_TRACE, LEGACY_TRACE))
                and len(collector.of(TRACE, Span.SPAN_KIND_CLIENT)) == 2
            )
        )

    # The trigger's event: routed and attempted twice, every span in the producer's trace.
    (routing,) = collector.of(TRACE, Span.SPAN_KIND_CONSUMER)
    assert routing.name == "process it_events" and routing.parent == "00f067aa0ba902b7"
    assert routing.attributes["messaging.system"] == "postgresql"
    assert routing.attributes["it_relay.event_type"] == "it_ticket_created"
    assert routing.resource["service.name"] == "it-relay"
    first, second = sorted(
        collector.of(TRACE, Span.SPAN_KIND_CLIENT),
        key=lambda s: s.attributes.get("http.request.resend_count", 0),
    )
    requests = _ticket_requests(sink, ticket)
    for span, request in zip((first, second), requests, strict=True):
        assert span.name == "POST" and span.parent == "00f067aa0ba902b7"
        # The subscriber's own instrumentation continues this exact span.
        assert request.headers["traceparent"] == f"00-{TRACE}-{span.span_id}-01"
        assert span.attributes["url.full"] == sink.url("/pf-10")
        assert span.attributes["server.port"] == sink.port
    assert first.attributes["http.response.status_code"] == 503 and first.attributes["error.type"] == "503"
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    # The publish()'d and the notified events, each in its producer's trace.
    by_trace = {
        codec.loads(r.body)["event_id"]: r.headers["traceparent"].split("-")[1] for r in sink.at("/pf-10")
    }
    assert by_trace[str(published)] == OTHER_TRACE
    (notified,) = [r for r in sink.at("/pf-10") if codec.loads(r.body).get("subject") == "legacy"]
    assert notified.headers["traceparent"].split("-")[1] == LEGACY_TRACE
    assert "traceparent" not in codec.loads(notified.body)
    # Nothing secret in any attribute.
    assert not any(SECRET in str(v) for s in collector.spans for v in s.attributes.values())


async def test_tracing_off_exports_nothing_and_sends_no_traceparent(
    relay_db: str, db: asyncpg.Connection, sink: Sink, collector: Collector
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        async with db.transaction():
            await db.execute(f"SET LOCAL it_relay.traceparent = '{producer(TRACE)}'")
            await db.fetchval(
                "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
            )
        await sink.wait_for(lambda r: len(r) == 1)
    # The daemon has stopped: a tracer would have flushed everything by now.
    assert collector.requests == 0
    assert "traceparent" not in sink.requests[0].headers
    # The journal keeps the producer's context all the same (tracing may be turned on later).
    assert await db.fetchval("SELECT traceparent FROM it_relay.events") == producer(TRACE)
