"""No loop dies or stalls silently: a poisoned notification is a rejection and ingestion goes
on; a loop that stops coming round makes /readyz say which one, until it comes back."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
import pytest

from relay import codec, journal
from relay.contracts.examples import example
from tests.support.relay import relay_settings, running, wait_for_rows, wait_until
from tests.support.sink import Sink

pytestmark = pytest.mark.faults


async def test_a_lone_surrogate_is_rejected_and_ingestion_goes_on(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])) as daemon:
        # This one notification once killed the ingest task for good, with /readyz still 200.
        for poison in (
            '["\\ud800"]',
            '{"event_type": "it_asset_assigned", "x": "\\udfff"}',
            '{"a": "\\u0000"}',
        ):
            await db.execute("SELECT pg_notify('it_events', $1)", poison)
        # An id-only notification naming nothing in the journal: nothing to deliver, but recorded.
        stub = {"event_id": str(uuid.uuid4()), "event_type": "it_asset_assigned"}
        await db.execute("SELECT pg_notify('it_events', $1)", json.dumps(stub))
        legacy = example("it_asset_assigned") | {"asset_tag": "AFTER-POISON"}
        await db.execute("SELECT pg_notify('it_events', $1)", codec.dumps(legacy).decode())
        await sink.wait_for(lambda r: any(b"AFTER-POISON" in x.body for x in r))
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.rejected_events WHERE reason = 'invalid_text'",
            lambda v: v == 3,
        )
        assert daemon.readiness() is None
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.rejected_events WHERE reason = 'schema'", lambda v: v == 1
        )
    texts = [r[0] for r in await db.fetch("SELECT raw_text FROM it_relay.rejected_events ORDER BY id")]
    assert texts[0] == '["\\ud800"]'  # kept, as escapes PostgreSQL can hold
    errors = await db.fetchval("SELECT errors FROM it_relay.rejected_events WHERE reason = 'schema'")
    assert errors == [
        f"$: names event {stub['event_id']}, which is not in the journal, and carries no payload"
    ]


async def test_readyz_names_a_stalled_loop_until_it_comes_back(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])) as daemon:
        assert daemon.server is not None
        url = f"http://127.0.0.1:{daemon.server.port}/readyz"
        await wait_until(lambda: daemon.readiness() is None)
        blocker = await asyncpg.connect(relay_db)
        try:
            # The router's claim waits on this lock: its loop stops coming round.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE it_relay.events IN ACCESS EXCLUSIVE MODE")
            await wait_until(lambda: "router" in (daemon.readiness() or ""), within=60)
            async with httpx.AsyncClient() as client:
                stalled = await client.get(url)
            assert stalled.status_code == 503
            assert stalled.text.startswith("not ready: loop stalled: ")
            assert "router" in stalled.text
            await tx.rollback()
        finally:
            await blocker.close()
        await wait_until(lambda: daemon.readiness() is None, within=60)
        await journal.publish(db, example("it_asset_assigned"))
        await sink.wait_for(lambda r: len(r) == 1)
