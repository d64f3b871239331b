"""A lane's side of its subscriber's shared rate limit (subscribers.X.rate_limit_per_s).

Before it claims, a lane takes tokens from the subscriber's bucket in PostgreSQL (relay.ratelimit:
each token is a time slot, slots 1/rate apart across every instance), claims at most as many rows
as it got, and gives the rest back. Each claimed delivery starts at its slot. Quick retries take a
slot of their own (`Paced`). A 429 with Retry-After holds the whole subscriber: its bucket's next
slot moves to the end of the wait (every instance stops claiming), and deliveries of this lane
still waiting for their slot go back unattempted: their attempts are not spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from relay.database import DB_ERRORS
from relay.destination import Destination
from relay.gateway import DeliveryPort
from relay.logs import get_logger
from relay.model import Answer
from relay.ratelimit import HORIZON_S, LONGEST_WAIT_S, TokenGrant
from relay.request import Request

log = get_logger("relay.dispatch")


@dataclass(frozen=True, slots=True)
class Turns:
    """What a lane may claim now: `claimable` rows (each will find a slot of its own), or, if
    none, when to look again; `grant` the tokens taken for it (given back if unused)."""

    claimable: int
    wait_s: float
    grant: TokenGrant | None = None


class Limiter:
    """One lane's tokens; `rate_per_s` is the configured limit (a reload sets it in place).

    The lane's slots are a pool in time order, and one pacer hands them out: at each slot's time
    it lets the longest-waiting claimed delivery go. A slot the pacer reaches more than `slack_s`
    late (a busy moment) is not used — the delivery gets the next — so lateness never turns into
    a burst; when the pool runs dry, the pacer asks the bucket for what the waiting need."""

    def __init__(
        self, store: DeliveryPort, subscriber: str, rate_per_s: float, retry_after_max_s: float
    ) -> None:
        self._store = store
        self.subscriber = subscriber
        self.rate_per_s = rate_per_s
        self.retry_after_max_s = retry_after_max_s
        # Until when this instance knows the subscriber asked to be left alone (monotonic).
        self.held_until = 0.0
        # Until when asking the bucket again is pointless (or, after a grant, not yet worth it).
        self._next_ask = 0.0
        # Recent (our monotonic clock - the bucket's clock) at each answer; the least is the truest.
        self._offsets: deque[float] = deque(maxlen=32)
        # The slots this lane holds (monotonic), and how many claimed deliveries will use them.
        self._slots: deque[float] = deque()
        self._spoken_for = 0
        # Deliveries waiting for their slot, first come first served, and the one pacer.
        self._waiting: deque[tuple[asyncio.Future[bool], float]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        # Deliveries that had their slot and may send their first attempt without another.
        self._passes: set[UUID] = set()

    @property
    def slack_s(self) -> float:
        # Half a slot: however late the loop, no one-second window holds more than the limit + 1.
        # Above 250/s, 2 ms (a window may then hold 0.2 % more).
        return max(0.5 / self.rate_per_s, 0.002)

    def held_for(self, now: float) -> float:
        return max(0.0, self.held_until - now)

    async def take(self, want: int) -> Turns:
        """How many rows the lane may claim now (at most `want`): the slots it holds that no
        claimed delivery waits for, topped up from the bucket; none while the subscriber is held."""
        now = time.monotonic()
        if (held := self.held_for(now)) > 0:
            return Turns(0, held)
        self._expire(now)
        free = len(self._slots) - self._spoken_for
        grant = None
        if free < want and self._next_ask <= now:
            grant = await self._ask(want - free)
            free = len(self._slots) - self._spoken_for
        if free <= 0:
            return Turns(0, max(self._next_ask - now, 0.001), grant)
        return Turns(min(free, want), 0.0, grant)

    async def claimed(self, turns: Turns, count: int) -> None:
        """`count` rows were claimed after `turns`: they will wait for slots; the grant's slots
        nobody will use go back to the bucket (kept, if someone took a later one meanwhile)."""
        self._spoken_for += count
        grant = turns.grant
        unused = min(len(self._slots) - self._spoken_for, grant.granted if grant else 0)
        if grant is None or unused <= 0:
            return
        # Set aside before the round trip, so the pacer cannot hand them out meanwhile; they are
        # the grant's own (the pool's tail), the ones the bucket takes back.
        tail = [self._slots.pop() for _ in range(unused)]
        returned = False
        with contextlib.suppress(*DB_ERRORS):
            returned = await self._store.return_tokens(self.subscriber, grant.mark, unused, self.rate_per_s)
        if returned:
            self._next_ask = 0.0
        else:
            # Still ours: back in the pool, in time order (the pacer may have refilled it meanwhile).
            self._slots = deque(sorted([*self._slots, *tail]))

    async def turn(self, event_id: UUID, stopping: asyncio.Event) -> bool:
        """Wait for a claimed delivery's slot: True to send it now, False to give it back
        unattempted (the subscriber is held, the relay is stopping, or no slot came in time)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((waiter, time.monotonic() + LONGEST_WAIT_S))
        self._stopping = stopping
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace(), name=f"pacer {self.subscriber}")
            self._pacer.add_done_callback(self._paced_out)
        try:
            got = await waiter
        finally:
            self._spoken_for -= 1
            if not waiter.done():
                waiter.cancel()
        if got:
            self._passes.add(event_id)
        return got

    async def _pace(self) -> None:
        """Let the waiting deliveries go, one per slot, at their slots' times; end when none waits."""
        while self._waiting:
            waiter, give_up = self._waiting[0]
            now = time.monotonic()
            if waiter.done() or give_up < now:
                # Gone (cancelled), or waited two horizons: it goes back, inside its lease.
                self._waiting.popleft()
                if not waiter.done():
                    waiter.set_result(False)
                continue
            if (self._stopping is not None and self._stopping.is_set()) or self.held_for(now) > 0:
                self._answer_all(False)
                return
            self._expire(now)
            if not self._slots:
                await self._refill()
                continue
            if self._slots[0] > now:
                await _until(min(self._slots[0], give_up))
                continue
            # Every slot due now (within the slack) lets one delivery go, in one pass of the loop.
            while self._slots and self._slots[0] <= now and self._waiting:
                self._slots.popleft()
                self._answer(True)

    def _answer(self, got: bool) -> None:
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(got)
                return

    def _paced_out(self, pacer: asyncio.Task[None]) -> None:
        """A pacer that failed (a bug) must not leave deliveries waiting until their lease ends."""
        if not pacer.cancelled() and pacer.exception() is not None:
            log.error("rate limit pacer failed", subscriber=self.subscriber, error=repr(pacer.exception()))
            self._answer_all(False)

    def _answer_all(self, got: bool) -> None:
        while self._waiting:
            self._answer(got)

    async def _refill(self) -> None:
        """Slots for the deliveries waiting without one, or a wait until the bucket has some."""
        now = time.monotonic()
        if self._next_ask > now:
            await asyncio.sleep(min(self._next_ask - now, HORIZON_S))
            return
        try:
            await self._ask(max(len(self._waiting) - len(self._slots), 1))
        except DB_ERRORS:
            # The database is away: the deliveries wait a little (each at most LONGEST_WAIT_S).
            await asyncio.sleep(0.1)

    async def _ask(self, want: int) -> TokenGrant:
        """Tokens from the bucket, added to the pool as slots on this process's clock."""
        grant = await self._store.take_tokens(self.subscriber, want, self.rate_per_s, HORIZON_S)
        at = self._on_our_clock(grant.at_s)
        if grant.granted == 0:
            self._next_ask = at + grant.wait_s
        else:
            first = at + grant.first_in_s
            self._slots.extend(first + i * grant.spacing_s for i in range(grant.granted))
            # Asked again once these are half used: one round trip for what was freed meanwhile,
            # not one per delivery.
            self._next_ask = self._slots[-1] - HORIZON_S / 2
        return grant

    def _on_our_clock(self, bucket_s: float) -> float:
        """The bucket's time `bucket_s` on this process's monotonic clock. The offset is the least
        seen over the last answers: an answer read late (the loop busy, the pool slow) only ever
        makes it larger, and a larger one would place this grant's slots late, onto the next's."""
        self._offsets.append(time.monotonic() - bucket_s)
        return bucket_s + min(self._offsets)

    def _expire(self, now: float) -> None:
        while self._slots and self._slots[0] < now - self.slack_s:
            self._slots.popleft()

    def passed(self, event_id: UUID | str) -> bool:
        """Whether this send had its slot (its first attempt); consumed."""
        key = event_id if isinstance(event_id, UUID) else _uuid(event_id)
        if key is None or key not in self._passes:
            return False
        self._passes.discard(key)
        return True

    async def one_turn(self) -> float | None:
        """A slot for one more request (a quick retry), waited for; or the seconds the subscriber is
        still held, if it is (then nothing is sent)."""
        while (held := self.held_for(time.monotonic())) <= 0:
            self._spoken_for += 1
            if await self.turn(_RETRY, self._stopping or _NEVER):
                self._passes.discard(_RETRY)
                return None
        return held

    async def hold(self, seconds: float) -> None:
        """The subscriber answered 429 with Retry-After: no request to it, from any instance, for
        that long (at most delivery.retry_after_max_s)."""
        seconds = min(max(seconds, 0.0), self.retry_after_max_s)
        if seconds <= 0:
            return
        self.held_until = max(self.held_until, time.monotonic() + seconds)
        log.info(
            "subscriber asked to wait (429 Retry-After): held", subscriber=self.subscriber, seconds=seconds
        )
        # Without the database, only this instance holds: the others hear their own 429s.
        with contextlib.suppress(*DB_ERRORS):
            await self._store.hold_tokens(self.subscriber, seconds)


class Paced:
    """A rate-limited lane's destination: a request without a slot (a quick retry) waits for one,
    and a 429 with Retry-After holds the subscriber."""

    def __init__(self, destination: Destination, limiter: Limiter) -> None:
        self.destination = destination
        self.limiter = limiter

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        if not self.limiter.passed(request.event_id):
            held = await self.limiter.one_turn()
            if held is not None:
                return Answer("retry", None, "not sent: the subscriber asked to wait (429 Retry-After)", held)
        answer = await self.destination.send(request, timeout_s, at)
        if answer.status == 429 and answer.retry_after_s is not None:
            await self.limiter.hold(answer.retry_after_s)
        return answer

    async def aclose(self) -> None:
        """The wrapped destination belongs to the dispatcher, which closes it."""


async def _until(at: float) -> None:
    """Sleep until monotonic time `at`, never less: the loop's timer may fire a little early."""
    for _ in range(2):
        delay = at - time.monotonic()
        if delay <= 0:
            return
        await asyncio.sleep(delay)


# A quick retry's turn is no first attempt: it leaves no pass behind.
_RETRY = UUID(int=0)
_NEVER = asyncio.Event()


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
