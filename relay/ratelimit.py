"""The shared rate limit's rule: a token is a time slot, and slots are 1/rate apart. Pure.

A subscriber's bucket keeps one instant, `next_slot`: the earliest time the next request may
start (the generic cell rate algorithm, GCRA). Taking n tokens hands out the slots
`start, start + 1/rate, ...` with `start = max(next_slot, now)` and moves `next_slot` past them,
so however many instances ask, no two requests are closer than 1/rate and an idle bucket saves
nothing up: after a pause the first request goes at once, the next 1/rate later, never a burst.
Slots are handed out at most `HORIZON_S` ahead (a claimed delivery waits at most that long for its
turn). A 429 with Retry-After moves `next_slot` to the end of the wait: the whole subscriber is held.

PostgreSQL keeps the bucket (it_relay.take_tokens() in relay/sql/migrations/0012_rate_limit.sql
applies this same rule); the in-memory twin applies it here (tests/test_ratelimit.py holds the two
together).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final

# How far ahead slots are handed out.
HORIZON_S: Final = 1.0
# The longest a claimed delivery waits for its slot (two horizons) before it goes back unattempted.
LONGEST_WAIT_S: Final = 2 * HORIZON_S
MAX_RATE_PER_S: Final = 10_000.0


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """Tokens taken from a subscriber's bucket: `granted` slots, the first `first_in_s` after the
    grant was made, each `spacing_s` after the one before; none granted: ask again in `wait_s`."""

    granted: int
    first_in_s: float
    spacing_s: float
    wait_s: float
    # The bucket's next_slot after this grant: unused tokens go back only while it is unchanged.
    mark: datetime | float
    # The bucket's clock when it granted (seconds): slots are placed on it, not on when the answer
    # was read (a busy loop reads late, and would shift every slot of the grant late).
    at_s: float = 0.0


def take(
    next_slot: float, now: float, want: int, rate: float, horizon_s: float = HORIZON_S
) -> tuple[int, float]:
    """How many of `want` tokens are granted at `now`, and the first slot's time."""
    start = max(next_slot, now)
    if want <= 0 or start > now + horizon_s:
        return 0, start
    return min(want, math.floor((now + horizon_s - start) * rate) + 1), start


def grant(
    next_slot: float, now: float, want: int, rate: float, horizon_s: float = HORIZON_S
) -> tuple[TokenGrant, float]:
    """The grant at `now`, and the bucket's next_slot after it (times in seconds)."""
    granted, start = take(next_slot, now, want, rate, horizon_s)
    if granted == 0:
        return TokenGrant(0, 0.0, 1 / rate, start - (now + horizon_s), next_slot, now), next_slot
    after = start + granted / rate
    return TokenGrant(granted, start - now, 1 / rate, 0.0, after, now), after


def given_back(next_slot: float, mark: float, unused: int, rate: float) -> float:
    """next_slot after `unused` tokens of a grant go back: only the grant's own tail, and only if
    nobody took a slot after it (else those slots are simply lost: the rate stays below the limit)."""
    return next_slot - unused / rate if next_slot == mark and unused > 0 else next_slot


def held(next_slot: float, now: float, seconds: float) -> float:
    """next_slot once the subscriber asked to be left alone for `seconds` (429 Retry-After)."""
    return max(next_slot, now + seconds)
