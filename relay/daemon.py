"""The composition root: wires listener, router, dispatcher, scheduler, ops server and systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from relay import database, journal, migrate
from relay.aio import sleep_unless
from relay.database import DB_ERRORS
from relay.dispatch import Dispatcher
from relay.errors import SchemaError, UserError
from relay.listener import Listener
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.router import Router
from relay.scheduler import Scheduler
from relay.sender import Sender, make_sender
from relay.server import OpsServer
from relay.settings import Settings
from relay.systemd import Notifier

log = get_logger("relay.daemon")

_DAY_S = 86400.0


class Daemon:
    """One relay instance. Several may run against one database."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        sender: Sender | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sender = sender
        self._notifier = notifier or Notifier()
        self.stopping = asyncio.Event()
        self.listener: Listener | None = None
        self.dispatcher: Dispatcher | None = None
        self.router: Router | None = None
        self.scheduler: Scheduler | None = None
        self.server: OpsServer | None = None
        self.schema_current = False
        self._pool: asyncpg.Pool | None = None
        self._heartbeat = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()

    def readiness(self) -> str | None:
        """None when ready to relay; otherwise the reason (for /readyz and STATUS=)."""
        if not self.schema_current:
            return f"database schema older than version {migrate.code_version()}: run `it-relay db upgrade`"
        if self.listener is None or not self.listener.connected.is_set():
            return "listener not connected to PostgreSQL"
        return None

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until stop() or SIGTERM/SIGINT; raises SchemaError if the schema is too old."""
        s = self.settings
        pool = await database.create_pool(s.database)
        self._pool = pool
        sender = self._sender or make_sender(s.delivery.transport, s.delivery.concurrency)
        loop = asyncio.get_running_loop()
        try:
            async with pool.acquire() as conn:
                version = await migrate.check(conn)
                await migrate.check_channel(conn, s.database.channel)
            self._set_schema_current(True)
            dispatcher = Dispatcher(
                pool=pool,
                delivery=s.delivery,
                subscribers=dict(s.subscribers),
                sender=sender,
                metrics=self.metrics,
                owner=self.owner,
                poll_interval_s=s.database.poll_interval_s,
            )
            router = Router(
                pool=pool,
                metrics=self.metrics,
                unknown_fields=s.validation.unknown_fields,
                configured=dispatcher.lanes,
                on_routed=dispatcher.wake,
                batch_size=s.delivery.batch_size,
                poll_interval_s=s.database.poll_interval_s,
            )

            def on_wake(everything: bool) -> None:
                router.wake()
                if everything:
                    dispatcher.wake()

            listener = Listener(
                connect=lambda: database.connect(s.database, database.LISTENER_APPLICATION),
                pool=pool,
                channel=s.database.channel,
                metrics=self.metrics,
                on_wake=on_wake,
                probe_interval_s=s.database.probe_interval_s,
                probe_timeout_s=s.database.probe_timeout_s,
                legacy=s.ingest.legacy,
                legacy_senders=s.ingest.legacy_senders,
            )
            self.listener, self.router, self.dispatcher = listener, router, dispatcher
            self.metrics.prepare(dispatcher.lanes)
            if s.scheduler.enabled:
                self.scheduler = Scheduler(
                    s.scheduler,
                    metrics=self.metrics,
                    connect=lambda: database.connect(s.database, database.SCHEDULER_APPLICATION),
                )
            if s.server.enabled:
                self.server = OpsServer(self.metrics, self.readiness, s.server.host, s.server.port)
                try:
                    await self.server.start()
                except OSError as exc:
                    raise UserError(f"server.listen {s.server.listen}: {exc.strerror or exc}") from None
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self._on_signal, sig)
            log.info(
                "it-relay started",
                owner=self.owner,
                schema_version=version,
                subscribers=sorted(dispatcher.lanes),
                channel=s.database.channel,
                metrics=f"http://{s.server.listen}/metrics" if s.server.enabled else None,
            )
            loops: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]] = [
                ("listener", listener.run),
                ("router", router.run),
                ("housekeeping", self._housekeeping),
                ("systemd", self._supervise),
            ]
            if self.scheduler is not None:
                loops.append(("scheduler", self.scheduler.run))
            tasks = [asyncio.create_task(self._guard(name, fn), name=name) for name, fn in loops]
            tasks.append(asyncio.create_task(dispatcher.run(self.stopping), name="dispatcher"))
            await asyncio.gather(*tasks)
        finally:
            self._notifier.notify("STOPPING=1", "STATUS=stopped")
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self.server is not None:
                await self.server.stop()
            await sender.aclose()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)
            log.info("it-relay stopped", owner=self.owner)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info(
            "stopping: no new claims; in-flight deliveries get the grace period",
            signal=sig.name,
            grace_s=self.settings.delivery.shutdown_grace_s,
        )
        self._notifier.notify("STOPPING=1", "STATUS=stopping: finishing in-flight deliveries")
        self.stopping.set()

    def _set_schema_current(self, current: bool) -> None:
        self.schema_current = current
        self.metrics.schema_current.set(1 if current else 0)

    async def _guard(self, name: str, loop_fn: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run a loop; if it fails unexpectedly, log it and start it again rather than exit."""
        while not self.stopping.is_set():
            try:
                await loop_fn(self.stopping)
                return
            except Exception:
                log.exception("loop failed, restarting it", loop=name)
                await sleep_unless(self.stopping, 1.0)

    async def _supervise(self, stopping: asyncio.Event) -> None:
        """systemd: READY=1 once the listener is connected (the schema was verified before),
        then WATCHDOG=1 and STATUS= while the loops keep turning."""
        assert self.listener is not None and self.dispatcher is not None
        s = self.settings
        sent_ready = False
        watchdog = self._notifier.watchdog_interval_s()
        interval = min(watchdog or 5.0, 5.0)
        stale_after = 3 * s.database.poll_interval_s + 30
        while not stopping.is_set():
            if not sent_ready and self.readiness() is None:
                self._notifier.notify("READY=1", "STATUS=relaying")
                sent_ready = True
                log.info("ready", listener="connected")
            if time.monotonic() - self._heartbeat < stale_after:
                reason = self.readiness()
                status = (
                    f"relaying: {self.dispatcher.in_flight} in flight"
                    if reason is None
                    else f"degraded: {reason}"
                )
                self._notifier.notify("WATCHDOG=1", f"STATUS={status}")
            await sleep_unless(stopping, interval if sent_ready else 0.2)

    async def _housekeeping(self, stopping: asyncio.Event) -> None:
        """Backlog gauges and the schema check every poll interval; retention every ten minutes."""
        s = self.settings
        assert self.dispatcher is not None and self._pool is not None
        next_prune = 0.0
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            try:
                async with self._pool.acquire() as conn:
                    try:
                        await migrate.check(conn)
                        self._set_schema_current(True)
                    except SchemaError:
                        self._set_schema_current(False)
                    counts = await journal.backlog(conn)
                    for name in set(counts) | set(self.dispatcher.lanes):
                        self.metrics.backlog.labels(name).set(counts.get(name, 0))
                    if loop.time() >= next_prune:
                        deleted = -1
                        while deleted != 0 and not stopping.is_set():
                            deleted = await journal.prune(
                                conn,
                                s.retention.delivered_days * _DAY_S,
                                s.retention.dead_days * _DAY_S,
                                s.retention.rejected_days * _DAY_S,
                            )
                        next_prune = loop.time() + 600
            except DB_ERRORS as exc:
                log.warning("housekeeping failed, will retry", error=type(exc).__name__)
            # A heartbeat even when the database is down: the loop itself is alive.
            self._heartbeat = time.monotonic()
            await sleep_unless(stopping, s.database.poll_interval_s)
