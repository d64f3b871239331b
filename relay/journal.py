"""SQL access to the journal: events in, routing, deliveries out, and the subscribers' shared state.

The operators' queries are in `relay.operator_queries`, the scheduler's in `relay.scheduler_queries`
and schema changes in `relay.migrate`; every writer of all of them is marked here as a sole record
or redoable. Reads return records (`relay.model`), never driver rows.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import asyncpg

from relay import codec
from relay.database import DB_ERRORS, Conn
from relay.event_cache import EventCache, EventParts
from relay.model import (
    NOTIFY_LIMIT_BYTES,
    ClaimedDelivery,
    DeliveryResult,
    HeldEntities,
    Instance,
    NotifiedEvent,
    Rejection,
    SubscriberGauges,
    SubscriberState,
)
from relay.ratelimit import TokenGrant
from relay.redaction import scrub_text
from relay.sql import query

P = ParamSpec("P")
R = TypeVar("R")
GatewayFunction = Callable[Concatenate[Conn, P], Coroutine[Any, Any, R]]

# Every writer of the gateway says which it is (tests/test_durable.py finds the unclassified):
# the only record of something (committed synchronously, whatever the connection), or redone by
# the relay when a PostgreSQL crash loses its asynchronous commit. Name -> what / why.
SOLE_RECORDS: dict[str, str] = {}
REDOABLE: dict[str, str] = {}


def sole_record(what: str) -> Callable[[GatewayFunction[P, R]], GatewayFunction[P, R]]:
    """Writes `what`, which exists nowhere else once committed: its transaction (the caller's, or
    one of its own) commits synchronously even on the daemon's asynchronously committing pool."""

    def decorate(func: GatewayFunction[P, R]) -> GatewayFunction[P, R]:
        @functools.wraps(func)
        async def durable(conn: Conn, /, *args: P.args, **kwargs: P.kwargs) -> R:
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


def redoable(why: str) -> Callable[[GatewayFunction[P, R]], GatewayFunction[P, R]]:
    """Writes what the relay does again if a crash loses it (`why`): may commit asynchronously."""

    def decorate(func: GatewayFunction[P, R]) -> GatewayFunction[P, R]:
        REDOABLE[func.__name__] = why
        return func

    return decorate


# ─── Events in ───────────────────────────────────────────────────────────────────────────────


@sole_record("an event published by an operator or a test (`it-relay emit`)")
async def publish(conn: Conn, payload: dict[str, Any]) -> UUID:
    event_id: UUID = await conn.fetchval(query("publish"), codec.dumps(payload).decode())
    return event_id


@sole_record("a legacy notification's payload: a NOTIFY is kept nowhere else")
async def journal_notified(conn: Conn, events: Sequence[NotifiedEvent]) -> None:
    """Journal notified events (in the caller's transaction)."""
    if not events:
        return
    await conn.execute(
        query("journal_notified"),
        [e.event_id for e in events],
        [e.event_type for e in events],
        [codec.dumps(e.payload).decode() for e in events],
        [e.organization_id for e in events],
        [e.traceparent for e in events],
    )


async def journaled_ids(conn: Conn, ids: Sequence[UUID]) -> set[UUID]:
    """Which of these event ids the journal already holds."""
    if not ids:
        return set()
    return {r[0] for r in await conn.fetch(query("journaled_ids"), list(ids))}


@sole_record("a rejection: of a notification, the only trace of it")
async def record_rejected(conn: Conn, rejections: Sequence[Rejection]) -> None:
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


def unstorable_text(payload: Any, raw_text: str | None = None) -> str:
    """What is kept of something the database refused to store: its payload as JSON (else the raw
    text), cut to size and scrubbed, as text it can hold."""
    # The standard library writes any string (lone surrogates included) as ASCII escapes; a NUL,
    # which jsonb refuses even escaped, becomes U+FFFD.
    text = json.dumps(payload, ensure_ascii=True, default=str) if payload is not None else raw_text or ""
    return scrub_text(text[:NOTIFY_LIMIT_BYTES].replace("\\u0000", "\ufffd"))


