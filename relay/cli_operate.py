"""Operator commands: the delivery log, one event's journey, replay and backfill, subscribers'
run-time state, rejections, and a live status view. Every one reads or writes the journal."""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from relay import codec, journal
from relay.cli_common import ConfigOption, cut, event_id_option, load, with_db
from relay.contracts import REGISTRY, SUBSCRIBERS, Accepted, parse_event, routed_subscribers
from relay.errors import InputError, UserError
from relay.ingest import classify
from relay.model import REJECTION_REASONS, NotifiedEvent, Rejection
from relay.settings import Settings, canonical_subscriber

# Above this many deliveries, replay asks first (and refuses without a terminal unless --yes).
CONFIRM_ABOVE = 10

deliveries_app = typer.Typer(help="The delivery log.", no_args_is_help=True)
subscribers_app = typer.Typer(
    help="Subscribers' run-time state, shared by every instance.", no_args_is_help=True
)
rejections_app = typer.Typer(help="Rejected events: inspect, correct, publish again.", no_args_is_help=True)


class DeliveryState(StrEnum):
    """The delivery statuses, as stored and shown everywhere (a retry waits as pending)."""

    pending = "pending"
    delivered = "delivered"
    dead = "dead"
    held = "held"


Reason = StrEnum("Reason", {r: r for r in REJECTION_REASONS})  # type: ignore[misc]

Status = Annotated[DeliveryState | None, typer.Option(help="The delivery status.")]
Since = Annotated[datetime | None, typer.Option(help="From this time (UTC if no offset).")]
Until = Annotated[datetime | None, typer.Option(help="Before this time (UTC if no offset).")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON, for scripts.")]


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `it-relay` application."""
    app.add_typer(deliveries_app, name="deliveries")
    app.add_typer(subscribers_app, name="subscribers")
    app.add_typer(rejections_app, name="rejections")
    app.command()(replay)
    app.command()(backfill)
    app.command()(status)


def _status(value: DeliveryState | None) -> str | None:
    return None if value is None else value.value


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=value.tzinfo or UTC) if value else None


def _subscriber(name: str, option: str = "--subscriber") -> str:
    """A contract subscriber's canonical name (names match case-insensitively, as in the config)."""
    canonical = canonical_subscriber(name)
    if canonical is None:
        raise InputError(f"{option} {name!r}: not a subscriber of the contracts ({', '.join(SUBSCRIBERS)})")
    return canonical


def _event_type(value: str | None) -> str | None:
    if value is not None and value not in REGISTRY:
        raise InputError(f"--event-type {value!r}: not an event type of the contracts")
    return value


def _echo_json(value: Any) -> None:
    typer.echo(codec.dumps(value).decode())


# ─── deliveries ──────────────────────────────────────────────────────────────────────────────


@deliveries_app.command("list")
def deliveries_list(
    config: ConfigOption = None,
    status: Status = None,
    subscriber: Annotated[str | None, typer.Option(help="A subscriber, e.g. PF-10.")] = None,
    event_type: Annotated[str | None, typer.Option("--event-type", help="An event type.")] = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="One event.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, for scripts.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="The whole last error, not cut to the column.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Then print each new outcome as it is written (Ctrl-C ends)."),
    ] = False,
) -> None:
    """List deliveries, newest first; with --follow, then stream new outcomes."""
    wanted_status = _status(status)
    name = _subscriber(subscriber) if subscriber else None
    kind = _event_type(event_type)
    settings = load(config)
    wanted = event_id_option(event_id)
    rows = with_db(
        settings,
        lambda conn: journal.list_deliveries(
            conn, status=wanted_status, subscriber=name, event_type=kind, event_id=wanted, limit=limit
        ),
    )
    if not as_json:
        typer.echo(
            f"{'event_id':36}  {'event_type':34} {'subscriber':10} {'status':9} {'att':>3}  {'last':14} updated"
        )
    for row in rows:
        _print_delivery(row, as_json=as_json, wide=wide)
    if follow:
        after = max((r["updated_at"] for r in rows), default=None)
        _follow(settings, after, wanted_status, name, kind, as_json=as_json, wide=wide)


