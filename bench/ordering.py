"""Ordered delivery (ordering = "entity") as a ratio of unordered, measured in one run (issue 24).

One subscriber (FA: it_asset_purchased is routed to it alone) pointed at bench/sink.py, the relay as
its own process on a fresh database per run, with relay_bench.py's delivery settings:
  drain    N events over E entities (asset_ids drawn at random from a pool of E), journaled before
           the relay starts; ordered and unordered, at the relay's default max_in_flight and at 64;
           timed from the relay's readiness. Arrivals are checked against journal order per entity;
  latency  R events/s for S seconds from 4 producer connections (one commit each), ordered and
           unordered: p50/p95/p99 from commit to the first arrival at the sink;
  hot      a backlog of ONE asset_id, ordered, at a few sizes: one round trip per event is its
           physical bound, so the mean time per event is reported beside the rate.
Drains and latency runs are repeated --rounds times, unordered and ordered alternating: the median
round of a drain is reported, a latency's percentiles pool every round's events. Beside them the
bare POST ceilings of the same run (pyreqwest, the relay's sender; aiohttp, the ceiling
relay_bench.py quotes). Prints a table, writes JSON to bench/results/; never asserts on a time.

    python bench/ordering.py [--events 20000] [--entities 200] [--in-flight 16,64] [--rounds 3]
        [--latency-rate 200] [--latency-seconds 30] [--hot-events 200,500,1000] [--dsn URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import limits
import relay_bench
import sink

from relay import codec
from relay.contracts.examples import example
from relay.settings import SubscriberSettings

SUBSCRIBER = "FA"  # the one subscriber of it_asset_purchased
EVENT = "it_asset_purchased"
DEFAULT_IN_FLIGHT = SubscriberSettings.model_fields["max_in_flight"].default


def _config(path: Path, dsn: str, port: int, ordering: str, in_flight: int) -> Path:
    """relay_bench.py's settings (database, delivery, logging), with FA as the only subscriber."""
    relay_bench._config(path, dsn, port)
    base = path.read_text().split("[subscribers.")[0]
    path.write_text(
        base
        + f'[subscribers."{SUBSCRIBER}"]\n'
        + f'url = "http://127.0.0.1:{port}/{SUBSCRIBER.lower()}"\n'
        + f'secret = "{relay_bench.SECRET}"\n'
        + f"max_in_flight = {in_flight}\n"
        + f'ordering = "{ordering}"\n'
    )
    return path


def _pool(rng: random.Random, entities: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(entities)]


async def _journal(dsn: str, asset_ids: list[str]) -> None:
    """One event per asset_id, in list order, journaled in statements of 10k (no relay running)."""
    conn = await asyncpg.connect(dsn)
    template = codec.dumps(example(EVENT)).decode()
    for start in range(0, len(asset_ids), 10_000):
        await conn.execute(
            "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_id}', to_jsonb(a.id))) "
            "FROM unnest($2::text[]) WITH ORDINALITY AS a(id, k)",
            template,
            asset_ids[start : start + 10_000],
        )
    await conn.close()


async def _journal_order(dsn: str) -> dict[str, list[str]]:
    """Each entity's event_ids in journal order."""
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetch("SELECT event_id::text, entity_key FROM it_relay.events ORDER BY seq")
    await conn.close()
    order: dict[str, list[str]] = {}
    for row in rows:
        order.setdefault(row["entity_key"], []).append(row["event_id"])
    return order


def _out_of_order(order: dict[str, list[str]], arrivals: dict[str, list[float]]) -> int:
    """Events whose first arrival came before an earlier event's of the same entity."""
    count = 0
    for ids in order.values():
        latest = float("-inf")
        for event_id in ids:
            first = min(arrivals[event_id])
            count += first < latest
            latest = max(latest, first)
    return count


def _start(dsn: str, port: int, workdir: Path, label: str, ordering: str, in_flight: int) -> Any:
    config = _config(workdir / f"{label}.toml", dsn, port, ordering, in_flight)
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"{label}.log").open("ab"),
    )


async def drain(
    admin_dsn: str, port: int, workdir: Path, asset_ids: list[str], ordering: str, in_flight: int, label: str
) -> dict[str, Any]:
    """The backlog of asset_ids' events, drained by one relay process; timed from its readiness."""
    dsn = await relay_bench._fresh_database(admin_dsn, "it-relay")
    await _journal(dsn, asset_ids)
    n = len(asset_ids)
    before = relay_bench._get(port, "/count")
    proc = _start(dsn, port, workdir, label, ordering, in_flight)
    try:
        await relay_bench._wait_ready("it-relay", dsn, proc)
        cpu0 = relay_bench._cpu_seconds(proc.pid)
        started, t0 = relay_bench._get(port, "/count"), time.monotonic()
        await relay_bench._await_sink(port, before + n, [proc])
        elapsed = time.monotonic() - t0
        cpu = relay_bench._cpu_seconds(proc.pid) - cpu0
        rss = relay_bench._peak_rss_mb(proc.pid)
    finally:
        relay_bench._stop(proc)
    delivered = n - (started - before)
    arrivals = relay_bench._get(port, "/stats")["arrivals"]
    return {
        "ordering": ordering,
        "max_in_flight": in_flight,
        "events": n,
        "entities": len(set(asset_ids)),
        "elapsed_s": elapsed,
        "events_per_s": delivered / elapsed,
        "ms_per_event": elapsed / delivered * 1000,
        "cpu_s_per_1k_deliveries": cpu / delivered * 1000,
        "peak_rss_mb": rss,
        "out_of_order": _out_of_order(await _journal_order(dsn), arrivals),
    }


