"""PostgreSQL crashes (an immediate stop: no checkpoint, recovery on start) right after the relay
wrote something that exists nowhere else: it is there after recovery, although the daemon's pool
commits asynchronously. The server is the test's own, its WAL writer slowed to its maximum delay,
so an asynchronous commit is still unflushed when the crash comes."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator

import asyncpg
import pytest

from relay import database
from relay.gateway import Gateway
from relay.listener import Listener
from relay.metrics import Metrics
from relay.settings import load_settings
from tests.support.postgres import fresh_name, upgraded, with_database
from tests.support.relay import listening, wait_for_rows, wait_until
from tests.support.sink import PATIENCE

pytestmark = pytest.mark.faults


def _pg_ctl(server: object, *args: str) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60 * PATIENCE)  # type: ignore[attr-defined]


@pytest.fixture
def lazy_wal_pg() -> Iterator[object]:
    """A server of this test's own whose WAL writer flushes asynchronous commits every 10 s only."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="it-relay-crash-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            # autovacuum off: its synchronous commits would flush the WAL before the crash.
            server.psql("ALTER SYSTEM SET wal_writer_delay = '10s';\nALTER SYSTEM SET autovacuum = off;\n")
            _pg_ctl(server, "restart")
            yield server
        finally:
            server.cleanup()


async def _connect_retrying(url: str, within: float = 30) -> asyncpg.Connection:
    deadline = time.monotonic() + within * PATIENCE
    while True:
        try:
            return await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_rejected_notifications_survive_a_postgresql_crash(lazy_wal_pg: object) -> None:
    admin_url: str = lazy_wal_pg.get_uri()  # type: ignore[attr-defined]
    name = fresh_name()
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = await upgraded(with_database(admin_url, name))
    settings = load_settings(None, database={"url": url})
    pool = await database.create_pool(settings.database)
    listener = Listener(
        connect=lambda: database.connect(settings.database, database.LISTENER_APPLICATION),
        store=Gateway(pool),
        channel=settings.database.channel,
        metrics=Metrics(),
        on_wake=lambda _everything: None,
        poll_interval_s=0.2,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(listening(listener, stopping))
    sender = await asyncpg.connect(url)
    try:
        await wait_until(listener.connected.is_set, task=task)
        stub = json.dumps({"event_id": "00000000-0000-4000-8000-000000000001", "event_type": "x"})
        async with sender.transaction():  # one batch of rejections only
            for raw in ('["\\ud800"]', "{not json", stub):
                await sender.execute("SELECT pg_notify('it_events', $1)", raw)
        await wait_for_rows(sender, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 3)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30 * PATIENCE)
        await pool.close()
        await sender.close()
    await asyncio.to_thread(_pg_ctl, lazy_wal_pg, "-m", "immediate", "restart")
    conn = await _connect_retrying(url)
    try:
        reasons = sorted(r[0] for r in await conn.fetch("SELECT reason FROM it_relay.rejected_events"))
    finally:
        await conn.close()
    assert reasons == ["invalid_text", "not_json", "schema"]
