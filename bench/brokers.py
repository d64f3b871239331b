"""it-relay draining to RabbitMQ and to NATS JetStream, as a ratio of each broker's ceiling.

For each broker, in one run:
  ceiling  a bare confirmed-publish loop with the relay's own client (aio-pika with publisher
           confirms, mandatory, persistent; nats-py JetStream publish awaiting its PubAck), the
           webhook's body and headers, pipelined as the relay's lanes are (one channel per
           subscriber for AMQP, `--in-flight` unconfirmed messages per subscriber);
  drain    N events journaled before the relay starts, routed to two subscribers (PF-10 and HR,
           like bench/relay_bench.py's drain), both pointing at the broker; timed from the relay's
           readiness until the broker holds every message (queue depth / stream count).
Beside them, the same drain to the minimal HTTP sink (pyreqwest), for CPU per delivery. CPU is the
process's own (the relay's; the bench's for the ceiling) and the broker server's (beam.smp,
nats-server) over the same window. Prints a table, writes JSON to bench/results/.

    python bench/brokers.py [--events 20000] [--in-flight 128] [--dsn URL]
        [--amqp amqp://guest:guest@127.0.0.1:5672/] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import nats
import nats.js.errors
import uvloop
from nats.js.api import StreamConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import relay_bench
import sink

from relay import codec
from relay.contracts.examples import example
from relay.request import Target, build

SUBSCRIBERS = relay_bench.SUBSCRIBERS  # it_asset_assigned goes to exactly these two
SECRET = relay_bench.SECRET
EXCHANGE = "it-relay-bench"
QUEUE = "it-relay-bench"
STREAM = "IT_RELAY_BENCH"
SUBJECT = "it-relay-bench"


def _broker_cpu_seconds(name: str) -> float:
    """CPU seconds of the broker's server processes (beam.smp for RabbitMQ, nats-server)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if f"({name})" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sample_message() -> tuple[bytes, dict[str, str]]:
    """A webhook body and its signed headers, as the relay sends them for it_asset_assigned."""
    body = codec.dumps(example("it_asset_assigned") | {"event_id": str(uuid.uuid4())})
    request = build(
        Target(name="PF-10", url="", secrets=[SECRET]),
        event_id=str(uuid.uuid4()),
        event_type="it_asset_assigned",
        body=body,
        attempt=1,
        at=datetime.now(UTC),
    )
    return body, request.headers


async def _pipelined(
    n: int, lanes: int, in_flight: int, publish: Callable[[int, int], Awaitable[None]]
) -> None:
    """n publishes spread over `lanes`, each lane keeping `in_flight` unconfirmed at once."""

    async def worker(lane: int, first: int) -> None:
        for i in range(first, n, lanes * in_flight):
            await publish(lane, i)

    await asyncio.gather(
        *(worker(lane, lane * in_flight + k) for lane in range(lanes) for k in range(in_flight))
    )


