"""The relay's records and vocabularies: plain data, no I/O. Every layer speaks in these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args
from uuid import UUID

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; rejected text is kept to this size too.
NOTIFY_LIMIT_BYTES: Final = 8000
# Rows per round trip: notifications journaled, outcomes written.
BATCH_LIMIT: Final = 1000
# The start of a subscriber's response kept per attempt (scrubbed), for `deliveries show`.
EXCERPT_BYTES: Final = 1024

EventStatus = Literal["pending", "routed", "rejected"]
DeliveryStatus = Literal["pending", "delivered", "dead", "held"]
Outcome = Literal["delivered", "retry", "dead"]
# How an event reached the journal (events.source), or where a rejection was decided.
Source = Literal["publish", "notify", "journal", "parse"]
RejectionReason = Literal[
    "not_json",
    "not_an_object",
    "unknown_event_type",
    "schema",
    "too_deep",
    "too_large",
    "invalid_text",
    "untrusted_sender",
]
REJECTION_REASONS: Final[tuple[RejectionReason, ...]] = get_args(RejectionReason)
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)
# How the relay logs, and which HTTP client sends (docs/benchmarks.md chose the default).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "console"]
Transport = Literal["pyreqwest", "pyqwest", "aiohttp", "httpx-aiohttp", "httpx"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("delivered", "retry", "dead")
# An attempt's outcome becomes the delivery's status: a retry waits, pending, for its next round.
STATUS_AFTER: Final[dict[Outcome, DeliveryStatus]] = {
    "delivered": "delivered",
    "retry": "pending",
    "dead": "dead",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """Why an event (or something that was meant to be one) was not accepted.

    `payload` is the redacted JSON value, or the scrubbed text when it was not JSON; `raw_text`
    is what the journal keeps for a notification that could not be stored as JSON.
    """

    reason: RejectionReason
    errors: Sequence[str]
    payload: Any = None
    event_type: str | None = None
    event_id: UUID | None = None
    source: Source = "parse"
    raw_text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifiedEvent:
    """A full payload heard on the channel, to be journaled under `event_id`."""

    event_id: UUID
    event_type: str
    payload: dict[str, Any]
    organization_id: UUID | None
    # The producer's W3C trace context (validated), kept by the journal beside the payload.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutedEvent:
    """A validated event: its webhook body and the subscribers it goes to."""

    event_id: UUID
    event_type: str
    body: bytes
    entity_key: str | None
    organization_id: UUID | None
    subscribers: Sequence[str]
    # The routing span's trace context, kept for an event that came without one (None: keep as is).
    traceparent: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedDelivery:
    """A delivery leased to this instance for one attempt."""

    event_id: UUID
    subscriber: str
    event_type: str
    # The number of the attempt this claim is for (the claim counted it).
    attempts: int
    failed_rounds: int
    body: bytes
    journaled_at: datetime
    # How many times an operator replayed it (a broker message id includes it), and what a
    # broker's routing templates may name.
    generation: int = 0
    entity_key: str | None = None
    organization_id: UUID | None = None
    # Its event's place in journal order (x-it-entity-sequence: strictly increasing per entity).
    sequence: int | None = None
    # The event's trace context: each attempt's span continues it.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What a destination (webhook or broker) made of one request."""

    outcome: Outcome
    # The HTTP status (None: no response, or a broker, which has none), the reason when not
    # delivered, the subscriber's Retry-After in seconds, and the start of its response (raw: the
    # caller scrubs it).
    status: int | None
    error: str | None
    retry_after_s: float | None = None
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One HTTP attempt as the attempts history keeps it (excerpt already scrubbed)."""

    attempt: int
    at: datetime
    http_status: int | None
    error: str | None
    duration_ms: float
    excerpt: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended: its outcome, the HTTP status (None: no response), and the record kept."""

    outcome: Outcome
    status: int | None
    error: str | None
    retry_after_s: float | None
    record: AttemptRecord | None = None

    @property
    def quick_retry(self) -> bool:
        # A Retry-After is the subscriber asking for time: straight to the durable schedule.
        return self.outcome == "retry" and self.retry_after_s is None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    """What an attempt (or a round of quick retries) left a delivery as."""

    event_id: UUID
    subscriber: str
    status: DeliveryStatus
    attempts: int
    failed_rounds: int
    # Seconds from now (the database's clock) until the next attempt; None keeps the current time.
    retry_in_s: float | None
    last_status: int | None
    last_error: str | None
    # The HTTP attempts this claim made (quick retries included), oldest first.
    history: Sequence[AttemptRecord] = ()
    # Gone dead on an ordered subscriber with on_exhausted = "hold": its entity's later deliveries
    # are held until released.
    hold: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingEvent:
    """A journaled event not yet routed: its payload as the journal keeps it (JSON text)."""

    event_id: UUID
    payload: str
    source: Source
    # The producer's trace context, when it gave one (validated when journaled).
    traceparent: str | None = None
    # The row's version when read (its xmin): a routing takes the event only if it is unchanged.
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberState:
    """What every instance shares about a subscriber: paused by an operator, the last circuit seen."""

    paused: bool | None
    changed_at: datetime | None
    changed_by: str | None
    circuit: str
    circuit_changed_at: datetime | None


