"""Tracing: the producer's W3C trace context kept by the journal (publish(), triggers, legacy
notifications; anything malformed ignored), and the relay's spans continuing it — one routing span
per event, one span per attempt whose traceparent the webhook or broker message carries, the
scheduler's pass a trace of its own — with log lines joined to them, a bounded export that drops
and counts rather than wait, and nothing at all of OpenTelemetry when tracing is off.

The unit tier exports to the SDK's in-memory exporter; tests/test_tracing_end_to_end.py runs the
daemon against a local OTLP/HTTP receiver.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from relay import codec, logs, span_export, tracing
from relay.attempts import Attempts
from relay.circuit import CircuitBreaker
from relay.contracts.examples import example
from relay.destination import Destination, HttpDestination
from relay.errors import ConfigError
from relay.ingest import classify, traceparent
from relay.lanes import Lane
from relay.metrics import Metrics
from relay.model import OUTCOMES, ClaimedDelivery, NotifiedEvent, PendingEvent, Rejection, RoutedEvent
from relay.request import Target
from relay.router import Router
from relay.routing_queries import Written
from relay.scheduler import Scheduler
from relay.sender import make_sender
from relay.settings import DeliverySettings, load_settings
from relay.settle import RetryPolicy
from relay.tracing import Tracing
from tests.support.reference import make_org, make_ticket
from tests.support.relay import SECRET
from tests.support.sink import Reply, Sink

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PRODUCER = f"00-{TRACE}-{SPAN}-01"
INJECTION = f"{PRODUCER}'); DELETE FROM it_relay.events; --"
HOSTILE = [
    "",
    "00",
    f"01-{TRACE}-{SPAN}-01",  # a version this relay does not read
    f"ff-{TRACE}-{SPAN}-01",  # the version W3C forbids
    f"00-{'0' * 32}-{SPAN}-01",
    f"00-{TRACE}-{'0' * 16}-01",
    PRODUCER.upper(),
    f"00-{TRACE.upper()}-{SPAN}-01",
    f"{PRODUCER}-extra",
    f"{PRODUCER}\n",
    f" {PRODUCER}",
    PRODUCER * 2,
    f"00-{TRACE}-{SPAN}-1",
    f"00-{TRACE}-{SPAN}-001",
    f"00_{TRACE}_{SPAN}_01",
    f"00-{TRACE[:-1]}g-{SPAN}-01",
    f"00-{'٣' * 32}-{SPAN}-01",  # digits, but not ASCII ones
    f"00-{chr(0xFF41) * 32}-{SPAN}-01",  # a fullwidth a
    "x" * 100_000,
    INJECTION,
    "00-' || pg_sleep(5) || '-00f067aa0ba902b7-01",
]


# ─── What counts as a traceparent ──────────────────────────────────────────────────────────────


def test_a_w3c_traceparent_is_kept_as_it_is() -> None:
    assert traceparent(PRODUCER) == PRODUCER
    assert traceparent(f"00-{TRACE}-{SPAN}-00") == f"00-{TRACE}-{SPAN}-00"  # not sampled: still kept


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:30]))
def test_anything_else_is_ignored(value: str) -> None:
    assert traceparent(value) is None


@pytest.mark.parametrize("value", [None, 0, 1.5, True, [PRODUCER], {"traceparent": PRODUCER}])
def test_a_value_that_is_not_text_is_ignored(value: object) -> None:
    assert traceparent(value) is None


def _near_traceparents() -> st.SearchStrategy[str]:
    """Texts that are, or nearly are, traceparents: every part's length and alphabet varied."""
    part = st.text(alphabet="0123456789abcdefABCDEFg-٣ \n", min_size=0, max_size=34)
    hexes = st.sampled_from(["0" * 32, TRACE, "f" * 32]) | part
    spans = st.sampled_from(["0" * 16, SPAN]) | st.text(
        alphabet="0123456789abcdefF", min_size=15, max_size=17
    )
    version = st.sampled_from(["00", "01", "ff", "0", "000", "0O"])
    flags = st.sampled_from(["00", "01", "ff", "1", "FF", "01-x"])
    joined = st.builds(
        lambda v, t, s, f, sep: sep.join([v, t, s, f]),
        version,
        hexes,
        spans,
        flags,
        st.sampled_from(["-", "_", "--"]),
    )
    return joined | st.text(max_size=80)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_near_traceparents(), min_size=1, max_size=20))
