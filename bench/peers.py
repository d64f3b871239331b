"""Peers the relay is measured against, on the same sink, HTTP client and machine.

    python bench/peers.py naive --dsn URL --port P       LISTEN and POST, no journal: the non-durable bound
    python bench/peers.py pgqueuer --dsn URL --port P    the obvious PgQueuer relay: one job per delivery,
                                                         enqueued in the producer's transaction; the job POSTs
                                                         (QueueManager's run with batch_size=20 and no
                                                         concurrency cap, aiohttp's default session: as its
                                                         users run it; --concurrency N caps both)
    python bench/peers.py floor --dsn URL --port P       the least a durable relay does before its POST: read
                                                         the journaled event, record its leased deliveries
                                                         (two round trips, commits not waiting for the WAL
                                                         flush), POST, record the outcome: the latency bound
                                                         of a relay that validates an event in the client
                                                         between reading it and recording its deliveries

Each POSTs the payload to /pf-10 and /hr with a webhook-id header, like the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAIVE_CHANNEL = "bench_naive"
FLOOR_CHANNEL = "bench_floor"
FLOOR_LISTENER = "floor:listener"
# Each peer names its listening connection once it listens: the bench waits for that name, so no
# notification (the naive drain's "go", the first event) is sent before anyone hears it.
NAIVE_LISTENER = "naive:listener"
SUBSCRIBER_PATHS = ("/pf-10", "/hr")


async def naive(dsn: str, port: int, concurrency: int, drain: int = 0) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    limit = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def post(path: str, body: bytes, event_id: str) -> None:
        async with (
            limit,
            session.post(
                f"http://127.0.0.1:{port}{path}",
                data=body,
                headers={"content-type": "application/json", "webhook-id": event_id},
            ) as r,
        ):
            await r.read()

    if drain:
        await _naive_drain(dsn, drain, post)
        return

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        event_id = json.loads(payload)["event_id"]
        for path in SUBSCRIBER_PATHS:
            task = asyncio.get_running_loop().create_task(post(path, payload.encode(), event_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    conn = await asyncpg.connect(dsn)
    await conn.add_listener(NAIVE_CHANNEL, on_notify)
    await conn.execute(f"SET application_name = '{NAIVE_LISTENER}'")
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _naive_drain(dsn: str, n: int, post: Any) -> None:
    """The naive relay handed n events up front (a pre-built list): on the first notification,
    POST them all, as fast as the same client and concurrency allow."""
    from relay.contracts.examples import example

    bodies = [
        (json.dumps(example("it_asset_assigned") | {"asset_tag": f"D-{i}", "event_id": str(uuid.uuid4())}))
        for i in range(n)
    ]
    go = asyncio.Event()
    conn = await asyncpg.connect(dsn)
    await conn.add_listener(NAIVE_CHANNEL, lambda *_: go.set())
    await conn.execute(f"SET application_name = '{NAIVE_LISTENER}'")
    print("ready", flush=True)
    await go.wait()
    await asyncio.gather(
        *(
            post(path, body.encode(), json.loads(body)["event_id"])
            for body in bodies
            for path in SUBSCRIBER_PATHS
        )
    )
    await asyncio.Event().wait()


async def fill_pgqueuer(dsn: str, payloads: list[dict[str, Any]]) -> None:
    """PgQueuer's queue (installed) pre-filled with one job per delivery of these events."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    jobs = [
        json.dumps({"path": path, "body": p | {"event_id": str(uuid.uuid4())}}).encode()
        for p in payloads
        for path in SUBSCRIBER_PATHS
    ]
    for start in range(0, len(jobs), 5000):
        batch = jobs[start : start + 5000]
        await queries.enqueue(["deliver"] * len(batch), list(batch), [0] * len(batch))
    await conn.close()