def effectively_paused(shared: SubscriberState | None, *, enabled: bool) -> bool:
    """Whether a subscriber's deliveries are held: an operator's last pause or resume, else
    `enabled = false` in the configuration."""
    if shared is not None and shared.paused is not None:
        return shared.paused
    return not enabled


# ─── What the operators' commands read ─────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRow:
    """One delivery as the delivery log shows it."""

    event_id: UUID
    event_type: str
    subscriber: str
    status: DeliveryStatus
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRow:
    """One attempt of a delivery, as kept in its history (the excerpt scrubbed when written)."""

    attempt: int
    attempted_at: datetime
    http_status: int | None
    error: str | None
    duration_ms: float
    response_excerpt: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryHistory(DeliveryRow):
    """A delivery and every attempt it had, oldest first."""

    history: tuple[AttemptRow, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class JournaledEvent:
    """An event's journal row, its (redacted) payload decoded."""

    event_id: UUID
    event_type: str
    status: EventStatus
    source: Source
    payload: Any
    created_at: datetime
    routed_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectionRow:
    """A recorded rejection, as `rejections list` shows it."""

    id: int
    event_id: UUID | None
    event_type: str | None
    reason: RejectionReason
    errors: tuple[str, ...]
    source: Source
    received_at: datetime
    resolved_at: datetime | None
    resolved_event_id: UUID | None
    # Set aside as junk by an operator (`rejections dismiss`): left out of the default list.
    dismissed_at: datetime | None = None
    dismissed_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectionDetail(RejectionRow):
    """A rejection with what was received: the redacted JSON value, or the scrubbed text."""

    payload: Any
    raw_text: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Journey:
    """One event: its journal row, its rejection if any, each delivery with its attempts."""

    event: JournaledEvent | None
    rejection: RejectionDetail | None
    deliveries: tuple[DeliveryHistory, ...]
    # The operators' actions that touched it, oldest first.
    audit: tuple[AuditEntry, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberStats:
    """A subscriber's delivery figures (`status`): backlog, outcomes in 5 and 60 minutes, latency
    of the last hour, last success and error, its shared state; `now` is the database's clock."""

    subscriber: str
    backlog: int
    oldest_pending: datetime | None
    delivered_5m: int
    failed_5m: int
    delivered_60m: int
    failed_60m: int
    p50_s: float | None
    p99_s: float | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    paused: bool | None
    circuit: str | None
    circuit_changed_at: datetime | None
    now: datetime
    dead: int = 0
    # The earliest next attempt of its pending deliveries.
    next_attempt: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldEntities:
    """A subscriber's entities held behind a dead head: how many, and the oldest's age."""

    entities: int
    oldest_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Released:
    """What `it-relay release` freed: dead heads no longer holding, held deliveries now pending."""

    heads: int
    released: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberGauges:
    """What the gauges show of one subscriber."""

    pending: int
    dead: int
    oldest_pending_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One relay instance as it records itself."""

    owner: str
    host: str
    pid: int
    version: str
    config: str
    subscribers: Sequence[str]
    leading: bool


# ─── Operators' actions on record, and the instances they act on ──────────────────────────────

AuditActionName = Literal["pause", "resume", "replay", "backfill", "republish", "release", "dismiss"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditAction:
    """An operator's action as the command knows it (who, with what); the gateway adds what it
    touched when it records it in the action's own transaction."""

    action: AuditActionName
    arguments: Mapping[str, Any]
    os_user: str | None
    host: str | None
    subscriber: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One operator action on record (`event_ids`: those it touched, a bounded sample in bulk)."""

    id: int
    at: datetime
    action: AuditActionName
    db_role: str
    os_user: str | None
    host: str | None
    arguments: dict[str, Any]
    count: int | None
    event_ids: tuple[UUID, ...]
    subscriber: str | None
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveInstance:
    """A relay instance that recorded itself recently, as `status` lists it."""

    host: str
    pid: int
    version: str
    config: str
    subscribers: tuple[str, ...]
    scheduler_leader: bool
    started_at: datetime
    heartbeat_age_s: float