def test_python_and_sql_agree_on_what_a_traceparent_is(relay_db: str, values: list[str]) -> None:
    # PostgreSQL text holds neither NUL nor lone surrogates: nothing a producer could SET either.
    storable = [v for v in values if "\x00" not in v and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)]
    verdicts = asyncio.run(_sql_verdicts(relay_db, storable))
    assert verdicts == [traceparent(v) for v in storable]


async def _sql_verdicts(url: str, values: list[str]) -> list[str | None]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT it_relay.traceparent(v) FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
            values,
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


# ─── The journal keeps it ──────────────────────────────────────────────────────────────────────


async def _published_with(db: asyncpg.Connection, value: str | None) -> str | None:
    """Publish an event in a transaction that set it_relay.traceparent to `value`; what the journal kept."""
    async with db.transaction():
        if value is not None:
            await db.execute("SELECT set_config('it_relay.traceparent', $1, true)", value)
        event_id = await db.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
    kept: str | None = await db.fetchval(
        "SELECT traceparent FROM it_relay.events WHERE event_id = $1", event_id
    )
    return kept


async def test_publish_keeps_the_producers_traceparent_for_its_transaction_only(
    db: asyncpg.Connection,
) -> None:
    async with db.transaction():
        await db.execute(f"SET LOCAL it_relay.traceparent = '{PRODUCER}'")
        first = await db.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
    assert await db.fetchval("SELECT traceparent FROM it_relay.events WHERE event_id = $1", first) == PRODUCER
    # SET LOCAL ended with its transaction: the same session's next event has no trace context.
    assert await _published_with(db, None) is None


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:30]))
async def test_publish_ignores_a_malformed_traceparent_and_never_fails(
    db: asyncpg.Connection, value: str
) -> None:
    assert await _published_with(db, value) is None
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1


async def test_an_injection_in_set_local_is_a_value_like_any_other(db: asyncpg.Connection) -> None:
    # As a producer would write it by hand: a quoted literal, quotes doubled.
    literal = INJECTION.replace("'", "''")
    async with db.transaction():
        await db.execute(f"SET LOCAL it_relay.traceparent = '{literal}'")
        await db.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1
    assert await db.fetchval("SELECT traceparent FROM it_relay.events") is None


async def test_a_trigger_keeps_the_traceparent_of_the_transaction_that_fired_it(
    ref: asyncpg.Connection,
) -> None:
    org = await make_org(ref)
    async with ref.transaction():
        await ref.execute(f"SET LOCAL it_relay.traceparent = '{PRODUCER}'")
        ticket = await make_ticket(ref, org)
    kept = await ref.fetchval(
        "SELECT traceparent FROM it_relay.events WHERE payload ->> 'ticket_id' = $1", str(ticket)
    )
    assert kept == PRODUCER


def test_a_legacy_notification_keeps_its_traceparent_beside_the_payload_not_in_it() -> None:
    payload = example("it_ticket_created")
    plain = classify(codec.dumps(payload).decode())
    traced = classify(codec.dumps(payload | {"traceparent": PRODUCER}).decode())
    assert isinstance(plain, NotifiedEvent) and isinstance(traced, NotifiedEvent)
    assert traced.traceparent == PRODUCER and plain.traceparent is None
    # The subscriber never gets it, and the canonical event_id does not depend on it.
    assert "traceparent" not in traced.payload
    assert traced.event_id == plain.event_id and traced.payload == plain.payload


