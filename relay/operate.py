"""What the operators' commands decide, without a command line: which subscribers are served,
paused or not served and why, the status of each subscriber and of the instances running, what a
backfill covers and whether anything will deliver it, when a rejection may be republished and as
what. `relay.cli_operate` parses the arguments and prints the records returned here (`--json` is
the record serialised)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from relay import audit_queries, codec, journal, operator_queries
from relay.contracts import REGISTRY, SUBSCRIBERS, Accepted, UnknownFields, parse_event, routed_subscribers
from relay.database import Conn
from relay.display import duration, when
from relay.errors import InputError, UserError
from relay.ingest import classify
from relay.model import (
    Journey,
    LiveInstance,
    NotifiedEvent,
    Rejection,
    RejectionDetail,
    SubscriberState,
    SubscriberStats,
    effectively_paused,
)
from relay.redaction import scrub_external
from relay.settings import Settings, canonical_subscriber, fingerprint
from relay.subscriber_policy import SubscriberPolicy, policies

Serving = Literal["served", "paused", "not served"]


def subscriber_named(name: str, option: str = "--subscriber") -> str:
    """A contract subscriber's canonical name (names match case-insensitively, as in the config)."""
    canonical = canonical_subscriber(name)
    if canonical is None:
        raise InputError(f"{option} {name!r}: not a subscriber of the contracts ({', '.join(SUBSCRIBERS)})")
    return canonical


def event_type_named(value: str | None) -> str | None:
    if value is not None and value not in REGISTRY:
        raise InputError(f"--event-type {value!r}: not an event type of the contracts")
    return value


def routed_event_types(subscriber: str) -> list[str]:
    """The event types the contracts route to `subscriber`, in the contracts' order."""
    return [t for t, c in REGISTRY.items() if subscriber in c.subscribers]


# A reason given with an action (pause --reason, dismiss --reason): kept in the audit.
REASON_LIMIT = 500


def reason_given(text: str | None, option: str = "--reason") -> str | None:
    """An operator's reason fit to keep: printable, at most REASON_LIMIT characters, licence keys
    and URL credentials masked; None when none was given."""
    if text is None:
        return None
    kept = text.strip()
    if not kept or len(kept) > REASON_LIMIT or not all(c.isprintable() for c in kept):
        raise InputError(f"{option}: give one line of printable text, at most {REASON_LIMIT} characters")
    return scrub_external(kept)


def alive_within_s(settings: Settings) -> float:
    """How recent an instance's record must be for it to count as alive: as the daemon counts
    (three poll intervals and a margin)."""
    return 3 * settings.database.poll_interval_s + 10


# ─── Subscribers ─────────────────────────────────────────────────────────────────────────────


def serving(
    name: str,
    settings: Settings,
    states: dict[str, SubscriberState],
    served_by: Collection[str] | None = None,
) -> Serving:
    """What the relay does for `name`: by the subscribers the live instances serve (`served_by`)
    when they are known, else by this configuration."""
    conf = settings.subscribers.get(name)
    if (name not in served_by) if served_by is not None else conf is None:
        return "not served"
    enabled = conf.enabled if conf is not None else True
    return "paused" if effectively_paused(states.get(name), enabled=enabled) else "served"


def served_here(name: str, settings: Settings) -> str:
    """`name`, if this configuration serves it (pause and resume act only on those)."""
    if name not in settings.subscribers:
        raise InputError(f"{name}: not served here (no [subscribers.{name}] in the configuration)")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberListing:
    """A subscriber of the contracts as `subscribers list` shows it."""

    subscriber: str
    state: Serving
    routed: bool
    why: str
    # What the contracts route to it.
    event_types: list[str]


def _why(name: str, settings: Settings, shared: SubscriberState | None) -> str:
    conf = settings.subscribers.get(name)
    if conf is None:
        return f"no [subscribers.{name}] in the configuration: no deliveries are created"
    if shared is not None and shared.paused is not None and shared.changed_at is not None:
        verb = "paused" if shared.paused else "resumed"
        return f"{verb} by {shared.changed_by} at {when(shared.changed_at)}"
    return "" if conf.enabled else "enabled = false in the configuration"


