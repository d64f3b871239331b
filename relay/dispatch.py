"""Deliver: claim due deliveries per subscriber, POST them signed, write outcomes in batches.

Each subscriber has its own lane (claim loop, in-flight limit, circuit breaker), so a slow or dead
subscriber never holds up another; `delivery.concurrency` bounds all lanes together. Claims are
leases: if this process dies, its leases expire and any instance claims the rows again.

Three parts: `Slots` counts what is in flight, `OutcomeWriter` buffers outcomes and writes them
in batches, `Dispatcher` runs the lane loops and the attempts. The invariant that bounds crash
duplicates lives in `Slot`: a claimed row holds its slot until its outcome is written (or its
lease released), and `Slot.release()` is the only place a slot is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from prometheus_client import Counter, Histogram

from relay import codec, journal, retry, signing
from relay.circuit import CircuitBreaker
from relay.contracts import REGISTRY
from relay.database import DB_ERRORS
from relay.health import Heartbeats
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import (
    BATCH_LIMIT,
    EXCERPT_BYTES,
    OUTCOMES,
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryResult,
    Outcome,
)
from relay.redaction import excerpt
from relay.sender import Sender, SendError
from relay.settings import DeliverySettings, SubscriberSettings
from relay.settle import BreakerNote, Ending, RetryPolicy, Settlement, settle
from relay.supervisor import Loop, supervise

log = get_logger("relay.dispatch")


@dataclass(slots=True, kw_only=True)
class Lane:
    name: str
    url: str
    secrets: list[str]
    timeout_s: float
    max_in_flight: int
    cloudevents: bool
    breaker: CircuitBreaker
    # The lane's metric children, looked up once rather than per delivery.
    duration: Histogram
    outcomes: dict[Outcome, Counter]
    circuit_reported_open: bool = False
    # Held by `enabled = false` or `it-relay subscribers pause` (read from the database).
    enabled: bool = True
    paused: bool = False
    circuit_shared_open: bool = False
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Slots:
    """In-flight accounting per lane and for the whole relay (`delivery.concurrency`)."""

    def __init__(self, concurrency: int, on_all_freed: Callable[[], None]) -> None:
        self.concurrency = concurrency
        self.in_flight = 0
        self._on_all_freed = on_all_freed

    def available(self, lane: Lane) -> int:
        return min(lane.max_in_flight - lane.in_flight, self.concurrency - self.in_flight)

    def take(self, lane: Lane) -> Slot:
        lane.in_flight += 1
        self.in_flight += 1
        return Slot(lane, self)

    def _give_back(self, lane: Lane) -> None:
        was_full = self.in_flight >= self.concurrency
        lane.in_flight -= 1
        self.in_flight -= 1
        lane.wake.set()
        if was_full:
            self._on_all_freed()


class Slot:
    """One claimed row's place in its lane; released exactly once, whatever path it took."""

    __slots__ = ("_slots", "lane", "queued", "released")

    def __init__(self, lane: Lane, slots: Slots) -> None:
        self.lane = lane
        self._slots = slots
        self.queued = False  # its outcome is with the writer, which releases it once written
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots._give_back(self.lane)


class OutcomeWriter:
    """Buffers outcomes and writes them in batched round trips; then releases their slots."""

    def __init__(self, pool: asyncpg.Pool, owner: str) -> None:
        self._pool = pool
        self._owner = owner
        self._pending: list[tuple[DeliveryResult, Slot]] = []
        self._ready = asyncio.Event()

    def put(self, result: DeliveryResult, slot: Slot) -> None:
        slot.queued = True
        self._pending.append((result, slot))
        self._ready.set()

    def loop(self, idle_s: float) -> Loop:
        return Loop("outcome-writer", self.step, idle_s, wake=self._ready, db_error_wait_s=0.5)

    async def step(self) -> float | None:
        """Write what is queued (database errors go to the supervisor; the outcomes stay queued)."""
        if not self._pending:
            return None
        # A moment's linger turns a burst of outcomes into one round trip.
        await asyncio.sleep(0.002)
        self._ready.clear()
        await self._write_batch()
        return 0 if self._pending else None

    async def _write_batch(self) -> None:
        batch = self._pending[:BATCH_LIMIT]
        async with self._pool.acquire() as conn:
            await journal.write_results(conn, [r for r, _ in batch], self._owner)
        del self._pending[: len(batch)]
        for _, slot in batch:
            slot.release()

    async def flush(self, deadline: float) -> None:
        """At shutdown: write everything queued, retrying database errors until `deadline`."""
        while self._pending:
            try:
                await self._write_batch()
            except DB_ERRORS as exc:
                log.warning(
                    "writing delivery outcomes failed, will retry",
                    error=type(exc).__name__,
                    pending=len(self._pending),
                )
                if time.monotonic() > deadline:
                    # Unwritten outcomes are redelivered after their leases expire: at-least-once.
                    for _, slot in self._pending:
                        slot.release()
                    self._pending.clear()
                    return
                await asyncio.sleep(0.5)