@pytest.mark.parametrize(
    "value", [*HOSTILE[:8], {"license_key": "RAW-KEY"}, ["00"], 7, None], ids=lambda v: repr(v)[:30]
)
def test_a_legacy_notifications_malformed_traceparent_is_dropped(value: object) -> None:
    item = classify(codec.dumps(example("it_ticket_created") | {"traceparent": value}).decode())
    assert isinstance(item, NotifiedEvent)
    assert item.traceparent is None and "traceparent" not in item.payload


def test_an_id_and_a_traceparent_alone_are_still_only_a_wake_up() -> None:
    assert (
        classify(json.dumps({"event_id": str(uuid4()), "event_type": "x", "traceparent": PRODUCER})) is None
    )


# ─── Spans (in memory) ─────────────────────────────────────────────────────────────────────────


@dataclass
class Traced:
    tracing: Tracing
    exporter: InMemorySpanExporter
    metrics: Metrics

    def spans(self) -> list[ReadableSpan]:
        self.tracing.flush()
        return list(self.exporter.get_finished_spans())


@pytest.fixture
async def traced() -> AsyncIterator[Traced]:
    metrics = Metrics()
    exporter = InMemorySpanExporter()
    started = tracing.start(True, metrics.trace_spans_dropped, "it_events", exporter=exporter)
    assert started is not None
    yield Traced(started, exporter, metrics)
    await started.aclose()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("INFO", "json", out)
    yield out
    logs.configure("WARNING", "json")


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def _hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    trace_id, span_id = _hex_ids(span)
    return f"00-{trace_id}-{span_id}-{span.context.trace_flags:02x}"


def _parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def _values(span: ReadableSpan) -> list[str]:
    """Every attribute and event value of a span, as text."""
    out = [str(v) for v in (span.attributes or {}).values()]
    return out + [str(v) for e in span.events for v in (e.attributes or {}).values()]


@dataclass
class Batch:
    events: Sequence[PendingEvent]
    written: list[tuple[Sequence[RoutedEvent], Sequence[tuple[UUID, Rejection]]]] = field(
        default_factory=list
    )

    async def write(
        self,
        routed: Sequence[RoutedEvent],
        rejected: Sequence[tuple[UUID, Rejection]],
        wanted: Mapping[str, int] | None = None,
        owner: str = "",
        lease_s: float = 0.0,
        ordered: Collection[str] = (),
    ) -> Written:
        self.written.append((routed, rejected))
        return Written(frozenset(r.event_id for r in routed), frozenset(e for e, _ in rejected), [])


@dataclass
class OneBatch:
    """A routing port holding one batch of pending events, recording what the router wrote."""

    batch: Batch

    @asynccontextmanager
    async def routing(self, limit: int, exclusive: bool = True) -> AsyncIterator[Batch]:
        yield self.batch

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
        raise AssertionError("nothing is leased without a handoff")