async def subscribers(conn: Conn, settings: Settings) -> list[SubscriberListing]:
    """Every subscriber of the contracts: served, paused or not served here, and why."""
    states = await journal.subscriber_states(conn)
    routed = routed_subscribers()
    return [
        SubscriberListing(
            subscriber=name,
            state=serving(name, settings, states),
            routed=name in routed,
            why=_why(name, settings, states.get(name)),
            event_types=routed_event_types(name),
        )
        for name in SUBSCRIBERS
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberStatus:
    """One subscriber's line of `status`: its state, backlog and outcomes (`_s`: seconds)."""

    subscriber: str
    state: Serving
    backlog: int
    oldest_pending_s: float | None
    next_attempt: datetime | None
    dead: int
    delivered_5m: int
    failed_5m: int
    delivered_60m: int
    failed_60m: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    circuit: str
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None


def status_line(name: str, state: Serving, s: SubscriberStats | None) -> SubscriberStatus:
    """`name`'s line of `status` from its figures (None: nothing delivered, tried or shared yet)."""
    if s is None:
        return SubscriberStatus(
            subscriber=name,
            state=state,
            backlog=0,
            oldest_pending_s=None,
            next_attempt=None,
            dead=0,
            delivered_5m=0,
            failed_5m=0,
            delivered_60m=0,
            failed_60m=0,
            latency_p50_s=None,
            latency_p99_s=None,
            circuit="closed",
            last_success=None,
            last_error=None,
            last_error_at=None,
        )
    oldest = None if s.oldest_pending is None else round((s.now - s.oldest_pending).total_seconds(), 1)
    return SubscriberStatus(
        subscriber=name,
        state=state,
        backlog=s.backlog,
        oldest_pending_s=oldest,
        next_attempt=s.next_attempt,
        dead=s.dead,
        delivered_5m=s.delivered_5m,
        failed_5m=s.failed_5m,
        delivered_60m=s.delivered_60m,
        failed_60m=s.failed_60m,
        latency_p50_s=_round(s.p50_s),
        latency_p99_s=_round(s.p99_s),
        circuit=s.circuit or "closed",
        last_success=s.last_success,
        last_error=s.last_error,
        last_error_at=s.last_error_at,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """`status`: every subscriber of the contracts (in their order), the events not routed yet,
    the instances alive, this command's configuration fingerprint, and what looks wrong."""

    now: datetime
    subscribers: list[SubscriberStatus]
    unrouted_events: int
    instances: list[LiveInstance]
    config: str
    warnings: list[str]
    # What each configured subscriber's deliveries follow (filter, rate limit, retries, headers).
    policies: list[SubscriberPolicy] = field(default_factory=list)


async def status(conn: Conn, settings: Settings) -> StatusReport:
    stats = {s.subscriber: s for s in await operator_queries.subscriber_stats(conn)}
    states = await journal.subscriber_states(conn)
    instances = await audit_queries.live_instances(conn, alive_within_s(settings))
    unrouted = await journal.unrouted_events(conn)
    now = await journal.database_now(conn)
    return status_report(now, settings, stats, states, instances, unrouted)


def status_report(
    now: datetime,
    settings: Settings,
    stats: dict[str, SubscriberStats],
    states: dict[str, SubscriberState],
    instances: Sequence[LiveInstance],
    unrouted: int,
) -> StatusReport:
    """The report from its figures: a subscriber is served when a live instance serves it (by
    this configuration when none is alive)."""
    served_by = {name for i in instances for name in i.subscribers} if instances else None
    lines = [status_line(n, serving(n, settings, states, served_by), stats.get(n)) for n in SUBSCRIBERS]
    mine = fingerprint(settings)
    return StatusReport(
        now=now,
        subscribers=lines,
        unrouted_events=unrouted,
        instances=list(instances),
        config=mine,
        warnings=status_warnings(settings, mine, instances, unrouted),
        policies=policies(settings),
    )


def status_warnings(
    settings: Settings, mine: str, instances: Sequence[LiveInstance], unrouted: int
) -> list[str]:
    """What an operator must know: no instance alive, instances on another configuration than the
    one this command read, subscribers configured here that nothing serves."""
    if not instances:
        waiting = f"; {unrouted} events wait unrouted" if unrouted else ""
        return [
            f"no relay instance is alive (none recorded itself in the last "
            f"{duration(alive_within_s(settings))}): nothing is routed or delivered{waiting}"
        ]
    warnings = []
    other = [i for i in instances if i.config != mine]
    if other:
        named = ", ".join(f"{i.host}:{i.pid} ({i.config})" for i in other)
        warnings.append(
            f"{named} run another configuration than this command read ({mine}): "
            "reload them (SIGHUP: systemctl reload it-relay) or give this command their --config"
        )
    served = {name for i in instances for name in i.subscribers}
    idle = sorted(set(settings.subscribers) - served)
    if idle:
        warnings.append(f"configured here but served by no live instance: {', '.join(idle)}")
    return warnings


# ─── Events and backfill ─────────────────────────────────────────────────────────────────────


async def journey(conn: Conn, event_id: UUID) -> Journey:
    """One event's journey; a user error when the journal knows nothing of it."""
    found = await operator_queries.event_journey(conn, event_id)
    if found.event is None and found.rejection is None:
        raise UserError(
            f"no event {event_id} in the journal (pruned after its retention, or never journaled)"
        )
    return found


def backfill_types(name: str, settings: Settings) -> list[str]:
    """What a backfill for `name` creates deliveries of; only for a subscriber configured here."""
    if name not in settings.subscribers:
        raise InputError(f"--subscriber {name}: not configured here (add [subscribers.{name}] first)")
    return routed_event_types(name)


def backfill_warning(name: str, instances: Sequence[LiveInstance]) -> str | None:
    """Why a backfill for `name` would wait: no live instance serves it (None: one does)."""
    if any(name in i.subscribers for i in instances):
        return None
    if not instances:
        return f"no relay instance is alive: {name}'s deliveries wait until one runs"
    return (
        f"no live instance serves {name} yet: its deliveries wait until one does "
        "(reload the instances with the new configuration: systemctl reload it-relay)"
    )


# ─── Rejections ──────────────────────────────────────────────────────────────────────────────


async def rejection(conn: Conn, number: int, event_id: UUID | None, given: str) -> RejectionDetail:
    """The rejection `given` names (its id `number`, or else `event_id`); a user error if none."""
    found = await operator_queries.rejection(conn, number, event_id)
    if found is None:
        raise UserError(f"no rejection {given} (pruned after its retention, or never recorded)")
    return found


def not_dismissable(row: RejectionDetail) -> str:
    """Why a rejection cannot be dismissed (it was republished, or dismissed before)."""
    if row.resolved_at is not None:
        return f"rejection {row.id} was republished as {row.resolved_event_id}: nothing to dismiss"
    return f"rejection {row.id} was dismissed already, by {row.dismissed_by} at {when(row.dismissed_at)}"


def republishable(row: RejectionDetail, corrected: dict[str, Any] | None) -> dict[str, Any]:
    """The event to publish again for this rejection: the corrected one, else the stored payload."""
    if row.resolved_at is not None:
        raise UserError(f"rejection {row.id} was already republished as {row.resolved_event_id}")
    if corrected is not None:
        return corrected
    if not isinstance(row.payload, dict):
        raise UserError(
            f"rejection {row.id} kept no event object ({row.reason}): give the corrected event with --file"
        )
    return row.payload


def revalidated(
    payload: dict[str, Any], row: RejectionDetail, unknown_fields: UnknownFields
) -> NotifiedEvent | Rejection:
    """The event to journal, valid by the contracts, under the rejection's event_id when it had
    one; or, still invalid, why."""
    if row.event_id is not None:
        given = codec.uuid_or_none(payload.get("event_id"))
        if given is not None and given != row.event_id:
            raise InputError(
                f"the corrected event's event_id {given} is not the rejected one ({row.event_id})"
            )
        payload = payload | {"event_id": str(row.event_id)}
    result = parse_event(payload, unknown_fields)
    if isinstance(result, Rejection):
        return result
    assert isinstance(result, Accepted)
    event = classify(codec.dumps(payload).decode())
    assert isinstance(event, NotifiedEvent), "a valid event object classifies as an event"
    return event
