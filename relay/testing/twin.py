"""The in-memory twin of the gateway: the same ports, kept in dicts, so the loops run without a database.

It keeps the journal's rules — claims in due order with leases that expire, an attempt counted at
claim and given back on release, outcomes written only by the lease holder, routing atomic per
batch — and tests/test_gateway_contract.py runs the same calls on it and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from relay import ratelimit
from relay.contracts import Accepted, parse_event
from relay.gateway import RoutingBatch
from relay.ingest import entity_key
from relay.model import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryResult,
    DeliveryStatus,
    EventStatus,
    HeldEntities,
    Instance,
    PendingEvent,
    Rejection,
    RoutedEvent,
    Source,
    SubscriberGauges,
    SubscriberState,
)
from relay.ratelimit import TokenGrant
from relay.routing_queries import Written
from relay.testing.turns import entity_waits, hold_stragglers, ordered_turn


@dataclass(slots=True)
class TwinEvent:
    event_id: UUID
    event_type: str
    payload: str
    source: Source
    seq: int
    created_at: datetime
    status: EventStatus = "pending"
    locked: bool = False
    entity_key: str | None = None
    # Bumped by every change of the row (PostgreSQL's xmin): a routing takes only what it read.
    version: int = 0


@dataclass(slots=True)
class TwinDelivery:
    event_id: UUID
    subscriber: str
    event_type: str
    seq: int
    next_attempt_at: float
    status: DeliveryStatus = "pending"
    attempts: int = 0
    failed_rounds: int = 0
    entity_key: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    holds: bool = False
    last_status: int | None = None
    last_error: str | None = None
    history: list[AttemptRecord] = field(default_factory=list)


class _TwinBatch:
    def __init__(self, twin: Twin, events: list[TwinEvent], exclusive: bool) -> None:
        self._twin = twin
        self._held = events
        self._exclusive = exclusive
        # As read, like PostgreSQL's rows: a later change is not seen here, only by `_takes`.
        self._events = [
            PendingEvent(event_id=e.event_id, payload=e.payload, source=e.source, version=e.version)
            for e in events
        ]
        self._read = {e.event_id: e.version for e in events}
        self.pending: list[Callable[[], None]] = []

    @property
    def events(self) -> Sequence[PendingEvent]:
        return self._events

    def _takes(self, event_id: UUID) -> bool:
        """Still pending and unchanged since read, and not held by another routing."""
        e = self._twin.events[event_id]
        return (
            e.status == "pending" and e.version == self._read[event_id] and (self._exclusive or not e.locked)
        )

    async def write(
        self,
        routed: Sequence[RoutedEvent],
        rejected: Sequence[tuple[UUID, Rejection]],
        wanted: Mapping[str, int] | None = None,
        owner: str = "",
        lease_s: float = 0.0,
        ordered: Collection[str] = (),
    ) -> Written:
        routed = [r for r in routed if self._takes(r.event_id)]
        rejected = [(e, r) for e, r in rejected if self._takes(e)]
        left = dict(wanted or {})
        leased: list[ClaimedDelivery] = []
        for r in sorted(routed, key=lambda r: self._twin.events[r.event_id].seq):
            event = self._twin.events[r.event_id]
            for s in r.subscribers:
                # As mark_routed: each of the subscriber's rows takes a place, leased or not.
                left[s] = left.get(s, 0) - 1
                if (
                    left[s] < 0
                    or (r.event_id, s) in self._twin.deliveries
                    or self._twin.holding(s, r)
                    or (s in ordered and not self._twin.heads_at_routing(s, r))
                ):
                    continue
                leased.append(
                    ClaimedDelivery(
                        event_id=r.event_id,
                        subscriber=s,
                        event_type=r.event_type,
                        attempts=1,
                        failed_rounds=0,
                        body=r.body,
                        journaled_at=event.created_at,
                        entity_key=r.entity_key,
                        organization_id=r.organization_id,
                        sequence=event.seq,
                    )
                )

        def commit() -> None:
            self._twin.apply_routing(routed, rejected)
            for c in leased:
                d = self._twin.deliveries[(c.event_id, c.subscriber)]
                d.lease_owner, d.lease_expires_at, d.attempts = owner, self._twin.clock() + lease_s, 1

        if self._exclusive:
            self.pending.append(commit)  # commits only when the block ends cleanly
        else:
            commit()
        return Written(frozenset(r.event_id for r in routed), frozenset(e for e, _ in rejected), leased)


class Twin:
    """Every port of `relay.gateway.Gateway`, in memory; `clock` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.events: dict[UUID, TwinEvent] = {}
        self.deliveries: dict[tuple[UUID, str], TwinDelivery] = {}
        self.walks: dict[str, str] = {}  # as Gateway.walks
        self.rejections: list[Rejection] = []
        self.states: dict[str, SubscriberState] = {}
        self.schema_is_current = True
        self.instances: dict[str, Instance] = {}
        # Each rate-limited subscriber's next free slot (relay.ratelimit), on `clock`.
        self.next_slot: dict[str, float] = {}
        self._seq = itertools.count()

    # ─── producing (what publish() and routing would have written) ──────────────────────────────

    def journal(self, event_id: UUID, event_type: str, payload: str, source: Source = "publish") -> None:
        """An event as publish() journals it: pending, for the router, its entity named."""
        accepted = parse_event(payload, "keep")
        entity = entity_key(accepted) if isinstance(accepted, Accepted) else None
        self.events.setdefault(
            event_id,
            TwinEvent(
                event_id, event_type, payload, source, next(self._seq), datetime.now(UTC), entity_key=entity
            ),
        )

    # ─── DeliveryPort ──────────────────────────────────────────────────────────────────────────

    async def claim_deliveries(
        self, subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
    ) -> list[ClaimedDelivery]:
        now = self.clock()
        due = [
            d
            for d in self.deliveries.values()
            if d.subscriber == subscriber
            and (d.status == "pending" or (ordered and d.status == "held"))
            and d.next_attempt_at <= now
            and (d.lease_expires_at is None or d.lease_expires_at < now)
            and (not ordered or (self._is_head(d) and not self._holds(subscriber, d.entity_key)))
        ]
        if ordered:
            due, self.walks[subscriber] = ordered_turn(due, self.walks.get(subscriber, ""), limit)
        else:
            due = sorted(due, key=lambda d: (d.next_attempt_at, d.seq))[:limit]
        claimed = []
        for d in due:
            d.lease_owner, d.lease_expires_at, d.attempts = owner, now + lease_s, d.attempts + 1
            d.status = "pending"  # a held row with nothing holding it (as claim_ordered)
            event = self.events[d.event_id]
            claimed.append(
                ClaimedDelivery(
                    event_id=d.event_id,
                    subscriber=subscriber,
                    event_type=d.event_type,
                    attempts=d.attempts,
                    failed_rounds=d.failed_rounds,
                    body=event.payload.encode(),
                    journaled_at=event.created_at,
                    entity_key=event.entity_key,
                    sequence=event.seq,
                )
            )
        return claimed

    def _is_head(self, d: TwinDelivery) -> bool:
        """No earlier delivery of its entity to its subscriber unfinished, no earlier event unrouted."""
        seq = self.events[d.event_id].seq
        return not entity_waits(
            self, d.subscriber, d.entity_key, seq, lambda o: self.events[o.event_id].seq < seq
        )

    async def seconds_until_due(self, subscriber: str) -> float | None:
        pending = [
            max(d.next_attempt_at, d.lease_expires_at or d.next_attempt_at)
            for d in self.deliveries.values()
            if d.subscriber == subscriber and d.status == "pending"
        ]
        return min(pending) - self.clock() if pending else None

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
        for key in keys:
            d = self.deliveries.get(key)
            if d is not None and d.lease_owner == owner and d.status == "pending":
                d.lease_owner, d.lease_expires_at, d.attempts = None, None, d.attempts - 1

    async def write_results(self, results: Sequence[DeliveryResult], owner: str) -> int:
        written = 0
        now = self.clock()
        for r in results:
            d = self.deliveries.get((r.event_id, r.subscriber))
            if d is None or d.lease_owner != owner:
                continue  # another instance holds it now, and so its history
            d.status, d.attempts, d.failed_rounds = r.status, r.attempts, r.failed_rounds
            if r.retry_in_s is not None:
                d.next_attempt_at = now + r.retry_in_s
            d.last_status, d.last_error = r.last_status, r.last_error
            d.lease_owner = d.lease_expires_at = None
            d.holds = r.status == "dead" and r.hold and d.entity_key is not None
            d.history.extend(r.history)
            if d.holds:
                for later in self.deliveries.values():
                    if (
                        later.subscriber == d.subscriber
                        and later.entity_key == d.entity_key
                        and self.events[later.event_id].seq > self.events[d.event_id].seq
                        and later.status == "pending"
                        and later.lease_owner is None
                    ):
                        later.status = "held"
            written += 1
        return written

    async def subscriber_states(self) -> dict[str, SubscriberState]:
        return dict(self.states)

    async def take_tokens(self, subscriber: str, want: int, rate: float, horizon_s: float) -> TokenGrant:
        now = self.clock()
        granted, after = ratelimit.grant(self.next_slot.get(subscriber, now), now, want, rate, horizon_s)
        self.next_slot[subscriber] = after
        return granted

    async def return_tokens(self, subscriber: str, mark: datetime | float, unused: int, rate: float) -> bool:
        before = self.next_slot.get(subscriber)
        if before is None or not isinstance(mark, float):
            return False
        self.next_slot[subscriber] = ratelimit.given_back(before, mark, unused, rate)
        return self.next_slot[subscriber] != before

    async def hold_tokens(self, subscriber: str, seconds: float) -> None:
        now = self.clock()
        self.next_slot[subscriber] = ratelimit.held(self.next_slot.get(subscriber, now), now, seconds)

    async def set_circuit(self, subscriber: str, state: str) -> None:
        old = self.states.get(subscriber)
        self.states[subscriber] = SubscriberState(
            paused=old.paused if old else None,
            changed_at=old.changed_at if old else None,
            changed_by=old.changed_by if old else None,
            circuit=state,
            circuit_changed_at=datetime.now(UTC),
        )

    def set_paused(self, subscriber: str, paused: bool, by: str = "test") -> None:
        old = self.states.get(subscriber)
        self.states[subscriber] = SubscriberState(
            paused=paused,
            changed_at=datetime.now(UTC),
            changed_by=by,
            circuit=old.circuit if old else "closed",
            circuit_changed_at=old.circuit_changed_at if old else None,
        )

    # ─── RoutingPort ───────────────────────────────────────────────────────────────────────────

    @asynccontextmanager
    async def routing(self, limit: int, exclusive: bool = True) -> AsyncIterator[RoutingBatch]:
        held = sorted(
            (e for e in self.events.values() if e.status == "pending" and not (exclusive and e.locked)),
            key=lambda e: e.seq,
        )[:limit]
        batch = _TwinBatch(self, held, exclusive)
        if not exclusive:
            yield batch
            return
        for e in held:
            e.locked = True
        try:
            yield batch
            for commit in batch.pending:
                commit()
        finally:
            for e in held:
                e.locked = False

    def holding(self, subscriber: str, event: RoutedEvent) -> bool:
        """A dead head of the event's entity holds the subscriber's later deliveries (on_exhausted = "hold")."""
        return self._holds(subscriber, event.entity_key)

    def _holds(self, subscriber: str, key: str | None) -> bool:
        return key is not None and any(
            o.holds and o.subscriber == subscriber and o.entity_key == key for o in self.deliveries.values()
        )

    def heads_at_routing(self, subscriber: str, event: RoutedEvent) -> bool:
        """As mark_routed for an ordered subscriber: nothing of the entity unfinished or unrouted before it."""
        seq = self.events[event.event_id].seq
        return not entity_waits(self, subscriber, event.entity_key, seq, lambda _o: True)

    def apply_routing(
        self, routed: Sequence[RoutedEvent], rejected: Sequence[tuple[UUID, Rejection]]
    ) -> None:
        now = self.clock()
        for r in routed:
            event = self.events[r.event_id]
            event.status, event.payload, event.entity_key = "routed", r.body.decode(), r.entity_key
            event.version += 1
            for s in r.subscribers:
                held = self.holding(s, r)
                self.deliveries.setdefault(
                    (r.event_id, s),
                    TwinDelivery(
                        r.event_id,
                        s,
                        r.event_type,
                        event.seq,
                        now,
                        status="held" if held else "pending",
                        entity_key=r.entity_key,
                    ),
                )
        for event_id, rejection in rejected:
            self.events[event_id].status = "rejected"
            self.events[event_id].version += 1
            self.rejections.append(rejection)

    # ─── HousekeepingPort ───────────────────────────────────────────────────────────────────────

    async def schema_current(self) -> bool:
        return self.schema_is_current

    async def backlog(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.deliveries.values():
            if d.status == "pending":
                counts[d.subscriber] = counts.get(d.subscriber, 0) + 1
        return counts

    async def entities_held(self) -> dict[str, HeldEntities]:
        held: dict[str, HeldEntities] = {}
        for d in self.deliveries.values():
            if d.holds:
                old = held.get(d.subscriber)
                held[d.subscriber] = HeldEntities(entities=(old.entities if old else 0) + 1, oldest_s=0.0)
        return held

    async def hold_stragglers(self) -> int:
        return hold_stragglers(self)

    async def subscriber_gauges(self) -> dict[str, SubscriberGauges]:
        now = datetime.now(UTC)
        out: dict[str, SubscriberGauges] = {}
        for d in self.deliveries.values():
            if d.status not in ("pending", "dead"):
                continue
            old = out.get(d.subscriber, SubscriberGauges(pending=0, dead=0, oldest_pending_s=0.0))
            age = (now - self.events[d.event_id].created_at).total_seconds() if d.status == "pending" else 0.0
            out[d.subscriber] = SubscriberGauges(
                pending=old.pending + (d.status == "pending"),
                dead=old.dead + (d.status == "dead"),
                oldest_pending_s=max(old.oldest_pending_s, age),
            )
        return out

    async def unrouted_events(self) -> int:
        return sum(1 for e in self.events.values() if e.status == "pending")

    async def instance_heartbeat(self, me: Instance, alive_within_s: float) -> int:
        self.instances[me.owner] = me
        return len(self.instances)

    async def instance_gone(self, owner: str) -> None:
        self.instances.pop(owner, None)
