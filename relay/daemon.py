"""The composition root: wires listener, router, dispatcher, scheduler, ops server and systemd."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from relay import __version__, database, early_signals, journal, migrate, tracing
from relay.aio import said_task
from relay.destination import Destination, HttpDestination, destinations_for
from relay.dispatch import Dispatcher
from relay.display import duration
from relay.errors import UserError
from relay.gateway import Gateway
from relay.health import Heartbeats
from relay.listener import Listener
from relay.logs import get_logger
from relay.loop_lag import LoopLag
from relay.maintenance import Housekeeping, Retention
from relay.metrics import Metrics
from relay.model import Instance
from relay.reload import applied, needs_restart
from relay.router import Router
from relay.scheduler import Scheduler
from relay.sender import Sender, make_sender
from relay.server import OpsServer
from relay.settings import Settings, fingerprint
from relay.supervisor import Loop, keep_running, supervise_all
from relay.systemd import Notifier
from relay.tracing import Tracing

log = get_logger("relay.daemon")

_DAY_S = 86400.0
# Allocations between young collections (CPython 3.11 default: 700): see _settle_heap.
GC_YOUNG_THRESHOLD = 7000


@dataclass(frozen=True, slots=True)
class Components:
    """Everything one instance runs, built once from the settings, before any loop starts."""

    pool: asyncpg.Pool
    gateway: Gateway
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
        reload_settings: Callable[[], Settings] | None = None,
        owns_process: bool = False,
    ) -> None:
        self.settings = settings
        # `it-relay run`: the process is the daemon's alone, so process-wide tuning is its to do.
        self._owns_process = owns_process
        self.metrics = metrics or Metrics()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeats = Heartbeats()
        self.stopping = asyncio.Event()
        self.schema_current = False
        self.components: Components | None = None
        self._sender = sender
        self._notifier = notifier or Notifier()
        self._sent_ready = False
        self._reload_settings = reload_settings
        self._reloads: list[asyncio.Task[None]] = []
        self._reload_when_started = False
        # Destinations replaced by a reload: closed at shutdown, when nothing can be using them.
        self._retired: list[Destination] = []
        self._fingerprint = fingerprint(settings)
        self.tracing: Tracing | None = None
        self._housekeeping: Housekeeping | None = None

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
        if stalled := self.heartbeats.stalled():
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
        if install_signal_handlers:
            # Those that came while the process imported and read its settings (relay.__main__);
            # uvloop may deliver one of them again, so a second stop or reload changes nothing.
            for sig in early_signals.adopt():
                self._on_signal(sig)
        try:
            await self._run(s)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _run(self, s: Settings) -> None:
        try:
            if self.stopping.is_set():
                return  # stopped while it started: nothing opened, nothing to finish
            async with self.open() as c:
                log.info(
                    "it-relay started",
                    owner=self.owner,
                    schema_version=migrate.code_version(),
                    subscribers=sorted(c.dispatcher.lanes),
                    channel=s.database.channel,
                    # The bound address: with port 0 the OS chose it.
                    metrics=f"http://{c.server.host}:{c.server.port}/metrics" if c.server else None,
                )
                if self._reload_when_started:
                    self._on_signal(signal.SIGHUP)
                loops, services = self._loops(c)
                if self._owns_process:
                    _settle_heap()
                await asyncio.gather(
                    supervise_all(loops, self.stopping, self.heartbeats),
                    *(asyncio.create_task(keep_running(n, f, self.stopping), name=n) for n, f in services),
                )
        finally:
            self._notifier.notify("STOPPING=1", "STATUS=stopped")
            log.info("it-relay stopped", owner=self.owner)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Components]:
        """Every component built and opened before any loop runs; closed in reverse order after."""
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            # First on, last off: the spans of everything that closes before it still go out.
            self.tracing = tracing.start(
                s.tracing.enabled, self.metrics.trace_spans_dropped, s.database.channel
            )
            if self.tracing is not None:
                stack.push_async_callback(self.tracing.aclose)
            pool = await database.create_pool(s.database, journal.warm_functions)
            stack.push_async_callback(_close_pool, pool)
            sender = self._sender or make_sender(
                s.delivery.transport,
                s.delivery.concurrency,
                s.delivery.max_response_bytes,
                proxy=s.delivery.proxy,
                proxies=s.subscriber_proxies(),
            )
            stack.push_async_callback(sender.aclose)
            async with pool.acquire() as conn:
                await migrate.check(conn)
                await migrate.check_channel(conn, s.database.channel)
            self._set_schema_current(True)
            c = self.components = self._build(pool, sender)
            stack.push_async_callback(
                lambda: _close_destinations([*c.dispatcher.destinations.values(), *self._retired])
            )
            self.metrics.prepare(c.dispatcher.lanes)
            if c.server is not None:
                try:
                    await c.server.start()
                except OSError as exc:
                    raise UserError(f"server.listen {s.server.listen}: {exc.strerror or exc}") from None
                stack.push_async_callback(c.server.stop)
            yield c

    def _build(self, pool: asyncpg.Pool, sender: Sender) -> Components:
        s = self.settings
        gateway = Gateway(pool)
        dispatcher = Dispatcher(
            store=gateway,
            delivery=s.delivery,
            subscribers=dict(s.subscribers),
            destinations=destinations_for(s.subscribers, HttpDestination(sender)),
            metrics=self.metrics,
            owner=self.owner,
            poll_interval_s=s.database.poll_interval_s,
            heartbeats=self.heartbeats,
            tracing=self.tracing,
        )
        router = Router(
            store=gateway,
            metrics=self.metrics,
            unknown_fields=s.validation.unknown_fields,
            configured=dispatcher.lanes,
            on_routed=dispatcher.wake,
            batch_size=s.delivery.batch_size,
            poll_interval_s=s.database.poll_interval_s,
            tracing=self.tracing,
            handoff=dispatcher,
        )

        def on_wake(everything: bool) -> None:
            router.wake()
            if everything:
                dispatcher.wake()

        listener = Listener(
            connect=lambda: database.connect(s.database, database.LISTENER_APPLICATION),
            store=gateway,
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
                tracing=self.tracing,
            )
            if s.scheduler.enabled
            else None
        )
        server = (
            OpsServer(self.metrics, self.readiness, s.server.host, s.server.port)
            if s.server.enabled
            else None
        )
        return Components(pool, gateway, sender, dispatcher, router, listener, scheduler, server)

    def _loops(self, c: Components) -> tuple[list[Loop], list[tuple[str, Service]]]:
        """Every loop the supervisor repeats, and every component with a life cycle of its own."""
        s = self.settings
        poll = s.database.poll_interval_s
        served = c.dispatcher.lanes
        self._housekeeping = Housekeeping(
            c.gateway, served, self.metrics, self._set_schema_current, poll, self._instance
        )
        loops = [
            c.listener.ingest_loop(),
            c.router.loop(),
            self._housekeeping.loop(),
            Retention(c.gateway, s.retention, served).loop(),
            Loop("systemd", self._notify_step, self._notify_interval_s()),
            LoopLag(self.metrics.event_loop_lag).loop(),
        ]
        if c.scheduler is not None:
            loops.append(c.scheduler.loop())
        services: list[tuple[str, Service]] = [("listener", c.listener.run), ("dispatcher", c.dispatcher.run)]
        return loops, services

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            # Never the default (an abrupt death with deliveries in flight): reload, or say why not.
            if self._reload_settings is None:
                log.warning("SIGHUP received: nothing to reload (no configuration file)")
            elif self.components is None:  # the file may have changed since start-up read it
                self._reload_when_started = True
                log.info("SIGHUP during start-up: the configuration is read again once started")
            else:
                self._reloads.append(said_task(self.reload(), "reload"))
            return
        if self.stopping.is_set():
            return
        log.info(
            "stopping: no new claims; in-flight deliveries get the grace period",
            signal=sig.name,
            grace_s=self.settings.delivery.shutdown_grace_s,
        )
        self._notifier.notify("STOPPING=1", "STATUS=stopping: finishing in-flight deliveries")
        self.stopping.set()

    async def reload(self) -> None:
        """SIGHUP: read the configuration again and apply its subscribers (added, removed, URL,
        secrets, policies, enabled) without a restart and without dropping anything in flight;
        name the changed keys that need a restart. A configuration that does not load changes nothing."""
        assert self._reload_settings is not None and self.components is not None
        try:
            new = self._reload_settings()
        except (UserError, ValueError, OSError) as exc:
            log.error("reload failed, the configuration in force is unchanged", error=str(exc))
            return
        restart = needs_restart(self.settings, new)
        if restart:
            log.warning("reload: these keys need a restart to take effect", keys=restart)
        c = self.components
        http = HttpDestination(c.sender)
        kept = {n: d for n, d in c.dispatcher.destinations.items() if n in new.subscribers}
        fresh = destinations_for(new.subscribers, http)
        # A subscriber whose URL did not change keeps its destination (a broker's open connection).
        destinations = {
            n: kept[n]
            if n in kept and str(new.subscribers[n].url) == str(self.settings.subscribers[n].url)
            else d
            for n, d in fresh.items()
        }
        self._retired.extend(d for n, d in c.dispatcher.destinations.items() if destinations.get(n) is not d)
        added, removed = c.dispatcher.reconfigure(new.subscribers, destinations)
        c.router.serve(new.subscribers)
        self.metrics.prepare(new.subscribers)
        self.settings = applied(self.settings, new)
        self._fingerprint = fingerprint(self.settings)
        log.info("configuration reloaded", subscribers=sorted(new.subscribers), added=added, removed=removed)

    def _set_schema_current(self, current: bool) -> None:
        self.schema_current = current
        self.metrics.schema_current.set(1 if current else 0)

    def _instance(self) -> Instance:
        """This instance as `it-relay status` lists it."""
        c = self.components
        host, pid, _ = self.owner.split(":", 2)
        return Instance(
            owner=self.owner,
            host=host,
            pid=int(pid),
            version=__version__,
            config=self._fingerprint,
            subscribers=sorted(c.dispatcher.lanes) if c else [],
            leading=bool(c and c.scheduler and c.scheduler.leading.is_set()),
        )

    def _relaying_status(self) -> str:
        """systemd's STATUS while ready: in flight, the backlog, and what an operator must look at."""
        c = self.components
        parts = [f"relaying: {c.dispatcher.in_flight if c else 0} in flight"]
        gauges = self._housekeeping.gauges if self._housekeeping else {}
        pending = sum(g.pending for g in gauges.values())
        if pending:
            worst = max(gauges.items(), key=lambda item: item[1].oldest_pending_s)
            parts.append(f"backlog {pending} (oldest {worst[0]} {duration(worst[1].oldest_pending_s)})")
        dead = sum(g.dead for g in gauges.values())
        if dead:
            parts.append(f"{dead} dead")
        open_circuits = sorted(
            n for n, lane in (c.dispatcher.lanes.items() if c else ()) if lane.circuit_reported_open
        )
        if open_circuits:
            parts.append(f"circuit open: {', '.join(open_circuits)}")
        return "; ".join(parts)

    def _notify_interval_s(self) -> float:
        return min(self._notifier.watchdog_interval_s() or 5.0, 5.0)

    async def _notify_step(self) -> float | None:
        """systemd: READY=1 once the listener is connected (the schema was verified before),
        then WATCHDOG=1 and STATUS= only while every loop keeps coming round."""
        reason = self.readiness()
        if not self._sent_ready and reason is None:
            self._notifier.notify("READY=1", "STATUS=relaying")
            self._sent_ready = True
            log.info("ready", listener="connected")
        if stalled := self.heartbeats.stalled():
            log.error("loops stalled: withholding the systemd watchdog", loops=stalled)
            self._notifier.notify(f"STATUS=degraded: loop stalled: {', '.join(stalled)}")
        else:
            if reason is None:
                status = self._relaying_status()
            else:
                status = f"{'degraded' if self._sent_ready else 'starting'}: {reason}"
            self._notifier.notify("WATCHDOG=1", f"STATUS={status}")
        return None if self._sent_ready else 0.2


Service = Callable[[asyncio.Event], Awaitable[None]]


def _settle_heap() -> None:
    """Keep the collector off what start-up built (modules, models, lanes): it stays for the
    process's life, and each full collection walked all of it again (about 3 % of a drain's CPU).
    Young garbage is collected less often: a delivery makes a few dozen short-lived objects."""
    gc.collect()
    gc.freeze()
    if sys.version_info < (3, 14):
        # Measured on 3.11's generational collector; 3.14's is incremental, its thresholds differ.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def _close_pool(pool: asyncpg.Pool) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.close(), 10)


async def _close_destinations(destinations: Iterable[Destination]) -> None:
    for destination in {id(d): d for d in destinations}.values():
        with contextlib.suppress(Exception):
            await destination.aclose()