async def test_routing_continues_the_producers_trace_and_gives_others_their_own(
    traced: Traced, log_lines: io.StringIO
) -> None:
    secret_subject = "Printer in room 4 — RAW-LICENCE-KEY-9F3A"
    with_trace, without, bad = uuid4(), uuid4(), uuid4()
    ticket = codec.dumps(example("it_ticket_created") | {"subject": secret_subject}).decode()
    invalid = codec.dumps(
        example("it_ticket_created") | {"priority": "urgent", "subject": secret_subject}
    ).decode()
    batch = Batch(
        [
            PendingEvent(event_id=with_trace, payload=ticket, source="publish", traceparent=PRODUCER),
            PendingEvent(event_id=without, payload=ticket, source="notify"),
            PendingEvent(event_id=bad, payload=invalid, source="publish", traceparent=PRODUCER),
        ]
    )
    router = Router(
        store=OneBatch(batch),
        metrics=traced.metrics,
        unknown_fields="keep",
        configured=["PF-10"],
        on_routed=lambda _: None,
        tracing=traced.tracing,
    )
    assert await router.route_batch() == 3
    spans = {UUID(str((s.attributes or {})["messaging.message.id"])): s for s in traced.spans()}
    assert set(spans) == {with_trace, without, bad}
    for span in spans.values():
        assert span.name == "process it_events" and span.kind is SpanKind.CONSUMER
        attributes = span.attributes or {}
        assert attributes["messaging.system"] == "postgresql"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"] == "it_events"
        assert not any(secret_subject in v or "RAW-LICENCE" in v for v in _values(span))
    assert _hex_ids(spans[with_trace])[0] == TRACE and _parent_id(spans[with_trace]) == SPAN
    assert (spans[with_trace].attributes or {})["it_relay.event_type"] == "it_ticket_created"
    assert _parent_id(spans[without]) is None  # a trace of its own ...
    ((routed, _),) = batch.written
    kept = {e.event_id: e.traceparent for e in routed}
    # ... which the journal keeps for its deliveries; the producer's is never replaced.
    assert kept == {with_trace: None, without: _traceparent(spans[without])}
    # A rejection: an event with its reason on the span, and the log line joins the trace.
    assert [e.name for e in spans[bad].events] == ["it_relay.rejected"]
    assert (spans[bad].events[0].attributes or {}) == {"it_relay.rejection.reason": "schema"}
    assert (spans[bad].attributes or {})["error.type"] == "schema"
    (line,) = [r for r in _lines(log_lines) if r["event"] == "event rejected"]
    assert (line["trace_id"], line["span_id"]) == _hex_ids(spans[bad])


def _lane(url: str, destination: Destination, metrics: Metrics, name: str = "PF-10") -> Lane:
    return Lane(
        name=name,
        target=Target(name=name, url=url, secrets=[SECRET]),
        destination=destination,
        timeout_s=5.0,
        max_in_flight=4,
        breaker=CircuitBreaker(5, 1.0),
        policy=RetryPolicy([1.0]),
        duration=metrics.delivery_duration.labels(name),
        outcomes={o: metrics.deliveries.labels(name, o) for o in OUTCOMES},
    )


def _claimed(subscriber: str = "PF-10", event_type: str = "it_ticket_created") -> ClaimedDelivery:
    event_id = uuid4()
    return ClaimedDelivery(
        event_id=event_id,
        subscriber=subscriber,
        event_type=event_type,
        attempts=1,
        failed_rounds=0,
        body=codec.dumps(example(event_type) | {"event_id": str(event_id)}),
        journaled_at=datetime.now(UTC),
        traceparent=PRODUCER,
    )


async def _attempt_and_log(attempts: Attempts, lane: Lane, item: ClaimedDelivery, attempt: int) -> None:
    """An attempt in a task of its own, as the dispatcher runs each delivery, and a line logged after it."""

    async def deliver() -> None:
        await attempts.attempt(lane, item, attempt)
        logs.get_logger("relay.dispatch").warning("after the attempt", attempt=attempt)

    await asyncio.create_task(deliver())


