"""A claim's or a routing's work is bounded by what it takes, not by the backlog behind it, whatever
statistics the planner holds: counted in buffers read (PostgreSQL's own count, the same on any
machine)."""

from __future__ import annotations

import json
from uuid import uuid4

import asyncpg
import pytest

from relay import journal, routing_queries
from relay.contracts.examples import example
from relay.ingest import route
from relay.model import RoutedEvent
from relay.routing_queries import Written
from relay.sql import QUERIES

ENTITIES = 40


def asset(n: int) -> str:
    """The asset_id of the n-th entity _journal writes."""
    return f"00000000-0000-4000-8000-{n:012d}"


async def _journal(db: asyncpg.Connection, per_entity: int, first: int, entities: int = ENTITIES) -> None:
    """`per_entity` routed events of each of `entities` entities (`first` numbers the first), each
    with its delivery to FA pending."""
    await db.execute(
        """
        WITH e AS (
            INSERT INTO it_relay.events (event_id, event_type, payload, source, entity_key, status, routed_at)
            SELECT gen_random_uuid(), 'it_asset_purchased', jsonb_build_object('asset_id', a.id),
                   'publish', 'asset_id:' || a.id, 'routed', clock_timestamp()
              FROM generate_series($2::int, $2::int + $1::int * $3::int - 1) g,
                   LATERAL (SELECT '00000000-0000-4000-8000-' || lpad((g % $1::int)::text, 12, '0') AS id) a
            RETURNING event_id, event_type, entity_key, seq
        )
        INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq)
        SELECT event_id, 'FA', event_type, entity_key, seq FROM e
        """,
        entities,
        first,
        per_entity,
    )


async def _claim_cost(db: asyncpg.Connection, limit: int = 64, after: str = "") -> tuple[int, int]:
    """Deliveries an ordered claim of `limit` from `after` leases, and the buffers it touched;
    nothing kept."""
    claim = db.transaction()
    await claim.start()
    try:
        text = await db.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE ordered_claim('FA', 'test:1:x', {int(limit)}, 30, $${after}$$)"
        )
    finally:
        await claim.rollback()
    plan = json.loads(text)[0]["Plan"]
    return plan["Actual Rows"], plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


async def _stale_statistics(db: asyncpg.Connection) -> None:
    # Statistics taken while the journal was empty, and kept: a fresh install, or a burst that
    # arrives between two autovacuum runs. The relay's statements run as generic plans after five.
    for table in ("events", "deliveries"):
        await db.execute(f"ALTER TABLE it_relay.{table} SET (autovacuum_enabled = false)")
        await db.execute(f"VACUUM ANALYZE it_relay.{table}")
    await db.execute("SET plan_cache_mode = force_generic_plan")


async def test_an_ordered_claim_reads_per_head_not_per_queued_row_with_statistics_of_an_empty_journal(
    db: asyncpg.Connection,
) -> None:
    await _stale_statistics(db)
    await db.execute(f"PREPARE ordered_claim(text, text, int, float8, text) AS {QUERIES['claim_ordered']}")

    await _journal(db, 25, 0)
    leased, shallow = await _claim_cost(db)
    assert leased == ENTITIES  # each entity's head, and only it
    await _journal(db, 400, 10_000)  # sixteen times the backlog behind the same heads
    leased, deep = await _claim_cost(db)
    assert leased == ENTITIES
    assert deep <= shallow * 1.5 + 50, (shallow, deep)
    assert deep <= ENTITIES * 20, deep  # one probe of a few pages per head
    # A claim for fewer stops its walk there: it pays for the heads it passes, not every entity.
    leased, few = await _claim_cost(db, 4)
    assert leased == 4
    assert few <= deep / 4, (few, deep)
    # Every head in flight: a claim from the middle walks all the way round, one probe per entity,
    # and finds nothing (the wrap-around reads no entity's queue).
    await db.execute("EXECUTE ordered_claim('FA', 'test:1:x', 64, 30, '')")
    leased, around = await _claim_cost(db, 64, f"asset_id:{asset(20)}")
    assert leased == 0
    assert around <= ENTITIES * 20, around