def _print_delivery(r: asyncpg.Record, *, as_json: bool, wide: bool) -> None:
    if as_json:
        _echo_json(dict(r))
        return
    last = r["last_error"] or (str(r["last_status"]) if r["last_status"] is not None else "")
    line = (
        f"{r['event_id']!s:36}  {r['event_type']:34} {r['subscriber']:10} {r['status']:9} "
        f"{r['attempts']:>3}  {'' if wide else cut(last, 14):14} {r['updated_at']:%Y-%m-%d %H:%M:%S}"
    )
    typer.echo(f"{line}  {last}" if wide else line)


def _follow(
    settings: Settings,
    after: datetime | None,
    status: str | None,
    subscriber: str | None,
    event_type: str | None,
    *,
    as_json: bool,
    wide: bool,
) -> None:
    """Poll for outcomes written since the last one shown; one connection for the whole stream."""

    async def stream(conn: asyncpg.Connection) -> None:
        last = after or await journal.database_now(conn)
        while True:
            rows = await journal.follow_deliveries(
                conn, last, status=status, subscriber=subscriber, event_type=event_type
            )
            for row in rows:
                _print_delivery(row, as_json=as_json, wide=wide)
                last = row["updated_at"]
            sys.stdout.flush()
            if len(rows) < 1000:
                await asyncio.sleep(settings.database.poll_interval_s if not rows else 0.2)

    try:
        with_db(settings, stream)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@deliveries_app.command("show")
def deliveries_show(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="The event's id.")],
    config: ConfigOption = None,
    as_json: AsJson = False,
) -> None:
    """One event: its (redacted) payload and, per subscriber, every attempt."""
    wanted = event_id_option(event_id)
    assert wanted is not None
    settings = load(config)
    event, deliveries, attempts, rejection = with_db(
        settings, lambda conn: journal.event_journey(conn, wanted)
    )
    if event is None and rejection is None:
        raise UserError(f"no event {wanted} in the journal (pruned after its retention, or never journaled)")
    tried: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        row = dict(a)
        tried.setdefault(row.pop("subscriber"), []).append(row)
    journey = {
        "event": None if event is None else _event_dict(event),
        "rejection": None if rejection is None else _rejection_dict(rejection),
        "deliveries": [dict(d) | {"history": tried.get(d["subscriber"], [])} for d in deliveries],
    }
    if as_json:
        _echo_json(journey)
        return
    _print_journey(journey)


def _event_dict(event: asyncpg.Record) -> dict[str, Any]:
    return dict(event) | {"payload": codec.loads(event["payload"])}


def _print_journey(journey: dict[str, Any]) -> None:
    event = journey["event"]
    if event is not None:
        typer.echo(
            f"event {event['event_id']} {event['event_type']}: {event['status']} "
            f"(journaled {event['created_at']:%Y-%m-%d %H:%M:%S%z} via {event['source']})"
        )
        typer.echo(codec.dumps(event["payload"], indent=True).decode())
    if journey["rejection"] is not None:
        r = journey["rejection"]
        typer.echo(f"rejected ({r['reason']}, rejection {r['id']}): {'; '.join(r['errors'])}")
    if not journey["deliveries"]:
        typer.echo("no deliveries")
    for d in journey["deliveries"]:
        typer.echo(f"{d['subscriber']}: {d['status']} after {d['attempts']} attempt(s)")
        for a in d["history"]:
            outcome = a["error"] or f"HTTP {a['http_status']}"
            typer.echo(
                f"  #{a['attempt']} {a['attempted_at']:%Y-%m-%d %H:%M:%S.%f%z} {outcome} "
                f"in {a['duration_ms']:.1f} ms"
            )
            if a["response_excerpt"]:
                typer.echo("     " + a["response_excerpt"].replace("\n", "\n     "))