async def test_each_attempt_is_a_client_span_whose_traceparent_the_webhook_carries(
    traced: Traced, sink: Sink, log_lines: io.StringIO
) -> None:
    sink.script("/pf-10", Reply(503))
    password, token = "Pw0rd-not-in-spans", "tok-not-in-spans"
    url = sink.url("/pf-10").replace("http://", f"http://relay:{password}@") + f"?token={token}"
    sender = make_sender("aiohttp", 4)
    lane = _lane(url, HttpDestination(sender), traced.metrics)
    attempts = Attempts(delivery=DeliverySettings(), metrics=traced.metrics, tracing=traced.tracing)
    item = _claimed()
    try:
        await _attempt_and_log(attempts, lane, item, 1)
        await _attempt_and_log(attempts, lane, item, 2)
    finally:
        await sender.aclose()
    first, second = sorted(traced.spans(), key=lambda s: s.start_time or 0)
    headers = [r.headers["traceparent"] for r in sink.requests]
    for span, header in zip((first, second), headers, strict=True):
        assert span.name == "POST" and span.kind is SpanKind.CLIENT
        assert _parent_id(span) == SPAN
        trace_id, span_id = _hex_ids(span)
        assert trace_id == TRACE and header == f"00-{TRACE}-{span_id}-01"
        attributes = span.attributes or {}
        assert attributes["http.request.method"] == "POST"
        assert attributes["url.full"] == f"http://relay:***@127.0.0.1:{sink.port}/pf-10?token=***"
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", sink.port)
        assert attributes["it_relay.event_id"] == str(item.event_id)
        assert not any(password in v or token in v or SECRET in v for v in _values(span))
    assert (first.attributes or {})["http.response.status_code"] == 503
    assert (first.attributes or {})["error.type"] == "503"
    assert "http.request.resend_count" not in (first.attributes or {})
    assert (second.attributes or {})["http.response.status_code"] == 200
    assert (second.attributes or {})["http.request.resend_count"] == 1
    assert "error.type" not in (second.attributes or {})
    # A line logged after an attempt, in its delivery's task, carries that attempt's span.
    after = [r for r in _lines(log_lines) if r["event"] == "after the attempt"]
    assert [(r["trace_id"], r["span_id"]) for r in after] == [_hex_ids(first), _hex_ids(second)]


async def test_an_attempt_without_an_answer_names_its_error(traced: Traced) -> None:
    sender = make_sender("aiohttp", 4)
    lane = _lane("http://127.0.0.1:9/hook", HttpDestination(sender), traced.metrics)
    attempts = Attempts(delivery=DeliverySettings(), metrics=traced.metrics, tracing=traced.tracing)
    try:
        await _attempt_and_log(attempts, lane, _claimed(), 1)
    finally:
        await sender.aclose()
    (span,) = traced.spans()
    assert (span.attributes or {})["error.type"] in {"ClientConnectorError", "timeout", "_OTHER"}
    assert "http.response.status_code" not in (span.attributes or {})


def test_an_error_type_is_a_status_a_timeout_an_exception_name_or_other() -> None:
    from relay.model import Answer

    assert tracing.error_type(Answer("retry", 429, "HTTP 429")) == "429"
    assert tracing.error_type(Answer("retry", None, "timeout after 5s")) == "timeout"
    assert tracing.error_type(Answer("retry", None, "ConnectError: refused")) == "ConnectError"
    assert tracing.error_type(Answer("retry", None, "AMQP amqp://***@mq: nacked")) == "_OTHER"


def test_with_tracing_off_the_webhook_carries_no_trace_header() -> None:
    from relay.request import build

    request = build(
        Target(name="PF-10", url="http://x/", secrets=[SECRET]),
        event_id=str(uuid4()),
        event_type="it_ticket_created",
        body=b"{}",
        attempt=1,
        at=datetime.now(UTC),
    )
    assert not {"traceparent", "tracestate"} & set(request.headers)