async def _paced(
    dsn: str, pool: list[str], rng: random.Random, rate: float, seconds: float
) -> dict[str, float]:
    """rate events/s for seconds from 4 connections, one commit each; event_id -> commit time."""
    producers, n = 4, int(rate * seconds)
    template = example(EVENT)
    payloads = [codec.dumps(template | {"asset_id": rng.choice(pool)}).decode() for _ in range(n)]
    committed: dict[str, float] = {}
    conns = [await asyncpg.connect(dsn) for _ in range(producers)]
    start = time.monotonic()

    async def producer(k: int) -> None:
        for j in range(k, n, producers):
            delay = start + j / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event_id = await conns[k].fetchval("SELECT it_relay.publish($1::jsonb)", payloads[j])
            committed[str(event_id)] = time.monotonic()

    await asyncio.gather(*(producer(k) for k in range(producers)))
    for conn in conns:
        await conn.close()
    return committed


async def latency(
    admin_dsn: str, port: int, workdir: Path, args: argparse.Namespace, ordering: str, label: str
) -> dict[str, Any]:
    """Commit -> first arrival at the sink, at a steady rate, with the relay already running."""
    dsn = await relay_bench._fresh_database(admin_dsn, "it-relay")
    rng = random.Random(args.seed)
    pool = _pool(rng, args.entities)
    before = relay_bench._get(port, "/count")
    proc = _start(dsn, port, workdir, label, ordering, DEFAULT_IN_FLIGHT)
    try:
        await relay_bench._wait_ready("it-relay", dsn, proc)
        committed = await _paced(dsn, pool, rng, args.latency_rate, args.latency_seconds)
        await relay_bench._await_sink(port, before + len(committed), [proc])
    finally:
        relay_bench._stop(proc)
    arrivals = relay_bench._get(port, "/stats")["arrivals"]
    latencies = [(min(arrivals[eid]) - t) * 1000 for eid, t in committed.items()]
    return {
        "_latencies": latencies,
        "ordering": ordering,
        "max_in_flight": DEFAULT_IN_FLIGHT,
        "events": len(committed),
        "entities": args.entities,  # the pool the producers draw from
        "rate_target": args.latency_rate,
        "latency_ms": _quantiles(latencies),
        "out_of_order": _out_of_order(await _journal_order(dsn), arrivals),
    }


