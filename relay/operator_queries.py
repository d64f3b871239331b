"""SQL access for the operators' commands: the delivery log, one event's journey, status figures,
rejections; and their acts (replay, backfill, pause and resume, release,
republish, dismiss), each a sole record, each recorded in the audit with it when given one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from relay import audit_queries, codec, filters
from relay.database import Conn
from relay.journal import sole_record, wake
from relay.model import (
    AttemptRow,
    AuditAction,
    DeliveryHistory,
    DeliveryRow,
    JournaledEvent,
    Journey,
    NotifiedEvent,
    RejectionDetail,
    RejectionRow,
    Released,
    SubscriberStats,
)
from relay.sql import query

# Rows an event's journey reads of its deliveries (one per subscriber: far fewer in practice).
_JOURNEY_DELIVERIES = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which deliveries a replay takes (None: any)."""

    event_id: UUID | None = None
    subscribers: Sequence[str] | None = None
    status: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def args(self) -> tuple[Any, ...]:
        subs = None if self.subscribers is None else list(self.subscribers)
        return (self.event_id, subs, self.status, self.event_type, self.since, self.until)


@sole_record("an operator's replay")
async def replay(
    conn: Conn, channel: str, selection: Selection, *, dry_run: bool = False, audit: AuditAction | None = None
) -> dict[str, int]:
    """Re-queue the selected deliveries (same event_id), then wake every relay instance; with
    `dry_run`, only count them. Counted per subscriber."""
    rows = await conn.fetch(query("replay"), *selection.args(), dry_run, audit_queries.SAMPLE)
    if rows and not dry_run:
        await wake(conn, channel, rows[0]["event_id"], rows[0]["event_type"])
    if audit is not None and not dry_run:
        await _record(conn, audit, rows)
    return {r["subscriber"]: r["n"] for r in rows}


async def _record(conn: Conn, audit: AuditAction, rows: Sequence[asyncpg.Record]) -> None:
    """`audit` on record with what the rows counted, and their samples of events."""
    await audit_queries.record(
        conn, audit, count=sum(r["n"] for r in rows), event_ids=[e for r in rows for e in r["sample"]]
    )


@sole_record("an operator's backfill")
async def backfill(
    conn: Conn,
    channel: str,
    *,
    subscriber: str,
    event_types: Sequence[str],
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    audit: AuditAction | None = None,
) -> dict[str, int]:
    """Deliveries from the journal for a subscriber added later, counted per event type."""
    rows = await conn.fetch(
        query("backfill"), subscriber, list(event_types), since, until, dry_run, audit_queries.SAMPLE
    )
    if rows and not dry_run:
        # A wake-up names a journaled event: the listener treats an unknown id as a rejection.
        await wake(conn, channel, rows[0]["event_id"], rows[0]["event_type"])
    if audit is not None and not dry_run:
        await _record(conn, audit, rows)
    return {r["event_type"]: r["n"] for r in rows}


# Candidate events a filtered backfill reads per round trip.
_BACKFILL_PAGE = 1000


@sole_record("an operator's backfill")
async def backfill_filtered(
    conn: Conn,
    channel: str,
    *,
    subscriber: str,
    event_types: Sequence[str],
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    condition: Mapping[str, Any],
    audit: AuditAction | None = None,
) -> tuple[dict[str, int], int]:
    """A backfill for a subscriber with a filter: only the events it lets through get deliveries,
    as routing would have decided. Counted per event type, and how many the filter left out."""
    chosen: list[UUID] = []
    left_out = 0
    after = -1
    while True:
        rows = await conn.fetch(
            query("backfill_candidates"), subscriber, list(event_types), since, until, after, _BACKFILL_PAGE
        )
        for row in rows:
            if filters.matches(condition, codec.loads(row["payload"])):
                chosen.append(row["event_id"])
            else:
                left_out += 1
        if len(rows) < _BACKFILL_PAGE:
            break
        after = rows[-1]["seq"]
    rows = await conn.fetch(
        query("backfill_chosen"),
        subscriber,
        list(event_types),
        since,
        until,
        dry_run,
        chosen,
        audit_queries.SAMPLE,
    )
    if rows and not dry_run:
        await wake(conn, channel, rows[0]["event_id"], rows[0]["event_type"])
    if audit is not None and not dry_run:
        await _record(conn, audit, rows)
    return {r["event_type"]: r["n"] for r in rows}, left_out


@sole_record("an operator's pause or resume")
async def set_paused(
    conn: Conn, subscriber: str, paused: bool, by: str, *, audit: AuditAction | None = None
) -> None:
    await conn.execute(query("set_paused"), subscriber, paused, by)
    if audit is not None:
        await audit_queries.record(conn, audit, count=None, event_ids=())


