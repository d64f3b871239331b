"""The loops' door to PostgreSQL: small ports (what each loop needs) and one gateway over the pool.

Each loop depends on the Protocol of the few operations it uses, never on a connection; the
gateway runs them through `relay.journal`'s named queries, and `relay.testing.twin` satisfies the
same ports in memory (tests/test_gateway_contract.py holds the two to the same results).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Protocol
from uuid import UUID

import asyncpg

from relay import journal, migrate, routing_queries
from relay.database import Conn
from relay.errors import SchemaError
from relay.event_cache import EventCache
from relay.model import (
    ClaimedDelivery,
    DeliveryResult,
    HeldEntities,
    Instance,
    NotifiedEvent,
    PendingEvent,
    Rejection,
    RoutedEvent,
    SubscriberGauges,
    SubscriberState,
)
from relay.ratelimit import TokenGrant
from relay.routing_queries import Written


class DeliveryPort(Protocol):
    """What the delivery lanes, the outcome writer and the lane states need."""

    async def claim_deliveries(
        self, subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
    ) -> list[ClaimedDelivery]:
        """Due deliveries leased to `owner` (an attempt counted); `ordered`: each entity's head only."""
        ...

    async def seconds_until_due(self, subscriber: str) -> float | None: ...

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None: ...

    async def write_results(self, results: Sequence[DeliveryResult], owner: str) -> int: ...

    async def subscriber_states(self) -> dict[str, SubscriberState]: ...

    async def set_circuit(self, subscriber: str, state: str) -> None: ...

    async def take_tokens(self, subscriber: str, want: int, rate: float, horizon_s: float) -> TokenGrant:
        """Up to `want` slots of the subscriber's shared rate limit (relay.ratelimit)."""
        ...

    async def return_tokens(self, subscriber: str, mark: datetime | float, unused: int, rate: float) -> bool:
        """Give back the last `unused` slots of the grant that left the bucket at `mark`; False if
        a later grant was made meanwhile (then they stay spent)."""
        ...

    async def hold_tokens(self, subscriber: str, seconds: float) -> None:
        """No slot of the subscriber's before `seconds` from now (a 429 with Retry-After)."""
        ...


class RoutingBatch(Protocol):
    """Pending events read for a routing (held by this instance until the batch ends when it is
    exclusive); their routing written inside it, for those still pending as read."""

    @property
    def events(self) -> Sequence[PendingEvent]: ...

    async def write(
        self,
        routed: Sequence[RoutedEvent],
        rejected: Sequence[tuple[UUID, Rejection]],
        wanted: Mapping[str, int] | None = None,
        owner: str = "",
        lease_s: float = 0.0,
        ordered: Collection[str] = (),
    ) -> Written:
        """Write the routing of the events still pending and unchanged since read (another
        instance may have taken some); up to `wanted[subscriber]` new deliveries each come back
        leased to `owner` for `lease_s` (first attempt counted, journal order), to an `ordered`
        subscriber only its entities' heads."""
        ...


class RoutingPort(Protocol):
    def routing(self, limit: int, exclusive: bool = True) -> AbstractAsyncContextManager[RoutingBatch]:
        """Up to `limit` pending events. Exclusive: locked (others skip them) and the routing
        commits when the block ends cleanly. Else read unlocked, and `write` commits at once."""
        ...

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
        """Leased rows back to pending, their counted attempt given back."""
        ...


class IngestPort(Protocol):
    """What the listener needs to journal notifications."""

    async def journaled_ids(self, ids: Sequence[UUID]) -> set[UUID]: ...

    async def backend_roles(self, pids: Sequence[int]) -> dict[int, str]: ...

    async def journal_batch(
        self, events: Sequence[NotifiedEvent], rejections: Sequence[Rejection]
    ) -> list[Rejection]:
        """Journal the events and record the rejections in one transaction; an event the database
        cannot store becomes a rejection instead (returned) and never blocks the others."""
        ...