async def test_a_routing_that_hands_an_ordered_lane_its_heads_probes_per_row_not_per_table(
    db: asyncpg.Connection,
) -> None:
    await _stale_statistics(db)
    await _journal(db, 100, 0)  # 4,000 deliveries waiting, over 40 entities
    # Twenty new events: ten of entities with rows waiting, ten of new entities (their heads).
    for n in range(20):
        await journal.publish(
            db, example("it_asset_purchased") | {"asset_id": asset(n) if n < 10 else str(uuid4())}
        )
    events = await routing_queries.claim_events(db, 50, lock=False)
    routed = [r for e in events if isinstance(r := route(e.event_id, e.payload, "keep"), RoutedEvent)]
    async with db.transaction():
        before = await _reads(db)
        written = await routing_queries.write_routing(
            db, events, routed, [], {"FA": 50}, "test:1:x", 30, {"FA"}
        )
        after = await _reads(db)
    assert len(written.routed) == 20 and len(written.leased) == 10  # the new entities' heads only
    reads = {t: [a - b for a, b in zip(after[t], before[t], strict=True)] for t in after}
    assert reads["deliveries"][0] == 0 and reads["events"][0] == 0, reads  # no table read whole
    assert reads["deliveries"][1] <= 20 * 8 and reads["events"][1] <= 20 * 8, reads  # a few rows per event


