"""What a delivery takes from its event (body, journal time, organisation, trace context), kept
for recently routed events so a claim reads only the deliveries table.

A routed event's parts never change (a republish only rewrites a rejected event, which has no
deliveries). An entry lasts until each delivery it was routed with has been claimed once, and at
most `stale_s` (a held delivery, a paused subscriber, rows another instance claimed): an event id
used again after retention pruned its event is never served the old body. When full, the cache
keeps what it has and takes nothing new: lanes claim in journal order, so the oldest entries are
the next needed (a deep backlog's newest events are read from the journal when their turn comes).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

# Bounded by bytes: past this, events are read from the journal when claimed.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
# What an entry costs besides its body: the UUID, two records, a datetime, the traceparent and
# the dict's slot: ~470 B measured with tracemalloc (an organisation and a trace context), rounded up.
ENTRY_OVERHEAD = 600
STALE_S = 60.0


@dataclass(frozen=True, slots=True)
class EventParts:
    """An event's fields every delivery of it carries: its body exactly as the journal keeps it."""

    body: bytes
    journaled_at: datetime
    organization_id: UUID | None
    traceparent: str | None


@dataclass(slots=True)
class _Entry:
    parts: EventParts
    uses: int  # claims still expected
    at: float


class EventCache:
    """Recently routed events' parts, at most `max_bytes` of them."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        stale_s: float = STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_bytes = max_bytes
        self._stale_s = stale_s
        self._clock = clock
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, event_id: UUID, parts: EventParts, uses: int) -> bool:
        """Keep an event for `uses` claims of its deliveries; False if there is no room."""
        self._drop(event_id)
        now = self._clock()
        self._forget_stale(now)
        cost = len(parts.body) + ENTRY_OVERHEAD
        if uses <= 0 or self._bytes + cost > self._max_bytes:
            return False
        self._entries[event_id] = _Entry(parts, uses, now)
        self._bytes += cost
        return True

    def take(self, event_ids: Iterable[UUID]) -> tuple[dict[UUID, EventParts], list[UUID]]:
        """The parts known here (each use counted), and the ids to read from the journal (each once)."""
        self._forget_stale(self._clock())
        found: dict[UUID, EventParts] = {}
        missing: dict[UUID, None] = {}  # in order, each once
        for event_id in event_ids:
            entry = self._entries.get(event_id)
            if entry is None:
                if event_id not in found:
                    missing[event_id] = None
                continue
            found[event_id] = entry.parts
            entry.uses -= 1
            if entry.uses <= 0:
                self._drop(event_id)
        self.hits += len(found)
        self.misses += len(missing)
        return found, list(missing)

    def _forget_stale(self, now: float) -> None:
        # Entries are in the order they were put: the stale ones are at the front.
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if now - oldest.at < self._stale_s:
                return
            self._drop(oldest_id)

    def _drop(self, event_id: UUID) -> None:
        entry = self._entries.pop(event_id, None)
        if entry is not None:
            self._bytes -= len(entry.parts.body) + ENTRY_OVERHEAD
