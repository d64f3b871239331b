"""A dead head's hold (on_exhausted = "hold") against a routing of its entity's next event that
started before the hold, or before its release, and commits after it. The routing judges "held"
by its own snapshot, and the hold's (or the release's) statement cannot see the routing's row yet:
the claim is what keeps the entity in order and moving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from relay import journal, operator_queries, routing_queries
from relay.contracts.examples import example
from relay.ingest import route
from relay.model import DeliveryResult, RoutedEvent
from tests.support.relay import wait_for_rows

pytestmark = pytest.mark.db

SUBSCRIBER = "FA"  # it_asset_purchased goes to FA alone
OWNER, OTHER = "host:1:aaaa", "host:2:bbbb"
ASSET = str(uuid4())
KEY = f"asset_id:{ASSET}"


def _purchase() -> dict[str, Any]:
    return example("it_asset_purchased") | {"asset_id": ASSET, "event_id": str(uuid4())}


async def _route(conn: asyncpg.Connection) -> None:
    pending = await routing_queries.claim_events(conn, 10, lock=False)
    routed = [route(e.event_id, e.payload, "keep") for e in pending]
    assert all(isinstance(r, RoutedEvent) for r in routed)
    await routing_queries.write_routing(conn, pending, routed, [])  # type: ignore[arg-type]


async def _claim(conn: asyncpg.Connection, owner: str) -> list[UUID]:
    claimed = await journal.claim_deliveries(conn, SUBSCRIBER, owner, 10, 60.0, ordered=True)
    return [c.event_id for c in claimed]


async def _dead_head(conn: asyncpg.Connection) -> UUID:
    """The entity's first event routed, claimed, and gone dead under on_exhausted = "hold"."""
    head = await journal.publish(conn, _purchase())
    await _route(conn)
    assert await _claim(conn, OWNER) == [head]
    return head


async def _status(conn: asyncpg.Connection, event_id: UUID) -> str:
    status: str = await conn.fetchval(
        "SELECT status FROM it_relay.deliveries WHERE event_id = $1 AND subscriber = $2", event_id, SUBSCRIBER
    )
    return status


async def _hold(conn: asyncpg.Connection, head: UUID) -> None:
    dead = DeliveryResult(
        event_id=head,
        subscriber=SUBSCRIBER,
        status="dead",
        attempts=1,
        failed_rounds=1,
        retry_in_s=None,
        last_status=500,
        last_error="HTTP 500",
        hold=True,
    )
    assert await journal.write_results(conn, [dead], OWNER) == 1


async def _routing_across(db: asyncpg.Connection, url: str, meanwhile: Callable[[], Awaitable[None]]) -> UUID:
    """Route the entity's next event with a snapshot taken before `meanwhile` commits and a row
    written after it: the routing's insert waits on an uncommitted row of the same key, rolled
    back once `meanwhile` has committed."""
    later = await journal.publish(db, _purchase())
    blocker, router = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        # No foreign-key check for the blocker: its lock on the event's row would make the routing
        # skip the event (SKIP LOCKED) instead of waiting on the row's key.
        await blocker.execute("SET session_replication_role = replica")
        blocked = blocker.transaction()
        await blocked.start()
        await blocker.execute(
            "INSERT INTO it_relay.deliveries (event_id, subscriber, event_type) VALUES ($1, $2, 'it_asset_purchased')",
            later,
            SUBSCRIBER,
        )
        routing = asyncio.create_task(_route(router))
        await wait_for_rows(
            db,
            f"SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database() AND pid = {router.get_server_pid()}",
            lambda v: v == "Lock",
        )
        assert not routing.done()
        await meanwhile()
        await blocked.rollback()
        await routing
    finally:
        await blocker.close()
        await router.close()
    return later


async def _straggler(db: asyncpg.Connection, url: str) -> tuple[UUID, UUID]:
    """The entity's dead head, and its next event routed pending while the head went dead."""
    head = await _dead_head(db)
    return head, await _routing_across(db, url, lambda: _hold(db, head))


@asynccontextmanager
async def _in_transaction(url: str) -> AsyncIterator[tuple[asyncpg.Connection, Transaction]]:
    """A connection of its own inside a transaction the test ends (closing it rolls back)."""
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        yield conn, tx
    finally:
        await conn.close()


async def test_a_row_routed_pending_behind_a_head_that_went_dead_meanwhile_waits_for_its_release(
    relay_db: str, db: asyncpg.Connection
) -> None:
    head, later = await _straggler(db, relay_db)
    # The routing saw the head in flight, not holding: its row went in pending, not held.
    assert await _status(db, later) == "pending"
    assert await _claim(db, OTHER) == [], "a later event went out past its entity's dead head"
    woken: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(relay_db)
    try:
        await listener.add_listener("it_events", lambda *args: woken.put_nowait(args[3]))
        released = await operator_queries.release_entity(db, "it_events", SUBSCRIBER, KEY)
        assert (released.heads, released.released) == (1, 0)
        # Nothing was held, yet a row waits: every instance's lanes are woken to take it now, not
        # at their next poll.
        wake = json.loads(await asyncio.wait_for(woken.get(), 30))
        assert wake == {"event_id": str(head), "event_type": "it_asset_purchased", "wake": "deliveries"}
    finally:
        await listener.close()
    assert await _claim(db, OTHER) == [later]


