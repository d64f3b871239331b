"""PostgreSQL's CPU per delivery, statement by statement, through the relay's own gateway functions.

A delivery's life in the journal is: routed (peek_events + mark_routed, two statements per batch),
claimed (claim_deliveries, its events' bodies from the routing's cache), and settled
(write_results with its attempt). This drives that
life for N events x 2 subscribers on one connection, in the daemon's batch sizes, and reads the
backend's own CPU time (/proc/PID/schedstat, the server runs here) around each statement kind — no HTTP, no
relay loop, only what the server spends. Compare two checkouts with --trees-style runs:

    python bench/pg_cost.py [--dsn URL] [--events 20000] [--batch 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from relay import codec, journal, migrate, routing_queries
from relay.contracts.examples import example
from relay.event_cache import EventCache
from relay.ingest import route
from relay.sql import QUERIES
from relay.testing.outcomes import delivered as delivered_result

SUBSCRIBERS = ("PF-10", "HR")


def _backend_cpu(pid: int) -> float:
    # schedstat's first field: nanoseconds on a CPU (stat's ticks are 10 ms, too coarse per statement).
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def _database(admin_dsn: str, extra_sql: str) -> str:
    name = f"it_relay_pgcost_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(dsn)
    await migrate.upgrade(conn)
    if extra_sql:
        await conn.execute(extra_sql)
    await conn.close()
    return dsn


async def once(
    admin_dsn: str, events: int, batch: int, settings: dict[str, str], extra_sql: str = ""
) -> dict[str, float]:
    dsn = await _database(admin_dsn, extra_sql)
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"} | settings)
    template = codec.dumps(example("it_asset_assigned")).decode()
    await conn.execute(
        "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_tag}', to_jsonb('C-' || g))) "
        "FROM generate_series(1, $2::int) AS g",
        template,
        events,
    )
    await conn.execute("VACUUM ANALYZE it_relay.events")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    spent = {"route": 0.0, "claim": 0.0, "outcome": 0.0}
    parts = {"claim_events": 0.0, "mark_routed": 0.0}

    async def timed(kind: str, coro: Any) -> Any:
        t = _backend_cpu(pid)
        result = await coro
        spent[kind] += _backend_cpu(pid) - t
        return result

    # As the daemon routes alone: read unlocked, one statement writes (two round trips), and the
    # routed events' parts kept for the claims (relay/event_cache.py, its default size).
    cache = EventCache()
    while True:
        t = _backend_cpu(pid)
        pending = await routing_queries.claim_events(conn, batch, lock=False)
        parts["claim_events"] += _backend_cpu(pid) - t
        routed = [route(event.event_id, event.payload, "reject") for event in pending]
        t0 = _backend_cpu(pid)
        written = await routing_queries.write_routing(conn, pending, routed, [])  # type: ignore[arg-type]
        parts["mark_routed"] += _backend_cpu(pid) - t0
        for event_id, got in written.parts.items():
            cache.put(event_id, got, written.waiting[event_id])
        spent["route"] += _backend_cpu(pid) - t
        if not pending:
            break
    owner = "pg-cost"
    delivered = 0
    for subscriber in SUBSCRIBERS:
        while True:
            claimed = await timed(
                "claim", journal.claim_deliveries(conn, subscriber, owner, batch, 60.0, cache=cache)
            )
            if not claimed:
                break
            now = datetime.now(UTC)
            results = [delivered_result(c, now) for c in claimed]
            delivered += await timed("outcome", journal.write_results(conn, results, owner))
    # How the statements were planned: a custom plan per call is the planner's work per call.
    named = {text: name for name, text in QUERIES.items()}
    plans = {
        f"{kind}_plans_{named[row['statement']]}": float(row[f"{kind}_plans"])
        for row in await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
        if row["statement"] in named
        for kind in ("generic", "custom")
    }
    await conn.close()
    assert delivered == events * len(SUBSCRIBERS), delivered
    per = {f"{k}_us_per_delivery": v / delivered * 1e6 for k, v in spent.items()} | plans
    per["total_us_per_delivery"] = sum(spent.values()) / delivered * 1e6
    per |= {f"route_{k}_us_per_delivery": v / delivered * 1e6 for k, v in parts.items()}
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dsn", help="admin DSN of a PostgreSQL server on this machine (default: embedded pgserver)"
    )
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--sql", default="", help="SQL run after the migrations (a schema change to try)")
    ap.add_argument(
        "--set", action="append", default=[], help="a session setting NAME=VALUE (e.g. plan_cache_mode)"
    )
    args = ap.parse_args()
    embedded = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        embedded = pgserver.get_server(tempfile.mkdtemp(prefix="it-relay-pgcost-"), cleanup_mode="stop")
        dsn = embedded.get_uri()
    try:
        runs = [
            asyncio.run(
                once(dsn, args.events, args.batch, dict(kv.split("=", 1) for kv in args.set), args.sql)
            )
            for _ in range(args.repeat)
        ]
    finally:
        if embedded is not None:
            embedded.cleanup()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"PostgreSQL CPU per delivery (µs, backend time), {args.events} events x 2, batches of {args.batch}"
    )
    print("| route (peek_events + mark_routed) | claim | outcome | total |\n|---|---|---|---|")
    print(
        f"| {median['route_us_per_delivery']:.1f} ({median['route_claim_events_us_per_delivery']:.1f} + "
        f"{median['route_mark_routed_us_per_delivery']:.1f} + the rest) | {median['claim_us_per_delivery']:.1f} | "
        f"{median['outcome_us_per_delivery']:.1f} | {median['total_us_per_delivery']:.1f} |"
    )
    planned = {k.removeprefix("custom_plans_"): v for k, v in median.items() if k.startswith("custom_plans_")}
    print(
        "custom plans (planned on the call): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(planned.items()))
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"pg_cost-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps({"median": median, "runs": runs, "events": args.events, "batch": args.batch}, indent=2)
    )
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
