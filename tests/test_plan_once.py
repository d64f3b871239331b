"""At a trickle (one event per routing, one outcome per write) the routing and the outcome
statements run from their cached generic plans, not planned again on every call.

Given its arrays, PostgreSQL estimated a one-row outcome batch so much cheaper than the generic
plan that it planned the statement on every call: half of the server's CPU per delivery at low
rates (bench/pg_cost.py --batch 1). relay/sql/queries.sql reads each array through a sub-select."""

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
    for name in ("mark_routed", "write_results"):
        generic, custom = plans[QUERIES[name]]
        assert custom <= 5, f"{name} is planned again on every call: {custom} custom plans, {generic} generic"
        assert generic >= ROUNDS - 5, f"{name} ran {generic} times from its generic plan"
