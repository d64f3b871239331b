"""The relay's schema and it_relay.publish(), the producer API, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from relay import codec, database, journal, migrate
from relay.contracts.examples import example
from relay.migrate import SchemaError
from relay.model import NotifiedEvent
from relay.settings import load_settings
from relay.sql import migrations
from tests.support.relay import wait_until


async def test_upgrade_is_idempotent_and_safe_concurrently(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.upgrade(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(migrations())]
        assert await migrate.upgrade(conns[0]) == []
        assert await migrate.check(conns[0]) == migrate.code_version()
    finally:
        for c in conns:
            await c.close()


async def test_check_refuses_a_missing_or_older_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(SchemaError, match="run `it-relay db upgrade`"):
            await migrate.check(conn)
        await migrate.upgrade(conn)
        await conn.execute("DELETE FROM it_relay.schema_version")
        await conn.execute("INSERT INTO it_relay.schema_version VALUES (0, 'older')")
        with pytest.raises(SchemaError, match=f"needs version {migrate.code_version()}"):
            await migrate.check(conn)
    finally:
        await conn.close()


async def test_publish_journals_in_the_callers_transaction(db: asyncpg.Connection) -> None:
    async with db.transaction():
        event_id = await db.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
        assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1
    row = await db.fetchrow("SELECT * FROM it_relay.events WHERE event_id = $1", event_id)
    assert row is not None
    assert row["status"] == "pending"
    assert row["source"] == "publish"
    assert str(row["organization_id"]) == example("it_ticket_created")["organization_id"]
    assert json.loads(row["payload"])["event_id"] == str(event_id)


async def test_a_rolled_back_transaction_publishes_nothing(relay_db: str, db: asyncpg.Connection) -> None:
    heard: list[str] = []
    await db.add_listener("it_events", lambda *args: heard.append(args[-1]))
    producer = await asyncpg.connect(relay_db)
    try:
        tx = producer.transaction()
        await tx.start()
        await producer.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
        await tx.rollback()
        # A committed publish after it proves the listener works, so silence above is meaningful.
        await producer.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_asset_purchased")).decode()
        )
    finally:
        await producer.close()
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert [json.loads(h)["event_type"] for h in heard] == ["it_asset_purchased"]
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1


async def test_publish_keeps_a_given_event_id_and_is_idempotent(db: asyncpg.Connection) -> None:
    given = str(uuid.uuid4())
    payload = codec.dumps(example("it_ticket_created") | {"event_id": given}).decode()
    first = await db.fetchval("SELECT it_relay.publish($1::jsonb)", payload)
    second = await db.fetchval("SELECT it_relay.publish($1::jsonb)", payload)
    assert str(first) == str(second) == given
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1


@pytest.mark.parametrize(
    "bad", ["[1]", '"x"', codec.dumps(example("it_ticket_created") | {"event_id": "nope"}).decode()]
)
async def test_publish_refuses_what_is_not_an_event_object(db: asyncpg.Connection, bad: str) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match=r"it_relay\.publish"):
        await db.fetchval("SELECT it_relay.publish($1::jsonb)", bad)


async def test_publish_redacts_the_licence_key_before_writing_and_notifies_no_data(
    db: asyncpg.Connection,
) -> None:
    heard: list[str] = []
    await db.add_listener("it_events", lambda *args: heard.append(args[-1]))
    payload = example("it_license_created") | {
        "license_key": "RAW-KEY-123",
        "meta": [{"LicenseKey": "RAW-KEY-456"}],
    }
    event_id = await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(payload).decode())
    stored = await db.fetchval("SELECT payload::text FROM it_relay.events")
    assert "RAW-KEY" not in stored
    assert json.loads(stored)["license_key"] == "[REDACTED]"
    await _heard(heard, 1)
    # Any login may LISTEN: the notification names the event and nothing else.
    assert json.loads(heard[0]) == {"event_id": str(event_id), "event_type": "it_license_created"}


async def _heard(heard: list[str], count: int) -> None:
    await wait_until(lambda: len(heard) >= count, within=10)


async def test_every_notification_is_a_stub_whatever_the_size(db: asyncpg.Connection) -> None:
    heard: list[str] = []
    await db.add_listener("it_events", lambda *args: heard.append(args[-1]))
    small = example("it_ticket_created")
    large = example("it_ticket_created") | {"description": "x" * 9000}
    small_id = await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(small).decode())
    big_id = await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(large).decode())
    await _heard(heard, 2)
    assert [json.loads(h) for h in heard] == [
        {"event_id": str(small_id), "event_type": "it_ticket_created"},
        {"event_id": str(big_id), "event_type": "it_ticket_created"},
    ]


async def test_publishing_an_event_id_again_with_another_payload_fails_visibly(
    db: asyncpg.Connection,
) -> None:
    given = str(uuid.uuid4())
    first = example("it_ticket_created") | {"event_id": given}
    await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(first).decode())
    # The same payload again (keys in another order, the same key redacted) is a no-op ...
    again = dict(reversed(list(first.items())))
    assert str(await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(again).decode())) == given
    # ... a different one is the producer's error, not a silent loss.
    with pytest.raises(asyncpg.UniqueViolationError, match=f"event_id {given} was already published"):
        async with db.transaction():
            await db.fetchval(
                "SELECT it_relay.publish($1::jsonb)", codec.dumps(first | {"subject": "changed"}).decode()
            )
    assert (
        json.loads(await db.fetchval("SELECT payload::text FROM it_relay.events"))["subject"]
        == first["subject"]
    )
    # Still so after the router rewrote the stored payload.
    await db.execute(
        "UPDATE it_relay.events SET payload = payload - 'subject', status = 'routed', routed_at = clock_timestamp()"
    )
    assert str(await db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(first).decode())) == given


async def test_an_ordinary_session_cannot_redirect_notifications(db: asyncpg.Connection) -> None:
    heard: list[str] = []
    await db.add_listener("it_events", lambda *args: heard.append(args[-1]))
    async with db.transaction():
        # What every session could do before: choose the channel of its own publish() calls.
        await db.execute("SET LOCAL it_relay.channel = 'elsewhere'")
        await db.fetchval(
            "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
        )
    await _heard(heard, 1)
    assert await db.fetchval("SELECT value FROM it_relay.settings WHERE name = 'channel'") == "it_events"


async def test_db_upgrade_records_the_configured_channel(db: asyncpg.Connection) -> None:
    assert await migrate.upgrade(db, channel="it_events") == []
    assert await migrate.upgrade(db, channel="other_events") == ["channel other_events"]
    heard: list[str] = []
    await db.add_listener("other_events", lambda *args: heard.append(args[-1]))
    await db.fetchval(
        "SELECT it_relay.publish($1::jsonb)", codec.dumps(example("it_ticket_created")).decode()
    )
    await _heard(heard, 1)
    with pytest.raises(
        SchemaError, match=r"database\.channel is 'it_events' but the database publishes on 'other_events'"
    ):
        await migrate.check_channel(db, "it_events")


async def test_bookkeeping_commits_asynchronously_but_journaled_notifications_durably(relay_db: str) -> None:
    settings = load_settings(None, database={"url": relay_db})
    pool = await database.create_pool(settings.database)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
            async with conn.transaction():
                await journal.journal_notified(
                    conn,
                    [
                        NotifiedEvent(
                            event_id=uuid.uuid4(),
                            event_type="x",
                            payload={"event_type": "x"},
                            organization_id=None,
                        )
                    ],
                )
                assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await pool.close()
    strict = load_settings(None, database={"url": relay_db, "bookkeeping_commit": "sync"})
    pool = await database.create_pool(strict.database)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await pool.close()