async def amqp_ceiling(url: str, n: int, lanes: int, in_flight: int) -> dict[str, float]:
    body, headers = _sample_message()
    amqp_headers: dict[str, Any] = {k: v for k, v in headers.items() if k != "content-type"}
    connection = await aio_pika.connect(url)
    channels = [
        await connection.channel(publisher_confirms=True, on_return_raises=True) for _ in range(lanes)
    ]
    exchanges = [await ch.get_exchange(EXCHANGE, ensure=True) for ch in channels]

    async def publish(lane: int, i: int) -> None:
        message = aio_pika.Message(
            body,
            headers=amqp_headers,
            content_type="application/json",
            message_id=f"bench-{i}",
            type="it_asset_assigned",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchanges[lane].publish(message, "it_asset_assigned", mandatory=True)

    try:
        return await _timed(n, "beam.smp", lambda: _pipelined(n, lanes, in_flight, publish))
    finally:
        await connection.close()


async def nats_ceiling(url: str, n: int, lanes: int, in_flight: int) -> dict[str, float]:
    body, headers = _sample_message()
    client = await nats.connect(url)
    js = client.jetstream()

    async def publish(lane: int, i: int) -> None:
        await js.publish(
            f"{SUBJECT}.it_asset_assigned",
            body,
            timeout=10,
            headers={**headers, "Nats-Msg-Id": f"bench-{i}:{lane}:0"},
        )

    try:
        return await _timed(n, "nats-server", lambda: _pipelined(n, lanes, in_flight, publish))
    finally:
        await client.close()


async def _timed(n: int, server: str, run: Callable[[], Awaitable[None]]) -> dict[str, float]:
    cpu0, broker0, t0 = _own_cpu_seconds(), _broker_cpu_seconds(server), time.monotonic()
    await run()
    elapsed = time.monotonic() - t0
    return {
        "messages_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "cpu_us_per_message": (_own_cpu_seconds() - cpu0) / n * 1e6,
        "broker_cpu_us_per_message": (_broker_cpu_seconds(server) - broker0) / n * 1e6,
    }


def _relay_config(path: Path, dsn: str, broker: str, url: str, in_flight: int) -> Path:
    lines = [
        "[database]",
        f'url = "{dsn}"',
        "poll_interval_s = 2.0",
        "[delivery]",
        "concurrency = 256",
        "batch_size = 500",
        "[scheduler]",
        "enabled = false",
        "[server]",
        "enabled = false",
        "[logging]",
        'level = "WARNING"',
        'format = "json"',
    ]
    for name in SUBSCRIBERS:
        lines += [
            f'[subscribers."{name}"]',
            f'url = "{url}"',
            f'secret = "{SECRET}"',
            f"max_in_flight = {in_flight}",
        ]
        if broker == "amqp":
            lines += [f'exchange = "{EXCHANGE}"', 'routing_key = "{event_type}"']
        else:
            lines += [f'subject = "{SUBJECT}.{{event_type}}.{{subscriber}}"']
    path.write_text("\n".join(lines) + "\n")
    return path


async def relay_drain(
    admin_dsn: str,
    broker: str,
    url: str,
    n: int,
    in_flight: int,
    workdir: Path,
    stored: Callable[[], Awaitable[int]],
) -> dict[str, float]:
    """n events journaled first, then `it-relay run` drains them to the broker."""
    dsn = await relay_bench._fresh_database(admin_dsn, "it-relay")
    conn = await asyncpg.connect(dsn)
    template = codec.dumps(example("it_asset_assigned")).decode()
    for start in range(0, n, 10_000):
        await conn.execute(
            "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_tag}', to_jsonb('L-' || g))) "
            "FROM generate_series($2::int, $3::int) AS g",
            template,
            start,
            min(start + 10_000, n) - 1,
        )
    await conn.close()
    config = _relay_config(workdir / f"relay-{broker}.toml", dsn, broker, url, in_flight)
    log = (workdir / f"relay-{broker}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "run", "--config", str(config)], stdout=log, stderr=log
    )
    server = "beam.smp" if broker == "amqp" else "nats-server"
    expected = n * len(SUBSCRIBERS)
    try:
        await relay_bench._wait_ready("it-relay", dsn, proc)
        cpu0, broker0 = relay_bench._cpu_seconds(proc.pid), _broker_cpu_seconds(server)
        before, t0 = await stored(), time.monotonic()
        deadline = t0 + 900
        while (now := await stored()) < expected:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"relay drain to {broker} stopped at {now} of {expected}")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        cpu = relay_bench._cpu_seconds(proc.pid) - cpu0
        broker_cpu = _broker_cpu_seconds(server) - broker0
        rss = relay_bench._peak_rss_mb(proc.pid)
    finally:
        relay_bench._stop(proc)
    deliveries = expected - before
    return {
        "messages_per_s": deliveries / elapsed,
        "elapsed_s": elapsed,
        "cpu_us_per_message": cpu / deliveries * 1e6,
        "broker_cpu_us_per_message": broker_cpu / deliveries * 1e6,
        "peak_rss_mb": rss,
    }


async def _amqp_setup(url: str) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(QUEUE, durable=True)
    await queue.bind(exchange, "#")
    await queue.purge()

    async def stored() -> int:
        declared = await channel.declare_queue(QUEUE, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def cleanup() -> None:
        await channel.queue_delete(QUEUE)
        await channel.exchange_delete(EXCHANGE)
        await connection.close()

    return stored, cleanup


async def _nats_setup(url: str) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
    client = await nats.connect(url)
    js = client.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):  # left by an interrupted run
        await js.delete_stream(STREAM)
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"]))

    async def stored() -> int:
        return int((await js.stream_info(STREAM)).state.messages)

    async def cleanup() -> None:
        await js.delete_stream(STREAM)
        await client.close()

    return stored, cleanup