async def _reads(db: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Sequential scans and rows fetched through indexes, per table, as this backend counts them
    (the statement's generic plan, as the relay's)."""
    return {
        r["relname"]: (r["seq_scan"], r["idx_tup_fetch"])
        for r in await db.fetch(
            "SELECT relname, seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'it_relay' AND relname IN ('events', 'deliveries')"
        )
    }


async def _unordered_cost(url: str, limit: int = 64) -> tuple[int, int, dict[str, int]]:
    """Deliveries an unordered claim of `limit` leases, the buffers it touched, and how it read the
    table (scans, rows fetched, HOT updates: what a failure needs to be understood); nothing kept.
    In a new session, warmed up once: planned (generic plans) on the table as it is now, as a relay
    started on this backlog plans it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE claim(text, text, int, float8) AS {QUERIES['claim_deliveries']}")
        for explain in ("", "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "):
            claim = conn.transaction()
            await claim.start()
            try:
                text = await conn.fetchval(f"{explain}EXECUTE claim('FA', 'test:1:x', {int(limit)}, 30)")
                how = await conn.fetchrow(
                    "SELECT seq_scan, idx_scan, idx_tup_fetch, n_tup_upd, n_tup_hot_upd"
                    " FROM pg_stat_xact_user_tables WHERE schemaname = 'it_relay' AND relname = 'deliveries'"
                )
            finally:
                await claim.rollback()
    finally:
        await conn.close()
    plan = json.loads(text)[0]["Plan"]
    return plan["Actual Rows"], plan["Shared Hit Blocks"] + plan["Shared Read Blocks"], dict(how or {})


@pytest.mark.parametrize(
    "statistics",
    ["never taken", "taken while empty", "taken when all were delivered", "taken with the backlog in place"],
)
async def test_an_unordered_claim_reads_what_it_takes_not_the_backlog_whatever_the_statistics(
    relay_db: str, db: asyncpg.Connection, statistics: str
) -> None:
    # No autovacuum in this database while the claims run, on either table: an ANALYZE of the events
    # holds a snapshot that keeps the rolled-back claims' row versions from being pruned, and the
    # next claim's updates, finding their pages full, stop being HOT and write every index (a CI
    # run read 936 buffers against 392 so).
    for table in ("events", "deliveries"):
        await db.execute(f"ALTER TABLE it_relay.{table} SET (autovacuum_enabled = false)")
    if statistics == "taken when all were delivered":
        # The journal of a relay that kept up: its statistics say no delivery is ever pending.
        await _journal(db, 100, 100_000)
        await db.execute("UPDATE it_relay.deliveries SET status = 'delivered'")
    if statistics in ("taken while empty", "taken when all were delivered"):
        await _stale_statistics(db)

    await _journal(db, 25, 0)  # 1,000 deliveries due
    if statistics == "taken with the backlog in place":
        # As autovacuum keeps a table: analysed, and the claims rolled back before cleared away.
        await db.execute("VACUUM ANALYZE it_relay.deliveries")
    leased, shallow, _ = await _unordered_cost(relay_db)
    assert leased == 64
    await _journal(db, 750, 10_000)  # 31,000: the backlog behind the claim grows thirty-fold
    if statistics == "taken with the backlog in place":
        await db.execute("VACUUM ANALYZE it_relay.deliveries")
    leased, deep, how = await _unordered_cost(relay_db)
    assert leased == 64
    assert deep <= shallow * 1.5 + 50, (shallow, deep, how)
    # A few pages per row taken: its index entry, its heap page, its update.
    assert deep <= 64 * 12, (deep, how)
    # The oldest first: the claim takes the journal's first rows due, in journal order.
    taken = await db.fetch(QUERIES["claim_deliveries"], "FA", "test:1:x", 64, 30.0)
    oldest = await db.fetch(
        "SELECT seq FROM it_relay.deliveries WHERE subscriber = 'FA' AND status = 'pending'"
        " ORDER BY next_attempt_at, seq LIMIT 64"
    )
    assert [r["seq"] for r in taken] == [r["seq"] for r in oldest]


async def _hot_entity(db: asyncpg.Connection, *, delivered: bool) -> None:
    """One entity's 3,000 events, their deliveries to FA pending or delivered, analysed so and
    kept (generic plans, as the relay's)."""
    await _journal(db, 3000, 0, entities=1)
    if delivered:
        await db.execute("UPDATE it_relay.deliveries SET status = 'delivered'")
    await _stale_statistics(db)


async def _route_published(
    db: asyncpg.Connection,
) -> tuple[Written, dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Route what is pending, FA ordered and asking for one: what it wrote, and the reads before and after."""
    events = await routing_queries.claim_events(db, 50, lock=False)
    routed = [r for e in events if isinstance(r := route(e.event_id, e.payload, "keep"), RoutedEvent)]
    before = await _reads(db)
    written = await routing_queries.write_routing(db, events, routed, [], {"FA": 1}, "test:1:x", 30, {"FA"})
    return written, before, await _reads(db)


def _by_index(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], step: str) -> None:
    for table in ("events", "deliveries"):
        assert after[table][0] == before[table][0], f"{step} read all of {table}"
        # Nor a whole index: a few rows per head checked, not the hot entity's 3,000.
        assert after[table][1] - before[table][1] <= 40, (step, table, after, before)


async def test_a_hot_entity_is_routed_and_claimed_by_index_with_statistics_of_its_history(
    db: asyncpg.Connection,
) -> None:
    # One entity that most events are about (an asset in a long incident): analysed so, PostgreSQL
    # estimates that looking up its unrouted events by index returns half the journal, and a
    # generic plan would read every event for each head a routing or an ordered claim checks.
    await _hot_entity(db, delivered=True)
    hot = await journal.publish(db, example("it_asset_purchased") | {"asset_id": asset(0)})
    cold = await journal.publish(db, example("it_asset_purchased") | {"asset_id": str(uuid4())})
    async with db.transaction():
        # The lane asks for one: the hot entity's head goes with the routing, the other's is claimed.
        written, before, routing = await _route_published(db)
        claimed = await journal.claim_deliveries(db, "FA", "test:1:x", 8, 30.0, ordered=True)
        claiming = await _reads(db)
    assert [d.event_id for d in written.leased] == [hot]
    assert [d.event_id for d in claimed] == [cold]
    _by_index(before, routing, "the routing")
    _by_index(routing, claiming, "the claim")


async def test_a_new_entitys_head_is_found_by_index_behind_a_hot_entitys_backlog(
    db: asyncpg.Connection,
) -> None:
    await _hot_entity(db, delivered=False)  # one entity's 3,000 deliveries waiting
    cold = await journal.publish(db, example("it_asset_purchased") | {"asset_id": str(uuid4())})
    async with db.transaction():
        written, before, after = await _route_published(db)
    assert [d.event_id for d in written.leased] == [cold]
    _by_index(before, after, "the routing")
