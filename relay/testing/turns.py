"""The twin's ordered claim: entities take turns, as in claim_ordered (relay/sql/queries.sql)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from relay.testing.twin import Twin, TwinDelivery


class Due(Protocol):
    @property
    def entity_key(self) -> str | None: ...
    @property
    def next_attempt_at(self) -> float: ...
    @property
    def seq(self) -> int: ...


D = TypeVar("D", bound=Due)


def ordered_turn(heads: list[D], after: str, limit: int) -> tuple[list[D], str]:
    """Of the claimable heads (and rows without an entity), what a claim takes: heads in a walk
    over entities that starts after `after` and wraps around; and where the next walk starts."""
    keys = sorted({d.entity_key for d in heads if d.entity_key}, key=lambda k: (k <= after, k))
    walk = {k: i for i, k in enumerate(keys)}
    keyed = sorted((d for d in heads if d.entity_key), key=lambda d: walk[d.entity_key or ""])[:limit]
    loose = sorted((d for d in heads if not d.entity_key), key=lambda d: (d.next_attempt_at, d.seq))[:limit]
    taken = sorted(
        keyed + loose, key=lambda d: (d.next_attempt_at, walk.get(d.entity_key or "", len(walk)), d.seq)
    )[:limit]
    walked = [walk[d.entity_key] for d in taken if d.entity_key]
    return taken, keys[max(walked)] if walked else after


def entity_waits(
    twin: Twin, subscriber: str, key: str | None, seq: int, counts: Callable[[TwinDelivery], bool]
) -> bool:
    """An entity's event at `seq` waits: a delivery of it to `subscriber` unfinished (those `counts`
    picks), or an earlier event of it unrouted. Never for an event without an entity."""
    return key is not None and (
        any(
            o.subscriber == subscriber
            and o.entity_key == key
            and o.status in ("pending", "held")
            and counts(o)
            for o in twin.deliveries.values()
        )
        or any(e.entity_key == key and e.status == "pending" and e.seq < seq for e in twin.events.values())
    )


def hold_stragglers(twin: Twin) -> int:
    """Rows pending, not leased, behind a head that holds their entity made held (as in SQL)."""
    heads = [
        (h.subscriber, h.entity_key, twin.events[h.event_id].seq) for h in twin.deliveries.values() if h.holds
    ]
    late = [
        d
        for d in twin.deliveries.values()
        if d.status == "pending"
        and d.lease_owner is None
        and d.entity_key is not None
        and any(
            (s, k) == (d.subscriber, d.entity_key) and n < twin.events[d.event_id].seq for s, k, n in heads
        )
    ]
    for d in late:
        d.status = "held"
    return len(late)
