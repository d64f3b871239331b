"""The delivery core: every way a claimed delivery's round can end becomes one settlement. Pure.

A round ends in one of four ways: the subscriber answered (or the network failed) on every
attempt tried, the relay raised while trying (a bug), shutdown interrupted it after it started,
or it was cancelled before any attempt. Each yields the delivery's next state (or "give the lease
back") and what the circuit breaker learns, so no path can skip the schedule or leave a probe open.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from relay import retry
from relay.model import (
    STATUS_AFTER,
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryResult,
    DeliveryStatus,
    Outcome,
)

Ending = Literal["answered", "crashed", "interrupted", "unattempted"]
# What the breaker learns: a success closes it, a failure counts (and re-opens a half-open one),
# "release" gives back a probe that told nothing about the subscriber.
BreakerNote = Literal["success", "failure", "release"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule_s: Sequence[float]
    retry_after_max_s: float = 3600.0
    jitter: float = 0.2
    # An ordered subscriber with on_exhausted = "hold": a delivery gone dead holds its entity.
    hold: bool = False
    # The 4xx statuses retried (its requests carry them to the destination; 5xx always are).
    retry_on_status: frozenset[int] = retry.RETRYABLE_4XX


@dataclass(frozen=True, slots=True)
class Settlement:
    # None: nothing to write, the lease goes back (the row is claimable again at once).
    result: DeliveryResult | None
    breaker: BreakerNote
    # What the round counts as in metrics and logs (None when nothing was decided).
    outcome: Outcome | None
    wait_s: float | None = None


def settle(
    item: ClaimedDelivery,
    tried: Sequence[Attempt],
    attempts: int,
    ending: Ending,
    policy: RetryPolicy,
    *,
    error: str | None = None,
    rng: random.Random | None = None,
) -> Settlement:
    """The one decision after a round: `attempts` is the last attempt number used, `error` the
    crash's description for `crashed`."""
    history = [a.record for a in tried if a.record is not None]
    if ending == "unattempted":
        return Settlement(None, "release", None)
    if ending == "interrupted":
        # Attempted but unfinished at shutdown: the attempts are recorded, the next round is due at
        # once; the subscriber was not judged.
        result = _result(
            item, "pending", attempts, item.failed_rounds, 0.0, None, "interrupted by shutdown", history
        )
        return Settlement(result, "release", None)
    if ending == "crashed":
        # A bug, not the subscriber's answer: still a failed round on the normal schedule (so it can
        # go dead and is never retried in a hot loop), and a failure the breaker counts.
        decision = retry.decide("retry", item.failed_rounds, policy.schedule_s, jitter=policy.jitter, rng=rng)
        attempts = max(attempts, item.attempts)
        last_error = f"internal: {error}" if error else "internal"
        result = _result(
            item,
            STATUS_AFTER[decision.outcome],
            attempts,
            decision.failed_rounds,
            decision.wait_s,
            None,
            last_error,
            history,
            policy,
        )
        return Settlement(result, "failure", decision.outcome, decision.wait_s)
    last = tried[-1]
    decision = retry.decide(
        last.outcome,
        item.failed_rounds,
        policy.schedule_s,
        retry_after=last.retry_after_s,
        retry_after_max=policy.retry_after_max_s,
        jitter=policy.jitter,
        rng=rng,
    )
    result = _result(
        item,
        STATUS_AFTER[decision.outcome],
        attempts,
        decision.failed_rounds,
        decision.wait_s,
        last.status,
        last.error,
        history,
        policy,
    )
    # A 4xx that goes dead is the subscriber answering: its endpoint is up.
    note: BreakerNote = "failure" if last.outcome == "retry" else "success"
    return Settlement(result, note, decision.outcome, decision.wait_s)


def _result(
    item: ClaimedDelivery,
    status: DeliveryStatus,
    attempts: int,
    failed_rounds: int,
    retry_in_s: float | None,
    last_status: int | None,
    last_error: str | None,
    history: Sequence[AttemptRecord],
    policy: RetryPolicy | None = None,
) -> DeliveryResult:
    # Built once, not copied with dataclasses.replace: this runs for every delivery.
    return DeliveryResult(
        event_id=item.event_id,
        subscriber=item.subscriber,
        status=status,
        attempts=attempts,
        failed_rounds=failed_rounds,
        retry_in_s=retry_in_s,
        last_status=last_status,
        last_error=last_error,
        history=history,
        hold=policy is not None and policy.hold and status == "dead",
    )