class HousekeepingPort(Protocol):
    async def schema_current(self) -> bool: ...

    async def backlog(self) -> dict[str, int]: ...

    async def entities_held(self) -> dict[str, HeldEntities]: ...

    async def hold_stragglers(self) -> int: ...

    async def subscriber_gauges(self) -> dict[str, SubscriberGauges]: ...

    async def unrouted_events(self) -> int: ...

    async def instance_heartbeat(self, me: Instance, alive_within_s: float) -> int: ...

    async def instance_gone(self, owner: str) -> None: ...


class RetentionPort(Protocol):
    async def prune(
        self, delivered_s: float, dead_s: float, rejected_s: float, served: Collection[str]
    ) -> int: ...


class _PgRoutingBatch:
    """Exclusive: inside the routing's transaction. Else on a connection in autocommit."""

    def __init__(self, conn: Conn, events: list[PendingEvent], cache: EventCache | None) -> None:
        self._conn = conn
        self._events = events
        # Where routed events' parts go at once (autocommit); else kept until the commit.
        self._cache = cache
        self.staged: list[Written] = []

    @property
    def events(self) -> Sequence[PendingEvent]:
        return self._events

    async def write(
        self,
        routed: Sequence[RoutedEvent],
        rejected: Sequence[tuple[UUID, Rejection]],
        wanted: Mapping[str, int] | None = None,
        owner: str = "",
        lease_s: float = 0.0,
        ordered: Collection[str] = (),
    ) -> Written:
        written = await routing_queries.write_routing(
            self._conn, self._events, routed, rejected, wanted, owner, lease_s, ordered
        )
        if self._cache is not None:
            _remember(self._cache, written)
        else:
            self.staged.append(written)
        return written


def _remember(cache: EventCache, written: Written) -> None:
    for event_id, parts in written.parts.items():
        cache.put(event_id, parts, written.waiting.get(event_id, 0))