async def test_housekeeping_holds_a_row_routed_pending_behind_a_head_that_went_dead_meanwhile(
    relay_db: str, db: asyncpg.Connection
) -> None:
    _, later = await _straggler(db, relay_db)
    assert await _status(db, later) == "pending"
    assert await journal.hold_stragglers(db) == 1
    assert await _status(db, later) == "held"
    # Now the release counts it, and it goes out as the entity's head.
    released = await operator_queries.release_entity(db, "it_events", SUBSCRIBER, KEY)
    assert (released.heads, released.released) == (1, 1)
    assert await _claim(db, OTHER) == [later]


async def test_a_release_under_way_while_stragglers_are_held_is_passed_over_not_undone(
    relay_db: str, db: asyncpg.Connection
) -> None:
    _, later = await _straggler(db, relay_db)
    async with _in_transaction(relay_db) as (releasing, release):
        await operator_queries.release_entity(releasing, "it_events", SUBSCRIBER, KEY)
        # The head still holds in every other snapshot; the round neither waits nor sets the hold.
        assert await asyncio.wait_for(journal.hold_stragglers(db), 30) == 0
        await release.commit()
    assert await _status(db, later) == "pending"
    assert await journal.hold_stragglers(db) == 0
    assert await _claim(db, OTHER) == [later]


async def test_a_release_waiting_on_a_straggler_round_counts_what_that_round_held(
    relay_db: str, db: asyncpg.Connection
) -> None:
    _, later = await _straggler(db, relay_db)
    releasing = await asyncpg.connect(relay_db)
    try:
        async with _in_transaction(relay_db) as (sweeping, round_):
            assert await journal.hold_stragglers(sweeping) == 1
            release = asyncio.create_task(
                operator_queries.release_entity(releasing, "it_events", SUBSCRIBER, KEY)
            )
            await wait_for_rows(
                db,
                "SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database() "
                f"AND pid = {releasing.get_server_pid()}",
                lambda v: v == "Lock",
            )
            await round_.commit()
        released = await asyncio.wait_for(release, 30)
    finally:
        await releasing.close()
    # The release's statement began after the round committed: the row it held is counted.
    assert (released.heads, released.released) == (1, 1)
    assert await _claim(db, OTHER) == [later]


async def test_a_straggler_another_statement_holds_is_left_for_the_next_round(
    relay_db: str, db: asyncpg.Connection
) -> None:
    _, later = await _straggler(db, relay_db)
    async with _in_transaction(relay_db) as (locker, locked):
        await locker.execute(
            "SELECT 1 FROM it_relay.deliveries WHERE event_id = $1 AND subscriber = $2 FOR UPDATE",
            later,
            SUBSCRIBER,
        )
        assert await asyncio.wait_for(journal.hold_stragglers(db), 30) == 0
        await locked.rollback()
    assert await journal.hold_stragglers(db) == 1
    assert await _status(db, later) == "held"


async def test_a_row_routed_held_after_its_entity_was_released_meanwhile_is_claimed(
    relay_db: str, db: asyncpg.Connection
) -> None:
    head = await _dead_head(db)
    await _hold(db, head)

    async def release() -> None:
        await operator_queries.release_entity(db, "it_events", SUBSCRIBER, KEY)

    later = await _routing_across(db, relay_db, release)
    # The routing saw the hold, the release could not see the routing's row: held, nothing holding it.
    assert await _status(db, later) == "held"
    assert not await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE holds")
    assert await _claim(db, OTHER) == [later], "an entity released by an operator stayed stuck"
    assert await _status(db, later) == "pending"


async def test_retention_keeps_a_dead_head_that_holds_its_entity(db: asyncpg.Connection) -> None:
    head = await _dead_head(db)
    await _hold(db, head)
    await db.execute("UPDATE it_relay.deliveries SET updated_at = now() - interval '400 days'")
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400):
        pass
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE holds") == 1
    # Released, it is an ordinary dead delivery again: retention takes it once it is old.
    await operator_queries.release_entity(db, "it_events", SUBSCRIBER, KEY)
    await db.execute("UPDATE it_relay.deliveries SET updated_at = now() - interval '400 days'")
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400):
        pass
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries") == 0


async def test_a_claim_never_locks_a_row_its_entitys_hold_keeps_back(db: asyncpg.Connection) -> None:
    head = await _dead_head(db)
    later = await journal.publish(db, _purchase())
    await _route(db)
    await _hold(db, head)
    row = (
        "SELECT status || ' ' || xmax::text FROM it_relay.deliveries WHERE event_id = $1 AND subscriber = $2"
    )
    assert await db.fetchval(row, later, SUBSCRIBER) == "held 0"
    assert await _claim(db, OTHER) == []
    # Passed over before the lock: a claim that locked it (and dropped it) would leave its xmax set.
    assert await db.fetchval(row, later, SUBSCRIBER) == "held 0"
