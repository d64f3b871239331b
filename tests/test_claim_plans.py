"""A claim's work is bounded by what it claims, not by the backlog behind it, whatever statistics
the planner holds: counted in buffers read (PostgreSQL's own count, the same on any machine)."""

from __future__ import annotations

import json

import asyncpg

from relay.sql import QUERIES

ENTITIES = 40


async def _journal(db: asyncpg.Connection, per_entity: int, first: int) -> None:
    """`per_entity` routed events of each entity, delivered to FA up to `first`, the rest pending."""
    await db.execute(
        """
        WITH e AS (
            INSERT INTO it_relay.events (event_id, event_type, payload, source, entity_key, status, routed_at)
            SELECT gen_random_uuid(), 'it_asset_purchased', jsonb_build_object('asset_id', g % $1::int),
                   'publish', 'asset_id:' || (g % $1::int), 'routed', clock_timestamp()
              FROM generate_series($2::int, $2::int + $1::int * $3::int - 1) g
            RETURNING event_id, event_type, entity_key, seq
        )
        INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq)
        SELECT event_id, 'FA', event_type, entity_key, seq FROM e
        """,
        ENTITIES,
        first,
        per_entity,
    )


async def _claim_cost(db: asyncpg.Connection, limit: int = 64) -> tuple[int, int]:
    """Deliveries an ordered claim of `limit` leases, and the buffers it touched; nothing kept."""
    claim = db.transaction()
    await claim.start()
    try:
        text = await db.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE ordered_claim('FA', 'test:1:x', {int(limit)}, 30, '')"
        )
    finally:
        await claim.rollback()
    plan = json.loads(text)[0]["Plan"]
    return plan["Actual Rows"], plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


async def test_an_ordered_claim_reads_per_head_not_per_queued_row_with_statistics_of_an_empty_journal(
    db: asyncpg.Connection,
) -> None:
    # Statistics taken while the journal was empty, and kept: a fresh install, or a burst that
    # arrives between two autovacuum runs. The relay's claims run as generic plans after five.
    for table in ("events", "deliveries"):
        await db.execute(f"ALTER TABLE it_relay.{table} SET (autovacuum_enabled = false)")
        await db.execute(f"VACUUM ANALYZE it_relay.{table}")
    await db.execute("SET plan_cache_mode = force_generic_plan")
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
