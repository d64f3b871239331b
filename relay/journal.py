"""SQL access to the relay's schema: every query it-relay runs against the journal lives here."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import asyncpg

from relay import codec
from relay.model import (
    NOTIFY_LIMIT_BYTES,
    ClaimedDelivery,
    DeliveryResult,
    NotifiedEvent,
    Rejection,
    RoutedEvent,
)
from relay.planning import Emission, StateUpdate
from relay.redaction import scrub_text
from relay.sql import query

P = ParamSpec("P")
R = TypeVar("R")
Gateway = Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, R]]

# Every writer of this module says which it is (tests/test_durable.py finds the unclassified):
# the only record of something (committed synchronously, whatever the connection), or redone by
# the relay when a PostgreSQL crash loses its asynchronous commit. Name -> what / why.
SOLE_RECORDS: dict[str, str] = {}
REDOABLE: dict[str, str] = {}


def sole_record(what: str) -> Callable[[Gateway[P, R]], Gateway[P, R]]:
    """Writes `what`, which exists nowhere else once committed: its transaction (the caller's, or
    one of its own) commits synchronously even on the daemon's asynchronously committing pool."""

    def decorate(func: Gateway[P, R]) -> Gateway[P, R]:
        @functools.wraps(func)
        async def durable(conn: asyncpg.Connection, /, *args: P.args, **kwargs: P.kwargs) -> R:
            # SET LOCAL lasts until the top-level transaction ends, a savepoint's release included.
            if conn.is_in_transaction():
                await conn.execute(query("durable_commit"))
                return await func(conn, *args, **kwargs)
            async with conn.transaction():
                await conn.execute(query("durable_commit"))
                return await func(conn, *args, **kwargs)

        SOLE_RECORDS[func.__name__] = what
        return durable

    return decorate


def redoable(why: str) -> Callable[[Gateway[P, R]], Gateway[P, R]]:
    """Writes what the relay does again if a crash loses it (`why`): may commit asynchronously."""

    def decorate(func: Gateway[P, R]) -> Gateway[P, R]:
        REDOABLE[func.__name__] = why
        return func

    return decorate


@sole_record("an event published by an operator or a test (`it-relay emit`)")
async def publish(conn: asyncpg.Connection, payload: dict[str, Any]) -> UUID:
    event_id: UUID = await conn.fetchval(query("publish"), codec.dumps(payload).decode())
    return event_id


@sole_record("a legacy notification's payload: a NOTIFY is kept nowhere else")
async def journal_notified(conn: asyncpg.Connection, events: Sequence[NotifiedEvent]) -> None:
    """Journal notified events (in the caller's transaction)."""
    if not events:
        return
    await conn.execute(
        query("journal_notified"),
        [e.event_id for e in events],
        [e.event_type for e in events],
        [codec.dumps(e.payload).decode() for e in events],
        [e.organization_id for e in events],
    )


async def journaled_ids(conn: asyncpg.Connection, ids: Sequence[UUID]) -> set[UUID]:
    """Which of these event ids the journal already holds."""
    if not ids:
        return set()
    return {r[0] for r in await conn.fetch(query("journaled_ids"), list(ids))}


@sole_record("a rejection: of a notification, the only trace of it")
async def record_rejected(conn: asyncpg.Connection, rejections: Sequence[Rejection]) -> None:
    if not rejections:
        return
    await conn.execute(
        query("record_rejected"),
        [r.event_id for r in rejections],
        [r.event_type for r in rejections],
        [r.reason for r in rejections],
        [codec.dumps(list(r.errors)).decode() for r in rejections],
        [None if r.payload is None else codec.dumps(r.payload).decode() for r in rejections],
        # PostgreSQL text holds neither NUL nor lone surrogates; they are kept as escapes.
        [None if r.raw_text is None else codec.storable_text(r.raw_text) for r in rejections],
        [r.source for r in rejections],
    )


# What a value the database cannot hold raises: PostgreSQL refusing it (NUL, a number beyond
# numeric), or the encoders refusing it before it is sent (lone surrogates).
UNSTORABLE: tuple[type[Exception], ...] = (asyncpg.DataError, TypeError, ValueError)


@sole_record("a rejection: of a notification, the only trace of it")
async def record_rejected_safely(conn: asyncpg.Connection, rejection: Rejection) -> None:
    """Record one rejection; if its payload cannot be stored as jsonb, keep it as scrubbed text."""
    try:
        async with conn.transaction():
            await record_rejected(conn, [rejection])
    except UNSTORABLE:
        # The standard library writes any string (lone surrogates included) as ASCII escapes.
        text = (
            json.dumps(rejection.payload, ensure_ascii=True, default=str)
            if rejection.payload is not None
            else rejection.raw_text or ""
        )
        fallback = replace(
            rejection,
            payload=None,
            raw_text=scrub_text(text[:NOTIFY_LIMIT_BYTES].replace("\\u0000", "\ufffd")),
        )
        async with conn.transaction():
            await record_rejected(conn, [fallback])


