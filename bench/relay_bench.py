"""it-relay beside this machine's ceilings and three peers, measured in one run.

Scenarios (each reported as a ratio of the ceilings bench/limits.py measures in the same run):
  throughput  the burst: N events from 4 producer connections (one commit each), 2 subscribers,
              minimal sink: it-relay, a naive LISTEN-and-POST relay (no journal: the non-durable
              bound), the obvious PgQueuer relay (one job per delivery, enqueued in the
              producer's transaction), and the durable floor (a journal row per event; the relay
              reads it and records its leases before the POST: two round trips, nothing else);
              bounded by the producers' commits, so it shows the relay's lag (commit to arrival)
              during a burst more than its speed; each event about its own asset;
  hot         the same burst, every event about one asset: publish() takes that entity's lock (its
              events' journal order), so the producers commit one at a time;
  nice        it-relay's burst again with its process at --nice (-10): what of the lag is waiting
              for a core the producers hold (its PostgreSQL backends keep their priority);
  latency     200 events/s for 30 s through each system: p50/p95/p99 from commit to the sink (the
              floor's are the bound of a relay that checks an event before it records a delivery);
  drain       the relay's own speed at a shallow and a deep backlog (--depths, 5,000 and 30,000
              events): deliveries ready before the system starts (it-relay: journaled; PgQueuer: its
              queue pre-filled; naive: a pre-built list), the tables analysed once filled, timed from
              the system's readiness; it-relay per sender (--transports), per other checkout (--trees,
              A/B in one run), without the attempts history (--no-history), with its deliveries
              routed before it starts (--routed: like for like with PgQueuer's jobs), as several
              processes (--instances); peak RSS from one it-relay drain of --rss-depth (100,000).
Every drain reports CPU per delivery split into the system's, PostgreSQL's (the postmaster's process
tree) and the sink's, transactions and WAL bytes per delivery, and the share of HOT updates.
Each system runs as its own process, with its defaults. Prints a table and the targets as ratios,
writes JSON to bench/results/, and with --docs rewrites docs/benchmarks.md.

    python bench/relay_bench.py [--quick] [--dsn URL] [--docs] [--profile DIR] [--repeat N]
        [--scenarios throughput,hot,nice,latency,drain] [--nice N] [--depths 5000,30000] [--transports pyreqwest,aiohttp]
        [--trees DIR,DIR] [--instances 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
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
import report
import server
import sink

from relay import codec, ingest, migrate, routing_queries
from relay.contracts.examples import example
from relay.model import RoutedEvent

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SUBSCRIBERS = ("PF-10", "HR")  # it_asset_assigned is routed to exactly these two
PROFILE_DIR: Path | None = None
PROFILE_FORMAT = "raw"  # py-spy's: raw (collapsed stacks, for scripts) or flamegraph (SVG)
TRANSPORT = "pyreqwest"  # the relay's default sender; --transports lists the ones compared
# A checkout of the relay to run instead of this one (--trees): each change measured in the same run.
TREE: Path | None = None
SINK_PID: int | None = None  # the sink's process, whose CPU per delivery is reported beside the systems'


def _label(system: str, transport: str | None = None, instances: int = 1) -> str:
    if system != "it-relay":
        return system
    label = f"it-relay ({transport or TRANSPORT})"
    return f"{label} x{instances}" if instances > 1 else label


def _cpu_seconds(pid: int) -> float:
    return server.cpu_seconds(pid)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _loop_lag(port: int) -> dict[str, float]:
    """The relay's event-loop lag histogram as its /metrics has it: samples, seconds, and how many
    were within 10 and 100 ms."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {"count": 0.0, "sum": 0.0, "le_0.01": 0.0, "le_0.1": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "it_relay_event_loop_lag_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_count", "_sum")):
                out[sample.name.rpartition("_")[2]] = sample.value
            elif sample.labels.get("le") in ("0.01", "0.1"):
                out["le_" + sample.labels["le"]] = sample.value
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a relay's ops server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def _config(
    path: Path,
    dsn: str,
    port: int,
    record_attempts: bool = True,
    transport: str = "pyreqwest",
    ops_port: int | None = None,
) -> Path:
    lines = [
        "[database]",
        f'url = "{dsn}"',
        "poll_interval_s = 2.0",
        # The relay's own defaults for everything it is measured on: what a user gets.
        "[delivery]",
        f"record_attempts = {'true' if record_attempts else 'false'}",
        f'transport = "{transport}"',
        "[scheduler]",
        "enabled = false",
        "[server]",
        # Only where the bench reads the relay's own metrics (the burst's event-loop lag).
        *([f'listen = "127.0.0.1:{ops_port}"'] if ops_port else ["enabled = false"]),
        "[logging]",
        'level = "WARNING"',
        'format = "json"',
    ]
    for name in SUBSCRIBERS:
        lines += [
            f'[subscribers."{name}"]',
            f'url = "http://127.0.0.1:{port}/{name.lower()}"',
            f'secret = "{SECRET}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _fresh_database(admin_dsn: str, system: str) -> str:
    name = f"it_relay_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    if system == "it-relay" and TREE is not None:
        # That checkout's own schema, by its own command.
        subprocess.run(
            [sys.executable, "-m", "relay", "db", "upgrade", "--database-url", dsn],
            cwd=TREE,
            env=os.environ | {"PYTHONPATH": str(TREE)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    elif system == "it-relay":
        conn = await asyncpg.connect(dsn)
        await migrate.upgrade(conn)
        await conn.close()
    elif system == "pgqueuer":
        await peers.install_pgqueuer(dsn)
    elif system == "floor":
        await peers.install_floor(dsn)
    return dsn


# Each event is about its own asset, as a platform's producers write them: publish() orders one
# entity's events by taking a lock on it, so a burst about one asset (the `hot` scenario) is as
# fast as one producer at a time, whatever the relay.
_ASSETS = uuid.UUID("9a0c6f1e-2b7d-4e58-a3c4-1d2e3f405162")


def _payload(k: int, i: int, hot: bool = False) -> dict[str, Any]:
    payload = example("it_asset_assigned") | {"asset_tag": f"B-{k}-{i}"}
    if not hot:
        payload["asset_id"] = str(uuid.uuid5(_ASSETS, f"{k}-{i}"))
    return payload


async def _produce(
    system: str, dsn: str, n: int, producers: int, rate: float | None, hot: bool = False
) -> dict[str, float]:
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
                payload = _payload(k, i, hot)
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
                elif system == "floor":
                    # The journal row and its announcement, committed together (as publish()).
                    event_id = str(uuid.uuid4())
                    await conn.execute(
                        "WITH e AS (INSERT INTO floor_events (event_id, payload) VALUES ($1, $2::jsonb)"
                        " RETURNING event_id) SELECT pg_notify($3, event_id::text) FROM e",
                        uuid.UUID(event_id),
                        codec.dumps(payload | {"event_id": event_id}).decode(),
                        peers.FLOOR_CHANNEL,
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
    nice: int = 0,
    ops_port: int | None = None,
) -> subprocess.Popen[bytes]:
    if system == "it-relay":
        command = [
            sys.executable,
            "-m",
            "relay",
            "run",
            "--config",
            str(_config(workdir / f"{label}.toml", dsn, port, record_attempts, transport, ops_port)),
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
    tree = TREE if system == "it-relay" else None
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"{system}.log").open("ab"),
        cwd=tree,
        env=os.environ | {"PYTHONPATH": str(tree)} if tree else None,
        # A raised priority needs CAP_SYS_NICE: without it the child fails to start, not quietly.
        preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)) if nice else None,
    )


