"""A subscriber's lane: its run-time state, its in-flight slots, and the state shared with operators.

The invariant that bounds crash duplicates lives in `Slot`: a claimed row holds its slot until its
outcome is written (or its lease released), and `Slot.release()` is the only place a slot is given back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from relay.circuit import CircuitBreaker
from relay.destination import Destination
from relay.gateway import DeliveryPort
from relay.limiter import Limiter
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import ClaimedDelivery, DeliveryStatus, Outcome, effectively_paused
from relay.request import Target
from relay.settle import RetryPolicy
from relay.supervisor import Loop

log = get_logger("relay.dispatch")


@dataclass(slots=True, kw_only=True)
class Lane:
    name: str
    target: Target
    destination: Destination
    timeout_s: float
    max_in_flight: int
    breaker: CircuitBreaker
    policy: RetryPolicy
    # The lane's metric children, looked up once rather than per delivery.
    duration: Histogram
    outcomes: dict[Outcome, Counter]
    # One delivery in flight per entity, in journal order (ordering = "entity").
    ordered: bool = False
    # The subscriber's filter (the router drops the events it does not match) and its share of
    # the shared rate limit; set from the configuration, replaced in place by a reload.
    filter: dict[str, Any] | None = None
    limiter: Limiter | None = None
    circuit_reported_open: bool = False
    # Held by `enabled = false` or `it-relay subscribers pause` (read from the database).
    enabled: bool = True
    paused: bool = False
    circuit_shared_open: bool = False
    in_flight: int = 0
    # The last claim took all it asked for: more rows are probably due (see Dispatcher._claim_limit).
    backlogged: bool = False
    # Woken with work to look for while every slot was taken: a slot given back must wake it.
    waiting_for_slots: bool = False
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

    def _give_back(self, lane: Lane, status: DeliveryStatus | None) -> None:
        was_full = self.in_flight >= self.concurrency
        lane.in_flight -= 1
        self.in_flight -= 1
        if wakes_its_lane(lane, status):
            lane.wake.set()
        if was_full:
            self._on_all_freed()


def wakes_its_lane(lane: Lane, status: DeliveryStatus | None) -> bool:
    """Whether a slot given back should make its lane look again. A caught-up lane whose delivery
    ended (delivered, dead) has nothing to find: waking it would cost a claim that finds nothing and
    a due-time query per delivery. A retry must wake it (its due time changed), and so must an
    ordered lane (a successor may be waiting), a backlogged one, or one waiting for slots."""
    return (
        status not in ("delivered", "dead")
        or lane.ordered
        or lane.backlogged
        or lane.waiting_for_slots
        or lane.limiter is not None
    )


class Slot:
    """One claimed row's place in its lane; released exactly once, whatever path it took."""

    __slots__ = ("_slots", "lane", "queued", "released")

    def __init__(self, lane: Lane, slots: Slots) -> None:
        self.lane = lane
        self._slots = slots
        self.queued = False  # its outcome is with the writer, which releases it once written
        self.released = False

    def release(self, status: DeliveryStatus | None = None) -> None:
        """Give the slot back; `status` is the outcome written for it (None: no outcome)."""
        if not self.released:
            self.released = True
            self._slots._give_back(self.lane, status)


@dataclass
class Reservation:
    """Slots taken before a routing for the deliveries it leases straight to caught-up lanes:
    `hand` starts what was leased on them and gives the rest back (as does `cancel`)."""

    owner: str
    lease_s: float
    slots: dict[str, list[Slot]]
    start: Callable[[ClaimedDelivery, Slot, bool], bool]
    # How many deliveries the routing had for each lane, and what to tell a lane it left rows for.
    wanted: Mapping[str, int] = field(default_factory=dict)
    left_behind: Callable[[str], None] = lambda _name: None
    # Lanes with ordering = "entity": the routing leases them only their entities' heads.
    ordered: frozenset[str] = frozenset()

    def sizes(self) -> dict[str, int]:
        return {name: len(slots) for name, slots in self.slots.items() if slots}

    def hand(self, leased: Sequence[ClaimedDelivery]) -> list[ClaimedDelivery]:
        """Start what was leased; returns the rows not started, whose leases the caller gives back."""
        handed: dict[str, int] = {}
        unstarted: list[ClaimedDelivery] = []
        try:
            for item in leased:
                slots = self.slots.get(item.subscriber)
                if slots and self.start(item, slots.pop(), item.subscriber in self.ordered):
                    handed[item.subscriber] = handed.get(item.subscriber, 0) + 1
                else:
                    unstarted.append(item)
        finally:
            self.cancel()
            # Rows left pending must go before newer events are handed over them: their lane is
            # backlogged until its own claim catches up.
            for name, n in self.wanted.items():
                if handed.get(name, 0) < n:
                    self.left_behind(name)
        return unstarted

    def cancel(self) -> None:
        for slots in self.slots.values():
            while slots:
                slots.pop().release()


class LaneStates:
    """Run-time state shared through the database: pauses set by operators come in (before the
    first claim, then every poll interval), circuit changes go out (for `it-relay status`)."""

    def __init__(self, store: DeliveryPort, lanes: dict[str, Lane], metrics: Metrics, every_s: float) -> None:
        self._store = store
        self._lanes = lanes
        self._metrics = metrics
        self._every_s = every_s

    def loop(self) -> Loop:
        return Loop("subscriber-states", self.step, self._every_s)

    async def step(self) -> float | None:
        await self.sync()
        return None

    async def sync(self) -> None:
        states = await self._store.subscriber_states()
        for lane in self._lanes.values():
            if lane.circuit_reported_open != lane.circuit_shared_open:
                await self._store.set_circuit(lane.name, "open" if lane.circuit_reported_open else "closed")
                lane.circuit_shared_open = lane.circuit_reported_open
        for lane in self._lanes.values():
            shared = states.get(lane.name)
            paused = effectively_paused(shared, enabled=lane.enabled)
            if paused != lane.paused:
                lane.paused = paused
                log.info(
                    "subscriber " + ("paused: deliveries held" if paused else "resumed"), subscriber=lane.name
                )
                lane.wake.set()
            self._metrics.paused.labels(lane.name).set(1 if paused else 0)
