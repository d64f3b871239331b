"""Misbehaving subscribers: enormous answers, nonsense headers, requests outliving a crash, and
a sender that breaks. Each case failed on the relay before issue 12."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from relay import journal
from relay.contracts.examples import example
from relay.sender import AiohttpSender, Response
from relay.settings import Settings
from tests.support.relay import (
    relay_settings,
    start_relay_process,
    stop_process,
    wait_for_rows,
    wait_until,
    write_config,
)
from tests.support.sink import Reply, Sink

pytestmark = pytest.mark.faults
MB = 1024 * 1024


@pytest.fixture
async def flood() -> AsyncIterator[int]:
    """A subscriber that answers every webhook with 100 MB, streamed (it never holds them)."""
    chunk = b"x" * MB

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200, headers={"content-length": str(100 * MB)})
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the relay read what it keeps and hung up
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield int(site.name.rsplit(":", 1)[1])
    await runner.cleanup()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_eight_100mb_answers_at_once_keep_the_relay_small(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink, flood: int
) -> None:
    settings = relay_settings(
        relay_db,
        sink,
        ["PF-10"],
        subscriber_overrides={"PF-10": {"url": f"http://127.0.0.1:{flood}/pf-10", "max_in_flight": 8}},
        delivery={"timeout_s": 20.0, "lease_s": 60.0},
    )
    proc = start_relay_process(write_config(tmp_path / "relay.toml", settings), tmp_path / "relay.log")
    try:
        async with db.transaction():
            for i in range(8):
                await journal.publish(db, example("it_ticket_created") | {"ticket_number": f"T-{i}"})
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 8,
            within=60,
        )
        peak = _peak_rss_mb(proc.pid)
    finally:
        assert await stop_process(proc) == 0
    assert peak < 150, f"peak RSS {peak:.0f} MB"


async def test_a_retry_after_that_is_not_rfc_9110_follows_the_schedule(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    from tests.support.relay import running

    sink.script("/fa", Reply(503, headers={"Retry-After": "²"}))
    async with running(relay_settings(relay_db, sink, ["FA"])):
        event_id = await journal.publish(db, example("it_asset_purchased"))
        await wait_for_rows(
            db,
            f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{event_id}'",
            lambda v: v == "delivered/2",
        )
    first, second = sink.at("/fa")
    assert [first.headers["x-it-delivery-attempt"], second.headers["x-it-delivery-attempt"]] == ["1", "2"]


async def test_the_attempt_header_counts_an_attempt_cut_short_by_a_crash(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # The first request hangs; the relay is killed while it waits; after the lease expires the
    # next instance's attempt must say 2, not 1 again.
    sink.script("/fa", Reply(200, delay_s=30))
    settings = relay_settings(relay_db, sink, ["FA"], delivery={"timeout_s": 1.0, "lease_s": 2.0})
    config = write_config(tmp_path / "relay.toml", settings)
    proc = start_relay_process(config, tmp_path / "relay.log")
    await journal.publish(db, example("it_asset_purchased"))
    await sink.wait_for(lambda r: len(r) == 1, within=30)
    await stop_process(proc, signal.SIGKILL)
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        await wait_for_rows(
            db, "SELECT status || '/' || attempts FROM it_relay.deliveries", lambda v: v == "delivered/2"
        )
    finally:
        await stop_process(proc)
    assert [r.headers["x-it-delivery-attempt"] for r in sink.at("/fa")] == ["1", "2"]


class BrokenOnce:
    """The real sender, except that its first call fails the way a bug would."""

    def __init__(self) -> None:
        self._inner = AiohttpSender()
        self.broke = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        if not self.broke:
            self.broke = True
            raise RuntimeError("a bug in the sending path")
        return await self._inner.post(url, body, headers, timeout_s)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_an_unexpected_failure_is_an_outcome_not_a_silent_lease(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    from relay import logs
    from relay.daemon import Daemon

    settings: Settings = relay_settings(relay_db, sink, ["FA"], delivery={"retry_schedule_s": [0.2, 0.2]})
    logs.configure("WARNING", "json")
    daemon = Daemon(settings, sender=BrokenOnce())
    task = asyncio.create_task(daemon.run(install_signal_handlers=False))
    try:
        await wait_until(lambda: daemon.readiness() is None, task=task)
        event_id = await journal.publish(db, example("it_asset_purchased"))
        # The broken attempt is recorded at once (not left to a lease that expires in 30 s) ...
        row = await wait_for_rows(
            db,
            f"SELECT attempts, last_error, status FROM it_relay.deliveries WHERE event_id = '{event_id}'",
            lambda r: r is not None and r["last_error"] is not None,
            fetch="row",
            within=10,
        )
        assert (row["attempts"], row["last_error"]) == (1, "internal: RuntimeError")
        # ... and the next round delivers it.
        await wait_for_rows(
            db,
            f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{event_id}'",
            lambda v: v == "delivered/2",
        )
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)


class RaisesOnCall:
    """The real sender, except that one chosen call fails the way a bug would."""

    def __init__(self, call: int) -> None:
        self._inner = AiohttpSender()
        self._call = call
        self.calls = 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        self.calls += 1
        if self.calls == self._call:
            raise RuntimeError("a bug in the sending path")
        return await self._inner.post(url, body, headers, timeout_s)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_circuit_probe_that_raises_does_not_wedge_its_lane(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    """Two 503s open the circuit; the probe after the cool-down raises (a bug); the lane probes
    again after another cool-down and delivers, instead of never claiming again."""
    from relay import logs
    from relay.daemon import Daemon

    sink.script("/fa", Reply(503), Reply(503))
    settings: Settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={"FA": {"max_in_flight": 1}},
        delivery={
            "circuit_failure_threshold": 2,
            "circuit_cooldown_s": 0.3,
            "inprocess_retries": 0,
            "retry_schedule_s": [0.05] * 20,
        },
    )
    logs.configure("WARNING", "json")
    sender = RaisesOnCall(3)
    daemon = Daemon(settings, sender=sender)
    task = asyncio.create_task(daemon.run(install_signal_handlers=False))
    try:
        await wait_until(lambda: daemon.readiness() is None, task=task)
        event_id = await journal.publish(db, example("it_asset_purchased"))
        row = await wait_for_rows(
            db,
            f"SELECT status, attempts, last_error FROM it_relay.deliveries WHERE event_id = '{event_id}'",
            lambda r: r is not None and r["status"] == "delivered",
            fetch="row",
            within=30,
        )
        assert row["attempts"] == 4  # 503, 503, the probe that raised, the probe that delivered
        assert sender.calls == 4
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
