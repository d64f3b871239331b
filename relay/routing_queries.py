"""SQL access for routing: pending events claimed, then each batch's routing written in one
statement — with the deliveries that caught-up lanes asked for already leased to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

import asyncpg

from relay.database import Conn
from relay.journal import record_rejected, redoable
from relay.model import ClaimedDelivery, PendingEvent, Rejection, RoutedEvent
from relay.sql import query


async def claim_events(conn: Conn, limit: int) -> list[PendingEvent]:
    """Pending events, locked until the caller's transaction ends."""
    return [
        PendingEvent(
            event_id=r["event_id"], payload=r["payload"], source=r["source"], traceparent=r["traceparent"]
        )
        for r in await conn.fetch(query("claim_events"), limit)
    ]


@redoable("the events stay pending until it commits: a lost routing is done again")
async def write_routing(
    conn: Conn,
    routed: Sequence[RoutedEvent],
    rejected: Sequence[tuple[UUID, Rejection]],
    wanted: Mapping[str, int] | None = None,
    owner: str = "",
    lease_s: float = 0.0,
) -> list[ClaimedDelivery]:
    """Write a batch's routing; up to `wanted[subscriber]` of its new deliveries come back leased
    to `owner` (in journal order, their first attempt counted), for lanes that are caught up."""
    leased: list[ClaimedDelivery] = []
    if routed:
        pairs = [(r.event_id, s, r.event_type) for r in routed for s in r.subscribers]
        offer = {name: n for name, n in (wanted or {}).items() if n > 0}
        rows = await conn.fetch(
            query("mark_routed"),
            [r.event_id for r in routed],
            [r.body.decode() for r in routed],
            [r.entity_key for r in routed],
            [r.event_type for r in routed],
            [r.organization_id for r in routed],
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
            [r.traceparent for r in routed],
            owner,
            lease_s,
            list(offer),
            list(offer.values()),
        )
        events = {r.event_id: r for r in routed}
        leased = [_leased(events[row["event_id"]], row) for row in rows]
    if rejected:
        await conn.execute(query("mark_rejected"), [event_id for event_id, _ in rejected])
        await record_rejected(conn, [r for _, r in rejected])
    return leased


def _leased(event: RoutedEvent, row: asyncpg.Record) -> ClaimedDelivery:
    return ClaimedDelivery(
        event_id=event.event_id,
        subscriber=row["subscriber"],
        event_type=event.event_type,
        attempts=1,
        failed_rounds=0,
        body=row["body"].encode(),
        journaled_at=row["created_at"],
        entity_key=event.entity_key,
        organization_id=event.organization_id,
        sequence=row["seq"],
        traceparent=row["traceparent"],
    )