# ─── replay and backfill ───────────────────────────────────────────────────────────────────────


def replay(
    config: ConfigOption = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="This event's deliveries.")] = None,
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber's deliveries.")] = None,
    all_subscribers: Annotated[
        bool, typer.Option("--all-subscribers", help="Every subscriber's deliveries.")
    ] = False,
    status: Status = None,
    event_type: Annotated[str | None, typer.Option("--event-type", help="Only this event type.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Events journaled at or after this time (UTC if no offset).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Events journaled before this time.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be re-queued; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help=f"No confirmation above {CONFIRM_ABOVE}.")] = False,
) -> None:
    """Re-queue deliveries; they go out again with the same event_id (webhook-id)."""
    selection = _replay_selection(event_id, subscriber, all_subscribers, status, event_type, since, until)
    settings = load(config)
    channel = settings.database.channel
    counts = with_db(settings, lambda conn: journal.replay(conn, channel, selection, dry_run=True))
    total = sum(counts.values())
    if total == 0:
        raise UserError("nothing to replay: no delivery matches")
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    if dry_run:
        typer.echo(f"would re-queue {total} deliveries: {summary}")
        return
    if total > CONFIRM_ABOVE and not yes:
        if not sys.stdin.isatty():
            raise InputError(
                f"would re-queue {total} deliveries ({summary}): add --yes, or --dry-run to look"
            )
        if not typer.confirm(f"re-queue {total} deliveries ({summary})?"):
            raise typer.Exit(1)
    done = with_db(settings, lambda conn: journal.replay(conn, channel, selection))
    typer.echo(f"re-queued {sum(done.values())} deliveries: {', '.join(f'{n} {c}' for n, c in done.items())}")


def _replay_selection(
    event_id: str | None,
    subscriber: str | None,
    all_subscribers: bool,
    status: DeliveryState | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
) -> journal.Selection:
    if subscriber is not None and all_subscribers:
        raise InputError("give --subscriber X or --all-subscribers, not both")
    if event_id is None and subscriber is None and not all_subscribers:
        raise InputError("give --event-id ID, or --subscriber X / --all-subscribers with --status S")
    if event_id is None and status is None:
        raise InputError("--status is required unless --event-id is given (pending, delivered or dead)")
    begin, end = _utc(since), _utc(until)
    if begin and end and end <= begin:
        raise InputError("--until must be later than --since")
    return journal.Selection(
        event_id=event_id_option(event_id),
        subscribers=None if subscriber is None else [_subscriber(subscriber)],
        status=_status(status),
        event_type=_event_type(event_type),
        since=begin,
        until=end,
    )


def backfill(
    subscriber: Annotated[str, typer.Option("--subscriber", help="The subscriber added later.")],
    since: Annotated[
        datetime, typer.Option(help="Events journaled at or after this time (UTC if no offset).")
    ],
    until: Until = None,
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be created; change nothing.")
    ] = False,
) -> None:
    """Create deliveries from the journal for a subscriber that was not served when they were routed."""
    name = _subscriber(subscriber)
    begin, end = _utc(since), _utc(until)
    assert begin is not None
    if end and end <= begin:
        raise InputError("--until must be later than --since")
    settings = load(config)
    if name not in settings.subscribers:
        raise InputError(f"--subscriber {name}: not configured here (add [subscribers.{name}] first)")
    types = [t for t, c in REGISTRY.items() if name in c.subscribers]
    counts = with_db(
        settings,
        lambda conn: journal.backfill(
            conn,
            settings.database.channel,
            subscriber=name,
            event_types=types,
            since=begin,
            until=end,
            dry_run=dry_run,
        ),
    )
    total = sum(counts.values())
    verb = "would create" if dry_run else "created"
    detail = ", ".join(f"{t} {n}" for t, n in counts.items())
    typer.echo(f"{verb} {total} deliveries for {name}" + (f": {detail}" if detail else ""))


# ─── subscribers and status ───────────────────────────────────────────────────────────────────


