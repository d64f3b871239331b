"""it-relay beside this machine's ceilings and two peers, measured in one run.

Scenarios (each reported as a ratio of the ceilings bench/limits.py measures in the same run):
  throughput  N events from 4 producer connections (one commit each), 2 subscribers, minimal sink:
              it-relay, a naive LISTEN-and-POST relay (no journal: the non-durable bound), and the
              obvious PgQueuer relay (one job per delivery, enqueued in the producer's transaction);
              bounded by what the producers commit, so it cannot show a relay's own speed;
  latency     200 events/s for 30 s through each system: p50/p95/p99 from commit to the sink;
  drain       the relay's own speed: 100k events' deliveries ready before the system starts
              (it-relay: journaled; PgQueuer: its queue pre-filled; naive: a pre-built list),
              timed from the system's readiness; it-relay per sender (--transports), without the
              attempts history, and as several processes (--instances).
Each system runs as its own process, so CPU time and memory are its own. Prints a table and the
targets as ratios, writes JSON to bench/results/, and with --docs rewrites docs/benchmarks.md.

    python bench/relay_bench.py [--quick] [--dsn URL] [--docs] [--profile DIR]
        [--scenarios throughput,latency,drain] [--transports pyreqwest,aiohttp] [--instances 1,2,4]
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
PROFILE_FORMAT = "raw"  # py-spy's: raw (collapsed stacks, for scripts) or flamegraph (SVG)
TRANSPORT = "pyreqwest"  # the relay's default sender; --transports lists the ones compared


def _label(system: str, transport: str | None = None, instances: int = 1) -> str:
    if system != "it-relay":
        return system
    label = f"it-relay ({transport or TRANSPORT})"
    return f"{label} x{instances}" if instances > 1 else label


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


def _config(
    path: Path, dsn: str, port: int, record_attempts: bool = True, transport: str = "pyreqwest"
) -> Path:
    lines = [
        "[database]",
        f'url = "{dsn}"',
        "poll_interval_s = 2.0",
        "[delivery]",
        "concurrency = 256",
        "batch_size = 500",
        f"record_attempts = {'true' if record_attempts else 'false'}",
        f'transport = "{transport}"',
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
            "max_in_flight = 128",
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
    system: str,
    dsn: str,
    port: int,
    workdir: Path,
    label: str,
    record_attempts: bool = True,
    transport: str = "pyreqwest",
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    if system == "it-relay":
        command = [
            sys.executable,
            "-m",
            "relay",
            "run",
            "--config",
            str(_config(workdir / f"{label}.toml", dsn, port, record_attempts, transport)),
        ]
        if PROFILE_DIR is not None:
            # py-spy samples the relay; collapsed stacks, one file per scenario (CPU figures are then py-spy's).
            out = PROFILE_DIR / f"{label}.{'svg' if PROFILE_FORMAT == 'flamegraph' else 'txt'}"
            command = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--format",
                PROFILE_FORMAT,
                "--rate",
                "200",
                "--output",
                str(out),
                "--",
                *command,
            ]
    else:
        command = [sys.executable, str(HERE / "peers.py"), system, "--dsn", dsn, "--port", str(port), *extra]
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
    procs = [_start(system, dsn, port, workdir, label, transport=TRANSPORT)]
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
    admin_dsn: str,
    port: int,
    n: int,
    workdir: Path,
    *,
    record_attempts: bool = True,
    transport: str = TRANSPORT,
    instances: int = 1,
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
    tag = f"{transport}{'' if record_attempts else '-no-history'}-x{instances}"
    procs = [
        _start("it-relay", dsn, port, workdir, f"it-relay-drain-{tag}-{i}", record_attempts, transport)
        for i in range(instances)
    ]
    try:
        # Timed from the moment every process is ready (as the peers are): start-up is not drain.
        for proc in procs:
            await _wait_ready("it-relay", dsn, proc)
        cpu0 = sum(_cpu_seconds(p.pid) for p in procs)
        started, t0 = _get(port, "/count"), time.monotonic()
        await _await_sink(port, before + n * len(SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0
        rss = max(_peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            _stop(proc)
    return _drained(
        _label("it-relay", transport, instances),
        "drain" if record_attempts else "drain, no attempt history",
        n,
        elapsed,
        cpu,
        rss,
        done_before=started - before,
    )


def _drained(
    system: str, scenario: str, n: int, elapsed: float, cpu: float, rss: float, done_before: int = 0
) -> dict[str, Any]:
    """A drain's figures over the deliveries made after the clock started."""
    deliveries = n * len(SUBSCRIBERS) - done_before
    return {
        "system": system,
        "scenario": scenario,
        "events": n,
        "elapsed_s": elapsed,
        "events_per_s": deliveries / len(SUBSCRIBERS) / elapsed,
        "deliveries_per_s": deliveries / elapsed,
        "cpu_s_per_1k_deliveries": cpu / deliveries * 1000,
        "peak_rss_mb": rss,
    }


