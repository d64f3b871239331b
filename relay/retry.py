"""What to do after an attempt: delivered, retry (and after how long), or dead. Pure."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from relay.model import Outcome

# The 4xx statuses retried unless a subscriber lists its own (retry_on_status): request timeout,
# too early, too many requests. Every server error is retried whatever the list.
RETRYABLE_4XX: Final = frozenset({408, 425, 429})


def classify(status: int | None, retry_on: Collection[int] = RETRYABLE_4XX) -> Outcome:
    """None means no response (network error, timeout); `retry_on`: the 4xx statuses retried."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status >= 500 or status in retry_on:
        return "retry"
    return "dead"


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if any."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip(" \t")  # OWS is spaces and tabs only
    # RFC 9110: delay-seconds is 1*DIGIT, ASCII only ("²".isdigit() is True in Python).
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # not an HTTP-date either: the normal schedule applies
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    failed_rounds: int
    # Seconds until the next attempt, for a retry.
    wait_s: float | None = None


def decide(
    outcome: Outcome,
    failed_rounds: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    retry_after_max: float = 3600.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> Decision:
    """After a round of attempts: the delivery's next state under the durable retry schedule.

    `failed_rounds` counts the failed rounds before this one; schedule[i] is the wait after the
    (i+1)-th failure, and a failure with no wait left is dead.
    """
    if outcome != "retry":
        return Decision(outcome, failed_rounds)
    rounds = failed_rounds + 1
    if rounds > len(schedule):
        return Decision("dead", rounds)
    wait = schedule[rounds - 1] * (1 + (rng or random).uniform(-jitter, jitter))
    if retry_after is not None:
        # Honour the subscriber's Retry-After, but never beyond the cap nor earlier than asked.
        wait = max(wait, min(retry_after, retry_after_max))
    return Decision("retry", rounds, wait)
