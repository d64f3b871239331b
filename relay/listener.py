"""LISTEN on the channel over a dedicated connection; journal what legacy producers notify.

What a notification means is decided in `relay.ingest` (pure); here are the connection, the
inbox, the sender check and the round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from relay import journal
from relay.database import DB_ERRORS
from relay.gateway import IngestPort
from relay.health import Heartbeats
from relay.ingest import announced_id, classify, is_announcement, unknown_stub, unprocessable, untrusted
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import BATCH_LIMIT, NotifiedEvent, Rejection
from relay.supervisor import Loop

log = get_logger("relay.listener")

# publish()'s announcements wake the router as they arrive; confirming them against the journal
# (a statement) only finds forged ones, so it waits this long and takes them in one batch, off
# the path between a producer's commit and the POST.
ANNOUNCEMENT_LINGER_S = 0.025


class Listener:
    """Keeps one LISTEN connection alive; reconnects, then asks for a catch-up scan.

    `on_wake(everything)` is called after new events were journaled (False) or when every
    delivery lane should look for work too (True: after a reconnect, or on a wake-up stub).
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        store: IngestPort,
        channel: str,
        metrics: Metrics,
        on_wake: Callable[[bool], None],
        probe_interval_s: float = 10.0,
        probe_timeout_s: float = 5.0,
        legacy: bool = True,
        legacy_senders: Iterable[str] = (),
        heartbeats: Heartbeats | None = None,
        poll_interval_s: float = 5.0,
        announcement_linger_s: float = ANNOUNCEMENT_LINGER_S,
    ) -> None:
        self._connect = connect
        self._announcement_linger_s = announcement_linger_s
        self._linger: asyncio.TimerHandle | None = None
        self._store = store
        self._channel = channel
        self._metrics = metrics
        self._on_wake = on_wake
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._heartbeats = heartbeats or Heartbeats()
        self._poll_interval_s = poll_interval_s
        self._legacy = legacy
        self._legacy_senders = frozenset(legacy_senders)
        self._inbox: list[tuple[int, str]] = []
        self._inbox_ready = asyncio.Event()
        self._beat: Callable[[], None] = lambda: None
        self.connected = asyncio.Event()
        self.connections = 0

    def _on_notify(self, _conn: object, pid: int, _channel: str, payload: object) -> None:
        # asyncpg hands a notification's payload over as the text PostgreSQL sent.
        text = str(payload)
        self._inbox.append((pid, text))
        if len(self._inbox) >= BATCH_LIMIT or not is_announcement(text):
            self._inbox_ready.set()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self._announcement_linger_s, self._ripe)
        # Most notifications are publish()'s: the event is journaled, the router has work now.
        # Waking it before the inbox is looked at takes the listener's round trips off the
        # commit-to-delivery path; a wake-up for nothing costs one empty claim.
        self._on_wake(False)

    def _ripe(self) -> None:
        self._linger = None
        self._inbox_ready.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set: connect, listen, probe; journal what arrives."""
        # Reconnecting backs off up to 15 s, each try bounded by the connect timeout.
        self._beat = self._heartbeats.register(
            "listener", max(self._probe_interval_s + self._probe_timeout_s, 25)
        )
        while not stopping.is_set():
            conn = await self._connect_with_retry(stopping)
            if conn is None:
                break
            try:
                await self._listen(conn, stopping)
            finally:
                self.connected.clear()
                self._metrics.listener_connected.set(0)
                with contextlib.suppress(Exception):
                    conn.terminate()

    async def _connect_with_retry(self, stopping: asyncio.Event) -> asyncpg.Connection | None:
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.2, max=15.0, jitter=0.5),
            retry=retry_if_exception_type(DB_ERRORS),
            before_sleep=lambda state: log.warning(
                "listener connect failed, retrying",
                attempt=state.attempt_number,
                error=type(state.outcome.exception()).__name__ if state.outcome else None,
            ),
        )
        async for attempt in retrying:
            self._beat()
            if stopping.is_set():
                return None
            with attempt:
                conn: asyncpg.Connection = await self._connect()
                return conn
        return None

    async def _listen(self, conn: asyncpg.Connection, stopping: asyncio.Event) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(self._channel, self._on_notify)
        self.connections += 1
        self.connected.set()
        self._metrics.listener_connected.set(1)
        log.info("listener connected", channel=self._channel, connections=self.connections)
        # Anything committed while we were not listening is found by a catch-up scan.
        self._on_wake(True)
        while not stopping.is_set() and not lost.is_set():
            self._beat()
            waiters = {asyncio.create_task(stopping.wait()), asyncio.create_task(lost.wait())}
            done, pending = await asyncio.wait(
                waiters, timeout=self._probe_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if done:
                break
            try:
                # asyncpg does not notice a server that vanished without closing the socket.
                async with asyncio.timeout(self._probe_timeout_s):
                    await journal.probe(conn)
            except DB_ERRORS as exc:
                log.warning("listener probe failed, reconnecting", error=type(exc).__name__)
                return
        if lost.is_set():
            log.warning("listener connection lost, reconnecting")

    def ingest_loop(self) -> Loop:
        """Journal what the inbox holds, whenever a notification arrives; the last of it at shutdown."""
        return Loop(
            "listener-ingest",
            self.ingest_step,
            self._poll_interval_s,
            wake=self._inbox_ready,
            db_error_wait_s=0.5,
            close=self._flush_at_stop,
        )

    async def ingest_step(self) -> float | None:
        # On a database error the notifications stay in the inbox for the next step (and the
        # catch-up scan finds publish()'d events anyway); the supervisor says so and backs off.
        try:
            await self._flush()
        except DB_ERRORS:
            raise
        except Exception:
            # A bug, not bad input (bad input is a rejection): say so now, keep ingesting.
            log.exception("journaling notifications failed unexpectedly; the batch is skipped")
            self._skip_batch()
        return 0 if self._inbox else None

    async def _flush_at_stop(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        with contextlib.suppress(*DB_ERRORS):
            while self._inbox:
                await self._flush()

    def _skip_batch(self) -> None:
        skipped = self._inbox[:BATCH_LIMIT]
        del self._inbox[:BATCH_LIMIT]
        self._metrics.events_rejected.labels("invalid_text").inc(len(skipped))
        if self._inbox:
            self._inbox_ready.set()

    async def _flush(self) -> None:
        if not self._inbox:
            return
        batch = self._inbox[:BATCH_LIMIT]
        events: list[NotifiedEvent] = []
        rejections: list[Rejection] = []
        announced = [announced_id(raw) for _, raw in batch]
        known = await self._store.journaled_ids([i for i, _ in announced if i is not None])
        legacy = [
            (pid, raw)
            for (pid, raw), (event_id, _) in zip(batch, announced, strict=True)
            if event_id is None or event_id not in known
        ]
        senders = await self._untrusted([pid for pid, _ in legacy])
        # A known id is a wake-up from publish() (the router has work) or from a replay (lanes do).
        lanes = any(wake for event_id, wake in announced if event_id is not None and event_id in known)
        for pid, raw in legacy:
            try:
                item = classify(raw)
            except Exception as exc:  # never let one notification stop the others
                item = unprocessable(raw, exc)
            if item is not None and pid in senders:
                item = untrusted(item, senders[pid])
            if isinstance(item, NotifiedEvent):
                events.append(item)
            elif isinstance(item, Rejection):
                rejections.append(item)
            else:
                rejections.append(unknown_stub(raw))
        if events or rejections:
            rejections += await self._store.journal_batch(events, rejections)
        del self._inbox[: len(batch)]
        for r in rejections:
            self._metrics.events_rejected.labels(r.reason).inc()
        if self._inbox:
            self._inbox_ready.set()
        # publish()'s announcements woke the router as they arrived (_on_notify): waking it again
        # would cost a read that finds nothing, ahead of the deliveries it just handed out.
        if events or lanes:
            self._on_wake(lanes)

    async def _untrusted(self, pids: list[int]) -> dict[int, str]:
        """The senders among `pids` whose full-payload notifications must not be journaled, and why."""
        if not pids or (self._legacy and not self._legacy_senders):
            return {}
        if not self._legacy:
            return dict.fromkeys(pids, "legacy notifications are turned off (ingest.legacy = false)")
        roles = await self._store.backend_roles(pids)
        out: dict[int, str] = {}
        for pid in pids:
            role = roles.get(pid)
            if role is None:
                out[pid] = f"the sending backend (pid {pid}) had gone before its role could be checked"
            elif role not in self._legacy_senders:
                out[pid] = f"sent by role {role!r}, not one of ingest.legacy_senders"
        return out
