"""What tracing costs the relay: the same drain with [tracing] off and on, in one run.

Each round drains N events journaled before the relay starts (2 subscribers, the minimal sink, as
relay_bench.py's drain), once per mode, the modes alternating so drift hits them alike:
  off    [tracing] enabled = false (nothing of OpenTelemetry is loaded)
  on     enabled, every span sampled (a producer traceparent on every event), batch span
         processor, OTLP/HTTP protobuf to a local receiver that answers 200 and discards
  made   as on, OTEL_TRACES_EXPORTER=none: the spans made, none exported (the SDK's share)
  tenth  as on, the producers sampling one trace in ten (flags 00 on the rest; the relay follows)
  down   as on, the collector's port closed: every export fails (spans counted as dropped)
  slow   as on, a collector that answers each export after 3 s: the queue fills, spans dropped
The off path's own cost (what runs per delivery and per log line when tracing is off) and one
span's cost when on are timed in this process. Prints a table with each mode as a ratio of off
(the median of the rounds), writes JSON to bench/results/.

    python bench/tracing.py [--events 20000] [--rounds 3] [--modes off,on,made,tenth,down,slow] [--dsn URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import relay_bench
import sink

from relay import codec
from relay.contracts.examples import example

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = TRACEPARENT[:-2] + "00"
SLOW_S = 3.0


def _slow_collector(port: int) -> None:
    """An OTLP/HTTP receiver that takes SLOW_S to answer each export (its own process)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(v)
                        for n, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                        if n.lower() == b"content-length"
                    ),
                    0,
                )
                await reader.readexactly(length)
                await asyncio.sleep(SLOW_S)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _config(path: Path, dsn: str, sink_port: int, metrics_port: int, tracing: bool) -> Path:
    text = relay_bench._config(path, dsn, sink_port).read_text()
    text = text.replace("[server]\nenabled = false", f'[server]\nlisten = "127.0.0.1:{metrics_port}"')
    path.write_text(text + f"[tracing]\nenabled = {'true' if tracing else 'false'}\n")
    return path


async def _journal(dsn: str, n: int, sampled_every: int = 1) -> None:
    """n events journaled with no relay running, each with a producer's trace context (sampled for
    one in `sampled_every` transactions of 100 events)."""
    conn = await asyncpg.connect(dsn)
    template = codec.dumps(example("it_asset_assigned")).decode()
    for k, start in enumerate(range(0, n, 100)):
        context = TRACEPARENT if k % sampled_every == 0 else UNSAMPLED
        async with conn.transaction():
            await conn.execute("SELECT set_config('it_relay.traceparent', $1, true)", context)
            await conn.execute(
                "SELECT it_relay.publish(jsonb_set($1::jsonb, '{asset_tag}', to_jsonb('T-' || g))) "
                "FROM generate_series($2::int, $3::int) AS g",
                template,
                start,
                min(start + 100, n) - 1,
            )
    await conn.close()


def _dropped(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("it_relay_trace_spans_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


async def drain(
    mode: str, admin_dsn: str, sink_port: int, collectors: dict[str, int], n: int, workdir: Path
) -> dict[str, Any]:
    dsn = await relay_bench._fresh_database(admin_dsn, "it-relay")
    await _journal(dsn, n, 10 if mode == "tenth" else 1)
    metrics_port = relay_bench.free_port()
    config = _config(
        workdir / f"tracing-{mode}-{metrics_port}.toml", dsn, sink_port, metrics_port, mode != "off"
    )
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    if mode == "made":
        env["OTEL_TRACES_EXPORTER"] = "none"
    elif mode != "off":
        env |= {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collectors.get(mode, collectors['on'])}",
            # An unreachable collector is given up on quickly (the SDK's retries are bounded by it).
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        }
    before = relay_bench._get(sink_port, "/count")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"tracing-{mode}.log").open("ab"),
        env=env,
    )
    try:
        await relay_bench._wait_ready("it-relay", dsn, proc)
        cpu0 = relay_bench._cpu_seconds(proc.pid)
        started, t0 = relay_bench._get(sink_port, "/count"), time.monotonic()
        await relay_bench._await_sink(sink_port, before + n * len(relay_bench.SUBSCRIBERS), [proc])
        elapsed = time.monotonic() - t0
        cpu = relay_bench._cpu_seconds(proc.pid) - cpu0
        rss = relay_bench._peak_rss_mb(proc.pid)
        dropped = _dropped(metrics_port)
    finally:
        relay_bench._stop(proc)
    result = relay_bench._drained(f"it-relay tracing {mode}", "drain", n, elapsed, cpu, rss, started - before)
    return result | {"mode": mode, "spans_dropped": dropped}