@sole_record("a rejection: of a notification, the only trace of it")
async def record_rejected_safely(conn: Conn, rejection: Rejection) -> None:
    """Record one rejection; if its payload cannot be stored as jsonb, keep it as scrubbed text."""
    try:
        async with conn.transaction():
            await record_rejected(conn, [rejection])
    except UNSTORABLE:
        fallback = replace(
            rejection, payload=None, raw_text=unstorable_text(rejection.payload, rejection.raw_text)
        )
        async with conn.transaction():
            await record_rejected(conn, [fallback])


async def backend_roles(conn: Conn, pids: Sequence[int]) -> dict[int, str]:
    """The login role of each backend among `pids` that is still connected."""
    return {r["pid"]: r["role"] for r in await conn.fetch(query("backend_roles"), list(set(pids)))}


async def probe(conn: Conn) -> None:
    """One round trip: asyncpg does not notice a server that vanished without closing the socket."""
    await conn.fetchval(query("probe"))


async def wake(conn: Conn, channel: str, event_id: UUID, event_type: str) -> None:
    """A wake-up for every instance's delivery lanes (after a replay), never journaled again."""
    await conn.execute(
        query("wake"),
        channel,
        codec.dumps({"event_id": event_id, "event_type": event_type, "wake": "deliveries"}).decode(),
    )


async def database_now(conn: Conn) -> datetime:
    now: datetime = await conn.fetchval(query("database_now"))
    return now


# ─── Deliveries ──────────────────────────────────────────────────────────────────────────────


@redoable("runs the delivery path's functions on nothing: no row is written")
async def warm_functions(conn: Conn, within_s: float) -> None:
    """Compile the delivery path's functions in this session (a pool connection, as it opens)."""
    await conn.fetchval(query("warm_functions"), timeout=within_s)


@redoable("a lost claim leased nothing, or leases that run out; the delivery is claimed again")
async def claim_deliveries(
    conn: Conn,
    subscriber: str,
    owner: str,
    limit: int,
    lease_s: float,
    ordered: bool = False,
    cache: EventCache | None = None,
    walks: dict[str, str] | None = None,
) -> list[ClaimedDelivery]:
    """Due deliveries leased to `owner`; for an ordered subscriber, only each entity's head, the
    walk over entities going on from where `walks` says this lane's last one ended. Their events'
    parts come from `cache` (what this instance routed), else in one more read."""
    if ordered:
        after = (walks or {}).get(subscriber, "")
        rows = await conn.fetch(query("claim_ordered"), subscriber, owner, limit, lease_s, after)
        walked = [r for r in rows if r["walk"] is not None]
        if walks is not None and walked:
            walks[subscriber] = max(walked, key=lambda r: int(r["walk"]))["entity_key"]
    else:
        rows = await conn.fetch(query("claim_deliveries"), subscriber, owner, limit, lease_s)
    if not rows:
        return []
    found, missing = (cache if cache is not None else EventCache(0)).take(r["event_id"] for r in rows)
    if missing:
        try:
            for r in await conn.fetch(query("event_parts"), missing):
                found[r["event_id"]] = EventParts(
                    r["body"].encode(), r["created_at"], r["organization_id"], r["traceparent"]
                )
        except DB_ERRORS:
            # The leases committed with the claim: give them back (attempt uncounted) rather than
            # leave the rows until the leases run out; if that fails too, they run out.
            with contextlib.suppress(*DB_ERRORS):
                await release_leases(conn, owner, [(r["event_id"], subscriber) for r in rows])
            raise
    claimed = []
    for r in rows:
        # An event pruned between the claim and the read has no delivery left to make either.
        parts = found.get(r["event_id"])
        if parts is None:
            continue
        claimed.append(
            ClaimedDelivery(
                event_id=r["event_id"],
                subscriber=subscriber,
                event_type=r["event_type"],
                attempts=r["attempts"],
                failed_rounds=r["failed_rounds"],
                body=parts.body,
                journaled_at=parts.journaled_at,
                generation=r["replays"],
                entity_key=r["entity_key"],
                organization_id=parts.organization_id,
                sequence=r["seq"],
                traceparent=parts.traceparent,
            )
        )
    return claimed