class Gateway:
    """The PostgreSQL implementation of every port, over the daemon's pool."""

    def __init__(self, pool: asyncpg.Pool, events: EventCache | None = None) -> None:
        self._pool = pool
        # What this instance routed, for its claims (a cache written before its routing commits
        # holds only what that commit makes true: routed parts never change).
        self.events = events if events is not None else EventCache()
        # Per ordered subscriber, the entity its last claim ended at: the next walk starts there.
        self.walks: dict[str, str] = {}

    async def claim_deliveries(
        self, subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
    ) -> list[ClaimedDelivery]:
        async with self._pool.acquire() as conn:
            return await journal.claim_deliveries(
                conn, subscriber, owner, limit, lease_s, ordered, self.events, self.walks
            )

    async def seconds_until_due(self, subscriber: str) -> float | None:
        async with self._pool.acquire() as conn:
            return await journal.seconds_until_due(conn, subscriber)

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
        async with self._pool.acquire() as conn:
            await journal.release_leases(conn, owner, keys)

    async def take_tokens(self, subscriber: str, want: int, rate: float, horizon_s: float) -> TokenGrant:
        async with self._pool.acquire() as conn:
            return await journal.take_tokens(conn, subscriber, want, rate, horizon_s)

    async def return_tokens(self, subscriber: str, mark: datetime | float, unused: int, rate: float) -> bool:
        async with self._pool.acquire() as conn:
            return await journal.return_tokens(conn, subscriber, mark, unused, rate)

    async def hold_tokens(self, subscriber: str, seconds: float) -> None:
        async with self._pool.acquire() as conn:
            await journal.hold_tokens(conn, subscriber, seconds)

    async def write_results(self, results: Sequence[DeliveryResult], owner: str) -> int:
        async with self._pool.acquire() as conn:
            return await journal.write_results(conn, results, owner)

    async def subscriber_states(self) -> dict[str, SubscriberState]:
        async with self._pool.acquire() as conn:
            return await journal.subscriber_states(conn)

    async def set_circuit(self, subscriber: str, state: str) -> None:
        async with self._pool.acquire() as conn:
            await journal.set_circuit(conn, subscriber, state)

    async def journaled_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        async with self._pool.acquire() as conn:
            return await journal.journaled_ids(conn, ids)

    async def backend_roles(self, pids: Sequence[int]) -> dict[int, str]:
        async with self._pool.acquire() as conn:
            return await journal.backend_roles(conn, pids)

    async def journal_batch(
        self, events: Sequence[NotifiedEvent], rejections: Sequence[Rejection]
    ) -> list[Rejection]:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await journal.journal_notified(conn, events)
                    await journal.record_rejected(conn, rejections)
            except journal.UNSTORABLE:
                # Something PostgreSQL cannot store (a \u0000 in text, a number beyond numeric):
                # one poisoned notification must not block the batch, so go one by one.
                return await _one_by_one(conn, events, rejections)
        return []

    @asynccontextmanager
    async def routing(self, limit: int, exclusive: bool = True) -> AsyncIterator[RoutingBatch]:
        async with self._pool.acquire() as conn:
            if not exclusive:
                # Two round trips (read, write): no BEGIN, no COMMIT, no lock held between.
                events = await routing_queries.claim_events(conn, limit, lock=False)
                yield _PgRoutingBatch(conn, events, self.events)
                return
            async with conn.transaction():
                batch = _PgRoutingBatch(conn, await routing_queries.claim_events(conn, limit), None)
                yield batch
            for written in batch.staged:
                _remember(self.events, written)  # only what committed

    async def schema_current(self) -> bool:
        async with self._pool.acquire() as conn:
            try:
                await migrate.check(conn)
            except SchemaError:
                return False
            return True

    async def backlog(self) -> dict[str, int]:
        async with self._pool.acquire() as conn:
            return await journal.backlog(conn)

    async def entities_held(self) -> dict[str, HeldEntities]:
        async with self._pool.acquire() as conn:
            return await journal.entities_held(conn)

    async def hold_stragglers(self) -> int:
        async with self._pool.acquire() as conn:
            return await journal.hold_stragglers(conn)

    async def subscriber_gauges(self) -> dict[str, SubscriberGauges]:
        async with self._pool.acquire() as conn:
            return await journal.subscriber_gauges(conn)

    async def unrouted_events(self) -> int:
        async with self._pool.acquire() as conn:
            return await journal.unrouted_events(conn)

    async def instance_heartbeat(self, me: Instance, alive_within_s: float) -> int:
        async with self._pool.acquire() as conn:
            return await journal.instance_heartbeat(conn, me, alive_within_s)

    async def instance_gone(self, owner: str) -> None:
        async with self._pool.acquire() as conn:
            await journal.instance_gone(conn, owner)

    async def prune(
        self, delivered_s: float, dead_s: float, rejected_s: float, served: Collection[str]
    ) -> int:
        async with self._pool.acquire() as conn:
            return await journal.prune(conn, delivered_s, dead_s, rejected_s, served=served)


async def _one_by_one(
    conn: Conn, events: Sequence[NotifiedEvent], rejections: Sequence[Rejection]
) -> list[Rejection]:
    """Journal what can be stored; what cannot becomes a rejection kept as scrubbed text."""
    unstorable: list[Rejection] = []
    for event in events:
        try:
            async with conn.transaction():
                await journal.journal_notified(conn, [event])
        except journal.UNSTORABLE as exc:
            unstorable.append(unstorable_rejection(event, exc))
    for rejection in [*rejections, *unstorable]:
        await journal.record_rejected_safely(conn, rejection)
    return unstorable


def unstorable_rejection(event: NotifiedEvent, exc: Exception) -> Rejection:
    """A notified event the database cannot hold, as a rejection it can."""
    return Rejection(
        reason="schema",
        errors=(f"$: cannot be stored ({type(exc).__name__})",),
        source="notify",
        event_id=event.event_id,
        raw_text=journal.unstorable_text(event.payload),
    )
