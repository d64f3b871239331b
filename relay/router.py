"""Route journaled events: validate, redact, and write one delivery row per served subscriber.

A batch of pending events is claimed FOR UPDATE SKIP LOCKED; its routing (deliveries, the
validated payload, rejections) commits in that same transaction, so a crash leaves the events
pending for any instance to take.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol
from uuid import UUID

from relay import codec, filters
from relay.contracts import UnknownFields
from relay.database import DB_ERRORS
from relay.gateway import RoutingPort
from relay.ingest import route, unroutable
from relay.lanes import Reservation
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import ClaimedDelivery, PendingEvent, Rejection, RoutedEvent
from relay.routing_queries import Written
from relay.supervisor import Loop
from relay.tracing import RoutingSpans, Tracing, about

log = get_logger("relay.router")


class Handoff(Protocol):
    """Where a routing's deliveries may go without a claim: slots of the lanes that are caught up."""

    def reserve(self, wanted: Mapping[str, int]) -> Reservation: ...


class Served(Protocol):
    """A subscriber served here, as the router sees it: its filter (None: every event)."""

    @property
    def filter(self) -> Mapping[str, Any] | None: ...


def _filters_of(configured: Mapping[str, Served] | Iterable[str]) -> dict[str, Mapping[str, Any]]:
    if not isinstance(configured, Mapping):
        return {}
    return {name: s.filter for name, s in configured.items() if s.filter is not None}


ROUTING_LINGER_S = 0.002
# How long a router claims with locks after another instance took events it had read: unlocked
# routing (two round trips) pays off alone; with company, each would judge every event.
CONTENDED_S = 30.0


