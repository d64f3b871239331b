"""The fault suite: the relay killed, the database restarted, subscribers down or hanging.

After each fault every (event, subscriber) pair the contracts route is delivered at least once,
duplicates stay within what was in flight, other subscribers are not held up, and no relay process
ever exits on its own. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from relay import journal
from relay.contracts.examples import example
from relay.settings import SubscriberSettings
from tests.support.postgres import fresh_name, upgraded, with_database
from tests.support.relay import (
    relay_settings,
    start_relay_process,
    stop_process,
    wait_for_rows,
    write_config,
)
from tests.support.sink import Received, Reply, Sink

pytestmark = pytest.mark.faults
PATHS = ("/pf-10", "/hr")
MAX_IN_FLIGHT: int = SubscriberSettings.model_fields["max_in_flight"].default  # the default per subscriber


async def publish_many(db: asyncpg.Connection, count: int, tag: str = "F") -> list[str]:
    async with db.transaction():
        return [
            str(await journal.publish(db, example("it_asset_assigned") | {"asset_tag": f"{tag}-{i}"}))
            for i in range(count)
        ]


def _at_least(count: int, requests: list[Received]) -> bool:
    return len(requests) >= count


def assert_complete(sink: Sink, ids: list[str], paths: tuple[str, ...], max_duplicates: int) -> None:
    pairs = Counter((r.headers["webhook-id"], r.path) for r in sink.requests)
    missing = {(i, p) for i in ids for p in paths} - set(pairs)
    assert not missing, f"{len(missing)} pairs never delivered"
    duplicates = sum(n - 1 for n in pairs.values())
    assert duplicates <= max_duplicates, duplicates


async def test_sigkill_three_times_during_a_5k_event_run(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10", "HR"], delivery={"lease_s": 3.0})
    config = write_config(tmp_path / "relay.toml", settings)
    rng = random.Random(20261127)
    ids = await publish_many(db, 5000)
    proc = start_relay_process(config, tmp_path / "relay.log")
    kills = 0
    try:
        for target in sorted(rng.sample(range(500, 9000), 3)):
            await sink.wait_for(partial(_at_least, target), within=60)
            assert proc.poll() is None, "the relay exited on its own"
            await stop_process(proc, signal.SIGKILL)
            kills += 1
            proc = start_relay_process(config, tmp_path / "relay.log")
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 10_000,
            within=120,
        )
        assert proc.poll() is None
    finally:
        await stop_process(proc)
    assert kills == 3
    # Each kill can repeat at most what was leased and unrecorded: max_in_flight per subscriber.
    assert_complete(sink, ids, PATHS, max_duplicates=kills * 2 * MAX_IN_FLIGHT)


@pytest.fixture
def private_pg() -> Iterator[object]:
    """A PostgreSQL server of this test's own, so it can be restarted without touching anything else."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="it-relay-fault-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture
async def private_db(private_pg: object) -> str:
    admin_url: str = private_pg.get_uri()  # type: ignore[attr-defined]
    name = fresh_name()
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return await upgraded(with_database(admin_url, name))


def _pg_ctl(server: object, *args: str) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60)  # type: ignore[attr-defined]


async def _connect_retrying(url: str, within: float = 30) -> asyncpg.Connection:
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_postgresql_restart_during_a_run(
    tmp_path: Path, private_pg: object, private_db: str, sink: Sink
) -> None:
    settings = relay_settings(private_db, sink, ["PF-10", "HR"], database={"probe_interval_s": 0.5})
    config = write_config(tmp_path / "relay.toml", settings)
    proc = start_relay_process(config, tmp_path / "relay.log")
    db = await asyncpg.connect(private_db)
    try:
        ids = await publish_many(db, 1000, "before")
        await sink.wait_for(lambda r: len(r) >= 300, within=60)
        await db.close()
        await asyncio.to_thread(_pg_ctl, private_pg, "-m", "fast", "stop")
        await asyncio.sleep(3)  # the database is down; the relay keeps retrying
        assert proc.poll() is None, "the relay exited while the database was down"
        await asyncio.to_thread(_pg_ctl, private_pg, "restart")
        db = await _connect_retrying(private_db)
        ids += await publish_many(db, 500, "after")
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 3000,
            within=120,
        )
        assert proc.poll() is None
    finally:
        await stop_process(proc)
        await db.close()
    assert_complete(sink, ids, PATHS, max_duplicates=2 * MAX_IN_FLIGHT)


async def test_a_subscriber_down_for_10s_then_back(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    down = Sink()
    await down.start()
    port = down.port
    settings = relay_settings(
        relay_db,
        sink,
        ["PF-10", "HR"],
        subscriber_overrides={"HR": {"url": f"http://127.0.0.1:{port}/hr"}},
        delivery={"retry_schedule_s": [0.5, 1, 2, 2, 2, 2, 2, 2], "circuit_cooldown_s": 1.0},
    )
    config = write_config(tmp_path / "relay.toml", settings)
    await down.stop()  # HR is down: connection refused
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        started = time.monotonic()
        ids = await publish_many(db, 500)
        # PF-10 gets all 500 while HR is still down: it is not held up by HR.
        await sink.wait_for(lambda r: len(r) >= 500, within=30)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - started)))  # HR stays down 10 s in all
        back = await Sink().start(port)
        await back.wait_for(lambda r: len({x.headers["webhook-id"] for x in r}) >= 500, within=60)
        assert proc.poll() is None
    finally:
        await stop_process(proc)
    assert_complete(sink, ids, ("/pf-10",), max_duplicates=0)
    assert {r.headers["webhook-id"] for r in back.requests} == set(ids)
    await back.stop()


async def test_a_hanging_subscriber_does_not_hold_up_the_others(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/hr", *[Reply(200, delay_s=3600)] * 1000)  # accepts, never answers
    settings = relay_settings(
        relay_db,
        sink,
        ["PF-10", "HR"],
        subscriber_overrides={"HR": {"timeout_s": 1.0}},
        delivery={"retry_schedule_s": [30]},
    )
    config = write_config(tmp_path / "relay.toml", settings)
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        ids = await publish_many(db, 300)
        # Every PF-10 delivery completes while HR's requests hang unanswered.
        await sink.wait_for(lambda r: len([x for x in r if x.path == "/pf-10"]) >= 300, within=30)
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE subscriber = 'HR' AND attempts > 0",
            lambda v: v >= 16,
            within=30,
        )
        assert proc.poll() is None
    finally:
        await stop_process(proc)
    assert_complete(sink, ids, ("/pf-10",), max_duplicates=0)
    errors = {
        r[0]
        for r in await db.fetch(
            "SELECT DISTINCT last_error FROM it_relay.deliveries WHERE subscriber = 'HR' AND attempts > 0"
        )
    }
    assert errors == {"timeout after 1s"}


async def test_two_daemons_one_killed(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/pf-10", *[Reply(200, delay_s=0.02)] * 3000)
    settings = relay_settings(relay_db, sink, ["PF-10", "HR"], delivery={"lease_s": 3.0})
    config = write_config(tmp_path / "relay.toml", settings)
    procs = [start_relay_process(config, tmp_path / f"relay{i}.log") for i in range(2)]
    try:
        ids = await publish_many(db, 2000)
        await sink.wait_for(lambda r: len(r) >= 800, within=60)
        await stop_process(procs[0], signal.SIGKILL)
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 4000,
            within=120,
        )
        assert procs[1].poll() is None, "the surviving relay exited on its own"
    finally:
        await stop_process(procs[1])
    assert_complete(sink, ids, PATHS, max_duplicates=2 * MAX_IN_FLIGHT)
