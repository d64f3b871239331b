"""Journal order per entity: publish() serialises the writers of one entity until commit, so the
journal's order (seq) is their commit order; other entities never wait."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import asyncpg

from relay import codec
from relay.contracts import REGISTRY, Accepted, parse_event
from relay.contracts.examples import example
from relay.ingest import entity_key
from tests.support.relay import wait_for_rows


async def test_the_database_names_each_events_entity_as_the_router_does(db: asyncpg.Connection) -> None:
    """it_relay.entity_key() (the lock publish() takes) against relay.ingest.entity_key(), every
    event type, the id spelled in capitals and without hyphens too."""
    for event_type in REGISTRY:
        payload = example(event_type)
        accepted = parse_event(codec.dumps(payload).decode(), "keep")
        assert isinstance(accepted, Accepted), event_type
        expected = entity_key(accepted)
        assert expected is not None, event_type
        field, _, value = expected.partition(":")
        for spelling in (value, value.upper(), value.replace("-", "")):
            got = await db.fetchval(
                "SELECT it_relay.entity_key($1::jsonb)", codec.dumps(payload | {field: spelling}).decode()
            )
            assert got == expected, (event_type, spelling)
    assert await db.fetchval("SELECT count(*) FROM it_relay.entity_fields") == len(REGISTRY)


async def test_a_second_writer_of_one_entity_waits_for_the_first_commit_and_comes_after_it(
    relay_db: str, db: asyncpg.Connection
) -> None:
    asset = str(uuid4())
    first, second, other = [await asyncpg.connect(relay_db) for _ in range(3)]
    try:
        tx = first.transaction()
        await tx.start()
        early = await first.fetchval(
            "SELECT it_relay.publish($1::jsonb)",
            codec.dumps(example("it_asset_assigned") | {"asset_id": asset}).decode(),
        )
        # Another writer of the same asset (spelled in capitals) blocks until the first commits.
        late_task = asyncio.create_task(
            second.fetchval(
                "SELECT it_relay.publish($1::jsonb)",
                codec.dumps(example("it_asset_disposed") | {"asset_id": asset.upper()}).decode(),
            )
        )
        second_pid = second.get_server_pid()
        await wait_for_rows(
            db,
            f"SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database() AND pid = {second_pid}",
            lambda v: v == "Lock",
        )
        # A writer of another asset does not wait.
        await asyncio.wait_for(
            other.fetchval(
                "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_asset_assigned")).decode()
            ),
            30,
        )
        assert not late_task.done()
        await tx.commit()
        late = await asyncio.wait_for(late_task, 30)
    finally:
        for conn in (first, second, other):
            await conn.close()
    seqs = {
        r["event_id"]: r["seq"]
        for r in await db.fetch(
            "SELECT event_id, seq FROM it_relay.events WHERE event_id = ANY($1)", [early, late]
        )
    }
    assert seqs[early] < seqs[late]
    keys = {
        r[0]
        for r in await db.fetch(
            "SELECT entity_key FROM it_relay.events WHERE event_id = ANY($1)", [early, late]
        )
    }
    assert keys == {f"asset_id:{asset}"}


async def test_the_lock_lasts_until_the_writer_rolls_back_too(relay_db: str, db: asyncpg.Connection) -> None:
    asset = str(uuid4())
    first, second = await asyncpg.connect(relay_db), await asyncpg.connect(relay_db)
    try:
        tx = first.transaction()
        await tx.start()
        await first.fetchval(
            "SELECT it_relay.publish($1::jsonb)",
            codec.dumps(example("it_asset_assigned") | {"asset_id": asset}).decode(),
        )
        task = asyncio.create_task(
            second.fetchval(
                "SELECT it_relay.publish($1::jsonb)",
                codec.dumps(example("it_asset_disposed") | {"asset_id": asset}).decode(),
            )
        )
        await wait_for_rows(
            db,
            f"SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database() AND pid = {second.get_server_pid()}",
            lambda v: v == "Lock",
        )
        await tx.rollback()
        await asyncio.wait_for(task, 30)
    finally:
        await first.close()
        await second.close()
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1


async def test_legacy_notifications_and_events_without_an_entity_are_journaled_in_order(
    db: asyncpg.Connection,
) -> None:
    # An event whose contract id field is missing has no entity: it is unordered, never locked.
    payload = {k: v for k, v in example("it_asset_assigned").items() if k != "asset_id"}
    event_id = await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(payload).decode())
    row = await db.fetchrow("SELECT entity_key, seq FROM it_relay.events WHERE event_id = $1", event_id)
    assert row is not None and row["entity_key"] is None and row["seq"] > 0