class Router:
    def __init__(
        self,
        *,
        store: RoutingPort,
        metrics: Metrics,
        unknown_fields: UnknownFields,
        configured: Mapping[str, Served] | Iterable[str],
        on_routed: Callable[[set[str]], None],
        batch_size: int = 200,
        poll_interval_s: float = 5.0,
        tracing: Tracing | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._unknown_fields = unknown_fields
        self._configured = frozenset(configured)
        self._filters = _filters_of(configured)
        self._on_routed = on_routed
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._warned: set[str] = set()
        self._tracing = tracing
        self._last_taken = 0
        self._handoff = handoff
        # The batch's subscribers left out per event (counted only for the events it takes).
        self._dropped: list[tuple[UUID, str, Literal["unconfigured", "filtered"]]] = []
        # Until then, batches are claimed with locks: another instance was seen routing them too.
        self._exclusive_until = 0.0
        self._said_contended = False

    def serve(self, subscribers: Mapping[str, Served] | Iterable[str]) -> None:
        """From the next batch on, create deliveries for exactly these subscribers, each through
        its filter (a reload)."""
        self._configured = frozenset(subscribers)
        self._filters = _filters_of(subscribers)
        self._warned -= self._configured

    def wake(self) -> None:
        self._wake.set()

    def loop(self) -> Loop:
        return Loop("router", self.step, self._poll_interval_s, wake=self._wake)

    async def step(self) -> float | None:
        """Route one batch; at once again while batches come full, else wait to be woken."""
        if self._last_taken > 1:
            # Events are committing faster than one per routing (a burst): a moment's wait lets the
            # next few join this batch. A routing's cost is mostly per statement (bench/pg_cost.py:
            # ~290 µs of PostgreSQL per delivery in batches of 1, ~77 in batches of 8); a steady
            # trickle routes one event at a time and never waits.
            await asyncio.sleep(ROUTING_LINGER_S)
        self._last_taken = await self.route_batch()
        return 0 if self._last_taken >= self._batch_size else None

    async def _give_back(self, owner: str, rows: Sequence[ClaimedDelivery]) -> None:
        """Rows leased for a lane that could no longer take them: pending again at once (if this
        fails, their leases run out and they are claimed then)."""
        try:
            await self._store.release_leases(owner, [(r.event_id, r.subscriber) for r in rows])
        except DB_ERRORS as exc:
            log.warning("giving back leases failed; they run out", error=type(exc).__name__, rows=len(rows))

    def _judge(
        self, events: Sequence[PendingEvent], spans: RoutingSpans | None
    ) -> tuple[list[RoutedEvent], list[tuple[UUID, Rejection]]]:
        """Each event validated and routed to the subscribers served here, or rejected."""
        routed: list[RoutedEvent] = []
        rejected: list[tuple[UUID, Rejection]] = []
        for event in events:
            if spans is not None:
                spans.start(event.event_id, event.traceparent)
            try:
                outcome = route(event.event_id, event.payload, self._unknown_fields)
            except Exception as exc:
                # One event that breaks routing is rejected, visibly; it never blocks the batch.
                log.exception("routing an event failed", event_id=str(event.event_id))
                outcome = unroutable(event.event_id, exc)
            if isinstance(outcome, RoutedEvent):
                served = self._served_only(outcome)
                routed.append(served if spans is None else spans.routed(served))
            else:
                rejected.append((event.event_id, outcome))
                if spans is not None:
                    spans.rejected(event.event_id, outcome)
        return routed, rejected

    def _served_only(self, event: RoutedEvent) -> RoutedEvent:
        """The event with only the subscribers served here and whose filter it passes: one not
        configured gets no delivery row (a row nobody delivers would wait, and keep its event,
        forever), nor one whose filter drops it (counted in it_relay_events_filtered_total)."""
        unserved = [s for s in event.subscribers if s not in self._configured]
        if not unserved:
            return self._filtered(event)
        for name in unserved:
            self._dropped.append((event.event_id, name, "unconfigured"))
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "subscriber not served here: its events are journaled but not delivered to it "
                    "(configure it, then `it-relay backfill`)",
                    subscriber=name,
                )
        return self._filtered(
            replace(event, subscribers=[s for s in event.subscribers if s in self._configured])
        )

    def _filtered(self, event: RoutedEvent) -> RoutedEvent:
        """Each subscriber's filter judged once, here, on the validated and redacted body."""
        judged = [(s, f) for s in event.subscribers if (f := self._filters.get(s)) is not None]
        if not judged:
            return event
        payload = codec.loads(event.body)
        dropped = {s for s, condition in judged if not filters.matches(condition, payload)}
        if not dropped:
            return event
        for name in dropped:
            self._dropped.append((event.event_id, name, "filtered"))
        return replace(event, subscribers=[s for s in event.subscribers if s not in dropped])

    async def route_batch(self) -> int:
        """Route one batch; returns how many events it took. The deliveries that caught-up lanes
        have room for are leased in the same statement and sent as soon as it commits."""
        reservation: Reservation | None = None
        exclusive = time.monotonic() < self._exclusive_until
        self._dropped = []
        try:
            async with self._store.routing(self._batch_size, exclusive) as batch:
                events = batch.events
                if not events:
                    return 0
                # One span per event, continuing its producer's trace; ended once the routing committed.
                spans = self._tracing.routing() if self._tracing is not None else None
                routed, rejected = self._judge(events, spans)
                routed_to = Counter(s for r in routed for s in r.subscribers)
                if self._handoff is not None and routed:
                    reservation = self._handoff.reserve(routed_to)
                if reservation is not None:
                    written = await batch.write(
                        routed,
                        rejected,
                        reservation.sizes(),
                        reservation.owner,
                        reservation.lease_s,
                        reservation.ordered,
                    )
                else:
                    written = await batch.write(routed, rejected)
        except BaseException:
            if reservation is not None:
                reservation.cancel()  # the slots go back (leases a lost commit made run out)
            raise
        self._count_taken(events, written, spans)
        routed_to = Counter(s for r in routed if r.event_id in written.routed for s in r.subscribers)
        handed = Counter(item.subscriber for item in written.leased)
        if reservation is not None:
            # Judged against what was taken: rows another instance routed are not left behind.
            reservation.wanted = dict(routed_to)
            unstarted = reservation.hand(written.leased)
            if unstarted:
                await self._give_back(reservation.owner, unstarted)
                handed -= Counter(item.subscriber for item in unstarted)
        # A lane is woken to claim only when routing left it rows: what it was handed is under way.
        subscribers = {s for s, n in routed_to.items() if handed[s] < n}
        for event_id, rejection in rejected:
            if event_id not in written.rejected:
                continue
            self._metrics.events_rejected.labels(rejection.reason).inc()
            with about(spans, event_id):
                log.warning(
                    "event rejected",
                    event_id=str(event_id),
                    event_type=rejection.event_type,
                    reason=rejection.reason,
                    errors=list(rejection.errors)[:10],
                )
        if spans is not None:
            spans.end()
        if subscribers:
            self._on_routed(subscribers)
        return len(events)

    def _count_taken(
        self, events: Sequence[PendingEvent], written: Written, spans: RoutingSpans | None
    ) -> None:
        """Count what this routing took; events another instance routed first are its to count,
        and while that happens, batches are taken with locks (no two instances judge one event)."""
        taken = written.routed | written.rejected
        lost = [e.event_id for e in events if e.event_id not in taken]
        for event in events:
            if event.event_id in taken:
                self._metrics.events_received.labels(event.source).inc()
        for event_id, name, why in self._dropped:
            if event_id in written.routed:
                metric = (
                    self._metrics.unconfigured if why == "unconfigured" else self._metrics.events_filtered
                )
                metric.labels(name).inc()
        if not lost:
            return
        if spans is not None:
            spans.forget(lost)
        if time.monotonic() >= self._exclusive_until:
            # Said once at info (several instances is a normal setup), then at debug each time.
            (log.debug if self._said_contended else log.info)(
                "another instance routed some of these events first: taking batches with locks for a while",
                events=len(lost),
                seconds=CONTENDED_S,
            )
            self._said_contended = True
        self._exclusive_until = time.monotonic() + CONTENDED_S
