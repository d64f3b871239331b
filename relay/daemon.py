"""The composition root: wires listener, router, dispatcher, scheduler, ops server and systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from relay import database, journal, migrate
from relay.aio import sleep_unless
from relay.database import DB_ERRORS
from relay.dispatch import Dispatcher
from relay.errors import SchemaError, UserError
from relay.health import Heartbeats
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


@dataclass(frozen=True, slots=True)
class Components:
    """Everything one instance runs, built once from the settings, before any loop starts."""

    pool: asyncpg.Pool
    sender: Sender
    dispatcher: Dispatcher
    router: Router
    listener: Listener
    scheduler: Scheduler | None
    server: OpsServer | None


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
        self.heartbeats = Heartbeats()
        self.stopping = asyncio.Event()
        self.schema_current = False
        self.components: Components | None = None
        self._sender = sender
        self._notifier = notifier or Notifier()

    @property
    def listener(self) -> Listener | None:
        return self.components.listener if self.components else None

    @property
    def server(self) -> OpsServer | None:
        return self.components.server if self.components else None

    def stop(self) -> None:
        self.stopping.set()

    def readiness(self) -> str | None:
        """None when ready to relay; otherwise the reason (for /readyz and STATUS=)."""
        if not self.schema_current:
            return f"database schema older than version {migrate.code_version()}: run `it-relay db upgrade`"
        if self.listener is None or not self.listener.connected.is_set():
            return "listener not connected to PostgreSQL"
        stalled = self.heartbeats.stalled()
        if stalled:
            return f"loop stalled: {', '.join(stalled)}"
        return None

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until stop() or SIGTERM/SIGINT; raises SchemaError if the schema is too old."""
        s = self.settings
        loop = asyncio.get_running_loop()
        # Installed before anything slow: a signal during start-up is handled, never fatal.
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if install_signal_handlers else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._run(s)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _run(self, s: Settings) -> None:
        pool = await database.create_pool(s.database)
        sender = self._sender or make_sender(
            s.delivery.transport, s.delivery.concurrency, s.delivery.max_response_bytes
        )
        c: Components | None = None
        try:
            async with pool.acquire() as conn:
                version = await migrate.check(conn)
                await migrate.check_channel(conn, s.database.channel)
            self._set_schema_current(True)
            c = self.components = self._build(pool, sender)
            self.metrics.prepare(c.dispatcher.lanes)
            if c.server is not None:
                try:
                    await c.server.start()
                except OSError as exc:
                    raise UserError(f"server.listen {s.server.listen}: {exc.strerror or exc}") from None
            log.info(
                "it-relay started",
                owner=self.owner,
                schema_version=version,
                subscribers=sorted(c.dispatcher.lanes),
                channel=s.database.channel,
                metrics=f"http://{s.server.listen}/metrics" if s.server.enabled else None,
            )
            await asyncio.gather(*(asyncio.create_task(self._guard(n, f), name=n) for n, f in self._loops(c)))
        finally:
            self._notifier.notify("STOPPING=1", "STATUS=stopped")
            if c is not None and c.server is not None:
                await c.server.stop()
            await sender.aclose()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)
            log.info("it-relay stopped", owner=self.owner)

    def _build(self, pool: asyncpg.Pool, sender: Sender) -> Components:
        s = self.settings
        dispatcher = Dispatcher(
            pool=pool,
            delivery=s.delivery,
            subscribers=dict(s.subscribers),
            sender=sender,
            metrics=self.metrics,
            owner=self.owner,
            poll_interval_s=s.database.poll_interval_s,
            heartbeats=self.heartbeats,
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
            heartbeats=self.heartbeats,
            poll_interval_s=s.database.poll_interval_s,
        )
        scheduler = (
            Scheduler(
                s.scheduler,
                metrics=self.metrics,
                connect=lambda: database.connect(s.database, database.SCHEDULER_APPLICATION),
            )
            if s.scheduler.enabled
            else None
        )
        server = (
            OpsServer(self.metrics, self.readiness, s.server.host, s.server.port)
            if s.server.enabled
            else None
        )
        return Components(pool, sender, dispatcher, router, listener, scheduler, server)

    def _loops(self, c: Components) -> list[tuple[str, Loop]]:
        """Every long-running loop, named; each but the dispatcher's keeps its own heartbeat here."""
        s = self.settings
        beats = self.heartbeats
        poll = s.database.poll_interval_s
        loops: list[tuple[str, Loop]] = [
            ("listener", c.listener.run),
            ("router", _beating(c.router.run, beats.register("router", poll))),
            ("housekeeping", _beating(self._housekeeping, beats.register("housekeeping", poll))),
            ("retention", _beating(self._retention, beats.register("retention", s.retention.interval_s))),
            ("systemd", self._supervise),
            ("dispatcher", c.dispatcher.run),
        ]
        if c.scheduler is not None:
            every = s.scheduler.interval_s
            loops.append(("scheduler", _beating(c.scheduler.run, beats.register("scheduler", every))))
        return loops

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            # Never the default (an abrupt death with deliveries in flight).
            log.warning(
                "SIGHUP received: the configuration is not reloaded; restart the service to apply changes",
                signal=sig.name,
            )
            return
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

    async def _guard(self, name: str, loop_fn: Loop) -> None:
        """Run a loop until shutdown; if it fails or returns early, say so at once and restart it."""
        while not self.stopping.is_set():
            try:
                await loop_fn(self.stopping)
            except Exception:
                log.exception("loop failed, restarting it", loop=name)
            else:
                if not self.stopping.is_set():
                    log.error("loop ended unexpectedly, restarting it", loop=name)
            await sleep_unless(self.stopping, 1.0)

    async def _supervise(self, stopping: asyncio.Event) -> None:
        """systemd: READY=1 once the listener is connected (the schema was verified before),
        then WATCHDOG=1 and STATUS= only while every loop keeps coming round."""
        sent_ready = False
        watchdog = self._notifier.watchdog_interval_s()
        interval = min(watchdog or 5.0, 5.0)
        while not stopping.is_set():
            reason = self.readiness()
            if not sent_ready and reason is None:
                self._notifier.notify("READY=1", "STATUS=relaying")
                sent_ready = True
                log.info("ready", listener="connected")
            stalled = self.heartbeats.stalled()
            if stalled:
                log.error("loops stalled: withholding the systemd watchdog", loops=stalled)
                self._notifier.notify(f"STATUS=degraded: loop stalled: {', '.join(stalled)}")
            else:
                in_flight = self.components.dispatcher.in_flight if self.components else 0
                if reason is None:
                    status = f"relaying: {in_flight} in flight"
                else:
                    status = f"{'degraded' if sent_ready else 'starting'}: {reason}"
                self._notifier.notify("WATCHDOG=1", f"STATUS={status}")
            await sleep_unless(stopping, interval if sent_ready else 0.2)

    async def _housekeeping(self, stopping: asyncio.Event, beat: Beat) -> None:
        """The schema check and the backlog gauges, every poll interval."""
        assert self.components is not None
        pool, lanes = self.components.pool, self.components.dispatcher.lanes
        while not stopping.is_set():
            try:
                async with pool.acquire() as conn:
                    try:
                        await migrate.check(conn)
                        self._set_schema_current(True)
                    except SchemaError:
                        self._set_schema_current(False)
                    counts = await journal.backlog(conn)
                for name in set(counts) | set(lanes):
                    self.metrics.backlog.labels(name).set(counts.get(name, 0))
            except DB_ERRORS as exc:
                log.warning("housekeeping failed, will retry", error=type(exc).__name__)
            # A beat even when the database is down: the loop itself is alive.
            beat()
            await sleep_unless(stopping, self.settings.database.poll_interval_s)

    async def _retention(self, stopping: asyncio.Event, beat: Beat) -> None:
        """Prune what retention allows, in bounded batches, every retention.interval_s."""
        assert self.components is not None
        r = self.settings.retention
        while not stopping.is_set():
            try:
                async with self.components.pool.acquire() as conn:
                    deleted = -1
                    while deleted != 0 and not stopping.is_set():
                        deleted = await journal.prune(
                            conn,
                            r.delivered_days * _DAY_S,
                            r.dead_days * _DAY_S,
                            r.rejected_days * _DAY_S,
                            served=self.components.dispatcher.lanes,
                        )
                        beat()
            except DB_ERRORS as exc:
                log.warning("retention failed, will retry", error=type(exc).__name__)
            beat()
            await sleep_unless(stopping, r.interval_s)


Beat = Callable[[], None]
Loop = Callable[[asyncio.Event], Awaitable[None]]


def _beating(loop_fn: Callable[[asyncio.Event, Beat], Awaitable[None]], beat: Beat) -> Loop:
    async def run(stopping: asyncio.Event) -> None:
        await loop_fn(stopping, beat)

    return run
