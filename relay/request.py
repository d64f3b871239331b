"""The one request builder: what a subscriber receives for an attempt (webhook or test). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from relay import header_rules, retry, signing
from relay.contracts import REGISTRY


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What a request needs to know of its subscriber."""

    name: str
    url: str
    secrets: Sequence[str]
    cloudevents: bool = False
    # Static headers (subscribers.X.headers): on every request, never replacing the relay's own.
    headers: Mapping[str, str] = field(default_factory=dict)
    # The 4xx statuses retried for this subscriber (5xx always are).
    retry_on_status: frozenset[int] = retry.RETRYABLE_4XX

    @property
    def masked(self) -> list[str]:
        """What stored and printed texts never show: the signing secrets and the header values."""
        return [*self.secrets, *header_rules.secrets_of(self.headers)]


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]
    # What a broker destination names its message by and routes it with ("" when unknown).
    event_id: str = ""
    event_type: str = ""
    entity_key: str = ""
    organization_id: str = ""
    generation: int = 0
    # What the destination classifies a response's status with (relay.retry.classify).
    retry_on_status: frozenset[int] = retry.RETRYABLE_4XX


def build(
    target: Target,
    *,
    event_id: str,
    event_type: str,
    body: bytes,
    attempt: int,
    at: datetime,
    journaled_at: datetime | None = None,
    test: bool = False,
    entity_key: str | None = None,
    organization_id: UUID | str | None = None,
    generation: int = 0,
    sequence: int | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> Request:
    """The signed request of one attempt (re-signed at `at`); `test` marks a send-test. The
    entity, organisation and replay generation matter only to broker destinations;
    `trace_headers` (the attempt span's traceparent and tracestate) go out as they are."""
    contract = REGISTRY.get(event_type) if target.cloudevents else None
    headers = signing.headers(
        event_id=event_id,
        event_type=event_type,
        body=body,
        secrets=target.secrets,
        attempt=attempt,
        at=at,
        cloudevents=target.cloudevents,
        publisher=contract.publisher if contract else "",
        journaled_at=journaled_at,
    )
    if entity_key and sequence is not None:
        # Every delivery names its entity and its place in journal order: a subscriber can drop a
        # stale event with one comparison.
        headers["x-it-entity-key"] = entity_key
        headers["x-it-entity-sequence"] = str(sequence)
    if test:
        headers["x-it-test"] = "true"
    if trace_headers:
        headers.update(trace_headers)
    if target.headers:
        # check-config refused any static header that names one of the relay's.
        headers = {**target.headers, **headers}
    return Request(
        target.url,
        body,
        headers,
        event_id,
        event_type,
        entity_key or "",
        "" if organization_id is None else str(organization_id),
        generation,
        target.retry_on_status,
    )