async def peer_drain(system: str, admin_dsn: str, port: int, n: int, workdir: Path) -> dict[str, Any]:
    """The same n events' deliveries, ready before the peer starts: PgQueuer's queue pre-filled
    (one job per delivery), the naive relay handed a pre-built list; timed from the go."""
    dsn = await _fresh_database(admin_dsn, system)
    extra: tuple[str, ...] = ()
    if system == "pgqueuer":
        await peers.fill_pgqueuer(dsn, [_payload(0, i) for i in range(n)])
    else:
        extra = ("--drain", str(n))
    before = _get(port, "/count")
    proc = _start(system, dsn, port, workdir, f"{system}-drain", extra=extra)
    try:
        await _wait_ready(system, dsn, proc)
        cpu0 = _cpu_seconds(proc.pid)
        started, t0 = _get(port, "/count"), time.monotonic()
        if system == "naive":
            conn = await asyncpg.connect(dsn)
            await conn.execute("SELECT pg_notify($1, 'go')", peers.NAIVE_CHANNEL)
            await conn.close()
        await _await_sink(port, before + n * len(SUBSCRIBERS), [proc])
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(proc.pid) - cpu0
        rss = _peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
    return _drained(system, "drain", n, elapsed, cpu, rss, done_before=started - before)


def _history_cost(by: dict[tuple[str, str], dict[str, Any]]) -> float | None:
    """How much slower the backlog drains with the attempts history than without it."""
    with_it = by.get((_label("it-relay"), "drain"))
    without = by.get((_label("it-relay"), "drain, no attempt history"))
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


async def _pyreqwest_post_rate(port: int, n: int, conc: int) -> float:
    """The bare POST loop of limits.py, with pyreqwest: the client's own ceiling on this machine."""
    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().max_connections(conc).build()
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await (
                client.post(f"http://127.0.0.1:{port}/hook")
                .header("content-type", "application/json")
                .body_bytes(limits.PAYLOAD.encode() if isinstance(limits.PAYLOAD, str) else limits.PAYLOAD)
                .build()
                .send()
            )
            await response.bytes()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    rate = n / (time.perf_counter() - t)
    await client.close()
    return rate


def _scenarios(args: argparse.Namespace, dsn: str, workdir: Path) -> list[dict[str, Any]]:
    """Every scenario of the run, in order (each system in its own process)."""
    systems = args.systems.split(",")
    transports = args.transports.split(",")
    runs: list[dict[str, Any]] = []
    wanted = set(args.scenarios.split(","))
    # Producer-bound: what 4 producer connections commit, delivered.
    for system in systems if "throughput" in wanted else []:
        runs.append(
            asyncio.run(throughput(system, dsn, args.port, args.events, args.producers, None, workdir))
        )
    # Latency at a steady rate, every system.
    paced = int(args.latency_rate * args.latency_seconds)
    for system in systems if "latency" in wanted else []:
        runs.append(
            asyncio.run(throughput(system, dsn, args.port, paced, args.producers, args.latency_rate, workdir))
        )
    # Drain: the relay's own speed. it-relay per transport, then without the attempts history and
    # with more processes; the peers with the same deliveries ready before they start.
    if "drain" not in wanted:
        return runs
    if "it-relay" in systems:
        for transport in transports:
            runs.append(asyncio.run(backlog(dsn, args.port, args.backlog, workdir, transport=transport)))
        runs.append(asyncio.run(backlog(dsn, args.port, args.backlog, workdir, record_attempts=False)))
        for count in [int(x) for x in args.instances.split(",")] if args.instances else []:
            if count > 1:
                runs.append(asyncio.run(backlog(dsn, args.port, args.backlog, workdir, instances=count)))
    for system in systems:
        if system != "it-relay":
            runs.append(asyncio.run(peer_drain(system, dsn, args.port, args.backlog, workdir)))
    return runs