async def test_a_scheduler_pass_is_a_trace_whose_emissions_the_journal_keeps(
    traced: Traced, ref_db: str, ref: asyncpg.Connection, log_lines: io.StringIO
) -> None:
    org = await make_org(ref)
    noon = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    await ref.execute(
        "INSERT INTO it_contracts (organization_id, contract_number, vendor_id, contract_type, expiration_date,"
        " contract_value, auto_renew) VALUES ($1, 'CTR-1', $2, 'support', $3, 48000.00, false)",
        org.id,
        org.vendor,
        noon.date() + timedelta(days=90),
    )
    scheduler = Scheduler(
        load_settings(None).scheduler,
        metrics=traced.metrics,
        connect=lambda: asyncpg.connect(ref_db),
        tracing=traced.tracing,
    )
    (emission,) = await scheduler.run_once(ref, noon)
    spans = {s.name: s for s in traced.spans()}
    run, publish = spans["scheduler pass"], spans["publish it_events"]
    assert run.parent is None and publish.kind is SpanKind.PRODUCER
    assert _parent_id(publish) == _hex_ids(run)[1] and _hex_ids(publish)[0] == _hex_ids(run)[0]
    kept = await ref.fetchval(
        "SELECT traceparent FROM it_relay.events WHERE event_type = 'it_contract_expiring'"
    )
    assert kept == _traceparent(publish)
    (line,) = [r for r in _lines(log_lines) if r["event"] == "scheduled event emitted"]
    assert (line["trace_id"], line["span_id"]) == _hex_ids(publish)
    assert emission.event_type == "it_contract_expiring"


# ─── Export: bounded, counted, never waited for ──────────────────────────────────────────────


class Stuck(SpanExporter):
    """An exporter that hangs until released (a collector that stopped answering), or fails."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.release = threading.Event()
        self.result = result
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        self.exported += len(spans)
        return self.result

    def shutdown(self) -> None:
        self.release.set()


def _dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("it_relay_trace_spans_dropped_total", {"reason": reason})
    assert value is not None
    return value


async def test_a_stuck_exporter_costs_spans_counted_never_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    metrics = Metrics()
    metrics.prepare([])
    stuck = Stuck()
    started = tracing.start(True, metrics.trace_spans_dropped, "it_events", exporter=stuck)
    assert started is not None
    began = time.perf_counter()
    for _ in range(1000):
        spans = started.routing()
        spans.start(uuid4(), PRODUCER)
        spans.end()
    assert time.perf_counter() - began < 5  # nothing waited for the exporter
    assert _dropped(metrics, "queue_full") >= 1000 - 8 - 512
    stuck.release.set()
    await started.aclose()
    assert stuck.exported + _dropped(metrics, "queue_full") == 1000


async def test_a_failed_export_counts_its_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    failing = Stuck(SpanExportResult.FAILURE)
    failing.release.set()
    started = tracing.start(True, metrics.trace_spans_dropped, "it_events", exporter=failing)
    assert started is not None
    spans = started.routing()
    for _ in range(3):
        spans.start(uuid4(), None)
    spans.end()
    started.flush()
    assert _dropped(metrics, "export_failed") == 3
    await started.aclose()


@pytest.mark.parametrize(
    ("variables", "chosen"),
    [
        ({}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GrpcExporter),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            HttpExporter,
        ),
        ({"OTEL_TRACES_EXPORTER": "none"}, type(None)),
    ],
)
def test_the_standard_variables_choose_the_exporter(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], chosen: type
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    exporter = span_export.exporter_from_environment()
    assert isinstance(exporter, chosen)
    if exporter is not None:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not one of",
        ),
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER: 'zipkin' is not one of"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "OTEL_BSP_MAX_QUEUE_SIZE: '-1' is not a positive integer"),
    ],
)
def test_a_variable_the_relay_cannot_follow_is_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        tracing.start(True, Metrics().trace_spans_dropped, "it_events")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_tracing_off_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.start(False, Metrics().trace_spans_dropped, "it_events") is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.start(True, Metrics().trace_spans_dropped, "it_events") is None


_OPEN_AND_LIST = """
import asyncio, sys
from relay.daemon import Daemon
from relay.settings import load_settings