class Attempts:
    """One attempt: sign, POST, classify the response; then what the delivery becomes after it."""

    def __init__(self, *, delivery: DeliverySettings, sender: Sender, metrics: Metrics) -> None:
        self._settings = delivery
        self._sender = sender
        self._metrics = metrics

    def conclude(self, lane: Lane, item: ClaimedDelivery, settlement: Settlement, probe: bool) -> None:
        """What a settled round tells the breaker, the metrics and the log."""
        # Giving back a probe only matters for the probe: another round must not free it.
        if settlement.breaker != "release" or probe:
            self._observe_circuit(lane, settlement.breaker)
        if settlement.outcome is None or settlement.result is None:
            return
        result = settlement.result
        attempts = result.attempts
        lane.outcomes[settlement.outcome].inc()
        if settlement.outcome == "delivered":
            latency = (datetime.now(UTC) - item.journaled_at).total_seconds()
            self._metrics.event_latency.observe(latency)
            # DEBUG only: at INFO the filtering logger drops it before any formatting.
            log.debug(
                "delivered",
                event_id=str(item.event_id),
                event_type=item.event_type,
                subscriber=lane.name,
                attempt=attempts,
                status=result.last_status,
                latency_ms=round(latency * 1000, 1),
            )
            return
        fields = {
            "event_id": str(item.event_id),
            "event_type": item.event_type,
            "subscriber": lane.name,
            "attempt": attempts,
            "status": result.last_status,
            "error": result.last_error,
        }
        if settlement.outcome == "retry":
            log.info("delivery failed, will retry", retry_in_s=round(settlement.wait_s or 0, 1), **fields)
        else:
            log.warning("delivery dead", **fields)

    def _observe_circuit(self, lane: Lane, note: BreakerNote) -> None:
        if note == "release":
            lane.breaker.release_probe()
        else:
            lane.breaker.record(note == "success", time.monotonic())
        is_open = lane.breaker.state != "closed"  # half-open (probing) is not closed yet
        if is_open != lane.circuit_reported_open:
            lane.circuit_reported_open = is_open
            self._metrics.circuit_open.labels(lane.name).set(1 if is_open else 0)
            if is_open:
                log.warning("circuit opened: claims paused", subscriber=lane.name)
            else:
                log.info("circuit closed: claims resumed", subscriber=lane.name)

    async def attempt(self, lane: Lane, item: ClaimedDelivery, attempt: int) -> Attempt:
        now = datetime.now(UTC)
        contract = REGISTRY.get(item.event_type) if lane.cloudevents else None
        headers = signing.headers(
            event_id=str(item.event_id),
            event_type=item.event_type,
            body=item.body,
            secrets=lane.secrets,
            attempt=attempt,
            at=now,
            cloudevents=lane.cloudevents,
            publisher=contract.publisher if contract else "",
            journaled_at=item.journaled_at,
        )
        started = time.perf_counter()
        try:
            response = await self._sender.post(lane.url, item.body, headers, lane.timeout_s)
        except SendError as exc:
            elapsed = time.perf_counter() - started
            lane.duration.observe(elapsed)
            return Attempt(
                "retry", None, str(exc), None, self._record(lane, attempt, now, elapsed, None, str(exc))
            )
        elapsed = time.perf_counter() - started
        lane.duration.observe(elapsed)
        outcome = retry.classify(response.status)
        error = None if outcome == "delivered" else f"HTTP {response.status}"
        wait = retry.retry_after_s(response.headers, now) if outcome == "retry" else None
        record = self._record(lane, attempt, now, elapsed, response.status, error, response.body)
        return Attempt(outcome, response.status, error, wait, record)

    def _record(
        self,
        lane: Lane,
        attempt: int,
        at: datetime,
        elapsed_s: float,
        status: int | None,
        error: str | None,
        body: bytes = b"",
    ) -> AttemptRecord | None:
        if not self._settings.record_attempts:
            return None
        return AttemptRecord(
            attempt=attempt,
            at=at,
            http_status=status,
            error=error,
            duration_ms=round(elapsed_s * 1000, 3),
            excerpt=excerpt(body, EXCERPT_BYTES, lane.secrets) if body else None,
        )


