"""At a trickle (one event per routing, one outcome per write) the routing and the outcome
statements run from their cached generic plans, not planned again on every call.

Given its arrays, PostgreSQL estimated a one-row outcome batch so much cheaper than the generic
plan that it planned the statement on every call: half of the server's CPU per delivery at low
rates (bench/pg_cost.py --batch 1). relay/sql/queries.sql and the outcome's function
(0021_plans_by_index.sql) read each array through a sub-select. The plans that are kept must also
read by index once the tables grew, whenever they were made."""

from __future__ import annotations

import asyncpg

from relay import codec, journal, routing_queries
from relay.contracts.examples import example
from relay.ingest import route
from relay.model import RoutedEvent
from relay.sql import QUERIES
from relay.testing.outcomes import delivered

ROUNDS = 12  # PostgreSQL plans a prepared statement's first five runs for their own parameters
BACKLOG = 400


async def _route(conn: asyncpg.Connection, limit: int) -> list[RoutedEvent]:
    pending = await routing_queries.claim_events(conn, limit, lock=False)
    routed = [route(p.event_id, p.payload, "reject") for p in pending]
    assert all(isinstance(r, RoutedEvent) for r in routed)
    written = await routing_queries.write_routing(conn, pending, routed, [])  # type: ignore[arg-type]
    assert written.routed == {p.event_id for p in pending}
    return routed  # type: ignore[return-value]


async def _deliver_one(conn: asyncpg.Connection, subscriber: str) -> None:
    (claimed,) = await journal.claim_deliveries(conn, subscriber, "plan-once", 1, 60.0)
    assert await journal.write_results(conn, [delivered(claimed)], "plan-once") == 1


async def test_a_trickle_is_routed_and_settled_from_cached_plans(relay_db: str) -> None:
    conn = await asyncpg.connect(relay_db)
    try:
        # A journal with statistics and a few hundred deliveries, as a relay's after a while.
        await conn.execute(
            "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_tag}', to_jsonb('PLAN-' || g))) "
            "FROM generate_series(1, $2::int) AS g",
            codec.dumps(example("it_asset_assigned")).decode(),
            BACKLOG,
        )
        await conn.execute("ANALYZE it_relay.events")
        for _ in range(ROUNDS):
            await _route(conn, 1)
        (subscriber, *_) = (await _route(conn, BACKLOG))[0].subscribers
        await conn.execute("ANALYZE it_relay.deliveries")
        for _ in range(ROUNDS):
            await _deliver_one(conn, subscriber)
        plans = {
            row["statement"]: (row["generic_plans"], row["custom_plans"])
            for row in await conn.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
        }
    finally:
        await conn.close()
    # The outcome's statement runs inside its function (0021_plans_by_index.sql), where
    # pg_prepared_statements cannot see it; bench/pg_cost.py --batch 1 reports its cost per call.
    for name in ("peek_events", "mark_routed"):
        generic, custom = plans[QUERIES[name]]
        assert custom <= 5, f"{name} is planned again on every call: {custom} custom plans, {generic} generic"
        assert generic >= ROUNDS - 5, f"{name} ran {generic} times from its generic plan"


async def _reads(conn: asyncpg.Connection) -> tuple[int, int]:
    """Sequential scans of the journal's two big tables so far in this transaction, and the rows
    fetched through their indexes (a whole index read would show there)."""
    row = await conn.fetchrow(
        "SELECT sum(seq_scan)::int AS scans, sum(idx_tup_fetch)::int AS fetched FROM pg_stat_xact_user_tables"
        " WHERE schemaname = 'it_relay' AND relname IN ('events', 'deliveries')"
    )
    assert row is not None
    return row["scans"], row["fetched"]


async def test_plans_made_on_an_empty_journal_still_read_by_index_once_it_grew(relay_db: str) -> None:
    """A relay started on a new database makes its plans while the tables hold a few rows, and
    PostgreSQL keeps a generic plan until the tables are analysed: a plan that scanned the whole
    table then must not be the one that runs once it holds thousands (autovacuum's first look is
    a minute away; at 200 events/s the outcome's scan was half of PostgreSQL's time)."""
    body = codec.dumps(example("it_asset_assigned")).decode()
    publish = (
        "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_tag}', to_jsonb($3 || g))) "
        "FROM generate_series(1, $2::int) AS g"
    )
    conn = await asyncpg.connect(relay_db)
    try:
        # Nothing analyses the tables meanwhile: autovacuum's ANALYZE would replace the plans made
        # on the empty journal, and the test would pass without running them.
        for table in ("events", "deliveries"):
            await conn.execute(f"ALTER TABLE it_relay.{table} SET (autovacuum_enabled = false)")
        ids, subscriber = [], ""
        for n in range(ROUNDS):
            await conn.execute(publish, body, 1, f"EMPTY-{n}-")
            (event,) = await _route(conn, 1)
            ids.append(event.event_id)
            subscriber = event.subscribers[0]
            await journal.journaled_ids(conn, ids[-10:] * 2)
        for _ in range(ROUNDS):
            await _deliver_one(conn, subscriber)
        # The first minute of traffic: thousands of rows, nothing analysed.
        await conn.execute(publish, body, 3000, "GREW-")
        await _route(conn, 3000)
        await conn.execute(publish, body, 1, "LAST-")
        steps = {}
        async with conn.transaction():
            before = await _reads(conn)
            await _route(conn, 1)
            steps["routing"] = await _reads(conn)
            (claimed,) = await journal.claim_deliveries(conn, subscriber, "plan-once", 1, 60.0)
            steps["claiming"] = await _reads(conn)
            assert await journal.write_results(conn, [delivered(claimed)], "plan-once") == 1
            steps["settling"] = await _reads(conn)
            await journal.journaled_ids(conn, ids)
            steps["confirming"] = await _reads(conn)
    finally:
        await conn.close()
    for step, after in steps.items():
        scans, fetched = after[0] - before[0], after[1] - before[1]
        assert scans == 0, f"{step} scanned a table: {scans} sequential scans"
        assert fetched <= 50, f"{step} read {fetched} rows through an index, for a dozen at most"
        before = after