def _state(name: str, settings: Settings, states: dict[str, journal.SubscriberState]) -> str:
    """served, paused or not served: what the relay with this configuration does for `name`."""
    conf = settings.subscribers.get(name)
    if conf is None:
        return "not served"
    shared = states.get(name)
    paused = shared.paused if shared is not None and shared.paused is not None else not conf.enabled
    return "paused" if paused else "served"


@subscribers_app.command("list")
def subscribers_list(config: ConfigOption = None, as_json: AsJson = False) -> None:
    """Every subscriber of the contracts: served, paused or not served here, and why."""
    settings = load(config)
    states = with_db(settings, journal.subscriber_states)
    routed = routed_subscribers()
    items = []
    for name in SUBSCRIBERS:
        items.append(
            {
                "subscriber": name,
                "state": _state(name, settings, states),
                "routed": name in routed,
                "why": _why(name, settings, states.get(name)),
            }
        )
    if as_json:
        _echo_json(items)
        return
    for item in items:
        typer.echo(f"{item['subscriber']:8} {item['state']:11} {item['why']}".rstrip())


def _why(name: str, settings: Settings, shared: journal.SubscriberState | None) -> str:
    conf = settings.subscribers.get(name)
    if conf is None:
        return f"no [subscribers.{name}] in the configuration: no deliveries are created"
    if shared is not None and shared.paused is not None and shared.changed_at is not None:
        verb = "paused" if shared.paused else "resumed"
        return f"{verb} by {shared.changed_by} at {_when(shared.changed_at)}"
    return "" if conf.enabled else "enabled = false in the configuration"


def _set_paused(name: str, paused: bool, config: Path | None) -> None:
    canonical = _subscriber(name, "SUBSCRIBER")
    settings = load(config)
    if canonical not in settings.subscribers:
        raise InputError(f"{canonical}: not served here (no [subscribers.{canonical}] in the configuration)")
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    with_db(settings, lambda conn: journal.set_paused(conn, canonical, paused, by))
    verb = "paused" if paused else "resumed"
    typer.echo(
        f"{canonical} {verb} for every instance (picked up within {settings.database.poll_interval_s:g} s)"
    )


@subscribers_app.command("pause")
def subscribers_pause(
    subscriber: Annotated[str, typer.Argument(metavar="SUBSCRIBER")], config: ConfigOption = None
) -> None:
    """Hold a subscriber's deliveries (they are still created) on every instance, without a restart."""
    _set_paused(subscriber, True, config)


@subscribers_app.command("resume")
def subscribers_resume(
    subscriber: Annotated[str, typer.Argument(metavar="SUBSCRIBER")], config: ConfigOption = None
) -> None:
    """Deliver a paused subscriber's held deliveries again, on every instance."""
    _set_paused(subscriber, False, config)