async def pgqueuer(dsn: str, port: int, concurrency: int, drain: int = 0) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job

    # Its users' obvious setup: aiohttp's default session (100 connections per host).
    session = (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        if concurrency
        else aiohttp.ClientSession()
    )
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("deliver")
    async def deliver(job: Job) -> None:
        assert job.payload is not None
        message = json.loads(job.payload)
        body = json.dumps(message["body"]).encode()
        async with session.post(
            f"http://127.0.0.1:{port}{message['path']}",
            data=body,
            headers={"content-type": "application/json", "webhook-id": message["body"]["event_id"]},
        ) as r:
            await r.read()
            if r.status >= 300:
                raise RuntimeError(f"HTTP {r.status}")

    print("ready", flush=True)
    if concurrency:
        # PgQueuer requires max_concurrent_tasks >= 2 x batch_size.
        await pgq.run(batch_size=max(1, concurrency // 2), max_concurrent_tasks=concurrency)
    else:
        await pgq.run(batch_size=20)


async def floor(dsn: str, port: int, concurrency: int, drain: int = 0) -> None:
    """Per notified event: read it, lease its deliveries, POST them, mark them delivered."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    limit = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    paths = list(SUBSCRIBER_PATHS)

    async def _keep(_conn: asyncpg.Connection) -> None:
        # No reset query on release (as it-relay's pool): a round trip a delivery need not pay.
        pass

    pool = await asyncpg.create_pool(
        dsn, min_size=8, max_size=16, reset=_keep, server_settings={"synchronous_commit": "off"}
    )

    async def post(path: str, body: bytes, event_id: str) -> None:
        async with session.post(
            f"http://127.0.0.1:{port}{path}",
            data=body,
            headers={"content-type": "application/json", "webhook-id": event_id},
        ) as r:
            await r.read()

    async def deliver(event_id: uuid.UUID) -> None:
        async with limit:
            async with pool.acquire() as conn:
                body = await conn.fetchval(
                    "SELECT payload::text FROM floor_events WHERE event_id = $1", event_id
                )
                await conn.execute(
                    "INSERT INTO floor_deliveries (event_id, subscriber, lease_expires_at) "
                    "SELECT $1, s, clock_timestamp() + interval '30 s' FROM unnest($2::text[]) s",
                    event_id,
                    paths,
                )
            await asyncio.gather(*(post(path, body.encode(), str(event_id)) for path in paths))
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE floor_deliveries SET status = 'delivered', lease_expires_at = NULL "
                    "WHERE event_id = $1",
                    event_id,
                )

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A lost delivery would leave the bench waiting for it: fail the run at once, saying why.
            print(f"floor: a delivery failed: {task.exception()!r}", file=sys.stderr, flush=True)
            os._exit(1)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(deliver(uuid.UUID(payload)))
        tasks.add(task)
        task.add_done_callback(done)

    # Named once it listens, so the bench starts producing only then (the pool opened first).
    conn = await asyncpg.connect(dsn)
    await conn.add_listener(FLOOR_CHANNEL, on_notify)
    await conn.execute(f"SET application_name = '{FLOOR_LISTENER}'")
    print("ready", flush=True)
    await asyncio.Event().wait()


async def install_floor(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE floor_events (event_id uuid PRIMARY KEY, payload jsonb NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT clock_timestamp());"
        "CREATE TABLE floor_deliveries (event_id uuid NOT NULL, subscriber text NOT NULL,"
        " status text NOT NULL DEFAULT 'leased', lease_expires_at timestamptz,"
        " PRIMARY KEY (event_id, subscriber))"
    )
    await conn.close()


async def install_pgqueuer(dsn: str) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    await Queries(AsyncpgDriver(conn)).install()
    await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=["naive", "pgqueuer", "floor"])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="cap in-flight POSTs (default: naive and floor 64, PgQueuer none)",
    )
    ap.add_argument("--drain", type=int, default=0, help="naive: POST this many pre-built events on the go")
    args = ap.parse_args()
    run = {"naive": naive, "pgqueuer": pgqueuer, "floor": floor}[args.system]
    if args.system in ("naive", "floor") and not args.concurrency:
        args.concurrency = 64
    try:
        import uvloop

        uvloop.run(run(args.dsn, args.port, args.concurrency, args.drain))
    except ImportError:
        asyncio.run(run(args.dsn, args.port, args.concurrency, args.drain))


if __name__ == "__main__":
    main()
