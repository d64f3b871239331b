"""Outcomes as a subscriber that answers 200 at once leaves them: for tests and benchmarks that
drive the journal's statements without sending anything."""

from __future__ import annotations

from datetime import UTC, datetime

from relay.model import AttemptRecord, ClaimedDelivery, DeliveryResult


def delivered(claimed: ClaimedDelivery, at: datetime | None = None) -> DeliveryResult:
    """The claimed attempt answered 200, with its one-line history."""
    return DeliveryResult(
        event_id=claimed.event_id,
        subscriber=claimed.subscriber,
        status="delivered",
        attempts=claimed.attempts,
        failed_rounds=0,
        retry_in_s=None,
        last_status=200,
        last_error=None,
        history=(
            AttemptRecord(
                attempt=claimed.attempts,
                at=at or datetime.now(UTC),
                http_status=200,
                error=None,
                duration_ms=1.0,
                excerpt="ok",
            ),
        ),
    )