def status(
    config: ConfigOption = None,
    as_json: AsJson = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw every 2 s until Ctrl-C.")] = False,
) -> None:
    """Per subscriber: state, backlog, oldest pending, outcomes in 5 and 60 min, latency, circuit, last success and error."""
    settings = load(config)
    try:
        while True:
            report = with_db(settings, lambda conn: _status_report(conn, settings))
            if as_json:
                _echo_json(report)
            else:
                if watch:
                    typer.echo("\x1b[2J\x1b[H", nl=False)
                _print_status(report)
            if not watch:
                return
            sys.stdout.flush()
            time.sleep(2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


async def _status_report(conn: asyncpg.Connection, settings: Settings) -> list[dict[str, Any]]:
    stats = {r["subscriber"]: r for r in await journal.subscriber_stats(conn)}
    states = await journal.subscriber_states(conn)
    report = []
    for name in SUBSCRIBERS:
        r = stats.get(name)
        now = r["now"] if r is not None else None
        oldest = r["oldest_pending"] if r is not None else None
        report.append(
            {
                "subscriber": name,
                "state": _state(name, settings, states),
                "backlog": r["backlog"] if r else 0,
                "oldest_pending_s": round((now - oldest).total_seconds(), 1) if now and oldest else None,
                "delivered_5m": r["delivered_5m"] if r else 0,
                "failed_5m": r["failed_5m"] if r else 0,
                "delivered_60m": r["delivered_60m"] if r else 0,
                "failed_60m": r["failed_60m"] if r else 0,
                "latency_p50_s": _round(r["p50_s"]) if r else None,
                "latency_p99_s": _round(r["p99_s"]) if r else None,
                "circuit": (r["circuit"] if r else None) or "closed",
                "last_success": r["last_success"] if r else None,
                "last_error": r["last_error"] if r else None,
                "last_error_at": r["last_error_at"] if r else None,
            }
        )
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _print_status(report: list[dict[str, Any]]) -> None:
    typer.echo(
        f"{'subscriber':10} {'state':10} {'backlog':>7} {'oldest':>8} {'ok/fail 5m':>11} {'ok/fail 60m':>12} "
        f"{'p50':>7} {'p99':>7} {'circuit':7} {'last success':19} last error"
    )
    for s in report:
        typer.echo(
            f"{s['subscriber']:10} {s['state']:10} {s['backlog']:>7} {_age(s['oldest_pending_s']):>8} "
            f"{s['delivered_5m']:>5}/{s['failed_5m']:<5} {s['delivered_60m']:>6}/{s['failed_60m']:<5} "
            f"{_ms(s['latency_p50_s']):>7} {_ms(s['latency_p99_s']):>7} {s['circuit']:7} "
            f"{_when(s['last_success']):19} {cut(s['last_error'] or '', 40)}"
        )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=int(seconds))) if seconds >= 60 else f"{seconds:.0f}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


# ─── rejections ──────────────────────────────────────────────────────────────────────────────


def _rejection_dict(r: asyncpg.Record) -> dict[str, Any]:
    row = dict(r)
    if isinstance(row.get("payload"), str):
        row["payload"] = codec.loads(row["payload"])
    row["errors"] = list(row["errors"])
    return row


@rejections_app.command("list")
def rejections_list(
    config: ConfigOption = None,
    reason: Annotated[Reason | None, typer.Option(help="The rejection reason.")] = None,
    event_type: Annotated[str | None, typer.Option("--event-type", help="An event type.")] = None,
    since: Since = None,
    resolved: Annotated[bool, typer.Option("--resolved", help="Also those already republished.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, for scripts.")] = False,
) -> None:
    """Rejected events, newest first (unresolved only, unless --resolved)."""
    settings = load(config)
    rows = with_db(
        settings,
        lambda conn: journal.list_rejections(
            conn,
            reason=reason and reason.value,
            event_type=_event_type(event_type),
            since=_utc(since),
            resolved=resolved,
            limit=limit,
        ),
    )
    if not as_json:
        typer.echo(
            f"{'id':>6}  {'received':19}  {'reason':18} {'event_type':34} {'event_id':36}  first error"
        )
    for r in rows:
        if as_json:
            _echo_json(_rejection_dict(r))
            continue
        first = r["errors"][0] if r["errors"] else ""
        mark = " (resolved)" if r["resolved_at"] else ""
        typer.echo(
            f"{r['id']:>6}  {_when(r['received_at']):19}  {r['reason']:18} {r['event_type'] or '-':34} "
            f"{r['event_id'] or '-'!s:36}  {cut(first, 60)}{mark}"
        )


def _rejection_id(value: str) -> tuple[int, Any]:
    """A rejection's numeric id, or the event_id it was recorded under."""
    if value.isascii() and value.isdigit() and len(value) < 19:
        return int(value), None
    try:
        return -1, event_id_option(value)
    except InputError:
        raise InputError(f"ID {value!r}: give a rejection id (a number) or an event_id") from None