def _quantiles(latencies: list[float]) -> dict[str, float]:
    return {q: relay_bench._percentile(latencies, v) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds: the median round by rate; latency: every round's events pooled."""
    out_of_order = sum(r["out_of_order"] for r in records)
    if "rate_target" in records[0]:
        pooled = [v for r in records for v in r.pop("_latencies")]
        return records[0] | {
            "events": len(pooled),
            "latency_ms": _quantiles(pooled),
            "out_of_order": out_of_order,
            "rounds": [r["latency_ms"]["p99"] for r in records],
        }
    median = sorted(records, key=lambda r: float(r["events_per_s"]))[len(records) // 2]
    return median | {"out_of_order": out_of_order, "rounds": [r["events_per_s"] for r in records]}


async def ceilings(port: int, n: int) -> dict[str, float | None]:
    """The bare POST loops of relay_bench.py/limits.py against the same sink, 64 at once."""
    return {
        "post_per_s[pyreqwest]": await relay_bench._pyreqwest_post_rate(port, n, 64),
        "post_per_s[aiohttp]": await limits._post_rate("aiohttp", port, n, 64),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _targets(runs: dict[str, dict[str, Any]], in_flight: list[int]) -> dict[str, Any]:
    drains = {
        f"drain_ratio[max_in_flight={m}]": _ratio(
            runs[f"drain-entity-{m}"]["events_per_s"], runs[f"drain-none-{m}"]["events_per_s"]
        )
        for m in in_flight
        if f"drain-entity-{m}" in runs and f"drain-none-{m}" in runs
    }
    p99 = None
    if "latency-entity" in runs and "latency-none" in runs:
        p99 = _ratio(runs["latency-entity"]["latency_ms"]["p99"], runs["latency-none"]["latency_ms"]["p99"])
    return drains | {"latency_p99_ratio": p99}


def _table(
    ceiling: dict[str, float | None], runs: dict[str, dict[str, Any]], targets: dict[str, Any], header: str
) -> str:
    post = ceiling.get("post_per_s[pyreqwest]") or float("nan")
    lines = [header, "", "| ceiling (same run) | per second |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" if v else f"| {k} | n/a |" for k, v in ceiling.items()]
    lines += [
        "",
        "| run | ordering | max_in_flight | events/s | ms/event | of bare pyreqwest POST | CPU s / 1k "
        "| p50 / p95 / p99 ms | each round (events/s; p99 ms) | out of order |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lat = r.get("latency_ms")
        rate = (
            f"{r['events_per_s']:,.0f} | {r['ms_per_event']:.2f} | {r['events_per_s'] / post:.0%} | "
            f"{r['cpu_s_per_1k_deliveries']:.3f}"
            if "events_per_s" in r
            else f"@{r['rate_target']:.0f}/s | — | — | —"
        )
        latency_text = f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}" if lat else "—"
        lines.append(
            f"| {name.split('-')[0]} ({r['events']:,} ev, {r.get('entities', '')} ent) | {r['ordering']} "
            f"| {r['max_in_flight']} | {rate} | {latency_text} | {' / '.join(f'{v:,.0f}' for v in r['rounds'])} "
            f"| {r['out_of_order']} |"
        )
    lines += ["", "| target (ratio of this run) | this run | goal | met |", "|---|---|---|---|"]
    for key, value in targets.items():
        at_most = key.startswith("latency")
        goal = "<= 1.2" if at_most else ">= 0.8"
        shown = f"{value:.2f}x" if value is not None else "n/a"
        met = "—" if value is None else "yes" if (value <= 1.2 if at_most else value >= 0.8) else "no"
        lines.append(f"| {key} ordered / unordered | {shown} | {goal} | {met} |")
    return "\n".join(lines)


async def _all(args: argparse.Namespace, dsn: str, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ceiling = await ceilings(args.port, min(args.events, 20_000))
    rng = random.Random(args.seed)
    pool = _pool(rng, args.entities)
    backlog = [rng.choice(pool) for _ in range(args.events)]
    rounds: dict[str, list[dict[str, Any]]] = {}
    # Unordered then ordered, round after round, so a shared machine's drift touches both alike.
    for k in range(args.rounds):
        for m in args.in_flight:
            for ordering in ("none", "entity"):
                label = f"drain-{ordering}-{m}"
                record = await drain(dsn, args.port, workdir, backlog, ordering, m, f"{label}-{k}")
                rounds.setdefault(label, []).append(record)
                print(f"{label} #{k}: {record['events_per_s']:,.0f} events/s", flush=True)
    for k in range(args.rounds if args.latency_seconds > 0 else 0):
        for ordering in ("none", "entity"):
            label = f"latency-{ordering}"
            record = await latency(dsn, args.port, workdir, args, ordering, f"{label}-{k}")
            rounds.setdefault(label, []).append(record)
            print(f"{label} #{k}: p99 {record['latency_ms']['p99']:.1f} ms", flush=True)
    runs = {label: _summary(records) for label, records in rounds.items()}
    # Several sizes: an entity's time per event grows with its own backlog (docs/benchmarks.md).
    for size in args.hot_events:
        label = f"hot-{size}"
        runs[label] = await drain(
            dsn, args.port, workdir, [pool[0]] * size, "entity", DEFAULT_IN_FLIGHT, label
        )
        runs[label]["rounds"] = [runs[label]["events_per_s"]]
        print(f"{label}: {runs[label]['ms_per_event']:.2f} ms/event", flush=True)
    return ceiling, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events in each drain")
    ap.add_argument("--entities", type=int, default=200, help="distinct asset_ids they are spread over")
    ap.add_argument(
        "--in-flight",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[DEFAULT_IN_FLIGHT, 64],
        help="max_in_flight values, each drained ordered and unordered (default: the relay's, 64)",
    )
    ap.add_argument("--latency-rate", type=float, default=200.0)
    ap.add_argument("--latency-seconds", type=float, default=30.0, help="0 skips the latency runs")
    ap.add_argument(
        "--hot-events",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[200, 500, 1000],
        help="backlog sizes of the single hot entity, each drained ordered ('' skips)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="drains and latency runs, alternated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--port", type=int, default=18197, help="the sink's port")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as the relay runs

    workdir = Path(tempfile.mkdtemp(prefix="it-relay-bench-ordering-"))
    server = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = server.get_uri()
    sink_proc = mp.Process(target=sink.serve, args=(args.port,), daemon=True)
    sink_proc.start()
    time.sleep(0.5)
    try:
        ceiling, runs = asyncio.run(_all(args, dsn, workdir))
    finally:
        sink_proc.terminate()
        if server is not None:
            server.cleanup()

    header = (
        f"it-relay ordered delivery — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.events} events over "
        f"{args.entities} entities to one subscriber, seed {args.seed}"
    )
    targets = _targets(runs, args.in_flight)
    print("\n" + _table(ceiling, runs, targets, header))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"ordering-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "dsn")}
    out.write_text(
        json.dumps({"args": settings, "ceilings": ceiling, "runs": runs, "targets": targets}, indent=2)
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