async def seconds_until_due(conn: Conn, subscriber: str) -> float | None:
    seconds: float | None = await conn.fetchval(query("next_due"), subscriber)
    return seconds


@redoable("a lost outcome leaves the delivery pending: it goes out again, same event_id")
async def write_results(conn: Conn, results: Sequence[DeliveryResult], owner: str) -> int:
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


@redoable("a lost grant is tokens unused: the subscriber gets fewer requests, never more")
async def take_tokens(conn: Conn, subscriber: str, want: int, rate: float, horizon_s: float) -> TokenGrant:
    """Slots of the subscriber's shared rate limit, taken in one locked statement (relay.ratelimit)."""
    row = await conn.fetchrow(query("take_tokens"), subscriber, want, rate, horizon_s)
    assert row is not None
    return TokenGrant(
        row["granted"], row["first_in_s"], row["spacing_s"], row["wait_s"], row["next_slot"], row["now_s"]
    )


@redoable("tokens not given back are unused slots: fewer requests, never more")
async def return_tokens(
    conn: Conn, subscriber: str, mark: datetime | float, unused: int, rate: float
) -> bool:
    """False when the bucket moved on since the grant (the slots stay spent)."""
    status = await conn.execute(query("return_tokens"), subscriber, mark, unused, rate)
    return status.endswith(" 1")


@redoable("a lost hold is heard again: the subscriber answers 429 to the next request")
async def hold_tokens(conn: Conn, subscriber: str, seconds: float) -> None:
    await conn.execute(query("hold_tokens"), subscriber, seconds)


@redoable("a lost release expires with its lease")
async def release_leases(conn: Conn, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
    if keys:
        await conn.execute(query("release_leases"), owner, [k[0] for k in keys], [k[1] for k in keys])


async def backlog(conn: Conn) -> dict[str, int]:
    return {r[0]: r[1] for r in await conn.fetch(query("backlog"))}


async def entities_held(conn: Conn) -> dict[str, HeldEntities]:
    """Per subscriber: how many entities wait behind a dead head, and the oldest's age."""
    return {
        r["subscriber"]: HeldEntities(entities=r["entities"], oldest_s=r["oldest_s"])
        for r in await conn.fetch(query("entities_held"))
    }


@redoable("a lost round leaves the rows pending, waiting behind their head; the next round holds them")
async def hold_stragglers(conn: Conn) -> int:
    """Rows routed pending behind a head that went dead meanwhile, made held; how many."""
    held: int = await conn.fetchval(query("hold_stragglers"))
    return held


async def subscriber_states(conn: Conn) -> dict[str, SubscriberState]:
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


@redoable("each instance reports its circuit again when it changes")
async def set_circuit(conn: Conn, subscriber: str, state: str) -> None:
    await conn.execute(query("set_circuit"), subscriber, state)


# ─── Retention ───────────────────────────────────────────────────────────────────────────────


async def subscriber_gauges(conn: Conn) -> dict[str, SubscriberGauges]:
    return {
        r["subscriber"]: SubscriberGauges(
            pending=r["pending"], dead=r["dead"], oldest_pending_s=r["oldest_pending_s"]
        )
        for r in await conn.fetch(query("subscriber_gauges"))
    }


async def unrouted_events(conn: Conn) -> int:
    count: int = await conn.fetchval(query("unrouted_events"))
    return count


@redoable("an instance records itself again every poll interval")
async def instance_heartbeat(conn: Conn, me: Instance, alive_within_s: float) -> int:
    """Record this instance as alive; returns how many instances are alive now (itself included)."""
    alive: int = await conn.fetchval(
        query("instance_heartbeat"),
        me.owner,
        me.host,
        me.pid,
        me.version,
        me.config,
        list(me.subscribers),
        me.leading,
        alive_within_s,
    )
    return alive


@redoable("an instance that leaves without a word ages out of the list")
async def instance_gone(conn: Conn, owner: str) -> None:
    await conn.execute(query("instance_gone"), owner)


@redoable("a lost prune deletes the same rows next time")
async def prune(
    conn: Conn,
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
        ("prune_instances", ()),
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
