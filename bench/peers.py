"""Peers the relay is measured against, on the same sink, HTTP client and machine.

    python bench/peers.py naive --dsn URL --port P       LISTEN and POST, no journal: the non-durable bound
    python bench/peers.py pgqueuer --dsn URL --port P    the obvious PgQueuer relay: one job per delivery,
                                                         enqueued in the producer's transaction; the job POSTs

Both POST the payload to /pf-10 and /hr with a webhook-id header, like the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import asyncpg

NAIVE_CHANNEL = "bench_naive"
SUBSCRIBER_PATHS = ("/pf-10", "/hr")


async def naive(dsn: str, port: int, concurrency: int) -> None:
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

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        event_id = json.loads(payload)["event_id"]
        for path in SUBSCRIBER_PATHS:
            task = asyncio.get_running_loop().create_task(post(path, payload.encode(), event_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    conn = await asyncpg.connect(dsn)
    await conn.add_listener(NAIVE_CHANNEL, on_notify)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def pgqueuer(dsn: str, port: int, concurrency: int) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
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
    # PgQueuer requires max_concurrent_tasks >= 2 x batch_size.
    await pgq.run(batch_size=max(1, concurrency // 2), max_concurrent_tasks=concurrency)


async def install_pgqueuer(dsn: str) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    await Queries(AsyncpgDriver(conn)).install()
    await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=["naive", "pgqueuer"])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    run = naive if args.system == "naive" else pgqueuer
    try:
        import uvloop

        uvloop.run(run(args.dsn, args.port, args.concurrency))
    except ImportError:
        asyncio.run(run(args.dsn, args.port, args.concurrency))


if __name__ == "__main__":
    main()