@sole_record("an operator's release of a held entity")
async def release_entity(
    conn: Conn, channel: str, subscriber: str, entity: str, *, audit: AuditAction | None = None
) -> Released:
    async with conn.transaction():
        await conn.execute(query("lock_holding_heads"), subscriber, entity)
        row = await conn.fetchrow(query("release_entity"), subscriber, entity, audit_queries.SAMPLE)
    assert row is not None
    if row["event_id"] is not None:
        await wake(conn, channel, row["event_id"], row["event_type"])
    if audit is not None:
        await audit_queries.record(conn, audit, count=row["released"], event_ids=row["sample"])
    return Released(heads=row["heads"], released=row["released"])


# ─── The delivery log ────────────────────────────────────────────────────────────────────────


def _delivery(r: asyncpg.Record) -> dict[str, Any]:
    """A delivery log row's fields (DeliveryRow's, in its order)."""
    return {
        "event_id": r["event_id"],
        "event_type": r["event_type"],
        "subscriber": r["subscriber"],
        "status": r["status"],
        "attempts": r["attempts"],
        "last_status": r["last_status"],
        "last_error": r["last_error"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
        "next_attempt_at": r["next_attempt_at"],
        "delivered_at": r["delivered_at"],
    }


async def list_deliveries(
    conn: Conn,
    *,
    status: str | None = None,
    subscriber: str | None = None,
    event_type: str | None = None,
    event_id: UUID | None = None,
    limit: int = 50,
) -> list[DeliveryRow]:
    """Newest first."""
    rows = await conn.fetch(query("list_deliveries"), status, subscriber, event_type, event_id, limit)
    return [DeliveryRow(**_delivery(r)) for r in rows]


async def follow_deliveries(
    conn: Conn,
    after: datetime,
    *,
    status: str | None,
    subscriber: str | None,
    event_type: str | None,
) -> list[DeliveryRow]:
    """Outcomes written after `after`, oldest first (at most 1000)."""
    rows = await conn.fetch(query("follow_deliveries"), after, status, subscriber, event_type)
    return [DeliveryRow(**_delivery(r)) for r in rows]


async def event_journey(conn: Conn, event_id: UUID) -> Journey:
    """One event: its journal row, its rejection if any, each delivery with every attempt."""
    event = await conn.fetchrow(query("event_journey"), event_id)
    deliveries = await conn.fetch(query("list_deliveries"), None, None, None, event_id, _JOURNEY_DELIVERIES)
    tried: dict[str, list[AttemptRow]] = {}
    for a in await conn.fetch(query("event_attempts"), event_id):
        tried.setdefault(a["subscriber"], []).append(
            AttemptRow(
                attempt=a["attempt"],
                attempted_at=a["attempted_at"],
                http_status=a["http_status"],
                error=a["error"],
                duration_ms=a["duration_ms"],
                response_excerpt=a["response_excerpt"],
            )
        )
    return Journey(
        event=None if event is None else _event(event),
        rejection=await rejection(conn, -1, event_id),
        deliveries=tuple(
            DeliveryHistory(**_delivery(d), history=tuple(tried.get(d["subscriber"], ()))) for d in deliveries
        ),
        audit=tuple(await audit_queries.of_event(conn, event_id)),
    )


def _event(r: asyncpg.Record) -> JournaledEvent:
    return JournaledEvent(
        event_id=r["event_id"],
        event_type=r["event_type"],
        status=r["status"],
        source=r["source"],
        payload=codec.loads(r["payload"]),
        created_at=r["created_at"],
        routed_at=r["routed_at"],
    )


async def subscriber_stats(conn: Conn) -> list[SubscriberStats]:
    """Every subscriber with deliveries, attempts or shared state."""
    return [
        SubscriberStats(
            subscriber=r["subscriber"],
            backlog=r["backlog"],
            oldest_pending=r["oldest_pending"],
            delivered_5m=r["delivered_5m"],
            failed_5m=r["failed_5m"],
            delivered_60m=r["delivered_60m"],
            failed_60m=r["failed_60m"],
            p50_s=r["p50_s"],
            p99_s=r["p99_s"],
            last_success=r["last_success"],
            last_error=r["last_error"],
            last_error_at=r["last_error_at"],
            paused=r["paused"],
            circuit=r["circuit"],
            circuit_changed_at=r["circuit_changed_at"],
            now=r["now"],
            dead=r["dead"],
            next_attempt=r["next_attempt"],
        )
        for r in await conn.fetch(query("subscriber_stats"))
    ]


# ─── Rejections ──────────────────────────────────────────────────────────────────────────────


def _rejection_fields(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "event_id": r["event_id"],
        "event_type": r["event_type"],
        "reason": r["reason"],
        "errors": tuple(r["errors"]),
        "source": r["source"],
        "received_at": r["received_at"],
        "resolved_at": r["resolved_at"],
        "resolved_event_id": r["resolved_event_id"],
        "dismissed_at": r["dismissed_at"],
        "dismissed_by": r["dismissed_by"],
    }


async def list_rejections(
    conn: Conn,
    *,
    reason: str | None,
    event_type: str | None,
    since: datetime | None,
    resolved: bool,
    limit: int,
    dismissed: bool = False,
) -> list[RejectionRow]:
    """Newest first; unresolved only unless `resolved`, not dismissed unless `dismissed`."""
    rows = await conn.fetch(query("list_rejections"), reason, event_type, since, resolved, limit, dismissed)
    return [RejectionRow(**_rejection_fields(r)) for r in rows]


async def rejection(conn: Conn, rejection_id: int, event_id: UUID | None) -> RejectionDetail | None:
    """The rejection with this id, or else the first recorded under `event_id` or republished as it."""
    r = await conn.fetchrow(query("rejection"), rejection_id, event_id)
    if r is None:
        return None
    payload = r["payload"]
    return RejectionDetail(
        **_rejection_fields(r),
        payload=None if payload is None else codec.loads(payload),
        raw_text=r["raw_text"],
    )


@sole_record("an operator's dismissal of a rejection")
async def dismiss_rejection(
    conn: Conn, rejection_id: int, by: str, *, audit: AuditAction | None = None
) -> bool:
    """Set a rejection aside; False when there is none to dismiss (republished, or dismissed)."""
    row = await conn.fetchrow(query("dismiss_rejection"), rejection_id, by)
    if row is not None and audit is not None:
        await audit_queries.record(conn, audit, count=1, event_ids=[e for e in [row["event_id"]] if e])
    return row is not None


@sole_record("an operator's republish of a corrected event")
async def republish(
    conn: Conn, channel: str, rejection_id: int, event: NotifiedEvent, *, audit: AuditAction | None = None
) -> str | None:
    """Journal a corrected event under its id and mark the rejection resolved; None once done,
    else why nothing was written (one line): the id is another event's or rejection's, or routed."""
    row = await conn.fetchrow(query("lock_rejection"), rejection_id)
    if row is None:
        return f"no rejection {rejection_id} (pruned after its retention, or never recorded)"
    if row["resolved_event_id"] is not None:
        return f"rejection {rejection_id} was already republished as {row['resolved_event_id']}"
    own = row["event_id"] is not None
    if own and row["event_id"] != event.event_id:
        return f"the corrected event's event_id {event.event_id} is not the rejected one ({row['event_id']})"
    holders = await conn.fetchrow(query("event_id_holders"), rejection_id, event.event_id)
    assert holders is not None, "an aggregate of subqueries returns one row"
    why = _held(event.event_id, own, holders["journal_status"], holders["rejection_id"])
    if why is not None:
        return why
    written = await conn.fetchval(
        query("republish"),
        event.event_id,
        event.event_type,
        codec.dumps(event.payload).decode(),
        event.organization_id,
        own,
    )
    if written is None:  # taken since it was looked at: by a concurrent publish or republish
        return f"event_id {event.event_id} was taken by another event meanwhile"
    await conn.execute(query("resolve_rejection"), rejection_id, event.event_id)
    await conn.execute(
        query("wake"),
        channel,
        codec.dumps({"event_id": event.event_id, "event_type": event.event_type}).decode(),
    )
    if audit is not None:
        await audit_queries.record(conn, audit, count=1, event_ids=[event.event_id])
    return None


def _held(event_id: UUID, own: bool, status: str | None, other_rejection: int | None) -> str | None:
    """Why `event_id` cannot be republished, from what holds it: its journal row's status and
    another rejection (None: free, or the rejection's own)."""
    if other_rejection is not None:
        return f"event_id {event_id} already belongs to rejection {other_rejection}"
    if status is None or (own and status == "rejected"):
        return None
    if own and status == "routed":
        return f"event {event_id} is already journaled and routed: use `it-relay replay`"
    if own:
        return f"event {event_id} is already journaled and {status}: the router takes it as it is"
    return f"event_id {event_id} already belongs to another event ({status} in the journal)"