async def main() -> None:
    settings = load_settings(
        None,
        database={"url": sys.argv[1]},
        server={"listen": "127.0.0.1:0"},
        scheduler={"enabled": False},
        tracing={"enabled": sys.argv[2] == "on"},
    )
    async with Daemon(settings).open():
        pass
    print(sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")}))

asyncio.run(main())
"""


@pytest.mark.parametrize(("switch", "loaded"), [("off", "[]"), ("on", "'sdk'")])
async def test_a_daemon_with_tracing_off_loads_nothing_of_opentelemetry(
    relay_db: str, switch: str, loaded: str
) -> None:
    env = {"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _OPEN_AND_LIST, relay_db, switch],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert loaded in done.stdout.splitlines()[-1]


# ─── Broker messages ─────────────────────────────────────────────────────────────────────────


@pytest.mark.brokers
async def test_a_rabbitmq_message_carries_its_publish_spans_traceparent(traced: Traced) -> None:
    import aio_pika

    from relay import broker_routes
    from relay.brokers.amqp import AmqpBroker, AmqpDestination
    from tests.support.brokers import AMQP_ENV, broker_url, unique

    url = broker_url(AMQP_ENV)
    exchange, event_type = unique("it-relay-test-x"), "it_change_implemented"
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=False)
    queue = await channel.declare_queue(unique("it-relay-test-q"))
    await queue.bind(exchange, "#")
    destination = AmqpDestination(
        AmqpBroker(url),
        subscriber="IT-07",
        exchange=exchange,
        routing_key=broker_routes.parse("it.{event_type}"),
    )
    attempts = Attempts(delivery=DeliverySettings(), metrics=traced.metrics, tracing=traced.tracing)
    try:
        await _attempt_and_log(
            attempts, _lane(url, destination, traced.metrics, "IT-07"), _claimed("IT-07", event_type), 1
        )
        message = await queue.get(no_ack=True, fail=False)
    finally:
        await destination.aclose()
        await queue.delete()
        await channel.exchange_delete(exchange)
        await connection.close()
    (span,) = traced.spans()
    assert message is not None
    assert message.headers["traceparent"] == _traceparent(span)
    assert span.name == f"publish {exchange}" and span.kind is SpanKind.PRODUCER
    assert _parent_id(span) == SPAN
    attributes = span.attributes or {}
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == exchange
    assert attributes["messaging.rabbitmq.destination.routing_key"] == f"it.{event_type}"
    assert attributes["messaging.message.id"] == message.message_id
    assert not any("guest" in v for v in _values(span))  # the URL's credentials


@pytest.mark.brokers
async def test_a_nats_message_carries_its_publish_spans_traceparent(traced: Traced) -> None:
    import nats
    from nats.js.api import StreamConfig

    from relay import broker_routes
    from relay.brokers.nats import NatsBroker, NatsDestination
    from tests.support.brokers import NATS_ENV, broker_url, unique

    url = broker_url(NATS_ENV)
    subject, event_type = unique("it-relay-test").replace("-", "_"), "it_report_generated"
    client = await nats.connect(url)
    js = client.jetstream()
    stream = subject.upper()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    destination = NatsDestination(
        NatsBroker(url), subscriber="PF-11", subject=broker_routes.parse(f"{subject}.{{event_type}}")
    )
    attempts = Attempts(delivery=DeliverySettings(), metrics=traced.metrics, tracing=traced.tracing)
    try:
        await _attempt_and_log(
            attempts, _lane(url, destination, traced.metrics, "PF-11"), _claimed("PF-11", event_type), 1
        )
        stored = await js.get_msg(stream, 1)
    finally:
        await destination.aclose()
        await js.delete_stream(stream)
        await client.close()
    (span,) = traced.spans()
    assert (stored.headers or {})["traceparent"] == _traceparent(span)
    assert span.name == f"publish {subject}.{event_type}" and span.kind is SpanKind.PRODUCER
    attributes = span.attributes or {}
    assert attributes["messaging.system"] == "nats"
    assert attributes["messaging.destination.name"] == f"{subject}.{event_type}"
    assert attributes["messaging.message.id"] == (stored.headers or {})["Nats-Msg-Id"]
