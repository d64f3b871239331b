"""it-relay beside this machine's ceilings and two peers, measured in one run.

Scenarios (each reported as a ratio of the ceilings bench/limits.py measures in the same run):
  throughput  N events from 4 producer connections (one commit each), 2 subscribers, minimal sink:
              it-relay, a naive LISTEN-and-POST relay (no journal: the non-durable bound), and the
              obvious PgQueuer relay (one job per delivery, enqueued in the producer's transaction);
  latency     200 events/s for 30 s through it-relay: p50/p95/p99 from commit to arrival at the sink;
  backlog     100k events journaled while no relay runs, then it-relay starts: drain rate, peak RSS.
Each system runs as its own process, so CPU time and memory are its own. Prints a table, writes
JSON to bench/results/, and with --docs rewrites docs/benchmarks.md and its chart.

    python bench/relay_bench.py [--quick] [--dsn URL] [--docs] [--profile DIR]
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
from urllib.parse import urlsplit, urlunsplit

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import limits
import peers
import sink

from relay import codec, migrate
from relay.contracts.examples import example

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SUBSCRIBERS = ("PF-10", "HR")  # it_asset_assigned is routed to exactly these two
PROFILE_DIR: Path | None = None
INSTANCES = 1  # it-relay processes side by side (several instances share one database by design)


def _label(system: str) -> str:
    return f"{system} x{INSTANCES}" if system == "it-relay" and INSTANCES > 1 else system


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


def _config(path: Path, dsn: str, port: int, record_attempts: bool = True) -> Path:
    lines = [
        "[database]",
        f'url = "{dsn}"',
        "poll_interval_s = 2.0",
        "[delivery]",
        "concurrency = 64",
        "batch_size = 500",
        f"record_attempts = {'true' if record_attempts else 'false'}",
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


async def _fresh_database(admin_dsn: str, system: str) -> str:
    name = f"it_relay_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    if system == "it-relay":
        conn = await asyncpg.connect(dsn)
        await migrate.upgrade(conn)
        await conn.close()
    elif system == "pgqueuer":
        await peers.install_pgqueuer(dsn)
    return dsn


def _payload(k: int, i: int) -> dict[str, Any]:
    return example("it_asset_assigned") | {"asset_tag": f"B-{k}-{i}"}


async def _produce(system: str, dsn: str, n: int, producers: int, rate: float | None) -> dict[str, float]:
    """Publish n events, one commit each; returns event_id -> commit time (monotonic)."""
    committed: dict[str, float] = {}
    pool = await asyncpg.create_pool(dsn, min_size=producers, max_size=producers)
    per = n // producers
    start = time.monotonic()

    async def producer(k: int) -> None:
        async with pool.acquire() as conn:
            queries = None
            if system == "pgqueuer":
                from pgqueuer.db import AsyncpgDriver
                from pgqueuer.queries import Queries

                queries = Queries(AsyncpgDriver(conn))
            for i in range(per):
                if rate:
                    # Paced: event j of all producers is due at start + j / rate.
                    delay = start + (i * producers + k) / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                payload = _payload(k, i)
                if system == "it-relay":
                    event_id = str(
                        await conn.fetchval(
                            "SELECT it_relay.publish($1::jsonb)", codec.dumps(payload).decode()
                        )
                    )
                elif system == "naive":
                    event_id = str(uuid.uuid4())
                    await conn.execute(
                        "SELECT pg_notify($1, $2)",
                        peers.NAIVE_CHANNEL,
                        codec.dumps(payload | {"event_id": event_id}).decode(),
                    )
                else:
                    assert queries is not None
                    event_id = str(uuid.uuid4())
                    body = payload | {"event_id": event_id}
                    jobs = [codec.dumps({"path": p, "body": body}) for p in peers.SUBSCRIBER_PATHS]
                    async with conn.transaction():
                        await queries.enqueue(["deliver"] * len(jobs), jobs, [0] * len(jobs))
                committed[event_id] = time.monotonic()

    await asyncio.gather(*(producer(k) for k in range(producers)))
    await pool.close()
    return committed


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def _start(
    system: str, dsn: str, port: int, workdir: Path, label: str, record_attempts: bool = True
) -> subprocess.Popen[bytes]:
    if system == "it-relay":
        command = [
            sys.executable,
            "-m",
            "relay",
            "run",
            "--config",
            str(_config(workdir / f"{label}.toml", dsn, port, record_attempts)),
        ]
        if PROFILE_DIR is not None:
            # py-spy samples the relay; collapsed stacks, one file per scenario (CPU figures are then py-spy's).
            out = PROFILE_DIR / f"{label}.txt"
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
    else:
        command = [sys.executable, str(HERE / "peers.py"), system, "--dsn", dsn, "--port", str(port)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(workdir / f"{system}.log").open("ab"))


async def _wait_ready(system: str, dsn: str, proc: subprocess.Popen[bytes]) -> None:
    conn = await asyncpg.connect(dsn)
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay:listener'"
        if system == "it-relay"
        else "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    while not await conn.fetchval(query):
        if proc.poll() is not None:
            raise RuntimeError(f"{system} exited with {proc.returncode}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3 if system != "it-relay" else 0)
    await conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT if PROFILE_DIR is not None else signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _await_sink(port: int, expected: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 900
    while _get(port, "/count") < expected:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("deliveries did not all arrive in time")
        await asyncio.sleep(0.02)


async def throughput(
    system: str, admin_dsn: str, port: int, n: int, producers: int, rate: float | None, workdir: Path
) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn, system)
    before = _get(port, "/count")
    label = f"{system}-{'paced' if rate else 'burst'}"
    procs = [
        _start(system, dsn, port, workdir, f"{label}-{i}")
        for i in range(INSTANCES if system == "it-relay" else 1)
    ]
    try:
        for proc in procs:
            await _wait_ready(system, dsn, proc)
        cpu0 = sum(_cpu_seconds(p.pid) for p in procs)
        t0 = time.monotonic()
        committed = await _produce(system, dsn, n, producers, rate)
        await _await_sink(port, before + len(committed) * len(SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0
        rss = max(_peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            _stop(proc)
    arrivals = _get(port, "/stats")["arrivals"]
    latencies = [
        (t - committed[eid]) * 1000 for eid, times in arrivals.items() if eid in committed for t in times
    ]
    deliveries = len(committed) * len(SUBSCRIBERS)
    return {
        "system": _label(system),
        "scenario": "latency" if rate else "throughput",
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


async def backlog(
    admin_dsn: str, port: int, n: int, workdir: Path, record_attempts: bool = True
) -> dict[str, Any]:
    """n events journaled with no relay running (one statement), then the relay drains them."""
    dsn = await _fresh_database(admin_dsn, "it-relay")
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
    before = _get(port, "/count")
    tag = "" if record_attempts else "-no-history"
    procs = [
        _start("it-relay", dsn, port, workdir, f"it-relay-backlog{tag}-{i}", record_attempts)
        for i in range(INSTANCES)
    ]
    try:
        t0 = time.monotonic()
        await _await_sink(port, before + n * len(SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu = sum(_cpu_seconds(p.pid) for p in procs)
        rss = max(_peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            _stop(proc)
    return {
        "system": _label("it-relay"),
        "scenario": "backlog" if record_attempts else "backlog, no attempt history",
        "events": n,
        "elapsed_s": elapsed,
        "events_per_s": n / elapsed,
        "deliveries_per_s": n * len(SUBSCRIBERS) / elapsed,
        "cpu_s_per_1k_deliveries": cpu / (n * len(SUBSCRIBERS)) * 1000,
        "peak_rss_mb": rss,
    }


def _history_cost(by: dict[tuple[str, str], dict[str, Any]]) -> float | None:
    """How much slower the backlog drains with the attempts history than without it."""
    with_it = by.get((_label("it-relay"), "backlog"))
    without = by.get((_label("it-relay"), "backlog, no attempt history"))
    if not with_it or not without:
        return None
    return 1 - with_it["deliveries_per_s"] / without["deliveries_per_s"]


def _table(ceilings: dict[str, float | None], runs: list[dict[str, Any]], header: str) -> str:
    post = ceilings.get("post_per_s[aiohttp]") or float("nan")
    lines = [header, "", "| ceiling | per second |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" if v else f"| {k} | n/a |" for k, v in ceilings.items()]
    lines += [
        "",
        "| system | scenario | events/s | deliveries/s | of bare aiohttp POST | CPU s / 1k deliveries "
        "| p50 / p95 / p99 ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lat = r.get("latency_ms")
        latency = f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}" if lat else "—"
        scenario = r["scenario"] + (f" @{r['rate_target']:.0f}/s" if r.get("rate_target") else "")
        lines.append(
            f"| {r['system']} | {scenario} | {r['events_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} | "
            f"{r['deliveries_per_s'] / post:.0%} | {r['cpu_s_per_1k_deliveries']:.3f} | {latency} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _chart(ceilings: dict[str, float | None], runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (f"{r['system']}\n{r['scenario']}", r["deliveries_per_s"]) for r in runs if r["scenario"] != "latency"
    ]
    bars += [(f"ceiling\nPOST {k[11:-1]}", v) for k, v in ceilings.items() if k.startswith("post") and v]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = [
        "#2b6cb0" if "it-relay" in b[0] else "#718096" if "ceiling" in b[0] else "#dd6b20" for b in bars
    ]
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=colors)
    ax.set_ylabel("deliveries (POSTs) per second")
    ax.set_title("it-relay, peers and ceilings — same machine, same run")
    for i, (_, v) in enumerate(bars):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    plt.xticks(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    global PROFILE_DIR, INSTANCES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--systems", default="it-relay,naive,pgqueuer")
    ap.add_argument("--latency-rate", type=float, default=200.0)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="small runs (about a minute)")
    ap.add_argument("--port", type=int, default=18199)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md and docs/benchmarks.png")
    ap.add_argument("--profile", type=Path, help="record py-spy profiles of the relay into this directory")
    ap.add_argument(
        "--instances", type=int, default=1, help="it-relay processes side by side on one database"
    )
    args = ap.parse_args()
    PROFILE_DIR = args.profile
    INSTANCES = args.instances
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.events, args.latency_seconds, args.backlog = 4000, 10.0, 10_000

    workdir = Path(tempfile.mkdtemp(prefix="it-relay-bench-"))
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
        ceilings: dict[str, float | None] = dict(
            asyncio.run(limits._db_rates(dsn, min(args.events, 20000), args.producers))
        )
        for kind in ("httpx", "httpx-aiohttp", "aiohttp"):
            ceilings[f"post_per_s[{kind}]"] = asyncio.run(
                limits._post_rate(kind, args.port, min(args.events, 20000), 64)
            )
        runs = [
            asyncio.run(throughput(s, dsn, args.port, args.events, args.producers, None, workdir))
            for s in args.systems.split(",")
        ]
        runs.append(
            asyncio.run(
                throughput(
                    "it-relay",
                    dsn,
                    args.port,
                    int(args.latency_rate * args.latency_seconds),
                    args.producers,
                    args.latency_rate,
                    workdir,
                )
            )
        )
        runs.append(asyncio.run(backlog(dsn, args.port, args.backlog, workdir)))
        # The attempts history's cost, in the same run: the same drain without it.
        runs.append(asyncio.run(backlog(dsn, args.port, args.backlog, workdir, record_attempts=False)))
    finally:
        sink_proc.terminate()
        if server is not None:
            server.cleanup()

    header = (
        f"it-relay benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; {args.events} events x {len(SUBSCRIBERS)} subscribers, "
        f"backlog {args.backlog}{' (quick)' if args.quick else ''}"
    )
    table = _table(ceilings, runs, header)
    print("\n" + table)
    by = {(r["system"], r["scenario"]): r for r in runs}
    relay, pgq = by.get((_label("it-relay"), "throughput")), by.get(("pgqueuer", "throughput"))
    summary = {
        "relay_vs_aiohttp_post": relay["deliveries_per_s"] / (ceilings.get("post_per_s[aiohttp]") or 1)
        if relay
        else None,
        "relay_vs_pgqueuer": relay["deliveries_per_s"] / pgq["deliveries_per_s"] if relay and pgq else None,
        "attempt_history_cost": _history_cost(by),
    }
    print(f"\nit-relay / bare aiohttp POST ceiling: {summary['relay_vs_aiohttp_post']:.0%}")
    if summary["attempt_history_cost"] is not None:
        print(f"attempt history: drain {summary['attempt_history_cost']:.1%} slower than without it")
    if summary["relay_vs_pgqueuer"]:
        print(f"it-relay / PgQueuer relay: {summary['relay_vs_pgqueuer']:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out = args.out / f"relay_bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "ceilings": ceilings,
                "runs": runs,
                "summary": summary,
                "quick": args.quick,
                "events": args.events,
                "backlog": args.backlog,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if args.docs:
        _chart(ceilings, runs, ROOT / "docs" / "benchmarks.png")
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text() if doc.exists() else ""
        marker = "<!-- results -->"
        intro = text.split(marker)[0] if marker in text else "# Benchmarks\n\n"
        doc.write_text(f"{intro}{marker}\n{table}\n\n![deliveries per second](benchmarks.png)\n")
        print("updated docs/benchmarks.md and docs/benchmarks.png")


if __name__ == "__main__":
    main()
