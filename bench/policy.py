"""What per-subscriber policy costs: a filter per event, the shared rate limit per delivery.

  filter       in-process: decoding the routed body once, then each filter on it (µs per event);
               the router's whole step for one event with one and with three filtered subscribers;
  bucket       one take_tokens / return_tokens round trip on PostgreSQL, and what that makes per
               delivery when a claim takes 1, 16 or 128 rows;
  drain        the relay draining N events to 2 subscribers (own process, minimal sink): without
               policy, with a rate limit that does not bind (10,000/s), with a filter that passes
               everything: deliveries/s and relay CPU per 1k deliveries, so the difference is the cost;
  binding      a limit that binds (--rate, 2 processes): the most requests any one-second window saw
               at the sink, against the limit.
Prints a table, writes JSON to bench/results/.

    python bench/policy.py [--events 10000] [--rate 200] [--dsn URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import relay_bench as rb
import sink

from relay import codec, filters, journal
from relay.contracts.examples import example
from relay.ingest import route
from relay.metrics import Metrics
from relay.model import RoutedEvent
from relay.router import Router

FILTERS: dict[str, dict[str, Any]] = {
    "implicit equality": {"severity": "critical"},
    "$in (GR's)": {"severity": {"$in": ["critical", "high"]}},
    "$and of 3, nested $or": {
        "$and": [
            {"severity": {"$in": ["critical", "high"]}},
            {"$or": [{"incident_type": "phishing"}, {"incident_number": {"$startsWith": "SEC-"}}]},
            {"affected_asset_ids": {"$exist": True}},
        ]
    },
}


def _per_call_us(fn: Any, n: int = 20000) -> float:
    """The best of 5 runs of n calls, in µs per call."""
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


class _Served:
    def __init__(self, condition: dict[str, Any] | None) -> None:
        self.filter = condition


def filter_costs() -> dict[str, float]:
    outcome = route(uuid.uuid4(), codec.dumps(example("it_security_incident_created")).decode(), "keep")
    assert isinstance(outcome, RoutedEvent)
    body = outcome.body
    payload = codec.loads(body)
    out = {"decode the routed body": _per_call_us(lambda: codec.loads(body))}
    for name, condition in FILTERS.items():
        out[f"filter: {name}"] = _per_call_us(lambda c=condition: filters.matches(c, payload))
    # The router's own step: served subscribers, decode once, every filter, the counters.
    metrics = Metrics()
    for label, served in (
        ("router step, no filter", {"GR": _Served(None), "PF-10": _Served(None)}),
        (
            "router step, 1 filtered subscriber",
            {"GR": _Served(FILTERS["$in (GR's)"]), "PF-10": _Served(None)},
        ),
        (
            "router step, 2 filtered subscribers",
            {"GR": _Served(FILTERS["$in (GR's)"]), "PF-10": _Served(FILTERS["$and of 3, nested $or"])},
        ),
    ):
        router = Router(
            store=None, metrics=metrics, unknown_fields="keep", configured=served, on_routed=print
        )  # type: ignore[arg-type]
        out[label] = _per_call_us(lambda r=router: r._served_only(outcome))
    return out


async def bucket_costs(dsn: str, calls: int = 2000) -> dict[str, float]:
    """Medians: a shared machine's pauses would dominate a mean."""
    conn = await asyncpg.connect(dsn)
    # As the daemon's pool commits its bookkeeping (database.bookkeeping_commit = "async").
    await conn.execute("SET synchronous_commit TO off")

    async def median_us(call: Any) -> float:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await call()
            times.append((time.perf_counter() - started) * 1e6)
        return statistics.median(times)

    try:
        take = await median_us(lambda: journal.take_tokens(conn, "PF-10", 16, 10_000.0, 1.0))
        grant = await journal.take_tokens(conn, "PF-10", 16, 10_000.0, 1.0)
        back = await median_us(lambda: journal.return_tokens(conn, "PF-10", grant.mark, 1, 10_000.0))
        trip = await median_us(lambda: conn.fetchval("SELECT 1"))
    finally:
        await conn.close()
    out = {"round trip (SELECT 1)": trip, "take_tokens": take, "return_tokens": back}
    for rows in (1, 16, 128):
        out[f"per delivery, {rows} rows a claim"] = take / rows
    return out


def _config(path: Path, dsn: str, port: int, extra: list[str]) -> Path:
    rb._config(path, dsn, port)
    text = path.read_text()
    for name in rb.SUBSCRIBERS:
        text = text.replace(
            f'[subscribers."{name}"]\n', f'[subscribers."{name}"]\n' + "\n".join(extra) + "\n"
        )
    path.write_text(text)
    return path


async def _journal(dsn: str, n: int) -> None:
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


