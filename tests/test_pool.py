"""The daemon's pool releases a connection without a reset round trip, which is safe only because
no named query leaves session state behind; both halves are checked here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from relay import database, journal, migrate
from relay.settings import load_settings
from relay.sql import QUERIES
from tests.support.relay import relay_settings, running, wait_for_rows
from tests.support.sink import PATIENCE, Sink

# The one query allowed session state: the scheduler's leader lock, on its own connection.
SESSION_STATE_ALLOWED = {"scheduler_try_lead"}

SESSION_STATE = (
    re.compile(
        r"\bpg_(try_)?advisory_lock(_shared)?\s*\(", re.I
    ),  # session locks; _xact_ ones end with the transaction
    re.compile(r"set_config\s*\([^;]*,\s*false\s*\)", re.I),
    # A statement's first word: an UPDATE's SET clause is not one.
    re.compile(r"(?:\A|;)\s*SET\s+(?!LOCAL\b)(?!TRANSACTION\b)\w+", re.I),
    re.compile(r"(?:\A|;)\s*(LISTEN|UNLISTEN)\b", re.I),
    re.compile(r"\bDECLARE\b[^;]*\bWITH\s+HOLD\b", re.I),
    re.compile(r"(?:\A|;)\s*PREPARE\b", re.I),
)


def test_no_named_query_leaves_session_state_behind() -> None:
    offenders = {
        name: pattern.pattern
        for name, text in QUERIES.items()
        if name not in SESSION_STATE_ALLOWED
        for pattern in SESSION_STATE
        if pattern.search(re.sub(r"--[^\n]*", "", text))
    }
    assert offenders == {}


def test_the_session_state_check_sees_each_kind() -> None:
    """The patterns above are not vacuous: each catches the statement it is for."""
    samples = [
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('x.y', '1', false)",
        "SET statement_timeout = 0",
        "LISTEN it_events",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "PREPARE p AS SELECT 1",
    ]
    assert [any(p.search(s) for p in SESSION_STATE) for s in samples] == [True] * len(samples)
    harmless = [
        "SELECT pg_advisory_xact_lock(1)",
        "SET LOCAL synchronous_commit TO on",
        "UPDATE t\n   SET a = 1",
    ]
    assert [any(p.search(s) for p in SESSION_STATE) for s in harmless] == [False] * len(harmless)


@pytest.fixture
async def pool(relay_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(load_settings(None, database={"url": relay_db}).database)
    yield pool
    await pool.close()


async def test_releasing_a_connection_sends_no_query(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid() /* the last word */")

    # pg_stat_activity shows a backend's last statement once it is idle: ours, not a reset query.
    deadline = asyncio.get_running_loop().time() + 15 * PATIENCE
    while True:
        row = await db.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1 AND datname = current_database()",
            backend,
        )
        assert row is not None
        if row["state"] == "idle":
            break
        assert asyncio.get_running_loop().time() < deadline, "the pool's connection never went idle"
        await asyncio.sleep(0.02)
    assert "the last word" in row["query"]


async def test_a_transaction_left_open_is_rolled_back_on_release(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    await db.execute("CREATE TABLE public.left_open (id int)")
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO public.left_open VALUES (1)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == backend
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM public.left_open") == 0


def _type_lookups(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    """Records the catalogue queries asyncpg runs to learn a type (its introspection) on `conn`."""
    seen: list[str] = []
    conn.add_query_logger(lambda record: seen.append(record.query) if "pg_type" in record.query else None)
    return seen


async def _prepare_all(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    """Prepares every named query; returns those this schema cannot prepare (and why)."""
    failed = []
    for name, text in QUERIES.items():
        try:
            await conn.prepare(text)
        except asyncpg.PostgresError as exc:
            failed.append(f"{name}: {type(exc).__name__}")
    return failed


async def test_a_pool_connection_opens_knowing_every_type_the_named_queries_use(ref_db: str) -> None:
    # The control: a plain connection looks types up on its first statements (the cost warm_types
    # takes off a delivery's path), so the logger below would see a lookup if one happened.
    plain = await asyncpg.connect(ref_db)
    try:
        lookups = _type_lookups(plain)
        await plain.prepare(QUERIES["mark_routed"])
        # asyncpg hands query records to loggers on a later turn of the loop: a round trip later,
        # every record queued before it has been handed over.
        await plain.fetchval("SELECT 1")
        await asyncio.sleep(0)
        assert lookups, "preparing mark_routed on a new connection looked no type up"
    finally:
        await plain.close()

    # The scheduler's queries read the IT reference schema: the database has it, as in production.
    pool = await database.create_pool(load_settings(None, database={"url": ref_db}).database)
    try:
        async with pool.acquire() as conn:
            lookups = _type_lookups(conn)
            failed = await _prepare_all(conn)
            await conn.fetchval("SELECT 1")  # as above
            await asyncio.sleep(0)
    finally:
        await pool.close()
    assert failed == []
    assert lookups == [], "a named query uses a type missing from warm_types (relay/sql/queries.sql)"


async def test_a_database_without_the_schema_is_told_to_upgrade_not_failed_by_the_warm_up(
    database_url: str,
) -> None:
    # Opening a pool connection parses the delivery path's statements; on a database without the
    # it_relay schema that parse fails, and the start-up's own check must still be what speaks.
    pool = await database.create_pool(load_settings(None, database={"url": database_url}).database)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(migrate.SchemaError, match="run `it-relay db upgrade`"):
                await migrate.check(conn)
    finally:
        await pool.close()


async def _track_functions(db: asyncpg.Connection) -> None:
    """PostgreSQL counts the calls of PL/pgSQL functions in sessions opened from now on."""
    await db.execute(
        f'ALTER DATABASE "{await db.fetchval("SELECT current_database()")}" SET track_functions = pl'
    )


async def test_a_pool_connection_opens_with_the_delivery_paths_functions_compiled(
    relay_db: str, db: asyncpg.Connection
) -> None:
    # Counted by PostgreSQL itself: each function ran on this connection before it was handed out.
    await _track_functions(db)
    settings = load_settings(None, database={"url": relay_db}).database
    pool = await database.create_pool(settings, journal.warm_functions)
    try:
        async with pool.acquire() as conn:
            # This backend's counts, flushed as this statement ends.
            await conn.execute("SELECT pg_stat_force_next_flush()")
            calls = {
                r["funcname"]: r["calls"]
                for r in await conn.fetch(
                    "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'it_relay'"
                )
            }
    finally:
        await pool.close()
    warmed = (
        "write_outcomes",
        "claim_due",
        "journaled",
        "event_parts",
        "oldest_unrouted",
        "entity_unfinished",
    )
    assert {name: calls.get(name, 0) for name in warmed} == dict.fromkeys(warmed, 1)


async def test_the_daemons_pool_opens_its_connections_warm(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # The composition root's wiring of the warm-up, not the pool's alone: with nothing published,
    # only the warm-up calls an ordered head's check (the routing calls it per routed event).
    await _track_functions(db)
    async with running(relay_settings(relay_db, sink, ["FA"])):
        await wait_for_rows(
            db,
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions"
            " WHERE schemaname = 'it_relay' AND funcname = 'oldest_unrouted'",
            lambda calls: calls >= 1,
            within=30,
        )
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 0