async def broker_runs(
    broker: str, url: str, dsn: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    setup = _amqp_setup if broker == "amqp" else _nats_setup
    ceiling_of = amqp_ceiling if broker == "amqp" else nats_ceiling
    stored, cleanup = await setup(url)
    try:
        ceiling = await ceiling_of(url, args.events * len(SUBSCRIBERS), len(SUBSCRIBERS), args.in_flight)
    finally:
        await cleanup()
    stored, cleanup = await setup(url)
    try:
        drain = await relay_drain(dsn, broker, url, args.events, args.in_flight, workdir, stored)
    finally:
        await cleanup()
    return {"ceiling": ceiling, "relay": drain, "ratio": drain["messages_per_s"] / ceiling["messages_per_s"]}


def _table(results: dict[str, Any], http: dict[str, Any], header: str) -> str:
    rows = [
        header,
        "",
        f"| {'run':<40} | {'msgs/s':>8} | {'ratio':>5} | {'client CPU µs/msg':>17} | {'broker CPU µs/msg':>17} |",
        f"|{'-' * 42}|{'-' * 10}|{'-' * 7}|{'-' * 19}|{'-' * 19}|",
    ]
    names = {"amqp": "RabbitMQ", "nats": "NATS JetStream"}
    for broker, r in results.items():
        c, d = r["ceiling"], r["relay"]
        rows.append(
            f"| {names[broker] + ': bare confirmed publish':<40} | {c['messages_per_s']:>8.0f} | {'1.00':>5} "
            f"| {c['cpu_us_per_message']:>17.0f} | {c['broker_cpu_us_per_message']:>17.0f} |"
        )
        rows.append(
            f"| {names[broker] + ': it-relay drain':<40} | {d['messages_per_s']:>8.0f} | {r['ratio']:>5.2f} "
            f"| {d['cpu_us_per_message']:>17.0f} | {d['broker_cpu_us_per_message']:>17.0f} |"
        )
    if http:
        rows.append(
            f"| {'HTTP sink (pyreqwest): it-relay drain':<40} | {http['deliveries_per_s']:>8.0f} | {'':>5} "
            f"| {http['cpu_s_per_1k_deliveries'] * 1000:>17.0f} | {'':>17} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events drained (x2 subscribers = messages)")
    ap.add_argument(
        "--in-flight", type=int, default=128, help="max_in_flight of each subscriber (and the ceiling)"
    )
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument(
        "--amqp", default=os.environ.get("IT_RELAY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    ap.add_argument("--nats", default=os.environ.get("IT_RELAY_TEST_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--brokers", default="amqp,nats")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP drain beside them")
    ap.add_argument("--port", type=int, default=18198, help="the HTTP sink's port")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as the relay runs

    workdir = Path(tempfile.mkdtemp(prefix="it-relay-bench-brokers-"))
    server = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = server.get_uri()
    results: dict[str, Any] = {}
    http: dict[str, Any] = {}
    sink_proc = None
    try:
        for broker in args.brokers.split(","):
            url = args.amqp if broker == "amqp" else args.nats
            results[broker] = asyncio.run(broker_runs(broker, url, dsn, args, workdir))
        if not args.no_http:
            sink_proc = mp.Process(target=sink.serve, args=(args.port,), daemon=True)
            sink_proc.start()
            time.sleep(0.5)
            http = asyncio.run(relay_bench.backlog(dsn, args.port, args.events, workdir))
    finally:
        if sink_proc is not None:
            sink_proc.terminate()
        if server is not None:
            server.cleanup()

    header = (
        f"it-relay to brokers — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; {args.events} events x {len(SUBSCRIBERS)} subscribers, "
        f"max_in_flight {args.in_flight} per subscriber"
    )
    table = _table(results, http, header)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"brokers-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {"events": args.events, "in_flight": args.in_flight, "brokers": results, "http_drain": http},
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