async def drain(
    admin: str, port: int, n: int, workdir: Path, label: str, extra: list[str], instances: int = 1
) -> dict[str, Any]:
    dsn = await rb._fresh_database(admin, "it-relay")
    await _journal(dsn, n)
    before = rb._get(port, "/count")
    slug = "".join(c if c.isalnum() else "-" for c in label)
    config = _config(workdir / f"{slug}.toml", dsn, port, extra)
    procs = [
        rb.subprocess.Popen(
            [sys.executable, "-m", "relay", "run", "--config", str(config)],
            stdout=rb.subprocess.DEVNULL,
            stderr=(workdir / f"{slug}-{i}.log").open("ab"),
        )
        for i in range(instances)
    ]
    try:
        for proc in procs:
            await rb._wait_ready("it-relay", dsn, proc)
        cpu0 = sum(rb._cpu_seconds(p.pid) for p in procs)
        started, t0 = rb._get(port, "/count"), time.monotonic()
        await rb._await_sink(port, before + n * len(rb.SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu = sum(rb._cpu_seconds(p.pid) for p in procs) - cpu0
    finally:
        for proc in procs:
            rb._stop(proc)
    deliveries = n * len(rb.SUBSCRIBERS) - (started - before)
    return {
        "scenario": label,
        "instances": instances,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / elapsed,
        "cpu_ms_per_1k_deliveries": cpu / deliveries * 1e6,
    }


def _busiest_second(port: int, after: float) -> int:
    stats = rb._get(port, "/stats")
    times = sorted(t for ts in stats["arrivals"].values() for t in ts if t >= after)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=200.0, help="the binding limit per subscriber")
    ap.add_argument("--port", type=int, default=18299)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--only-binding", action="store_true", help="only the binding limit's run")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="it-relay-policy-"))
    server = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = server.get_uri()
    sink_proc = mp.Process(target=sink.serve, args=(args.port,), daemon=True)
    sink_proc.start()
    time.sleep(0.5)
    results: dict[str, Any] = {"filter_us": filter_costs()}
    try:
        bucket_db = asyncio.run(rb._fresh_database(dsn, "it-relay"))
        results["bucket_us"] = asyncio.run(bucket_costs(bucket_db))
        drains = (
            []
            if args.only_binding
            else [
                asyncio.run(drain(dsn, args.port, args.events, workdir, "no policy", [])),
                asyncio.run(
                    drain(
                        dsn,
                        args.port,
                        args.events,
                        workdir,
                        "rate limit 10000/s (not binding)",
                        ["rate_limit_per_s = 10000"],
                    )
                ),
                asyncio.run(
                    drain(
                        dsn,
                        args.port,
                        args.events,
                        workdir,
                        "filter passing all",
                        ['filter = { asset_tag = { "$startsWith" = "L-" } }'],
                    )
                ),
            ]
        )
        events = int(args.rate * 6)
        t0 = time.monotonic()
        bound = asyncio.run(
            drain(
                dsn,
                args.port,
                events,
                workdir,
                f"rate limit {args.rate:g}/s, 2 processes",
                [f"rate_limit_per_s = {args.rate:g}"],
                2,
            )
        )
        # Both subscribers share the sink: the busiest second of the two together, over 2x the limit.
        bound["busiest_second_both_subscribers"] = _busiest_second(args.port, t0)
        bound["limit_both_subscribers"] = 2 * args.rate
        drains.append(bound)
        results["drains"] = drains
    finally:
        sink_proc.terminate()
        if server is not None:
            server.cleanup()
    _print(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"policy-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    meta = {"machine": platform.machine(), "cores": os.cpu_count(), "events": args.events, "rate": args.rate}
    out.write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")


def _print(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nper-subscriber policy — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores\n")
    print(f"{'filter (in process)':<44} {'µs/event':>9}")
    for name, us in results["filter_us"].items():
        print(f"  {name:<42} {us:>9.2f}")
    print(f"\n{'shared rate limit (PostgreSQL)':<44} {'µs':>9}")
    for name, us in results["bucket_us"].items():
        print(f"  {name:<42} {us:>9.1f}")
    print(
        f"\n{'drain, ' + str(args.events) + ' events x 2 subscribers':<44} {'deliv/s':>9} {'CPU ms/1k':>10}"
    )
    base = results["drains"][0]
    for run in results["drains"]:
        extra = ""
        if "busiest_second_both_subscribers" in run:
            extra = f"  busiest second {run['busiest_second_both_subscribers']} (limit {run['limit_both_subscribers']:g})"
        elif run is not base:
            extra = f"  CPU {run['cpu_ms_per_1k_deliveries'] / base['cpu_ms_per_1k_deliveries'] - 1:+.1%}"
        print(
            f"  {run['scenario']:<42} {run['deliveries_per_s']:>9.0f} {run['cpu_ms_per_1k_deliveries']:>10.1f}{extra}"
        )


if __name__ == "__main__":
    main()