class LaneStates:
    """Run-time state shared through the database: pauses set by operators come in (before the
    first claim, then every poll interval), circuit changes go out (for `it-relay status`)."""

    def __init__(self, pool: asyncpg.Pool, lanes: dict[str, Lane], metrics: Metrics, every_s: float) -> None:
        self._pool = pool
        self._lanes = lanes
        self._metrics = metrics
        self._every_s = every_s

    def loop(self) -> Loop:
        return Loop("subscriber-states", self.step, self._every_s)

    async def step(self) -> float | None:
        await self.sync()
        return None

    async def sync(self) -> None:
        async with self._pool.acquire() as conn:
            states = await journal.subscriber_states(conn)
            for lane in self._lanes.values():
                if lane.circuit_reported_open != lane.circuit_shared_open:
                    await journal.set_circuit(
                        conn, lane.name, "open" if lane.circuit_reported_open else "closed"
                    )
                    lane.circuit_shared_open = lane.circuit_reported_open
        for lane in self._lanes.values():
            shared = states.get(lane.name)
            paused = shared.paused if shared is not None and shared.paused is not None else not lane.enabled
            if paused != lane.paused:
                lane.paused = paused
                log.info(
                    "subscriber " + ("paused: deliveries held" if paused else "resumed"), subscriber=lane.name
                )
                lane.wake.set()
            self._metrics.paused.labels(lane.name).set(1 if paused else 0)


