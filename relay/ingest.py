"""What arrives, decided without I/O: a notification's meaning, and a journaled event's routing.

Every notification is an event. One that names an event already in the journal (publish() wrote
it) is only a wake-up; a full payload without a journal row is journaled under its own event_id
or, if it has none, the UUIDv5 of its canonical JSON, so that every instance that hears it writes
the same row once. Anything that is not a JSON object becomes a scrubbed rejection.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from uuid import UUID

import orjson
from pydantic import BaseModel

from relay import codec
from relay.contracts import Accepted, UnknownFields, parse_event
from relay.model import NOTIFY_LIMIT_BYTES, NotifiedEvent, Rejection, RoutedEvent
from relay.redaction import redact, scrub_text

_STUB_KEYS = frozenset({"event_id", "event_type"})
# A replay's wake-up adds {"wake": "deliveries"}: re-queued deliveries concern the lanes, not the router.
_WAKE_KEYS = _STUB_KEYS | {"wake"}
# publish()'s announcement is a uuid and an event type, short for every contract's type; a longer
# notification is never taken for one.
_ANNOUNCEMENT_MAX_CHARS = 160
_NOT_ENTITY = frozenset({"event_id", "organization_id"})
# A legacy notification's trace context: transport, not event. Taken out of the payload (the
# subscriber never gets it, and the canonical event_id does not depend on it); kept when valid.
TRACEPARENT_FIELD = "traceparent"
# W3C Trace Context, version 00 exactly as written (lowercase hex, no further fields): what
# it_relay.traceparent() accepts in SQL (0011_traceparent.sql).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_TRACEPARENT_CHARS = 55


def classify(raw: str) -> NotifiedEvent | Rejection | None:
    """What a notification means: an event to journal, a rejection to record, or None (wake-up)."""
    try:
        value = codec.loads(raw)
    except codec.JSONError:
        result = parse_event(raw)
        assert isinstance(result, Rejection)
        return replace(result, source="notify", payload=None, raw_text=codec.storable_text(scrub_text(raw)))
    if codec.too_deep(value):
        return Rejection(
            reason="too_deep",
            errors=(f"$: nested deeper than {codec.MAX_DEPTH} levels",),
            source="notify",
            raw_text=scrub_text(raw[:NOTIFY_LIMIT_BYTES]),
        )
    if not isinstance(value, dict):
        return Rejection(
            reason="not_an_object",
            errors=("$: an event must be a JSON object",),
            source="notify",
            payload=redact(value),
        )
    trace = traceparent(value.pop(TRACEPARENT_FIELD, None))
    if "event_id" in value and value.keys() <= _WAKE_KEYS:
        return None
    payload = redact(value)
    event_id = codec.uuid_or_none(payload.get("event_id"))
    if event_id is None:
        event_id = codec.canonical_event_id(payload)
        if "event_id" not in payload:
            payload["event_id"] = str(event_id)
    event_type = payload.get("event_type")
    return NotifiedEvent(
        event_id=event_id,
        event_type=event_type if isinstance(event_type, str) else "",
        payload=payload,
        organization_id=codec.uuid_or_none(payload.get("organization_id")),
        traceparent=trace,
    )


def traceparent(value: object) -> str | None:
    """`value` when it is a valid W3C traceparent of version 00 (ids not all zero), else None."""
    if not isinstance(value, str) or len(value) != _TRACEPARENT_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or not match.group(1).strip("0") or not match.group(2).strip("0"):
        return None
    return value


def unprocessable(raw: str, exc: Exception) -> Rejection:
    """A notification that broke classification: kept, scrubbed, with the error's kind."""
    return Rejection(
        reason="schema",
        errors=(f"$: could not be processed ({type(exc).__name__})",),
        source="notify",
        raw_text=scrub_text(raw[:NOTIFY_LIMIT_BYTES]),
    )


def unknown_stub(raw: str) -> Rejection:
    """An id-only notification naming no journaled event: there is nothing to deliver."""
    event_id, _ = announced_id(raw)
    return Rejection(
        reason="schema",
        errors=(f"$: names event {event_id}, which is not in the journal, and carries no payload",),
        source="notify",
        raw_text=scrub_text(raw[:NOTIFY_LIMIT_BYTES]),
    )


def untrusted(item: NotifiedEvent | Rejection, why: str) -> Rejection:
    """A notification from a sender the relay does not trust: kept, redacted, never journaled."""
    if isinstance(item, Rejection):
        return replace(item, reason="untrusted_sender", errors=(f"$: {why}", *item.errors))
    return Rejection(
        reason="untrusted_sender",
        errors=(f"$: {why}",),
        source="notify",
        event_id=item.event_id,
        event_type=item.event_type or None,
        payload=item.payload,
    )


def announced_id(raw: str) -> tuple[UUID | None, bool]:
    """The top-level event_id of a notification read cheaply (orjson), and whether it wakes lanes.

    Notifications from it_relay.publish() name an event already journaled: knowing that from its
    id spares the exact decode, redaction and canonical id of a full payload. A replay's wake-up
    also names a journaled event, and asks every delivery lane to look for work.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(value, dict):
        return None, False
    return codec.uuid_or_none(value.get("event_id")), value.get(
        "wake"
    ) == "deliveries" and value.keys() <= _WAKE_KEYS


def is_announcement(raw: str) -> bool:
    """Whether a notification is publish()'s announcement exactly: an event_id and its type, no more."""
    if len(raw) > _ANNOUNCEMENT_MAX_CHARS:
        return False
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.keys() == _STUB_KEYS


@functools.cache
def _entity_field(model: type[BaseModel]) -> str | None:
    return next((n for n in model.model_fields if n.endswith("_id") and n not in _NOT_ENTITY), None)


def entity_key(accepted: Accepted) -> str | None:
    """`<field>:<id>` of the entity an event is about: its first *_id field (asset_id, ticket_id, ...)."""
    name = _entity_field(accepted.contract.model)
    if name is None:
        return None
    value = accepted.payload.get(name)
    return f"{name}:{value}" if value is not None else None


def route(event_id: UUID, raw_payload: str, unknown_fields: UnknownFields) -> RoutedEvent | Rejection:
    """One journaled payload to its routing or its rejection."""
    result = parse_event(raw_payload, unknown_fields)
    if isinstance(result, Accepted):
        payload = result.payload
        if payload.get("event_id") is None:
            payload["event_id"] = event_id
        organization = payload.get("organization_id")
        return RoutedEvent(
            event_id=event_id,
            event_type=result.event_type,
            body=codec.dumps(payload),
            entity_key=entity_key(result),
            organization_id=organization if isinstance(organization, UUID) else None,
            subscribers=result.contract.subscribers,
        )
    return replace(result, source="journal", event_id=event_id)


def unroutable(event_id: UUID, exc: Exception) -> Rejection:
    """An event that broke routing: rejected, visibly, on its own."""
    return Rejection(
        reason="schema",
        errors=(f"$: could not be routed ({type(exc).__name__})",),
        source="journal",
        event_id=event_id,
    )