def _off_path_ns() -> dict[str, float]:
    """What tracing off costs per call: the helpers every delivery and log line pass through."""
    code = """
import timeit
from relay import logs, tracing
n = 1_000_000
print(timeit.timeit(lambda: tracing.current_ids(), number=n) / n * 1e9)
print(timeit.timeit(lambda: tracing.name_destination("x"), number=n) / n * 1e9)
print(timeit.timeit(lambda: logs._trace_ids(None, "info", {}), number=n) / n * 1e9)
print(timeit.timeit(lambda: None, number=n) / n * 1e9)
import sys; print(int(any(m.startswith("opentelemetry") for m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    ids, name, processor, empty, loaded = (float(v) for v in out.stdout.split())
    return {
        "current_ids_ns": ids - empty,
        "name_destination_ns": name - empty,
        "log_processor_ns": processor - empty,
        "opentelemetry_loaded": loaded,
    }


def _span_us() -> dict[str, float]:
    """One attempt span, started and ended, with its headers (in memory, no export), in µs."""
    from uuid import uuid4

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from relay import tracing
    from relay.metrics import Metrics
    from relay.model import Answer, ClaimedDelivery

    started = tracing.start(True, Metrics().trace_spans_dropped, "it_events", exporter=InMemorySpanExporter())
    assert started is not None
    item = ClaimedDelivery(
        event_id=uuid4(),
        subscriber="PF-10",
        event_type="it_asset_assigned",
        attempts=1,
        failed_rounds=0,
        body=b"{}",
        journaled_at=datetime.now(UTC),
        traceparent=TRACEPARENT,
    )
    answer = Answer("delivered", 200, None)

    def attempt() -> None:
        started.attempt("http://127.0.0.1:9/pf-10", "PF-10", item, 1).answered(answer)

    n = 20_000
    per_attempt = timeit.timeit(attempt, number=n) / n * 1e6
    asyncio.run(started.aclose())
    return {"attempt_span_us": per_attempt}


def _table(runs: list[dict[str, Any]], summary: dict[str, Any], header: str) -> str:
    lines = [
        header,
        "",
        "| mode | round | deliveries/s | of off (median) | CPU s / 1k deliveries | spans dropped |",
        "|---|---|---|---|---|---|",
    ]
    off = summary["median_deliveries_per_s"]["off"]
    for r in runs:
        dropped = ", ".join(f"{k} {v:,.0f}" for k, v in r["spans_dropped"].items() if v) or "0"
        lines.append(
            f"| {r['mode']} | {r['round']} | {r['deliveries_per_s']:,.0f} | {r['deliveries_per_s'] / off:.2f}x "
            f"| {r['cpu_s_per_1k_deliveries']:.3f} | {dropped} |"
        )
    lines += [
        "",
        "| mode | median deliveries/s | ratio to off | target | relay CPU µs added per delivery |",
        "|---|---|---|---|---|",
    ]
    for mode, rate in summary["median_deliveries_per_s"].items():
        target = "—" if mode == "off" else ">= 0.90x"
        added = summary["cpu_added_us_per_delivery"][mode]
        lines.append(
            f"| {mode} | {rate:,.0f} | {summary['ratio_to_off'][mode]:.2f}x | {target} | {added:+.0f} |"
        )
    noop = summary["off_path"]
    lines += [
        "",
        f"Tracing off, per call: current span for a log line {noop['current_ids_ns']:.0f} ns, broker naming "
        f"{noop['name_destination_ns']:.0f} ns, log processor {noop['log_processor_ns']:.0f} ns; "
        f"OpenTelemetry loaded: {'yes' if noop['opentelemetry_loaded'] else 'no'}.",
        f"Tracing on: one attempt span (start, headers, end, in memory) {summary['span']['attempt_span_us']:.1f} µs.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded pgserver)")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="off,on,made,tenth,down,slow")
    ap.add_argument("--port", type=int, default=18299, help="the sink's; the collectors take the next two")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if "off" not in modes:
        modes.insert(0, "off")
    workdir = Path(tempfile.mkdtemp(prefix="it-relay-tracing-bench-"))
    server = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
        dsn = server.get_uri()
    # The discarding collector is bench/sink.py (200 to any POST); "down" names a port nobody holds.
    collectors = {"on": args.port + 1, "slow": args.port + 2, "down": args.port + 3}
    procs = [
        mp.Process(target=sink.serve, args=(args.port,), daemon=True),
        mp.Process(target=sink.serve, args=(collectors["on"],), daemon=True),
        mp.Process(target=_slow_collector, args=(collectors["slow"],), daemon=True),
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5)
    runs: list[dict[str, Any]] = []
    try:
        for k in range(args.rounds):
            for mode in modes:
                result = asyncio.run(drain(mode, dsn, args.port, collectors, args.events, workdir))
                runs.append(result | {"round": k + 1})
                print(f"round {k + 1} {mode}: {result['deliveries_per_s']:,.0f} deliveries/s", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        if server is not None:
            server.cleanup()
    medians = {m: statistics.median(r["deliveries_per_s"] for r in runs if r["mode"] == m) for m in modes}
    # The relay's own CPU per delivery: what tracing adds, steadier than a rate on a shared machine.
    cpu = {m: statistics.median(r["cpu_s_per_1k_deliveries"] for r in runs if r["mode"] == m) for m in modes}
    summary = {
        "median_deliveries_per_s": medians,
        "ratio_to_off": {m: v / medians["off"] for m, v in medians.items()},
        "median_cpu_s_per_1k_deliveries": cpu,
        "cpu_added_us_per_delivery": {m: (v - cpu["off"]) * 1000 for m, v in cpu.items()},
        "off_path": _off_path_ns(),
        "span": _span_us(),
    }
    header = (
        f"it-relay tracing cost — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; drain of {args.events} events x {len(relay_bench.SUBSCRIBERS)} subscribers, "
        f"{args.rounds} rounds"
    )
    print("\n" + _table(runs, summary, header))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"tracing-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"events": args.events, "runs": runs, "summary": summary}, indent=2))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
