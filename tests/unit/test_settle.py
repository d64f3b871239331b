"""The delivery core: every ending of a round settles once, on the schedule, and tells the breaker."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from relay.circuit import CircuitBreaker
from relay.model import Attempt, AttemptRecord, ClaimedDelivery
from relay.retry import classify
from relay.settle import RetryPolicy, settle

POLICY = RetryPolicy(schedule_s=[5, 30, 120], jitter=0.0)
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def claimed(attempts: int = 1, failed_rounds: int = 0) -> ClaimedDelivery:
    return ClaimedDelivery(
        event_id=uuid4(),
        subscriber="FA",
        event_type="it_asset_assigned",
        attempts=attempts,
        failed_rounds=failed_rounds,
        body=b"{}",
        journaled_at=AT,
    )


def answered(status: int | None, retry_after_s: float | None = None, number: int = 1) -> Attempt:
    outcome = classify(status)
    record = AttemptRecord(
        attempt=number, at=AT, http_status=status, error=None, duration_ms=1.0, excerpt=None
    )
    return Attempt(
        outcome, status, None if outcome == "delivered" else f"HTTP {status}", retry_after_s, record
    )


def test_a_delivered_round_closes_the_breaker_and_keeps_its_history() -> None:
    s = settle(claimed(), [answered(503), answered(200, number=2)], 2, "answered", POLICY)
    assert s.outcome == "delivered" and s.breaker == "success"
    assert s.result is not None and s.result.status == "delivered" and s.result.attempts == 2
    assert [r.http_status for r in s.result.history] == [503, 200]


def test_a_failed_round_waits_its_scheduled_time_and_counts_a_failure() -> None:
    s = settle(claimed(failed_rounds=1), [answered(503)], 1, "answered", POLICY)
    assert (s.outcome, s.breaker, s.wait_s) == ("retry", "failure", 30)
    assert s.result is not None and (s.result.status, s.result.failed_rounds) == ("pending", 2)


def test_a_4xx_goes_dead_and_tells_the_breaker_the_endpoint_answered() -> None:
    s = settle(claimed(), [answered(404)], 1, "answered", POLICY)
    assert (s.outcome, s.breaker) == ("dead", "success")
    assert s.result is not None and s.result.last_status == 404


def test_a_crash_is_a_failed_round_on_the_same_schedule_and_goes_dead_when_it_runs_out() -> None:
    first = settle(claimed(), [], 1, "crashed", POLICY, error="RuntimeError")
    assert (first.outcome, first.breaker, first.wait_s) == ("retry", "failure", 5)
    assert first.result is not None and first.result.last_error == "internal: RuntimeError"
    assert first.result.attempts == 1 and first.result.failed_rounds == 1
    last = settle(claimed(attempts=4, failed_rounds=3), [], 4, "crashed", POLICY, error="KeyError")
    assert last.outcome == "dead" and last.result is not None and last.result.status == "dead"


def test_an_interruption_records_the_attempts_and_releases_only_the_probe() -> None:
    s = settle(claimed(), [answered(503)], 2, "interrupted", POLICY)
    assert s.breaker == "release" and s.outcome is None
    assert s.result is not None and (s.result.status, s.result.retry_in_s) == ("pending", 0.0)
    assert s.result.failed_rounds == 0 and len(s.result.history) == 1


def test_a_round_cancelled_before_any_attempt_gives_its_lease_back() -> None:
    s = settle(claimed(), [], 0, "unattempted", POLICY)
    assert s.result is None and s.breaker == "release"


ENDINGS = st.sampled_from(["answered", "crashed", "interrupted", "unattempted"])
STATUSES = st.sampled_from([None, 200, 204, 404, 410, 429, 503])


@given(ENDINGS, st.lists(STATUSES, min_size=1, max_size=3), st.integers(0, 5))
def test_every_ending_settles_the_probe(ending: str, statuses: list[int | None], rounds: int) -> None:
    """Whatever ends the probe's round, the breaker is never left waiting on it."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10)
    breaker.record(False, 0.0)
    assert breaker.allowed(10.0) == 1
    breaker.claimed_probe()
    tried = [answered(s, number=i + 1) for i, s in enumerate(statuses)]
    s = settle(claimed(failed_rounds=rounds), tried, len(tried), ending, POLICY, error="E")  # type: ignore[arg-type]
    if s.breaker == "release":
        breaker.release_probe()
    else:
        breaker.record(s.breaker == "success", 11.0)
    # Either closed, or open and due to probe again after a cool-down, or free to probe now.
    assert breaker.allowed(11.0 + 10.0) != 0


@given(st.integers(0, 10), st.lists(STATUSES, min_size=1, max_size=3), st.integers(0, 2**32))
def test_a_failed_round_never_waits_less_than_its_schedule(
    rounds: int, statuses: list[int | None], seed: int
) -> None:
    tried = [answered(s) for s in statuses]
    policy = RetryPolicy(schedule_s=[1, 10, 100], jitter=0.2)
    s = settle(claimed(failed_rounds=rounds), tried, 1, "answered", policy, rng=random.Random(seed))
    assert s.result is not None
    if s.outcome == "retry":
        assert s.wait_s is not None and s.wait_s >= policy.schedule_s[rounds] * 0.8
    if rounds >= 3 and tried[-1].outcome == "retry":
        assert s.outcome == "dead"
