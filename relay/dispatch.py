"""Deliver: claim due deliveries per subscriber, send them signed, settle every round once.

Each subscriber has its own lane (claim loop, in-flight limit, circuit breaker), so a slow or dead
subscriber never holds up another; `delivery.concurrency` bounds all lanes together. Claims are
leases: if this process dies, its leases expire and any instance claims the rows again.

The parts: `relay.lanes` (a lane's state and slots), `relay.attempts` (one attempt and what it
tells the breaker), `relay.settle` (the pure decision after a round), `relay.outcomes` (batched
outcome writes). Here: the lane loops, the rounds, and the drain at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from uuid import UUID

from relay.attempts import Attempts, target_of
from relay.circuit import CircuitBreaker
from relay.database import DB_ERRORS
from relay.destination import Destination
from relay.gateway import DeliveryPort
from relay.health import Heartbeats
from relay.lanes import Lane, LaneStates, Reservation, Slot, Slots
from relay.limiter import Limiter, Paced
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import OUTCOMES, Attempt, ClaimedDelivery
from relay.outcomes import OutcomeWriter
from relay.settings import DeliverySettings, SubscriberSettings
from relay.settle import Ending, RetryPolicy, Settlement, settle
from relay.supervisor import Loop, supervise
from relay.tracing import Tracing

log = get_logger("relay.dispatch")


class Dispatcher:
    def __init__(
        self,
        *,
        store: DeliveryPort,
        delivery: DeliverySettings,
        subscribers: dict[str, SubscriberSettings],
        destinations: Mapping[str, Destination],
        metrics: Metrics,
        owner: str,
        poll_interval_s: float = 5.0,
        heartbeats: Heartbeats | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._store = store
        self.destinations = dict(destinations)
        self._heartbeats = heartbeats or Heartbeats()
        self._settings = delivery
        self._owner = owner
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics
        self.lanes = {
            name: self._make_lane(name, conf, destinations[name]) for name, conf in subscribers.items()
        }
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._states = LaneStates(store, self.lanes, metrics, poll_interval_s)
        self._attempts = Attempts(delivery=delivery, metrics=metrics, tracing=tracing)
        self._slots = Slots(delivery.concurrency, self.wake)
        self._writer = OutcomeWriter(store, owner)
        self._tasks: dict[asyncio.Task[None], tuple[UUID, str]] = {}
        self._stopping = asyncio.Event()

    def _make_lane(self, name: str, conf: SubscriberSettings, destination: Destination) -> Lane:
        delivery = self._settings
        lane = Lane(
            name=name,
            target=target_of(conf, name),
            destination=destination,
            timeout_s=0.0,
            max_in_flight=0,
            breaker=CircuitBreaker(delivery.circuit_failure_threshold, delivery.circuit_cooldown_s),
            policy=RetryPolicy(delivery.retry_schedule_s),
            duration=self._metrics.delivery_duration.labels(name),
            outcomes={o: self._metrics.deliveries.labels(name, o) for o in OUTCOMES},
            paused=not conf.enabled,
            # Until its first claim says otherwise: rows waiting from before go before new ones.
            backlogged=True,
        )
        self._configure(lane, conf, destination)
        return lane

    def _configure(self, lane: Lane, conf: SubscriberSettings, destination: Destination) -> None:
        """Everything a subscriber's configuration decides, set on its lane (again on a reload:
        in-flight attempts keep what they started with, the next claim uses the new)."""
        delivery = self._settings
        lane.target = target_of(conf, lane.name)
        lane.timeout_s = conf.timeout_s or delivery.timeout_s
        lane.max_in_flight = conf.max_in_flight
        lane.policy = RetryPolicy(
            conf.retry_schedule(delivery),
            delivery.retry_after_max_s,
            delivery.jitter,
            hold=conf.ordering == "entity" and conf.on_exhausted == "hold",
            retry_on_status=conf.retryable_statuses(),
        )
        lane.ordered = conf.ordering == "entity"
        lane.enabled = conf.enabled
        lane.filter = conf.filter
        lane.limiter = self._limiter(lane, conf)
        lane.destination = destination if lane.limiter is None else Paced(destination, lane.limiter)

    def _limiter(self, lane: Lane, conf: SubscriberSettings) -> Limiter | None:
        """The lane's share of its subscriber's rate limit (kept across reloads: a hold stays)."""
        rate = conf.rate_limit_per_s
        if rate is None:
            return None
        if lane.limiter is None:
            return Limiter(self._store, lane.name, rate, self._settings.retry_after_max_s)
        lane.limiter.rate_per_s = rate
        return lane.limiter

    def reconfigure(
        self, subscribers: Mapping[str, SubscriberSettings], destinations: Mapping[str, Destination]
    ) -> tuple[list[str], list[str]]:
        """Serve exactly `subscribers` from now on (SIGHUP): lanes added and started, removed ones
        stopped (what they have in flight finishes), the others reconfigured in place (their
        circuit kept). Returns (added, removed)."""
        added = [n for n in subscribers if n not in self.lanes]
        removed = [n for n in self.lanes if n not in subscribers]
        for name in removed:
            task = self._lane_tasks.pop(name, None)
            if task is not None:
                task.cancel()
            del self.lanes[name]
        for name, conf in subscribers.items():
            self.destinations[name] = destinations[name]
            if name in self.lanes:
                self._configure(self.lanes[name], conf, destinations[name])
            else:
                self.lanes[name] = lane = self._make_lane(name, conf, destinations[name])
                if self._running:
                    self._start_lane(lane)
            self.lanes[name].wake.set()
        return added, removed

    def _start_lane(self, lane: Lane) -> None:
        loop = self._lane_loop(lane)
        self._lane_tasks[lane.name] = asyncio.create_task(
            supervise(loop, self._stopping, self._heartbeats), name=loop.name
        )

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
        self._running = True
        for lane in self.lanes.values():
            self._start_lane(lane)
        states = asyncio.create_task(
            supervise(self._states.loop(), self._stopping, beats), name="subscriber-states"
        )
        try:
            await stopping.wait()
        finally:
            self._stopping.set()
            tasks = [*self._lane_tasks.values(), states]
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
        if self._waits_for_a_batch(lane):
            return 0, allowed
        available = self._slots.available(lane)
        lane.waiting_for_slots = available <= 0
        limit = min(available, self._settings.batch_size)
        return (limit if allowed is None else min(limit, allowed)), allowed

    @staticmethod
    def _waits_for_a_batch(lane: Lane) -> bool:
        """A backlogged lane claims once a quarter of its slots are free, not slot by slot: a claim
        and an outcome write per few deliveries cost PostgreSQL about twice what one per dozens
        does (bench/pg_cost.py). Its own in-flight deliveries wake it as they end; a lane that is
        caught up, ordered (a successor goes within milliseconds) or rate-limited claims at once."""
        if not lane.backlogged or lane.ordered or lane.limiter is not None or lane.in_flight == 0:
            return False
        return lane.max_in_flight - lane.in_flight < max(1, lane.max_in_flight // 4)

    async def _lane_step(self, lane: Lane) -> float | None:
        """Claim what the lane may take and start it; then how long until it should look again."""
        now = time.monotonic()
        limit, allowed = self._claim_limit(lane, now)
        if limit <= 0:
            return lane.breaker.seconds_until_probe(now) or None
        limiter = lane.limiter
        turns = None
        if limiter is not None:
            # A rate-limited lane claims no more rows than it holds tokens for; each goes at its slot.
            turns = await limiter.take(limit)
            if not turns.claimable:
                return min(turns.wait_s, self._poll_interval_s)
            limit = turns.claimable
        claimed = await self._store.claim_deliveries(
            lane.name, self._owner, limit, self._settings.lease_s, lane.ordered
        )
        if limiter is not None and turns is not None:
            try:
                await limiter.claimed(turns, len(claimed))
            except Exception:
                # Never between a claim and its deliveries: a row left unstarted waits for its lease.
                log.exception("giving back unused rate limit tokens failed", subscriber=lane.name)
        lane.backlogged = len(claimed) == limit
        probe = allowed == 1 and bool(claimed)
        if probe:
            lane.breaker.claimed_probe()
        # Sent before asking when the next one is due: that round trip is off the path.
        for item in claimed:
            self._start(lane, item, probe, paced=limiter is not None)
        if len(claimed) == limit:
            return 0
        if lane.ordered:
            # Most due rows of an ordered lane wait behind a head (in flight, or waiting out its
            # retry): asking when the next row is due would say "now" and spin. The lane is woken
            # when a head's outcome is written here, and looks again every poll interval.
            return None
        due_in = await self._store.seconds_until_due(lane.name)
        return None if due_in is None else min(max(due_in, 0.005), self._poll_interval_s)

    def reserve(self, wanted: Mapping[str, int]) -> Reservation:
        """Slots for the deliveries a routing may lease straight to caught-up lanes (not backlogged,
        rate-limited, paused or behind an open circuit; an ordered lane only its entities' heads):
        sent as soon as the routing commits, with no claim between (Router.route_batch)."""
        now = time.monotonic()
        taken: dict[str, list[Slot]] = {}
        # Not before the pauses are read (run()) nor while stopping: then every row waits for a claim.
        ready = self._running and not self._stopping.is_set()
        for name, n in wanted.items():
            lane = self.lanes.get(name)
            if not ready or lane is None or not self._takes_handed(lane):
                continue
            limit, allowed = self._claim_limit(lane, now)
            if allowed is None and limit > 0:
                taken[name] = [self._slots.take(lane) for _ in range(min(n, limit))]
        ordered = frozenset(name for name in taken if self.lanes[name].ordered)
        return Reservation(
            self._owner,
            self._settings.lease_s,
            taken,
            self._start_handed,
            dict(wanted),
            self._left_behind,
            ordered,
        )

    def _left_behind(self, name: str) -> None:
        lane = self.lanes.get(name)
        if lane is not None:
            lane.backlogged = True

    @staticmethod
    def _takes_handed(lane: Lane) -> bool:
        return not (lane.backlogged or lane.limiter is not None or lane.paused)

    def _start_handed(self, item: ClaimedDelivery, slot: Slot, as_head: bool) -> bool:
        """Start a row routing leased to this lane (`as_head`: checked to be its entity's head);
        False if the lane changed meanwhile (removed or reconfigured by a reload, made ordered,
        paused, its circuit opened, shutting down): the router gives the lease back."""
        lane = self.lanes.get(item.subscriber)
        if (
            lane is None
            or self._stopping.is_set()
            or not self._takes_handed(lane)
            or (lane.ordered and not as_head)
            or lane.breaker.allowed(time.monotonic()) is not None
        ):
            slot.release()
            return False
        self._start(lane, item, False, slot=slot)
        return True

    def _start(
        self, lane: Lane, item: ClaimedDelivery, probe: bool, paced: bool = False, slot: Slot | None = None
    ) -> None:
        if slot is None:
            slot = self._slots.take(lane)
        work = self._paced(item, slot, probe) if paced else self._deliver(item, slot, probe)
        task = asyncio.create_task(work)
        self._tasks[task] = (item.event_id, lane.name)
        task.add_done_callback(self._tasks.pop)

    async def _paced(self, item: ClaimedDelivery, slot: Slot, probe: bool) -> None:
        """A rate-limited delivery waits for its slot; if its subscriber is held meanwhile (429
        Retry-After) or the relay stops, it goes back unattempted, its attempt not spent."""
        limiter = slot.lane.limiter
        back = settle(item, [], item.attempts, "unattempted", slot.lane.policy)
        try:
            go = limiter is None or await limiter.turn(item.event_id, self._stopping)
        except asyncio.CancelledError:
            await self._settle(item, slot, probe, back)
            raise
        except Exception:
            log.exception("waiting for a rate limit slot failed", subscriber=slot.lane.name)
            go = False
        if not go:
            await self._settle(item, slot, probe, back)
            return
        await self._deliver(item, slot, probe)

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
            await self._settle(item, slot, probe, settle(item, tried, attempts, ending, slot.lane.policy))
            raise
        except Exception as exc:
            # A bug, not a delivery outcome: settled as a failed round with an internal: error, so
            # the attempt count, the schedule, the breaker and the operator all see it.
            log.exception(
                "delivery failed unexpectedly", event_id=str(item.event_id), subscriber=slot.lane.name
            )
            crashed = settle(item, tried, attempts, "crashed", slot.lane.policy, error=type(exc).__name__)
            await self._settle(item, slot, probe, crashed)
            return
        await self._settle(item, slot, probe, settle(item, tried, attempts, "answered", slot.lane.policy))

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
        # On a database error the lease expires on its own.
        with contextlib.suppress(*DB_ERRORS):
            await self._store.release_leases(self._owner, [(item.event_id, item.subscriber)])