async def _wait_ready(system: str, dsn: str, proc: subprocess.Popen[bytes]) -> None:
    conn = await asyncpg.connect(dsn)
    listener = {
        "it-relay": "it-relay:listener",
        "floor": peers.FLOOR_LISTENER,
        "naive": peers.NAIVE_LISTENER,
    }.get(system)
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = "
        f"'{listener}'"
        if listener
        else "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    while not await conn.fetchval(query):
        if proc.poll() is not None:
            raise RuntimeError(f"{system} exited with {proc.returncode}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3 if listener is None else 0)
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
    system: str,
    admin_dsn: str,
    port: int,
    n: int,
    producers: int,
    rate: float | None,
    workdir: Path,
    hot: bool = False,
    nice: int = 0,
) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn, system)
    before = _get(port, "/count")
    label = f"{system}-{'paced' if rate else 'hot' if hot else 'burst'}{f'-nice{nice}' if nice else ''}"
    ops = free_port() if system == "it-relay" and not rate else None
    procs = [_start(system, dsn, port, workdir, label, transport=TRANSPORT, nice=nice, ops_port=ops)]
    postmaster = await server.postmaster_pid(dsn)
    lag: dict[str, float] | None = None
    try:
        for proc in procs:
            await _wait_ready(system, dsn, proc)
        lag0 = _loop_lag(ops) if ops else None
        pg0 = await server.snapshot(dsn, postmaster, _TABLES.get(system))
        cpu0, sink0 = sum(_cpu_seconds(p.pid) for p in procs), _sink_cpu()
        t0 = time.monotonic()
        committed = await _produce(system, dsn, n, producers, rate, hot)
        await _await_sink(port, before + len(committed) * len(SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu, sink_cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0, _sink_cpu() - sink0
        rss = max(_peak_rss_mb(p.pid) for p in procs)
        if ops and lag0 is not None:
            lag1 = _loop_lag(ops)
            lag = {k: lag1[k] - lag0[k] for k in lag1}
    finally:
        for proc in procs:
            _stop(proc)
    pg = server.spent(
        pg0, await server.snapshot(dsn, postmaster, _TABLES.get(system)), len(committed) * len(SUBSCRIBERS)
    )
    arrivals = _get(port, "/stats")["arrivals"]
    latencies = [
        (t - committed[eid]) * 1000 for eid, times in arrivals.items() if eid in committed for t in times
    ]
    # What a restart's first deliveries see: events committed in the run's first second.
    opened = min(committed.values(), default=float("nan"))
    first = [
        (t - committed[eid]) * 1000
        for eid, times in arrivals.items()
        if eid in committed and committed[eid] - opened < 1.0
        for t in times
    ]
    # Whether the lag grows through the burst (the relay falling behind its producers) or holds.
    last = max(committed.values(), default=float("nan"))
    span = (last - opened) / 5 or 1.0
    fifths: list[list[float]] = [[] for _ in range(5)]
    for eid, times in arrivals.items():
        if eid in committed:
            fifth = fifths[min(4, int((committed[eid] - opened) / span))]
            fifth.extend((t - committed[eid]) * 1000 for t in times)
    deliveries = len(committed) * len(SUBSCRIBERS)
    # Kept pace: the share of the burst's deliveries that arrived while its producers still
    # committed. A relay that keeps up holds it near 1 (all but its lag's worth); below, its lag
    # grows for as long as the burst lasts, whatever its own latency.
    during = sum(1 for eid, times in arrivals.items() if eid in committed for t in times if t <= last)
    return {
        "system": _label(system) + (f" [{TREE.name}]" if TREE is not None and system == "it-relay" else ""),
        "scenario": "latency"
        if rate
        else "throughput, one asset"
        if hot
        else f"throughput, relay at nice {nice}"
        if nice
        else "throughput",
        "events": len(committed),
        "rate_target": rate,
        "elapsed_s": elapsed,
        "events_per_s": len(committed) / elapsed,
        "deliveries_per_s": deliveries / elapsed,
        "cpu_s_per_1k_deliveries": cpu / deliveries * 1000,
        "sink_cpu_us_per_delivery": sink_cpu / deliveries * 1e6,
        "peak_rss_mb": rss,
        # The producers' commits are the server's work too here: compare drains for the relay's share.
        **pg,
        "latency_ms": {
            "p50": _percentile(latencies, 0.50),
            "p95": _percentile(latencies, 0.95),
            "p99": _percentile(latencies, 0.99),
        },
        "latency_p50_by_fifth_ms": [_percentile(f, 0.50) for f in fifths],
        "kept_pace": during / deliveries if deliveries else float("nan"),
        "commits_per_s": len(committed) / (last - opened) if last > opened else float("nan"),
        # How late the relay's event loop ran what was due while the burst lasted: waiting for a core.
        **(
            {
                "loop_lag": {
                    "mean_ms": lag["sum"] / lag["count"] * 1000,
                    "over_10ms_share": 1 - lag["le_0.01"] / lag["count"],
                    "over_100ms_share": 1 - lag["le_0.1"] / lag["count"],
                }
            }
            if lag and lag["count"]
            else {}
        ),
        "first_second_latency_ms": {
            "p50": _percentile(first, 0.50),
            "max": max(first, default=float("nan")),
            # The very first event's deliveries: the cold path (connections, caches) alone.
            "first_event": max(
                (
                    (t - opened) * 1000
                    for eid, times in arrivals.items()
                    if committed.get(eid) == opened
                    for t in times
                ),
                default=float("nan"),
            ),
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
    routed_first: bool = False,
) -> dict[str, Any]:
    """n events journaled with no relay running (one statement), then the relay drains them. With
    `routed_first` they are routed before the relay starts (as PgQueuer's queue holds one job per
    delivery before its drain): the timed window holds claims, POSTs and outcomes only."""
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
    if routed_first:
        await _route_all(conn)
    # Only what holds the backlog: a deliveries table analysed while still empty would be planned
    # as empty (0 rows, not "unknown") while the drain fills it.
    if ANALYZE:
        await conn.execute(
            ANALYZE + (" it_relay.events, it_relay.deliveries" if routed_first else " it_relay.events")
        )
    await conn.close()
    before = _get(port, "/count")
    tag = f"{transport}{'' if record_attempts else '-no-history'}{'-routed' if routed_first else ''}-x{instances}-{n}"
    procs = [
        _start("it-relay", dsn, port, workdir, f"it-relay-drain-{tag}-{i}", record_attempts, transport)
        for i in range(instances)
    ]
    postmaster = await server.postmaster_pid(dsn)
    try:
        # Timed from the moment every process is ready (as the peers are): start-up is not drain.
        for proc in procs:
            await _wait_ready("it-relay", dsn, proc)
        pg0 = await server.snapshot(dsn, postmaster, _TABLES["it-relay"])
        cpu0, sink0 = sum(_cpu_seconds(p.pid) for p in procs), _sink_cpu()
        started, t0 = _get(port, "/count"), time.monotonic()
        await _await_sink(port, before + n * len(SUBSCRIBERS), procs)
        elapsed = time.monotonic() - t0
        cpu, sink_cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu0, _sink_cpu() - sink0
        rss = max(_peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            _stop(proc)
    pg1 = await server.snapshot(dsn, postmaster, _TABLES["it-relay"])
    return _drained(
        _label("it-relay", transport, instances) + (f" [{TREE.name}]" if TREE is not None else ""),
        f"drain {n:,}"
        + ("" if record_attempts else ", no attempt history")
        + (", routed before" if routed_first else ""),
        n,
        elapsed,
        cpu,
        rss,
        done_before=started - before,
        sink_cpu=sink_cpu,
        pg=(pg0, pg1),
    )


# Every drain starts on statistics that know its backlog (the tables holding it analysed once
# filled), as a backlog built up over minutes would be: autovacuum analyses a table within a minute
# or so of a large change. A table filled in one statement just before the start is otherwise
# planned as the empty table it was: measured without this, PgQueuer's dequeue and (until 0019)
# it-relay's claim sorted the whole backlog per claim (docs/benchmarks.md). `--statistics none`
# drains on the tables as filled, never analysed: a relay started on a restored or sudden backlog.
ANALYZE = "ANALYZE"

# The daemon's routing batch (relay.router.Router's default).
ROUTING_BATCH = 200


async def _route_all(conn: asyncpg.Connection) -> None:
    """Route the whole journal with the relay's own routing (its batch, its statements), leasing
    nothing: every delivery left pending, as a relay that routed and stopped would leave it."""
    while pending := await routing_queries.claim_events(conn, ROUTING_BATCH, lock=False):
        routed = [ingest.route(e.event_id, e.payload, "keep") for e in pending]
        accepted = [r for r in routed if isinstance(r, RoutedEvent)]
        if len(accepted) != len(routed):
            raise RuntimeError("the bench's events must all be valid")
        await routing_queries.write_routing(conn, pending, accepted, [])


def _drained(
    system: str,
    scenario: str,
    n: int,
    elapsed: float,
    cpu: float,
    rss: float,
    done_before: int = 0,
    sink_cpu: float = 0.0,
    pg: tuple[server.Snapshot, server.Snapshot] | None = None,
) -> dict[str, Any]:
    """A drain's figures over the deliveries made after the clock started."""
    deliveries = n * len(SUBSCRIBERS) - done_before
    return {
        "depth": n,
        "system": system,
        "scenario": scenario,
        "events": n,
        "elapsed_s": elapsed,
        "events_per_s": deliveries / len(SUBSCRIBERS) / elapsed,
        "deliveries_per_s": deliveries / elapsed,
        "cpu_s_per_1k_deliveries": cpu / deliveries * 1000,
        "sink_cpu_us_per_delivery": sink_cpu / deliveries * 1e6,
        "peak_rss_mb": rss,
        **(server.spent(*pg, deliveries) if pg else {}),
    }


# The table whose updates the HOT share is read from, per system.
_TABLES = {"it-relay": "it_relay.deliveries", "pgqueuer": "public.pgqueuer"}


def _sink_cpu() -> float:
    return _cpu_seconds(SINK_PID) if SINK_PID is not None else 0.0


async def peer_drain(system: str, admin_dsn: str, port: int, n: int, workdir: Path) -> dict[str, Any]:
    """The same n events' deliveries, ready before the peer starts: PgQueuer's queue pre-filled
    (one job per delivery), the naive relay handed a pre-built list; timed from the go."""
    dsn = await _fresh_database(admin_dsn, system)
    extra: tuple[str, ...] = ()
    if system == "pgqueuer":
        await peers.fill_pgqueuer(dsn, [_payload(0, i, hot=True) for i in range(n)])
        if ANALYZE:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"{ANALYZE} {_TABLES['pgqueuer']}")
            await conn.close()
    else:
        extra = ("--drain", str(n))
    before = _get(port, "/count")
    proc = _start(system, dsn, port, workdir, f"{system}-drain-{n}", extra=extra)
    postmaster = await server.postmaster_pid(dsn)
    try:
        await _wait_ready(system, dsn, proc)
        pg0 = await server.snapshot(dsn, postmaster, _TABLES.get(system))
        cpu0, sink0 = _cpu_seconds(proc.pid), _sink_cpu()
        started, t0 = _get(port, "/count"), time.monotonic()
        if system == "naive":
            conn = await asyncpg.connect(dsn)
            await conn.execute("SELECT pg_notify($1, 'go')", peers.NAIVE_CHANNEL)
            await conn.close()
        await _await_sink(port, before + n * len(SUBSCRIBERS), [proc])
        elapsed = time.monotonic() - t0
        cpu, sink_cpu = _cpu_seconds(proc.pid) - cpu0, _sink_cpu() - sink0
        rss = _peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
    pg1 = await server.snapshot(dsn, postmaster, _TABLES.get(system))
    return _drained(
        system,
        f"drain {n:,}",
        n,
        elapsed,
        cpu,
        rss,
        done_before=started - before,
        sink_cpu=sink_cpu,
        pg=(pg0, pg1),
    )


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


def _tree_runs(args: argparse.Namespace, dsn: str, workdir: Path, wanted: set[str]) -> list[dict[str, Any]]:
    """The burst and the paced rate through each other checkout (--trees), beside this one's."""
    global TREE
    runs: list[dict[str, Any]] = []
    for tree in args.trees.split(",") if args.trees else []:
        TREE = Path(tree).resolve()
        try:
            if "throughput" in wanted:
                runs.append(
                    asyncio.run(
                        throughput("it-relay", dsn, args.port, args.events, args.producers, None, workdir)
                    )
                )
            if "latency" in wanted:
                paced = int(args.latency_rate * args.latency_seconds)
                runs.append(
                    asyncio.run(
                        throughput(
                            "it-relay", dsn, args.port, paced, args.producers, args.latency_rate, workdir
                        )
                    )
                )
        finally:
            TREE = None
    return runs


def _medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of repeated runs, each system's median by deliveries/s (the others kept beside it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["system"], r["scenario"]), []).append(r)
    out = []
    for group in groups.values():
        ranked = sorted(group, key=lambda r: r["deliveries_per_s"])
        median = dict(ranked[len(ranked) // 2])
        if len(group) > 1:
            median["repeats_deliveries_per_s"] = [r["deliveries_per_s"] for r in group]
            # In run order: round i of every system ran back to back, so rounds pair across systems.
            median["repeats_cpu_us_per_delivery"] = [report._total_cpu(r) for r in group]
        out.append(median)
    return out


def _drains(
    args: argparse.Namespace, dsn: str, workdir: Path, depth: int, systems: list[str], transports: list[str]
) -> list[dict[str, Any]]:
    """One depth's drains: each system, it-relay per sender, per checkout (--trees) and process count."""
    global TREE
    runs: list[dict[str, Any]] = []
    for system in systems:
        if system == "floor":
            continue  # a latency bound: it drains nothing the others do
        if system != "it-relay":
            runs.append(asyncio.run(peer_drain(system, dsn, args.port, depth, workdir)))
            continue
        for transport in transports:
            runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir, transport=transport)))
        for tree in args.trees.split(",") if args.trees else []:
            TREE = Path(tree).resolve()
            try:
                runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir)))
                if args.routed:
                    runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir, routed_first=True)))
            finally:
                TREE = None
        if args.no_history:
            runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir, record_attempts=False)))
        if args.routed:
            runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir, routed_first=True)))
        for count in [int(x) for x in args.instances.split(",")] if args.instances else []:
            if count > 1:
                runs.append(asyncio.run(backlog(dsn, args.port, depth, workdir, instances=count)))
    return runs


