"""Pure delivery logic: outcome of a response, the durable schedule, Retry-After, the breaker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.circuit import CircuitBreaker
from relay.retry import classify, decide, retry_after_s

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (None, "retry"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (599, "retry"),
        (400, "dead"),
        (401, "dead"),
        (404, "dead"),
        (410, "dead"),
        (422, "dead"),
        (301, "dead"),
    ],
)
def test_classify(status: int | None, outcome: str) -> None:
    assert classify(status) == outcome


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_s({"retry-after": "120"}, NOW) == 120
    assert retry_after_s({"retry-after": "Fri, 27 Nov 2026 12:01:30 GMT"}, NOW) == 90
    assert retry_after_s({"retry-after": "Fri, 27 Nov 2026 11:00:00 GMT"}, NOW) == 0
    assert retry_after_s({"retry-after": "soon"}, NOW) is None
    assert retry_after_s({}, NOW) is None


@given(rounds=st.integers(0, 7), jitter=st.floats(0, 0.5))
def test_waits_follow_the_schedule_within_the_jitter(rounds: int, jitter: float) -> None:
    schedule = [5, 30, 120, 600, 1800, 3600, 10800, 21600]
    decision = decide("retry", rounds, schedule, jitter=jitter)
    assert decision.outcome == "retry"
    assert decision.failed_rounds == rounds + 1
    assert decision.wait_s is not None
    assert schedule[rounds] * (1 - jitter) - 1e-9 <= decision.wait_s <= schedule[rounds] * (1 + jitter) + 1e-9


def test_dead_after_the_last_wait() -> None:
    assert decide("retry", 2, [1, 2]).outcome == "dead"
    assert decide("dead", 0, [1, 2]).outcome == "dead"
    assert decide("delivered", 1, [1, 2]).outcome == "delivered"


@given(asked=st.floats(0, 100_000))
def test_retry_after_is_honoured_but_capped(asked: float) -> None:
    decision = decide("retry", 0, [5], retry_after=asked, retry_after_max=3600, jitter=0)
    assert decision.wait_s == max(5, min(asked, 3600))


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10)
    assert breaker.allowed(0) is None
    breaker.record(False, 0)
    breaker.record(True, 0)  # a success resets the count
    for t in (1, 2, 3):
        breaker.record(False, t)
    assert str(breaker.state) == "open"
    assert breaker.allowed(5) == 0
    assert breaker.seconds_until_probe(5) == 8
    assert breaker.allowed(13) == 1  # one probe after the cool-down
    breaker.claimed_probe()
    assert breaker.allowed(13) == 0  # and only one
    breaker.record(False, 14)
    assert str(breaker.state) == "open"
    assert breaker.allowed(20) == 0
    assert breaker.allowed(24) == 1
    breaker.claimed_probe()
    breaker.record(True, 25)
    assert str(breaker.state) == "closed"
    assert breaker.allowed(25) is None


@pytest.mark.parametrize(
    "value",
    ["²", "١٢", "1e3", "-5", "5.5", "soon", "Mon, 99 Foo 2026 99:99:99 GMT", "", "0x10", "\u00a012"],
)
def test_retry_after_that_is_neither_digits_nor_an_http_date_is_ignored(value: str) -> None:
    # RFC 9110: delay-seconds is ASCII digits; anything else (Unicode digits included) is not.
    assert retry_after_s({"retry-after": value}, NOW) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    result = retry_after_s({"retry-after": value}, NOW)
    assert result is None or result >= 0
