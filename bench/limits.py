#!/usr/bin/env python3
# Copied from the shared tools (tools/limits.py) so that a benchmark measures the ceilings in the same run.
"""Ceilings of this machine for an event relay, measured in one run.

  NOTIFY rate      one commit per pg_notify, N producer connections, one LISTEN connection
  INSERT rate      one commit per jsonb row, N connections
  POST rate        a minimal local HTTP sink, for each HTTP client that is installed
                   (httpx, httpx over the httpx-aiohttp transport, aiohttp)

Needs asyncpg and, for the database probes, either --dsn or the pgserver package (embedded
PostgreSQL). Prints a table and, with --json FILE, writes the figures. Report a relay's own
throughput as a ratio of these ceilings measured in the same run: absolute figures drift from run
to run on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import tempfile
import time

PAYLOAD = json.dumps(
    {
        "event_type": "it_ticket_created",
        "ticket_id": "5f0c1d7e-0000-4000-8000-000000000001",
        "ticket_number": "T-1",
        "category": "hardware",
        "priority": "high",
        "subject": "x" * 40,
        "description": "y" * 200,
        "requester_id": "5f0c1d7e-0000-4000-8000-000000000002",
        "requester_name": "A B",
        "requester_email": "a@example.org",
        "organization_id": "5f0c1d7e-0000-4000-8000-000000000003",
        "timestamp": "2026-11-27T00:00:00Z",
    }
)


def _sink(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _db_rates(dsn: str, n: int, conns: int) -> dict[str, float]:
    import asyncpg

    listener = await asyncpg.connect(dsn)
    received = 0
    done = asyncio.Event()

    def on_notify(*_: object) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    await listener.add_listener("limits_probe", on_notify)
    pool = await asyncpg.create_pool(dsn, min_size=conns, max_size=conns)

    async def notify(k: int) -> None:
        async with pool.acquire() as c:
            for i in range(n // conns):
                await c.execute("select pg_notify('limits_probe', $1)", PAYLOAD.replace("T-1", f"T-{k}-{i}"))

    t = time.perf_counter()
    await asyncio.gather(*(notify(k) for k in range(conns)))
    await asyncio.wait_for(done.wait(), 120)
    notify_rate = n / (time.perf_counter() - t)

    await listener.execute("create temporary table if not exists _probe(id bigserial, payload jsonb)")
    await listener.execute("create table if not exists limits_probe(id bigserial primary key, payload jsonb)")

    async def insert(_: int) -> None:
        async with pool.acquire() as c:
            for _ in range(n // conns):
                await c.execute("insert into limits_probe(payload) values ($1::jsonb)", PAYLOAD)

    t = time.perf_counter()
    await asyncio.gather(*(insert(k) for k in range(conns)))
    insert_rate = n / (time.perf_counter() - t)
    await listener.execute("drop table limits_probe")
    await pool.close()
    await listener.close()
    return {"notify_per_s": notify_rate, "insert_per_s": insert_rate}


async def _post_rate(client_kind: str, port: int, n: int, conc: int) -> float | None:
    url = f"http://127.0.0.1:{port}/hook"
    headers = {"content-type": "application/json"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(1)

    if client_kind == "aiohttp":
        try:
            import aiohttp
        except ImportError:
            return None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:

            async def worker() -> None:
                while not queue.empty():
                    queue.get_nowait()
                    async with session.post(url, data=PAYLOAD, headers=headers) as r:
                        await r.read()

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(conc)))
            return n / (time.perf_counter() - t)

    try:
        import httpx
    except ImportError:
        return None
    if client_kind == "httpx-aiohttp":
        try:
            from httpx_aiohttp import HttpxAiohttpClient as Client
        except ImportError:
            return None
    else:
        Client = httpx.AsyncClient
    async with Client(limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc)) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await client.post(url, content=PAYLOAD, headers=headers)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="PostgreSQL DSN; default: an embedded server from pgserver")
    ap.add_argument("-n", type=int, default=20000, help="operations per probe")
    ap.add_argument("--conns", type=int, default=4, help="producer connections")
    ap.add_argument("--concurrency", type=int, default=8, help="in-flight HTTP requests")
    ap.add_argument("--port", type=int, default=18099)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    figures: dict[str, float | None] = {}
    dsn = args.dsn
    if dsn is None:
        try:
            import pgserver

            dsn = pgserver.get_server(tempfile.mkdtemp(), cleanup_mode="stop").get_uri()
        except ImportError:
            print("no --dsn and no pgserver: database probes skipped")
    if dsn:
        figures.update(asyncio.run(_db_rates(dsn, args.n, args.conns)))

    sink = mp.Process(target=_sink, args=(args.port,), daemon=True)
    sink.start()
    time.sleep(0.5)
    for kind in ("httpx", "httpx-aiohttp", "aiohttp"):
        figures[f"post_per_s[{kind}]"] = asyncio.run(_post_rate(kind, args.port, args.n, args.concurrency))
    sink.terminate()

    for name, value in figures.items():
        print(f"{name:28} {'not installed' if value is None else f'{value:,.0f}'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
