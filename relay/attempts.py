"""One attempt: build the signed request, send it to the lane's destination, keep a scrubbed record;
and what a settled round tells the breaker, the metrics and the log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from relay import codec
from relay.destination import Destination
from relay.lanes import Lane
from relay.logs import debugging, get_logger
from relay.metrics import Metrics
from relay.model import EXCERPT_BYTES, Attempt, AttemptRecord, ClaimedDelivery
from relay.redaction import excerpt
from relay.request import Target, build
from relay.settings import DeliverySettings, SubscriberSettings
from relay.settle import BreakerNote, Settlement
from relay.tracing import Tracing

log = get_logger("relay.dispatch")
# Stored error texts (last_error, attempts.error) are cut to this many bytes, after masking.
ERROR_BYTES = 300


class Attempts:
    """One attempt: sign, POST, classify the response; then what the delivery becomes after it."""

    def __init__(
        self, *, delivery: DeliverySettings, metrics: Metrics, tracing: Tracing | None = None
    ) -> None:
        self._settings = delivery
        self._metrics = metrics
        self._tracing = tracing

    def conclude(self, lane: Lane, item: ClaimedDelivery, settlement: Settlement, probe: bool) -> None:
        """What a settled round tells the breaker, the metrics and the log."""
        # Giving back a probe only matters for the probe: another round must not free it.
        if settlement.breaker != "release" or probe:
            self._observe_circuit(lane, settlement.breaker)
        if settlement.outcome is None or settlement.result is None:
            return
        result = settlement.result
        attempts = result.attempts
        lane.outcomes[settlement.outcome].inc()
        if settlement.outcome == "delivered":
            latency = (datetime.now(UTC) - item.journaled_at).total_seconds()
            self._metrics.event_latency.observe(latency)
            # Asked first: even a dropped line costs binding a logger and building its fields.
            if debugging():
                log.debug(
                    "delivered",
                    event_id=str(item.event_id),
                    event_type=item.event_type,
                    subscriber=lane.name,
                    attempt=attempts,
                    status=result.last_status,
                    latency_ms=round(latency * 1000, 1),
                )
            return
        fields = {
            "event_id": str(item.event_id),
            "event_type": item.event_type,
            "subscriber": lane.name,
            "attempt": attempts,
            "status": result.last_status,
            "error": result.last_error,
        }
        if settlement.outcome == "retry":
            log.info("delivery failed, will retry", retry_in_s=round(settlement.wait_s or 0, 1), **fields)
        else:
            log.warning("delivery dead", **fields)

    def _observe_circuit(self, lane: Lane, note: BreakerNote) -> None:
        if note == "release":
            lane.breaker.release_probe()
        else:
            lane.breaker.record(note == "success", time.monotonic())
        is_open = lane.breaker.state != "closed"  # half-open (probing) is not closed yet
        if is_open != lane.circuit_reported_open:
            lane.circuit_reported_open = is_open
            self._metrics.circuit_open.labels(lane.name).set(1 if is_open else 0)
            if is_open:
                log.warning("circuit opened: claims paused", subscriber=lane.name)
            else:
                log.info("circuit closed: claims resumed", subscriber=lane.name)

    async def attempt(self, lane: Lane, item: ClaimedDelivery, attempt: int) -> Attempt:
        now = datetime.now(UTC)
        span = None
        if self._tracing is not None:
            span = self._tracing.attempt(lane.target.url, lane.name, item, attempt)
        request = build(
            lane.target,
            event_id=str(item.event_id),
            event_type=item.event_type,
            body=item.body,
            attempt=attempt,
            at=now,
            journaled_at=item.journaled_at,
            entity_key=item.entity_key,
            organization_id=item.organization_id,
            generation=item.generation,
            sequence=item.sequence,
            trace_headers=span.headers if span is not None else None,
        )
        started = time.perf_counter()
        if span is None:
            answer = await lane.destination.send(request, lane.timeout_s, now)
        else:
            try:
                answer = await lane.destination.send(request, lane.timeout_s, now)
            except BaseException as exc:
                span.failed(exc)
                raise
            span.answered(answer)
        elapsed = time.perf_counter() - started
        lane.duration.observe(elapsed)
        error = stored_error(answer.error, lane.target.masked)
        record = self._record(lane, attempt, now, elapsed, answer.status, error, answer.body)
        return Attempt(answer.outcome, answer.status, error, answer.retry_after_s, record)

    def _record(
        self,
        lane: Lane,
        attempt: int,
        at: datetime,
        elapsed_s: float,
        status: int | None,
        error: str | None,
        body: bytes = b"",
    ) -> AttemptRecord | None:
        if not self._settings.record_attempts:
            return None
        return AttemptRecord(
            attempt=attempt,
            at=at,
            http_status=status,
            error=error,
            duration_ms=round(elapsed_s * 1000, 3),
            excerpt=excerpt(body, EXCERPT_BYTES, lane.target.masked) if body else None,
        )


@dataclass(frozen=True, slots=True)
class SendTestResult:
    """What `send-test` saw: the HTTP status (None when no response), the time, an excerpt."""

    event_id: UUID
    status: int | None
    elapsed_s: float
    excerpt: str


async def send_test(
    destination: Destination,
    subscriber: SubscriberSettings,
    delivery: DeliverySettings,
    body: bytes,
    event_type: str,
) -> SendTestResult:
    """One signed request, as a real first attempt is sent, marked `x-it-test: true`."""
    event_id = UUID(str(codec.loads(body)["event_id"]))
    target = target_of(subscriber)
    now = datetime.now(UTC)
    request = build(
        target, event_id=str(event_id), event_type=event_type, body=body, attempt=1, at=now, test=True
    )
    started = time.perf_counter()
    answer = await destination.send(request, subscriber.timeout_s or delivery.timeout_s, now)
    elapsed = time.perf_counter() - started
    if answer.status is None:
        return SendTestResult(event_id, None, elapsed, stored_error(answer.error, target.masked) or "")
    return SendTestResult(
        event_id, answer.status, elapsed, excerpt(answer.body, EXCERPT_BYTES, target.masked)
    )


def target_of(subscriber: SubscriberSettings, name: str = "") -> Target:
    """A configured subscriber as requests see it."""
    return Target(
        name=name,
        url=str(subscriber.url),
        secrets=subscriber.signing_secrets(),
        cloudevents=subscriber.format == "cloudevents",
        headers=subscriber.static_headers(),
        retry_on_status=subscriber.retryable_statuses(),
    )


def stored_error(text: str | None, secrets: Sequence[str]) -> str | None:
    """An error text fit to store and print: secrets in every form, URL credentials and licence keys masked."""
    return None if text is None else excerpt(text.encode(), ERROR_BYTES, secrets)