class Dispatcher:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        delivery: DeliverySettings,
        subscribers: dict[str, SubscriberSettings],
        sender: Sender,
        metrics: Metrics,
        owner: str,
        poll_interval_s: float = 5.0,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._pool = pool
        self._heartbeats = heartbeats or Heartbeats()
        self._settings = delivery
        self._owner = owner
        self._poll_interval_s = poll_interval_s
        self.lanes = {
            name: Lane(
                name=name,
                url=str(conf.url),
                secrets=conf.signing_secrets(),
                timeout_s=conf.timeout_s or delivery.timeout_s,
                max_in_flight=conf.max_in_flight,
                cloudevents=conf.format == "cloudevents",
                breaker=CircuitBreaker(delivery.circuit_failure_threshold, delivery.circuit_cooldown_s),
                duration=metrics.delivery_duration.labels(name),
                outcomes={o: metrics.deliveries.labels(name, o) for o in OUTCOMES},
                enabled=conf.enabled,
                paused=not conf.enabled,
            )
            for name, conf in subscribers.items()
        }
        self._states = LaneStates(pool, self.lanes, metrics, poll_interval_s)
        self._attempts = Attempts(delivery=delivery, sender=sender, metrics=metrics)
        self._policy = RetryPolicy(delivery.retry_schedule_s, delivery.retry_after_max_s, delivery.jitter)
        self._slots = Slots(delivery.concurrency, self.wake)
        self._writer = OutcomeWriter(pool, owner)
        self._tasks: dict[asyncio.Task[None], tuple[UUID, str]] = {}
        self._stopping = asyncio.Event()

    def wake(self, subscribers: Iterable[str] | None = None) -> None:
        names = self.lanes.keys() if subscribers is None else subscribers
        for name in names:
            lane = self.lanes.get(name)
            if lane is not None:
                lane.wake.set()

    @property
    def in_flight(self) -> int:
        return self._slots.in_flight

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping`; then finish in-flight work within the grace period."""
        # Paused subscribers are known before any lane claims (when the database answers).
        with contextlib.suppress(*DB_ERRORS):
            await self._states.sync()
        beats = self._heartbeats
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(
            supervise(self._writer.loop(self._poll_interval_s), writer_stop, beats), name="outcome-writer"
        )
        loops = [self._lane_loop(lane) for lane in self.lanes.values()] + [self._states.loop()]
        tasks = [
            asyncio.create_task(supervise(loop, self._stopping, beats), name=loop.name) for loop in loops
        ]
        try:
            await stopping.wait()
        finally:
            self._stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._drain()
            writer_stop.set()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._writer.flush(deadline=time.monotonic() + 10)

    async def _drain(self) -> None:
        if self._tasks:
            log.info(
                "waiting for in-flight deliveries",
                count=len(self._tasks),
                grace_s=self._settings.shutdown_grace_s,
            )
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _lane_loop(self, lane: Lane) -> Loop:
        # A lane waits at most a poll interval, or a circuit's cool-down, between rounds.
        every = max(self._poll_interval_s, self._settings.circuit_cooldown_s)
        return Loop(
            f"lane {lane.name}",
            lambda: self._lane_step(lane),
            self._poll_interval_s,
            wake=lane.wake,
            beat_every_s=every,
            tags={"subscriber": lane.name},
        )

    def _claim_limit(self, lane: Lane, now: float) -> tuple[int, int | None]:
        """How many rows the lane may claim now, and what the circuit allows (None: closed)."""
        if lane.paused:
            return 0, None
        allowed = lane.breaker.allowed(now)
        limit = min(self._slots.available(lane), self._settings.batch_size)
        return (limit if allowed is None else min(limit, allowed)), allowed

    async def _lane_step(self, lane: Lane) -> float | None:
        """Claim what the lane may take and start it; then how long until it should look again."""
        now = time.monotonic()
        limit, allowed = self._claim_limit(lane, now)
        if limit <= 0:
            return lane.breaker.seconds_until_probe(now) or None
        async with self._pool.acquire() as conn:
            claimed = await journal.claim_deliveries(
                conn, lane.name, self._owner, limit, self._settings.lease_s
            )
            probe = allowed == 1 and bool(claimed)
            if probe:
                lane.breaker.claimed_probe()
            # Sent before asking when the next one is due: that round trip is off the path.
            for item in claimed:
                self._start(lane, item, probe)
            if len(claimed) == limit:
                return 0
            due_in = await journal.seconds_until_due(conn, lane.name)
        return None if due_in is None else min(max(due_in, 0.005), self._poll_interval_s)

    def _start(self, lane: Lane, item: ClaimedDelivery, probe: bool) -> None:
        task = asyncio.create_task(self._deliver(item, self._slots.take(lane), probe))
        self._tasks[task] = (item.event_id, lane.name)
        task.add_done_callback(self._tasks.pop)

    async def _deliver(self, item: ClaimedDelivery, slot: Slot, probe: bool) -> None:
        """Attempt (with quick retries), then settle: every ending goes through `_settle` once."""
        attempts = item.attempts - 1  # the claim counted the first attempt already
        tried: list[Attempt] = []
        try:
            while True:
                attempts += 1
                last = await self._attempts.attempt(slot.lane, item, attempts)
                tried.append(last)
                retried = attempts - item.attempts
                if (
                    not last.quick_retry
                    or retried >= self._settings.inprocess_retries
                    or self._stopping.is_set()
                ):
                    break
                await asyncio.sleep(self._settings.inprocess_retry_wait_s)
        except asyncio.CancelledError:
            ending: Ending = "unattempted" if attempts < item.attempts else "interrupted"
            await self._settle(item, slot, probe, settle(item, tried, attempts, ending, self._policy))
            raise
        except Exception as exc:
            # A bug, not a delivery outcome: settled as a failed round with an internal: error, so
            # the attempt count, the schedule, the breaker and the operator all see it.
            log.exception(
                "delivery failed unexpectedly", event_id=str(item.event_id), subscriber=slot.lane.name
            )
            crashed = settle(item, tried, attempts, "crashed", self._policy, error=type(exc).__name__)
            await self._settle(item, slot, probe, crashed)
            return
        await self._settle(item, slot, probe, settle(item, tried, attempts, "answered", self._policy))

    async def _settle(self, item: ClaimedDelivery, slot: Slot, probe: bool, settlement: Settlement) -> None:
        """The one place a round ends: the breaker (and the probe) learn, the outcome is queued with
        its slot, or the lease and the slot are given back."""
        lane = slot.lane
        try:
            self._attempts.conclude(lane, item, settlement, probe)
            if settlement.result is not None:
                self._writer.put(settlement.result, slot)
            else:
                await self._release_lease(item)
        finally:
            # Queued with its outcome, the slot is released once that is written; on any other
            # path (a released lease) it is released here.
            if not slot.queued:
                slot.release()

    async def _release_lease(self, item: ClaimedDelivery) -> None:
        try:
            async with self._pool.acquire() as conn:
                await journal.release_leases(conn, self._owner, [(item.event_id, item.subscriber)])
        except DB_ERRORS:
            pass  # the lease expires on its own


@dataclass(frozen=True, slots=True)
class SendTestResult:
    """What `send-test` saw: the HTTP status (None when no response), the time, an excerpt."""

    event_id: UUID
    status: int | None
    elapsed_s: float
    excerpt: str


async def send_test(
    sender: Sender, subscriber: SubscriberSettings, delivery: DeliverySettings, body: bytes, event_type: str
) -> SendTestResult:
    """One signed request, as a real first attempt is sent, marked `x-it-test: true`."""
    event_id = UUID(str(codec.loads(body)["event_id"]))
    contract = REGISTRY.get(event_type)
    headers = signing.headers(
        event_id=str(event_id),
        event_type=event_type,
        body=body,
        secrets=subscriber.signing_secrets(),
        attempt=1,
        at=datetime.now(UTC),
        cloudevents=subscriber.format == "cloudevents",
        publisher=contract.publisher if contract else "",
    ) | {"x-it-test": "true"}
    started = time.perf_counter()
    try:
        response = await sender.post(
            str(subscriber.url), body, headers, subscriber.timeout_s or delivery.timeout_s
        )
    except SendError as exc:
        return SendTestResult(event_id, None, time.perf_counter() - started, str(exc))
    shown = excerpt(response.body, EXCERPT_BYTES, subscriber.signing_secrets())
    return SendTestResult(event_id, response.status, time.perf_counter() - started, shown)
