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
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from relay.database import DB_ERRORS
from relay.destination import Destination
from relay.gateway import DeliveryPort
from relay.logs import get_logger
from relay.model import Answer
from relay.ratelimit import HORIZON_S, TokenGrant
from relay.request import Request

log = get_logger("relay.dispatch")


@dataclass(frozen=True, slots=True)
class Turns:
    """Tokens taken for one claim: each slot's time (monotonic), or when to ask again if none."""

    slots: list[float]
    wait_s: float
    grant: TokenGrant | None = None


class Limiter:
    """One lane's tokens; `rate_per_s` is the configured limit (a reload sets it in place)."""

    def __init__(
        self, store: DeliveryPort, subscriber: str, rate_per_s: float, retry_after_max_s: float
    ) -> None:
        self._store = store
        self.subscriber = subscriber
        self.rate_per_s = rate_per_s
        self.retry_after_max_s = retry_after_max_s
        # Until when this instance knows the subscriber asked to be left alone (monotonic).
        self.held_until = 0.0
        # Until when asking the bucket again is pointless (it answered "nothing before then").
        self._next_ask = 0.0
        # Deliveries that waited for their slot and may send their first attempt without another.
        self._passes: set[UUID] = set()

    def held_for(self, now: float) -> float:
        return max(0.0, self.held_until - now)

    async def take(self, want: int) -> Turns:
        """Up to `want` slots for the next claim; none while held or while the bucket is spoken for."""
        now = time.monotonic()
        wait = max(self.held_for(now), self._next_ask - now)
        if wait > 0:
            return Turns([], wait)
        grant = await self._store.take_tokens(self.subscriber, want, self.rate_per_s, HORIZON_S)
        at = time.monotonic()
        if grant.granted == 0:
            self._next_ask = at + grant.wait_s
            return Turns([], max(grant.wait_s, 0.001), grant)
        first = at + grant.first_in_s
        return Turns([first + i * grant.spacing_s for i in range(grant.granted)], 0.0, grant)

    async def give_back(self, turns: Turns, used: int) -> None:
        """Return the slots a claim did not use (lost if someone took a later one meanwhile)."""
        if turns.grant is None or used >= turns.grant.granted:
            return
        with contextlib.suppress(*DB_ERRORS):
            await self._store.return_tokens(
                self.subscriber, turns.grant.mark, turns.grant.granted - used, self.rate_per_s
            )

    async def turn(self, event_id: UUID, at: float, stopping: asyncio.Event) -> bool:
        """Wait for a claimed delivery's slot: True to send it now, False to give it back
        unattempted (the subscriber is held, or the relay is stopping)."""
        # At most HORIZON_S: shutdown's grace outlasts it, so no need to wake on `stopping`.
        await _until(at)
        if stopping.is_set() or self.held_for(time.monotonic()) > 0:
            return False
        self._passes.add(event_id)
        return True

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
        while True:
            now = time.monotonic()
            if (held := self.held_for(now)) > 0:
                return held
            turns = await self.take(1)
            if turns.slots:
                await _until(turns.slots[0])
                return None
            await asyncio.sleep(min(turns.wait_s, HORIZON_S))

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


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