def _targets(ceilings: dict[str, float | None], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 16's targets as ratios of this run (None when a run is missing)."""
    by = {(r["system"], r["scenario"]): r for r in runs}
    relay = by.get((_label("it-relay"), "drain"))
    pgq = by.get(("pgqueuer", "drain"))
    relay_lat = by.get((_label("it-relay"), "latency"))
    naive_lat = by.get(("naive", "latency"))
    post = ceilings.get("post_per_s[aiohttp]")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def get(run: dict[str, Any] | None, *keys: str) -> float | None:
        value: Any = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if value is not None else None

    scaling = {
        r["system"]: ratio(r["deliveries_per_s"], get(relay, "deliveries_per_s"))
        for r in runs
        if r["scenario"] == "drain" and r["system"].startswith(_label("it-relay") + " x")
    }
    return {
        "drain_vs_pgqueuer_drain": ratio(get(relay, "deliveries_per_s"), get(pgq, "deliveries_per_s")),
        "cpu_per_delivery_vs_pgqueuer": ratio(
            get(relay, "cpu_s_per_1k_deliveries"), get(pgq, "cpu_s_per_1k_deliveries")
        ),
        "drain_vs_aiohttp_post_ceiling": ratio(get(relay, "deliveries_per_s"), post),
        "p99_vs_naive_p99": ratio(get(relay_lat, "latency_ms", "p99"), get(naive_lat, "latency_ms", "p99")),
        "drain_peak_rss_mb": get(relay, "peak_rss_mb"),
        "attempt_history_cost": _history_cost(by),
        "transports": {
            r["system"]: r["deliveries_per_s"]
            for r in runs
            if r["scenario"] == "drain" and r["system"].startswith("it-relay (") and " x" not in r["system"]
        },
        "scaling_vs_one_process": scaling,
    }


TARGETS = (
    ("drain_vs_pgqueuer_drain", ">=", 2.0, "drain / PgQueuer relay's drain"),
    ("cpu_per_delivery_vs_pgqueuer", "<=", 0.5, "CPU per delivery / PgQueuer's"),
    ("drain_vs_aiohttp_post_ceiling", ">=", 1.0, "drain / bare aiohttp POST ceiling"),
    ("p99_vs_naive_p99", "<=", 2.0, "p99 at the paced rate / naive relay's p99"),
    ("drain_peak_rss_mb", "<=", 150.0, "peak RSS in the drain, MB"),
)


def _report(targets: dict[str, Any]) -> str:
    lines = ["| target | this run | goal | met |", "|---|---|---|---|"]
    for key, op, goal, text in TARGETS:
        value = targets.get(key)
        if value is None:
            lines.append(f"| {text} | n/a | {op} {goal:g} | — |")
            continue
        met = value >= goal if op == ">=" else value <= goal
        shown = f"{value:.0f}" if key == "drain_peak_rss_mb" else f"{value:.2f}x"
        lines.append(f"| {text} | {shown} | {op} {goal:g} | {'yes' if met else 'no'} |")
    if targets.get("attempt_history_cost") is not None:
        lines.append(
            f"| attempts history: drain slower by | {targets['attempt_history_cost']:.1%} | <= 10% | "
            f"{'yes' if targets['attempt_history_cost'] <= 0.10 else 'no'} |"
        )
    for system, value in (targets.get("scaling_vs_one_process") or {}).items():
        lines.append(f"| {system} drain / one process | {value:.2f}x | — | — |")
    return "\n".join(lines)


def main() -> None:
    global PROFILE_DIR, PROFILE_FORMAT, TRANSPORT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--systems", default="it-relay,naive,pgqueuer")
    ap.add_argument(
        "--transports",
        default="pyreqwest,aiohttp",
        help="senders compared in the drain (the first is the relay's in every other scenario)",
    )
    ap.add_argument("--scenarios", default="throughput,latency,drain", help="which scenarios to run")
    ap.add_argument("--latency-rate", type=float, default=200.0)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="small runs (a few minutes)")
    ap.add_argument("--port", type=int, default=18199)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md and docs/benchmarks.png")
    ap.add_argument("--profile", type=Path, help="record py-spy profiles of the relay into this directory")
    ap.add_argument("--profile-format", choices=["raw", "flamegraph"], default="raw")
    ap.add_argument(
        "--instances", default="1,2,4", help="it-relay processes side by side on one database, per drain"
    )
    args = ap.parse_args()
    PROFILE_DIR = args.profile
    PROFILE_FORMAT = args.profile_format
    TRANSPORT = args.transports.split(",")[0]
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
        ceilings["post_per_s[pyreqwest]"] = asyncio.run(
            _pyreqwest_post_rate(args.port, min(args.events, 20000), 64)
        )
        runs = _scenarios(args, dsn, workdir)
    finally:
        sink_proc.terminate()
        if server is not None:
            server.cleanup()

    header = (
        f"it-relay benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; {args.events} events x {len(SUBSCRIBERS)} subscribers, "
        f"drain {args.backlog}{' (quick)' if args.quick else ''}"
    )
    targets = _targets(ceilings, runs)
    table = _table(ceilings, runs, header) + "\n\nTargets (ratios of this run):\n\n" + _report(targets)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out = args.out / f"relay_bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "ceilings": ceilings,
                "runs": runs,
                "targets": targets,
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
