"""it-relay throughput and latency beside this machine's ceilings, measured in one run.

N events go through it_relay.publish from several producer connections (one commit each) and are
routed to two subscribers on a minimal local sink. The relay runs as its own process (`it-relay
run`), so its CPU time is its own. Reported: events/s, deliveries/s, CPU seconds per 1k deliveries,
p50/p95/p99 from commit to receipt, and each as a ratio of the ceilings (bench/limits.py) measured
in the same run. Prints a table; writes JSON to bench/results/.

    python bench/relay_bench.py [--quick] [--dsn URL] [--transport aiohttp,httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import limits
import sink

from relay import codec, migrate
from relay.contracts.examples import example

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SUBSCRIBERS = ("PF-10", "HR")  # it_asset_assigned is routed to exactly these two


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def _config(path: Path, dsn: str, port: int, transport: str) -> Path:
    lines = [
        "[database]",
        f'url = "{dsn}"',
        "poll_interval_s = 2.0",
        "[delivery]",
        f'transport = "{transport}"',
        "concurrency = 64",
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
            f'url = "http://127.0.0.1:{port}/{name.lower()}"',
            f'secret = "{SECRET}"',
            "max_in_flight = 32",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _fresh_database(admin_dsn: str) -> str:
    name = f"it_relay_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    from urllib.parse import urlsplit, urlunsplit

    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(dsn)
    await migrate.upgrade(conn)
    await conn.close()
    return dsn


async def _produce(dsn: str, n: int, producers: int, rate: float | None) -> dict[str, float]:
    """Publish n events, one commit each; returns event_id -> commit time (monotonic)."""
    committed: dict[str, float] = {}
    pool = await asyncpg.create_pool(dsn, min_size=producers, max_size=producers)
    base = example("it_asset_assigned")
    per = n // producers
    start = time.monotonic()

    async def producer(k: int) -> None:
        async with pool.acquire() as conn:
            for i in range(per):
                if rate:
                    # Paced: event j of all producers is due at start + j / rate.
                    due = start + (i * producers + k) / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                payload = codec.dumps(base | {"asset_tag": f"B-{k}-{i}"}).decode()
                event_id = await conn.fetchval("SELECT it_relay.publish($1::jsonb)", payload)
                committed[str(event_id)] = time.monotonic()

    await asyncio.gather(*(producer(k) for k in range(producers)))
    await pool.close()
    return committed


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]
        if len(values) > 1
        else values[0]
    )


PROFILE_DIR: Path | None = None


async def _scenario(
    admin_dsn: str, port: int, transport: str, n: int, producers: int, rate: float | None, workdir: Path
) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn)
    before = _get(port, "/count")
    config = _config(workdir / f"relay-{transport}.toml", dsn, port, transport)
    command = [sys.executable, "-m", "relay", "run", "--config", str(config)]
    if PROFILE_DIR is not None:
        # py-spy samples the relay process; collapsed stacks, one file per scenario.
        out = PROFILE_DIR / f"relay-{transport}-{'paced' if rate else 'burst'}.txt"
        command = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out),
            "--",
            *command,
        ]
    relay = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "relay.log").open("ab"),
    )
    try:
        conn = await asyncpg.connect(dsn)
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'it-relay:listener'"
        ):
            await asyncio.sleep(0.05)
        await conn.close()
        cpu0 = _cpu_seconds(relay.pid)
        t0 = time.monotonic()
        committed = await _produce(dsn, n, producers, rate)
        expected = before + len(committed) * len(SUBSCRIBERS)
        deadline = time.monotonic() + 600
        while _get(port, "/count") < expected:
            if time.monotonic() > deadline or relay.poll() is not None:
                raise RuntimeError("relay did not deliver everything in time")
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(relay.pid) - cpu0
        rss = _peak_rss_mb(relay.pid)
    finally:
        if PROFILE_DIR is not None:
            relay.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT and stops the relay
        else:
            relay.terminate()
        relay.wait(60)
    arrivals = _get(port, "/stats")["arrivals"]
    latencies = [
        (t - committed[eid]) * 1000 for eid, times in arrivals.items() if eid in committed for t in times
    ]
    deliveries = len(committed) * len(SUBSCRIBERS)
    return {
        "transport": transport,
        "events": len(committed),
        "rate_target": rate,
        "elapsed_s": elapsed,
        "events_per_s": len(committed) / elapsed,
        "deliveries_per_s": deliveries / elapsed,
        "cpu_s_per_1k_deliveries": cpu / deliveries * 1000,
        "peak_rss_mb": rss,
        "latency_ms": {
            "p50": _percentile(latencies, 0.50),
            "p95": _percentile(latencies, 0.95),
            "p99": _percentile(latencies, 0.99),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--transport", default="aiohttp,httpx")
    ap.add_argument("--latency-rate", type=float, default=200.0, help="events/s of the steady latency run")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="small runs (about a minute)")
    ap.add_argument("--port", type=int, default=18199)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--profile", type=Path, help="record py-spy profiles of the relay into this directory")
    args = ap.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.events, args.latency_seconds = 4000, 10.0

    workdir = Path(tempfile.mkdtemp(prefix="it-relay-bench-"))
    dsn = args.dsn
    server = None
    if dsn is None:
        import pgserver

        server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = server.get_uri()
    sink_proc = mp.Process(target=sink.serve, args=(args.port,), daemon=True)
    sink_proc.start()
    time.sleep(0.5)

    ceilings: dict[str, float | None] = {}
    ceilings.update(asyncio.run(limits._db_rates(dsn, min(args.events, 20000), args.producers)))
    for kind in ("httpx", "httpx-aiohttp", "aiohttp"):
        ceilings[f"post_per_s[{kind}]"] = asyncio.run(
            limits._post_rate(kind, args.port, min(args.events, 20000), 64)
        )

    runs = []
    for transport in args.transport.split(","):
        runs.append(
            asyncio.run(_scenario(dsn, args.port, transport, args.events, args.producers, None, workdir))
        )
    steady_n = int(args.latency_rate * args.latency_seconds)
    steady = asyncio.run(
        _scenario(
            dsn, args.port, args.transport.split(",")[0], steady_n, args.producers, args.latency_rate, workdir
        )
    )
    sink_proc.terminate()
    if server is not None:
        server.cleanup()

    aiohttp_ceiling = ceilings.get("post_per_s[aiohttp]") or float("nan")
    print(
        f"\nit-relay benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, {args.events} events x {len(SUBSCRIBERS)} subscribers\n"
    )
    print(f"{'ceiling':34} {'per s':>10}")
    for name, value in ceilings.items():
        print(f"{name:34} {value:>10,.0f}" if value else f"{name:34} {'n/a':>10}")
    print(
        f"\n{'run':22} {'events/s':>9} {'deliv/s':>9} {'of aiohttp POST':>16} {'CPU s/1k':>9} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'RSS MB':>7}"
    )
    for run in [*runs, steady]:
        name = f"{run['transport']}" + (f" @{run['rate_target']:.0f}/s" if run["rate_target"] else " burst")
        lat = run["latency_ms"]
        print(
            f"{name:22} {run['events_per_s']:>9,.0f} {run['deliveries_per_s']:>9,.0f} "
            f"{run['deliveries_per_s'] / aiohttp_ceiling:>16.0%} {run['cpu_s_per_1k_deliveries']:>9.3f} "
            f"{lat['p50']:>8.1f} {lat['p95']:>8.1f} {lat['p99']:>8.1f} {run['peak_rss_mb']:>7.0f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"relay_bench-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "ceilings": ceilings,
                "runs": runs,
                "steady": steady,
                "events": args.events,
                "quick": args.quick,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
