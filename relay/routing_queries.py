"""SQL access for routing: pending events read, then each batch's routing written in one
statement — with the deliveries that caught-up lanes asked for already leased to them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from relay.database import Conn
from relay.event_cache import EventParts
from relay.journal import record_rejected, redoable, sole_record
from relay.model import ClaimedDelivery, PendingEvent, Rejection, RoutedEvent
from relay.sql import query


@dataclass(frozen=True, slots=True)
class Written:
    """What a routing took: the events it routed and rejected (another instance may have taken
    the rest), and the deliveries leased to caught-up lanes."""

    routed: frozenset[UUID] = frozenset()
    rejected: frozenset[UUID] = frozenset()
    leased: list[ClaimedDelivery] = field(default_factory=list)
    parts: dict[UUID, EventParts] = field(default_factory=dict)
    # How many of each routed event's deliveries wait for a claim (not leased here).
    waiting: dict[UUID, int] = field(default_factory=dict)


async def claim_events(conn: Conn, limit: int, *, lock: bool = True) -> list[PendingEvent]:
    """Pending events in journal order; with `lock`, held until the caller's transaction ends."""
    return [
        PendingEvent(
            event_id=r["event_id"],
            payload=r["payload"],
            source=r["source"],
            traceparent=r["traceparent"],
            version=r["version"],
        )
        for r in await conn.fetch(query("claim_events" if lock else "peek_events"), limit)
    ]


@redoable("the events stay pending until it commits: a lost routing is done again")
async def write_routing(
    conn: Conn,
    events: Sequence[PendingEvent],
    routed: Sequence[RoutedEvent],
    rejected: Sequence[tuple[UUID, Rejection]],
    wanted: Mapping[str, int] | None = None,
    owner: str = "",
    lease_s: float = 0.0,
    ordered: Collection[str] = (),
) -> Written:
    """Write a batch's routing for the events still pending as read; up to `wanted[subscriber]`
    of its new deliveries come back leased to `owner` (journal order, first attempt counted),
    with each routed event's parts (for this instance's claims of its deliveries). An `ordered`
    subscriber is leased only its entities' heads."""
    if routed and rejected and not conn.is_in_transaction():
        # Both or neither: a routing committed alone, then its rejections failing, would leave the
        # caller without what it leased (sent only when its leases run out, as second attempts).
        async with conn.transaction():
            return await _write(conn, events, routed, rejected, wanted, owner, lease_s, ordered)
    return await _write(conn, events, routed, rejected, wanted, owner, lease_s, ordered)


async def _write(
    conn: Conn,
    events: Sequence[PendingEvent],
    routed: Sequence[RoutedEvent],
    rejected: Sequence[tuple[UUID, Rejection]],
    wanted: Mapping[str, int] | None,
    owner: str,
    lease_s: float,
    ordered: Collection[str],
) -> Written:
    versions = {e.event_id: e.version for e in events}
    taken: set[UUID] = set()
    leased: list[ClaimedDelivery] = []
    parts: dict[UUID, EventParts] = {}
    waiting: dict[UUID, int] = {}
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
            [versions[r.event_id] for r in routed],
            [name for name in offer if name in ordered],
        )
        by_id = {r.event_id: r for r in routed}
        seqs: dict[UUID, int] = {}
        for row in rows:
            event_id = row["event_id"]
            if row["subscriber"] is None:
                taken.add(event_id)
                seqs[event_id] = row["seq"]
                parts[event_id] = EventParts(
                    row["body"].encode(),
                    row["created_at"],
                    by_id[event_id].organization_id,
                    row["traceparent"],
                )
                waiting.setdefault(event_id, 0)
        for row in rows:
            event_id = row["event_id"]
            if row["subscriber"] is None:
                continue
            if row["leased"]:
                leased.append(_leased(by_id[event_id], row["subscriber"], parts[event_id], seqs[event_id]))
            else:
                waiting[event_id] += 1
        leased.sort(key=lambda c: c.sequence or 0)
    refused: set[UUID] = set()
    if rejected:
        refused = await reject_events(conn, [(event_id, r, versions[event_id]) for event_id, r in rejected])
    return Written(frozenset(taken), frozenset(refused), leased, parts, waiting)


@sole_record("a rejection: of an event, the only trace of why it was not delivered")
async def reject_events(conn: Conn, rejections: Sequence[tuple[UUID, Rejection, int]]) -> set[UUID]:
    """Mark rejected the events still pending as read and record their rejections, atomically."""
    rows = await conn.fetch(
        query("mark_rejected"), [e for e, _, _ in rejections], [v for _, _, v in rejections]
    )
    taken = {row["event_id"] for row in rows}
    await record_rejected(conn, [r for e, r, _ in rejections if e in taken])
    return taken


def _leased(event: RoutedEvent, subscriber: str, parts: EventParts, seq: int) -> ClaimedDelivery:
    return ClaimedDelivery(
        event_id=event.event_id,
        subscriber=subscriber,
        event_type=event.event_type,
        attempts=1,
        failed_rounds=0,
        body=parts.body,
        journaled_at=parts.journaled_at,
        entity_key=event.entity_key,
        organization_id=parts.organization_id,
        sequence=seq,
        traceparent=parts.traceparent,
    )
