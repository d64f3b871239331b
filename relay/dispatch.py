"""Deliver: claim due deliveries per subscriber, POST them signed, write outcomes in batches.

Each subscriber has its own lane (claim loop, in-flight limit, circuit breaker), so a slow or dead
subscriber never holds up another; `delivery.concurrency` bounds all lanes together. Claims are
leases: if this process dies, its leases expire and any instance claims the rows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_fixed
from tenacity.stop import stop_base

from relay import journal, retry, signing
from relay.aio import sleep_unless, wait_any
from relay.circuit import CircuitBreaker
from relay.contracts import REGISTRY
from relay.database import DB_ERRORS
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.sender import Sender, SendError
from relay.settings import DeliverySettings, SubscriberSettings

log = get_logger("relay.dispatch")

_STATUS = {"delivered": "delivered", "retry": "pending", "dead": "dead"}


def _quick_retry(attempt: Attempt) -> bool:
    # A Retry-After is the subscriber asking for time: straight to the durable schedule.
    return attempt.outcome == "retry" and attempt.retry_after_s is None


class _StopWhenSet(stop_base):
    """tenacity stop condition on an asyncio.Event: no quick retries once shutdown began."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: retry.Outcome
    status: int | None
    error: str | None
    retry_after_s: float | None


@dataclass(slots=True)
class Lane:
    name: str
    url: str
    secrets: list[str]
    timeout_s: float
    max_in_flight: int
    cloudevents: bool
    breaker: CircuitBreaker
    # The lane's metric children, looked up once rather than per delivery.
    duration: Any = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    circuit_reported_open: bool = False
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


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
    ) -> None:
        self._pool = pool
        self._settings = delivery
        self._sender = sender
        self._metrics = metrics
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
            )
            for name, conf in subscribers.items()
            if conf.enabled
        }
        for lane in self.lanes.values():
            lane.duration = metrics.delivery_duration.labels(lane.name)
            lane.outcomes = {
                o: metrics.deliveries.labels(lane.name, o) for o in ("delivered", "retry", "dead")
            }
        self._in_flight = 0
        self._tasks: dict[asyncio.Task[None], tuple[UUID, str]] = {}
        self._results: list[journal.DeliveryResult] = []
        self._results_ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self, subscribers: Iterable[str] | None = None) -> None:
        names = self.lanes.keys() if subscribers is None else subscribers
        for name in names:
            lane = self.lanes.get(name)
            if lane is not None:
                lane.wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping`; then finish in-flight work within the grace period."""
        lanes = [
            asyncio.create_task(self._guarded_lane(lane, stopping), name=f"lane-{lane.name}")
            for lane in self.lanes.values()
        ]
        flusher = asyncio.create_task(self._flush_loop(), name="results-flusher")
        try:
            await stopping.wait()
        finally:
            self._stopping.set()
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            await self._drain()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush_with_retry(deadline=time.monotonic() + 10)

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

    async def _guarded_lane(self, lane: Lane, stopping: asyncio.Event) -> None:
        """A lane that fails unexpectedly is logged and started again; it never silently stops."""
        while not stopping.is_set():
            try:
                await self._lane_loop(lane, stopping)
            except Exception:
                log.exception("delivery lane failed, restarting it", subscriber=lane.name)
                await sleep_unless(stopping, 1.0)

    async def _lane_loop(self, lane: Lane, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            lane.wake.clear()
            now = time.monotonic()
            allowed = lane.breaker.allowed(now)
            limit = min(
                lane.max_in_flight - lane.in_flight,
                self._settings.concurrency - self._in_flight,
                self._settings.batch_size,
            )
            if allowed is not None:
                limit = min(limit, allowed)
            if limit <= 0:
                wait = lane.breaker.seconds_until_probe(now) or self._poll_interval_s
                await wait_any(lane.wake, stopping, within=wait)
                continue
            try:
                async with self._pool.acquire() as conn:
                    claimed = await journal.claim_deliveries(
                        conn, lane.name, self._owner, limit, self._settings.lease_s
                    )
                    due_in = (
                        None if len(claimed) == limit else await journal.seconds_until_due(conn, lane.name)
                    )
            except DB_ERRORS as exc:
                log.warning(
                    "claiming deliveries failed, will retry", subscriber=lane.name, error=type(exc).__name__
                )
                await sleep_unless(stopping, 1.0)
                continue
            if allowed == 1 and claimed:
                lane.breaker.claimed_probe()
            for item in claimed:
                self._start(lane, item)
            if len(claimed) == limit:
                continue
            timeout = (
                self._poll_interval_s if due_in is None else min(max(due_in, 0.005), self._poll_interval_s)
            )
            await wait_any(lane.wake, stopping, within=timeout)

    # A claimed row holds its lane's slot until its outcome is written (or its lease released), not
    # just while its request runs: so at most max_in_flight rows per subscriber are ever leased and
    # unrecorded, which bounds what a crash can make us send twice.
    def _start(self, lane: Lane, item: journal.ClaimedDelivery) -> None:
        lane.in_flight += 1
        self._in_flight += 1
        task = asyncio.create_task(self._deliver(lane, item))
        self._tasks[task] = (item.event_id, lane.name)
        task.add_done_callback(self._tasks.pop)

    def _settled(self, subscriber: str, count: int = 1) -> None:
        lane = self.lanes[subscriber]
        was_full = self._in_flight >= self._settings.concurrency
        lane.in_flight -= count
        self._in_flight -= count
        lane.wake.set()
        if was_full:
            self.wake()

    async def _deliver(self, lane: Lane, item: journal.ClaimedDelivery) -> None:
        attempts = item.attempts

        async def attempt_once() -> Attempt:
            nonlocal attempts
            attempts += 1
            return await self._attempt(lane, item, attempts)

        try:
            last = await attempt_once()
            if _quick_retry(last) and self._settings.inprocess_retries and not self._stopping.is_set():
                # Only a failure pays for tenacity; the common first-attempt success does not.
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self._settings.inprocess_retries) | _StopWhenSet(self._stopping),
                    wait=wait_fixed(self._settings.inprocess_retry_wait_s),
                    retry=retry_if_result(_quick_retry),
                    retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
                )
                await asyncio.sleep(self._settings.inprocess_retry_wait_s)
                last = await retrying(attempt_once)
        except asyncio.CancelledError:
            if attempts == item.attempts:
                await self._release([(item.event_id, lane.name)])
                self._settled(lane.name)
            else:
                # Attempted but unfinished at shutdown: record the attempts, retry at once.
                self._results.append(
                    journal.DeliveryResult(
                        item.event_id,
                        lane.name,
                        "pending",
                        attempts,
                        item.failed_rounds,
                        0.0,
                        None,
                        "interrupted by shutdown",
                    )
                )
            raise
        except Exception:
            # A bug, not a delivery outcome: keep the lane going; the lease expires and it is retried.
            log.exception("delivery failed unexpectedly", event_id=str(item.event_id), subscriber=lane.name)
            self._settled(lane.name)
            return
        try:
            self._record(lane, item, last, attempts)
        except Exception:
            # A bug, not an outcome: the lane keeps going; the lease expires and the row is retried.
            log.exception(
                "recording a delivery outcome failed", event_id=str(item.event_id), subscriber=lane.name
            )
            self._settled(lane.name)

    def _record(self, lane: Lane, item: journal.ClaimedDelivery, last: Attempt, attempts: int) -> None:
        """Decide the delivery's next state, count it, log it if it failed, queue the outcome."""
        decision = retry.decide(
            last.outcome,
            item.failed_rounds,
            self._settings.retry_schedule_s,
            retry_after=last.retry_after_s,
            retry_after_max=self._settings.retry_after_max_s,
            jitter=self._settings.jitter,
        )
        lane.breaker.record(last.outcome != "retry", time.monotonic())
        is_open = lane.breaker.state != "closed"  # half-open (probing) is not closed yet
        if is_open != lane.circuit_reported_open:
            lane.circuit_reported_open = is_open
            self._metrics.circuit_open.labels(lane.name).set(1 if is_open else 0)
            log.warning("circuit " + ("opened: claims paused" if is_open else "closed"), subscriber=lane.name)
        lane.outcomes[decision.outcome].inc()
        if decision.outcome == "delivered":
            # The hot path: no log line per success (metrics and the delivery log record it).
            self._metrics.event_latency.observe((datetime.now(UTC) - item.journaled_at).total_seconds())
        else:
            fields = {
                "event_id": str(item.event_id),
                "event_type": item.event_type,
                "subscriber": lane.name,
                "attempt": attempts,
                "status": last.status,
                "error": last.error,
            }
            if decision.outcome == "retry":
                log.info("delivery failed, will retry", retry_in_s=round(decision.wait_s or 0, 1), **fields)
            else:
                log.warning("delivery dead", **fields)
        self._results.append(
            journal.DeliveryResult(
                item.event_id,
                lane.name,
                _STATUS[decision.outcome],
                attempts,
                decision.failed_rounds,
                decision.wait_s,
                last.status,
                last.error,
            )
        )
        self._results_ready.set()

    async def _attempt(self, lane: Lane, item: journal.ClaimedDelivery, attempt: int) -> Attempt:
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
            return Attempt("retry", None, str(exc), None)
        finally:
            lane.duration.observe(time.perf_counter() - started)
        outcome = retry.classify(response.status)
        if outcome == "delivered":
            return Attempt(outcome, response.status, None, None)
        wait = retry.retry_after_s(response.headers, now) if outcome == "retry" else None
        return Attempt(outcome, response.status, f"HTTP {response.status}", wait)

    async def _release(self, keys: list[tuple[UUID, str]]) -> None:
        try:
            async with self._pool.acquire() as conn:
                await journal.release_leases(conn, self._owner, keys)
        except DB_ERRORS:
            pass  # the lease expires on its own

    async def _flush_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            # A moment's linger turns a burst of outcomes into one round trip.
            await asyncio.sleep(0.002)
            self._results_ready.clear()
            try:
                await self._flush_with_retry(deadline=None)
            except Exception:
                # Outcomes stay queued: losing the flusher would stall every lane.
                log.exception("writing delivery outcomes failed unexpectedly, will retry")
                await asyncio.sleep(0.5)
                self._results_ready.set()

    async def _flush_with_retry(self, deadline: float | None) -> None:
        while self._results:
            batch = self._results[:1000]
            try:
                async with self._pool.acquire() as conn:
                    await journal.write_results(conn, batch, self._owner)
            except DB_ERRORS as exc:
                log.warning(
                    "writing delivery outcomes failed, will retry",
                    error=type(exc).__name__,
                    pending=len(self._results),
                )
                if deadline is not None and time.monotonic() > deadline:
                    # Unwritten outcomes are redelivered after their leases expire: at-least-once.
                    self._results.clear()
                    return
                await asyncio.sleep(0.5)
                continue
            del self._results[: len(batch)]
            for result in batch:
                self._settled(result.subscriber)