def _scenarios(args: argparse.Namespace, dsn: str, workdir: Path) -> list[dict[str, Any]]:
    """Every scenario of the run, in order (each system in its own process)."""
    systems = args.systems.split(",")
    transports = args.transports.split(",")
    depths = [int(x) for x in args.depths.split(",")]
    runs: list[dict[str, Any]] = []
    wanted = set(args.scenarios.split(","))
    # Burst: what 4 producer connections commit, delivered, and the relay's lag meanwhile.
    for system in systems if "throughput" in wanted else []:
        runs.append(
            asyncio.run(throughput(system, dsn, args.port, args.events, args.producers, None, workdir))
        )
    # The same burst about one asset: publish() serialises its producers on that entity's lock.
    for system in systems if "hot" in wanted else []:
        runs.append(
            asyncio.run(
                throughput(system, dsn, args.port, args.events, args.producers, None, workdir, hot=True)
            )
        )
    # The same burst with the relay's process first for the CPU (its PostgreSQL backends not): how
    # much of the burst's lag is waiting for a core the producers hold.
    if "nice" in wanted and "it-relay" in systems:
        try:
            runs.append(
                asyncio.run(
                    throughput(
                        "it-relay", dsn, args.port, args.events, args.producers, None, workdir, nice=args.nice
                    )
                )
            )
        except (subprocess.SubprocessError, PermissionError) as exc:
            print(f"skipped the burst at nice {args.nice}: {exc} (raising a priority needs CAP_SYS_NICE)")
    # Latency at a steady rate, every system.
    paced = int(args.latency_rate * args.latency_seconds)
    for system in systems if "latency" in wanted else []:
        runs.append(
            asyncio.run(throughput(system, dsn, args.port, paced, args.producers, args.latency_rate, workdir))
        )
    runs += _tree_runs(args, dsn, workdir, wanted & {"throughput", "latency"})
    # Drain: the relay's own speed, at a shallow and a deep backlog (PgQueuer's dequeue slows with
    # depth; a single depth tells half the story). The peers with the same deliveries ready.
    if "drain" not in wanted:
        return runs
    for depth in depths:
        drains: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            drains += _drains(args, dsn, workdir, depth, systems, transports)
        runs += _medians(drains)
    if "it-relay" in systems and args.rss_depth:
        runs.append(asyncio.run(backlog(dsn, args.port, args.rss_depth, workdir)))
    return runs