@rejections_app.command("show")
def rejections_show(
    rejection_id: Annotated[str, typer.Argument(metavar="ID", help="A rejection id, or its event_id.")],
    config: ConfigOption = None,
    as_json: AsJson = False,
) -> None:
    """One rejection: why, every error, and what was received (redacted)."""
    number, event_id = _rejection_id(rejection_id)
    settings = load(config)
    row = with_db(settings, lambda conn: journal.rejection(conn, number, event_id))
    if row is None:
        raise UserError(f"no rejection {rejection_id} (pruned after its retention, or never recorded)")
    r = _rejection_dict(row)
    if as_json:
        _echo_json(r)
        return
    typer.echo(f"rejection {r['id']}: {r['reason']} ({r['source']}), received {_when(r['received_at'])}")
    typer.echo(f"event_type: {r['event_type'] or '-'}  event_id: {r['event_id'] or '-'}")
    if r["resolved_at"]:
        typer.echo(f"resolved {_when(r['resolved_at'])}: republished as {r['resolved_event_id']}")
    for error in r["errors"]:
        typer.echo(f"  {error}")
    if r["payload"] is not None:
        typer.echo(codec.dumps(r["payload"], indent=True).decode())
    elif r["raw_text"]:
        typer.echo(r["raw_text"])


@rejections_app.command("republish")
def rejections_republish(
    rejection_id: Annotated[str, typer.Argument(metavar="ID", help="A rejection id, or its event_id.")],
    file: Annotated[
        Path | None, typer.Option("--file", help="The corrected event (JSON); default: the stored payload.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Validate the event again (corrected from --file), journal it under the same event_id, route it."""
    number, event_id = _rejection_id(rejection_id)
    corrected = _read_event(file) if file is not None else None
    settings = load(config)
    row = with_db(settings, lambda conn: journal.rejection(conn, number, event_id))
    if row is None:
        raise UserError(f"no rejection {rejection_id} (pruned after its retention, or never recorded)")
    if row["resolved_at"] is not None:
        raise UserError(f"rejection {row['id']} was already republished as {row['resolved_event_id']}")
    payload = corrected if corrected is not None else _stored_payload(row)
    event = _revalidated(payload, row, settings)
    refused = with_db(
        settings, lambda conn: journal.republish(conn, settings.database.channel, row["id"], event)
    )
    if refused is not None:
        raise UserError(f"{refused}: nothing republished")
    typer.echo(f"republished {event.event_type} {event.event_id} (rejection {row['id']} resolved)")


def _read_event(file: Path) -> dict[str, Any]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"--file {file}: cannot read: {exc.strerror}") from None
    try:
        value = codec.loads(data)
    except codec.JSONError as exc:
        raise InputError(f"--file {file}: {exc.reason}: not one JSON event") from None
    if not isinstance(value, dict):
        raise InputError(f"--file {file}: an event must be a JSON object")
    return value


def _stored_payload(row: asyncpg.Record) -> dict[str, Any]:
    payload = codec.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
    if not isinstance(payload, dict):
        raise UserError(
            f"rejection {row['id']} kept no event object ({row['reason']}): give the corrected event with --file"
        )
    return payload


def _revalidated(payload: dict[str, Any], row: asyncpg.Record, settings: Settings) -> NotifiedEvent:
    """The event to journal: valid by the contracts, under the rejection's event_id when it had one."""
    if row["event_id"] is not None:
        given = codec.uuid_or_none(payload.get("event_id"))
        if given is not None and given != row["event_id"]:
            raise InputError(
                f"the corrected event's event_id {given} is not the rejected one ({row['event_id']})"
            )
        payload = payload | {"event_id": str(row["event_id"])}
    result = parse_event(payload, settings.validation.unknown_fields)
    if isinstance(result, Rejection):
        for error in result.errors:
            typer.echo(error)
        raise UserError(
            f"the event is still invalid ({result.reason}: {len(result.errors)} error(s) above), nothing republished"
        )
    assert isinstance(result, Accepted)
    event = classify(codec.dumps(payload).decode())
    assert isinstance(event, NotifiedEvent), "a valid event object classifies as an event"
    return event