async def claim_events(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Pending events, locked until the caller's transaction ends."""
    rows: list[asyncpg.Record] = await conn.fetch(query("claim_events"), limit)
    return rows


@redoable("the events stay pending until it commits: a lost routing is done again")
async def write_routing(
    conn: asyncpg.Connection, routed: Sequence[RoutedEvent], rejected: Sequence[tuple[UUID, Rejection]]
) -> None:
    if routed:
        pairs = [(r.event_id, s, r.event_type) for r in routed for s in r.subscribers]
        await conn.execute(
            query("mark_routed"),
            [r.event_id for r in routed],
            [r.body.decode() for r in routed],
            [r.entity_key for r in routed],
            [r.event_type for r in routed],
            [r.organization_id for r in routed],
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
        )
    if rejected:
        await conn.execute(query("mark_rejected"), [event_id for event_id, _ in rejected])
        await record_rejected(conn, [r for _, r in rejected])


@redoable("a lost claim never leased anything; the delivery is claimed again")
async def claim_deliveries(
    conn: asyncpg.Connection, subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
) -> list[ClaimedDelivery]:
    """Due deliveries leased to `owner`; for an ordered subscriber, only each entity's head."""
    name = "claim_ordered" if ordered else "claim_deliveries"
    rows = await conn.fetch(query(name), subscriber, owner, limit, lease_s)
    return [
        ClaimedDelivery(
            event_id=r["event_id"],
            subscriber=subscriber,
            event_type=r["event_type"],
            attempts=r["attempts"],
            failed_rounds=r["failed_rounds"],
            body=r["body"].encode(),
            journaled_at=r["created_at"],
            generation=r["replays"],
            entity_key=r["entity_key"],
            organization_id=r["organization_id"],
            sequence=r["seq"],
        )
        for r in rows
    ]


async def seconds_until_due(conn: asyncpg.Connection, subscriber: str) -> float | None:
    seconds: float | None = await conn.fetchval(query("next_due"), subscriber)
    return seconds


@redoable("a lost outcome leaves the delivery pending: it goes out again, same event_id")
async def write_results(conn: asyncpg.Connection, results: Sequence[DeliveryResult], owner: str) -> int:
    """Write outcomes in one round trip; returns how many rows this instance still held."""
    if not results:
        return 0
    tried = [(r, a) for r in results for a in r.history]
    rows = await conn.fetch(
        query("write_results"),
        [r.event_id for r in results],
        [r.subscriber for r in results],
        [r.status for r in results],
        [r.attempts for r in results],
        [r.failed_rounds for r in results],
        [r.retry_in_s for r in results],
        [r.last_status for r in results],
        [r.last_error for r in results],
        owner,
        [r.event_id for r, _ in tried],
        [r.subscriber for r, _ in tried],
        [a.attempt for _, a in tried],
        [a.at for _, a in tried],
        [a.http_status for _, a in tried],
        [a.error for _, a in tried],
        [a.duration_ms for _, a in tried],
        [a.excerpt for _, a in tried],
        [r.hold for r in results],
    )
    return len(rows)


@redoable("a lost release expires with its lease")
async def release_leases(conn: asyncpg.Connection, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
    if keys:
        await conn.execute(query("release_leases"), owner, [k[0] for k in keys], [k[1] for k in keys])


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
    conn: asyncpg.Connection, channel: str, selection: Selection, *, dry_run: bool = False
) -> dict[str, int]:
    """Re-queue the selected deliveries (same event_id), then wake every relay instance; with
    `dry_run`, only count them. Counted per subscriber."""
    rows = await conn.fetch(query("replay"), *selection.args(), dry_run)
    if rows and not dry_run:
        await wake(conn, channel, rows[0]["event_id"], rows[0]["event_type"])
    return {r["subscriber"]: r["n"] for r in rows}


@sole_record("an operator's backfill")
async def backfill(
    conn: asyncpg.Connection,
    channel: str,
    *,
    subscriber: str,
    event_types: Sequence[str],
    since: datetime,
    until: datetime | None,
    dry_run: bool,
) -> dict[str, int]:
    """Deliveries from the journal for a subscriber added later, counted per event type."""
    rows = await conn.fetch(query("backfill"), subscriber, list(event_types), since, until, dry_run)
    if rows and not dry_run:
        # A wake-up names a journaled event: the listener treats an unknown id as a rejection.
        await wake(conn, channel, rows[0]["event_id"], rows[0]["event_type"])
    return {r["event_type"]: r["n"] for r in rows}


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberState:
    """What every instance shares about a subscriber: paused by an operator, the last circuit seen."""

    paused: bool | None
    changed_at: datetime | None
    changed_by: str | None
    circuit: str
    circuit_changed_at: datetime | None


async def subscriber_states(conn: asyncpg.Connection) -> dict[str, SubscriberState]:
    return {
        r["subscriber"]: SubscriberState(
            paused=r["paused"],
            changed_at=r["changed_at"],
            changed_by=r["changed_by"],
            circuit=r["circuit"],
            circuit_changed_at=r["circuit_changed_at"],
        )
        for r in await conn.fetch(query("subscriber_states"))
    }


@sole_record("an operator's pause or resume")
async def set_paused(conn: asyncpg.Connection, subscriber: str, paused: bool, by: str) -> None:
    await conn.execute(query("set_paused"), subscriber, paused, by)


@redoable("each instance reports its circuit again when it changes")
async def set_circuit(conn: asyncpg.Connection, subscriber: str, state: str) -> None:
    await conn.execute(query("set_circuit"), subscriber, state)


@dataclass(frozen=True, slots=True, kw_only=True)
class Released:
    """What `it-relay release` freed: dead heads no longer holding, held deliveries now pending."""

    heads: int
    released: int


@sole_record("an operator's release of a held entity")
async def release_entity(conn: asyncpg.Connection, channel: str, subscriber: str, entity: str) -> Released:
    row = await conn.fetchrow(query("release_entity"), subscriber, entity)
    assert row is not None
    if row["event_id"] is not None:
        await wake(conn, channel, row["event_id"], row["event_type"])
    return Released(heads=row["heads"], released=row["released"])


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldEntities:
    entities: int
    oldest_s: float


async def entities_held(conn: asyncpg.Connection) -> dict[str, HeldEntities]:
    """Per subscriber: how many entities wait behind a dead head, and the oldest's age."""
    return {
        r["subscriber"]: HeldEntities(entities=r["entities"], oldest_s=r["oldest_s"])
        for r in await conn.fetch(query("entities_held"))
    }


async def subscriber_stats(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(query("subscriber_stats"))
    return rows


async def event_journey(
    conn: asyncpg.Connection, event_id: UUID
) -> tuple[asyncpg.Record | None, list[asyncpg.Record], list[asyncpg.Record], asyncpg.Record | None]:
    """One event: its journal row, its deliveries, every attempt, and its rejection if any."""
    event = await conn.fetchrow(query("event_journey"), event_id)
    deliveries = await list_deliveries(conn, event_id=event_id, limit=1000)
    attempts = await conn.fetch(query("event_attempts"), event_id)
    rejection = await conn.fetchrow(query("rejection"), -1, event_id)
    return event, deliveries, attempts, rejection


async def follow_deliveries(
    conn: asyncpg.Connection,
    after: datetime,
    *,
    status: str | None,
    subscriber: str | None,
    event_type: str | None,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        query("follow_deliveries"), after, status, subscriber, event_type
    )
    return rows


async def list_rejections(
    conn: asyncpg.Connection,
    *,
    reason: str | None,
    event_type: str | None,
    since: datetime | None,
    resolved: bool,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        query("list_rejections"), reason, event_type, since, resolved, limit
    )
    return rows


async def rejection(
    conn: asyncpg.Connection, rejection_id: int, event_id: UUID | None
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(query("rejection"), rejection_id, event_id)
    return row


@sole_record("an operator's republish of a corrected event")
async def republish(
    conn: asyncpg.Connection, channel: str, rejection_id: int, event: NotifiedEvent
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
    why = _held(
        event.event_id, own, await conn.fetchrow(query("event_id_holders"), rejection_id, event.event_id)
    )
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
    return None


def _held(event_id: UUID, own: bool, holders: asyncpg.Record) -> str | None:
    """Why `event_id` cannot be republished, from what holds it (None: free, or the rejection's own)."""
    status = holders["journal_status"]
    if holders["rejection_id"] is not None:
        return f"event_id {event_id} already belongs to rejection {holders['rejection_id']}"
    if status is None or (own and status == "rejected"):
        return None
    if own and status == "routed":
        return f"event {event_id} is already journaled and routed: use `it-relay replay`"
    if own:
        return f"event {event_id} is already journaled and {status}: the router takes it as it is"
    return f"event_id {event_id} already belongs to another event ({status} in the journal)"


async def probe(conn: asyncpg.Connection) -> None:
    """One round trip: asyncpg does not notice a server that vanished without closing the socket."""
    await conn.fetchval(query("probe"))


async def backend_roles(conn: asyncpg.Connection, pids: Sequence[int]) -> dict[int, str]:
    """The login role of each backend among `pids` that is still connected."""
    return {r["pid"]: r["role"] for r in await conn.fetch(query("backend_roles"), list(set(pids)))}


async def wake(conn: asyncpg.Connection, channel: str, event_id: UUID, event_type: str) -> None:
    """A wake-up for every instance's delivery lanes (after a replay), never journaled again."""
    await conn.execute(
        query("wake"),
        channel,
        codec.dumps({"event_id": event_id, "event_type": event_type, "wake": "deliveries"}).decode(),
    )


async def list_deliveries(
    conn: asyncpg.Connection,
    *,
    status: str | None = None,
    subscriber: str | None = None,
    event_type: str | None = None,
    event_id: UUID | None = None,
    limit: int = 50,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        query("list_deliveries"), status, subscriber, event_type, event_id, limit
    )
    return rows


async def backlog(conn: asyncpg.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in await conn.fetch(query("backlog"))}


@redoable("a lost prune deletes the same rows next time")
async def prune(
    conn: asyncpg.Connection,
    delivered_s: float,
    dead_s: float,
    rejected_s: float,
    batch: int = 5000,
    served: Iterable[str] | None = None,
) -> int:
    """One bounded batch of each retention rule; returns rows deleted (call again while > 0)."""
    total = 0
    rules: list[tuple[str, tuple[Any, ...]]] = [
        ("prune_deliveries", (delivered_s, dead_s, batch)),
        ("prune_events", (delivered_s, rejected_s, batch)),
        ("prune_rejected", (rejected_s, batch)),
        ("prune_marks", (batch,)),
    ]
    if served is not None:
        rules.append(("prune_unserved", (list(served), dead_s, batch)))
    # A relay without the scheduler's views (no reference schema) has only expiry marks to judge.
    if await conn.fetchval(query("scheduler_views_exist")):
        rules.append(("prune_closed_marks", (batch,)))
    for name, args in rules:
        status = await conn.execute(query(name), *args)
        total += int(status.split()[-1])
    return total


# ─── The scheduler ──────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True, kw_only=True)
class DueWork:
    """What the scheduler's views hold at the start of a pass (one read-only snapshot)."""

    contracts: list[asyncpg.Record]
    licences: list[asyncpg.Record]
    patches: list[asyncpg.Record]
    tickets: list[asyncpg.Record]
    compliance: list[asyncpg.Record]
    states: dict[UUID, tuple[str, int]]


async def database_now(conn: asyncpg.Connection) -> datetime:
    now: datetime = await conn.fetchval(query("database_now"))
    return now


async def try_lead(conn: asyncpg.Connection, lock: int) -> bool:
    """Take the scheduler's session advisory lock if it is free."""
    return bool(await conn.fetchval(query("scheduler_try_lead"), lock))


async def due_work(
    conn: asyncpg.Connection, now: datetime, today: date, horizon_days: int, under_utilized_percent: float
) -> DueWork:
    """What is due at the pass's time `now` (`today` in the scheduler's time zone)."""
    async with conn.transaction(readonly=True):
        await conn.execute(query("compliance_threshold"), str(under_utilized_percent))
        return DueWork(
            contracts=await conn.fetch(query("contract_expirations"), today, horizon_days),
            licences=await conn.fetch(query("license_expirations"), today, horizon_days),
            patches=await conn.fetch(query("patch_backlog"), today),
            tickets=await conn.fetch(query("ticket_clocks"), now),
            compliance=await conn.fetch(query("license_compliance")),
            states={
                r["license_id"]: (r["state"], r["episode"])
                for r in await conn.fetch(query("compliance_states"))
            },
        )


async def scheduler_marked(
    conn: asyncpg.Connection, entity_ids: Iterable[UUID]
) -> set[tuple[str, UUID, str]]:
    """The (kind, entity, milestone) marks already written for these entities."""
    rows = await conn.fetch(query("scheduler_marked"), list(entity_ids))
    return {(r["kind"], r["entity_id"], r["milestone"]) for r in rows}


@sole_record("a scheduled event under a new id, and the mark that it was emitted")
async def emit_scheduled(
    conn: asyncpg.Connection, emission: Emission, event_id: UUID, states: Sequence[StateUpdate]
) -> bool:
    """Mark, update compliance states and publish in one transaction; False if already marked."""
    won = await conn.fetchval(
        query("scheduler_mark"), emission.kind, emission.entity_id, emission.milestone, event_id
    )
    await _set_states(conn, states)
    if won is None:
        return False
    await conn.fetchval(query("publish"), codec.dumps(emission.payload | {"event_id": event_id}).decode())
    return True


@sole_record("the compliance episode an alert was emitted for (lost, it is alerted again)")
async def set_compliance_states(conn: asyncpg.Connection, states: Sequence[StateUpdate]) -> None:
    await _set_states(conn, states)


async def _set_states(conn: asyncpg.Connection, states: Sequence[StateUpdate]) -> None:
    for update in states:
        await conn.execute(query("compliance_set_state"), update.license_id, update.state, update.episode)