def _commit(tree: Path) -> str:
    """The commit a checkout is at (its uncommitted changes not counted)."""
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    global PROFILE_DIR, PROFILE_FORMAT, TRANSPORT, SINK_PID, ANALYZE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--systems", default="it-relay,naive,pgqueuer,floor")
    ap.add_argument(
        "--transports",
        default="pyreqwest,aiohttp",
        help="senders compared in the drain (the first is the relay's in every other scenario)",
    )
    ap.add_argument("--scenarios", default="throughput,hot,nice,latency,drain", help="which scenarios to run")
    ap.add_argument("--nice", type=int, default=-10, help="the relay's niceness in the `nice` burst")
    ap.add_argument("--latency-rate", type=float, default=200.0)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--depths", default="5000,30000", help="backlogs drained by every system (events)")
    ap.add_argument(
        "--rss-depth", type=int, default=100_000, help="it-relay alone drains this many for peak RSS"
    )
    ap.add_argument(
        "--trees",
        default="",
        help="other checkouts of the relay drained beside this one (DIR,DIR): A/B in one run",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="run each drain N times, interleaved; report the median"
    )
    ap.add_argument("--no-history", action="store_true", help="also drain without the attempts history")
    ap.add_argument(
        "--routed",
        action="store_true",
        help="also drain deliveries routed before the relay starts (like for like with PgQueuer's queue)",
    )
    ap.add_argument(
        "--statistics",
        choices=["analysed", "none"],
        default="analysed",
        help="drain on the backlog's tables analysed once filled (default), or never analysed",
    )
    ap.add_argument("--quick", action="store_true", help="small runs (a few minutes)")
    ap.add_argument("--port", type=int, default=18199)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md and docs/benchmarks.png")
    ap.add_argument("--profile", type=Path, help="record py-spy profiles of the relay into this directory")
    ap.add_argument("--profile-format", choices=["raw", "flamegraph"], default="raw")
    ap.add_argument(
        "--instances", default="", help="it-relay processes side by side on one database, per drain (1,2,4)"
    )
    args = ap.parse_args()
    PROFILE_DIR = args.profile
    PROFILE_FORMAT = args.profile_format
    TRANSPORT = args.transports.split(",")[0]
    ANALYZE = "ANALYZE" if args.statistics == "analysed" else ""
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.events, args.latency_seconds, args.depths, args.rss_depth = 4000, 10.0, "2000,10000", 0

    workdir = Path(tempfile.mkdtemp(prefix="it-relay-bench-"))
    embedded = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        embedded = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = embedded.get_uri()
    sink_proc = mp.Process(target=sink.serve, args=(args.port,), daemon=True)
    sink_proc.start()
    SINK_PID = sink_proc.pid
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
        if embedded is not None:
            embedded.cleanup()

    header = (
        f"it-relay benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; {args.events} events x {len(SUBSCRIBERS)} subscribers, "
        f"drains of {args.depths} events{' (quick)' if args.quick else ''}"
        + ("" if ANALYZE else ", tables never analysed")
    )
    depths = [int(x) for x in args.depths.split(",")]
    targets = report.targets(ceilings, runs, depths, _label("it-relay"))
    table = (
        report.table(ceilings, runs, header)
        + "\n\nTargets (ratios of this run):\n\n"
        + report.report(targets)
    )
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
                "statistics": args.statistics,
                # Which checkout each label ran: this one unlabelled, each --trees one by its name.
                "commits": {
                    Path(t).resolve().name: _commit(Path(t)) for t in [str(ROOT), *args.trees.split(",")] if t
                },
                "events": args.events,
                "depths": depths,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if args.docs:
        report.chart(ceilings, runs, ROOT / "docs" / "benchmarks.png")
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text() if doc.exists() else ""
        marker = "<!-- results -->"
        intro = text.split(marker)[0] if marker in text else "# Benchmarks\n\n"
        doc.write_text(f"{intro}{marker}\n{table}\n\n![deliveries per second](benchmarks.png)\n")
        print("updated docs/benchmarks.md and docs/benchmarks.png")


if __name__ == "__main__":
    main()
