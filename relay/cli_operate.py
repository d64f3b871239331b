"""Operator commands: the delivery log, one event's journey, replay and backfill, subscribers'
run-time state, rejections, and a live status view. Arguments are parsed and records printed
here; what the commands decide is `relay.operate`, what they read and write `relay.operator_queries`."""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from relay import codec, journal, operate, operator_queries
from relay.cli_common import AsJson, ConfigOption, cut, echo_json, event_id_option, load, utc, with_db
from relay.cli_rejections import rejections_app
from relay.errors import InputError, UserError
from relay.model import DeliveryRow, Journey
from relay.operate import SubscriberStatus, when
from relay.operator_queries import Selection
from relay.settings import Settings

# Above this many deliveries, replay asks first (and refuses without a terminal unless --yes).
CONFIRM_ABOVE = 10

deliveries_app = typer.Typer(help="The delivery log.", no_args_is_help=True)
subscribers_app = typer.Typer(
    help="Subscribers' run-time state, shared by every instance.", no_args_is_help=True
)


class DeliveryState(StrEnum):
    """The delivery statuses, as stored and shown everywhere (a retry waits as pending)."""

    pending = "pending"
    delivered = "delivered"
    dead = "dead"
    held = "held"


Status = Annotated[DeliveryState | None, typer.Option(help="The delivery status.")]
Until = Annotated[datetime | None, typer.Option(help="Before this time (UTC if no offset).")]


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
    name = operate.subscriber_named(subscriber) if subscriber else None
    kind = operate.event_type_named(event_type)
    settings = load(config)
    wanted = event_id_option(event_id)
    rows = with_db(
        settings,
        lambda conn: operator_queries.list_deliveries(
            conn, status=wanted_status, subscriber=name, event_type=kind, event_id=wanted, limit=limit
        ),
    )
    if not as_json:
        typer.echo(
            f"{'event_id':36}  {'event_type':34} {'subscriber':10} {'status':9} {'att':>3}  {'last':14} updated"
        )
    _print_deliveries(rows, as_json=as_json, wide=wide)
    if follow:
        after = max((r.updated_at for r in rows), default=None)
        _follow(settings, after, wanted_status, name, kind, as_json=as_json, wide=wide)


def _print_deliveries(rows: Iterable[DeliveryRow], *, as_json: bool, wide: bool) -> None:
    for r in rows:
        if as_json:
            echo_json(r)
            continue
        last = r.last_error or (str(r.last_status) if r.last_status is not None else "")
        line = (
            f"{r.event_id!s:36}  {r.event_type:34} {r.subscriber:10} {r.status:9} "
            f"{r.attempts:>3}  {'' if wide else cut(last, 14):14} {r.updated_at:%Y-%m-%d %H:%M:%S}"
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
            rows = await operator_queries.follow_deliveries(
                conn, last, status=status, subscriber=subscriber, event_type=event_type
            )
            _print_deliveries(rows, as_json=as_json, wide=wide)
            if rows:
                last = rows[-1].updated_at
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
    journey = with_db(settings, lambda conn: operate.journey(conn, wanted))
    if as_json:
        echo_json(journey)
        return
    _print_journey(journey)


def _print_journey(journey: Journey) -> None:
    event = journey.event
    if event is not None:
        typer.echo(
            f"event {event.event_id} {event.event_type}: {event.status} "
            f"(journaled {event.created_at:%Y-%m-%d %H:%M:%S%z} via {event.source})"
        )
        typer.echo(codec.dumps(event.payload, indent=True).decode())
    if journey.rejection is not None:
        r = journey.rejection
        typer.echo(f"rejected ({r.reason}, rejection {r.id}): {'; '.join(r.errors)}")
    if not journey.deliveries:
        typer.echo("no deliveries")
    for d in journey.deliveries:
        typer.echo(f"{d.subscriber}: {d.status} after {d.attempts} attempt(s)")
        for a in d.history:
            outcome = a.error or f"HTTP {a.http_status}"
            typer.echo(
                f"  #{a.attempt} {a.attempted_at:%Y-%m-%d %H:%M:%S.%f%z} {outcome} in {a.duration_ms:.1f} ms"
            )
            if a.response_excerpt:
                typer.echo("     " + a.response_excerpt.replace("\n", "\n     "))


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
    counts = with_db(settings, lambda conn: operator_queries.replay(conn, channel, selection, dry_run=True))
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
    done = with_db(settings, lambda conn: operator_queries.replay(conn, channel, selection))
    typer.echo(f"re-queued {sum(done.values())} deliveries: {', '.join(f'{n} {c}' for n, c in done.items())}")


def _replay_selection(
    event_id: str | None,
    subscriber: str | None,
    all_subscribers: bool,
    status: DeliveryState | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Selection:
    if subscriber is not None and all_subscribers:
        raise InputError("give --subscriber X or --all-subscribers, not both")
    if event_id is None and subscriber is None and not all_subscribers:
        raise InputError("give --event-id ID, or --subscriber X / --all-subscribers with --status S")
    if event_id is None and status is None:
        raise InputError("--status is required unless --event-id is given (pending, delivered or dead)")
    begin, end = utc(since), utc(until)
    if begin and end and end <= begin:
        raise InputError("--until must be later than --since")
    return Selection(
        event_id=event_id_option(event_id),
        subscribers=None if subscriber is None else [operate.subscriber_named(subscriber)],
        status=_status(status),
        event_type=operate.event_type_named(event_type),
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
    name = operate.subscriber_named(subscriber)
    begin, end = utc(since), utc(until)
    assert begin is not None
    if end and end <= begin:
        raise InputError("--until must be later than --since")
    settings = load(config)
    types = operate.backfill_types(name, settings)
    counts = with_db(
        settings,
        lambda conn: operator_queries.backfill(
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


@subscribers_app.command("list")
def subscribers_list(config: ConfigOption = None, as_json: AsJson = False) -> None:
    """Every subscriber of the contracts: served, paused or not served here, and why."""
    settings = load(config)
    items = with_db(settings, lambda conn: operate.subscribers(conn, settings))
    if as_json:
        echo_json(items)
        return
    for item in items:
        typer.echo(f"{item.subscriber:8} {item.state:11} {item.why}".rstrip())


def _set_paused(name: str, paused: bool, config: Path | None) -> None:
    canonical = operate.subscriber_named(name, "SUBSCRIBER")
    settings = load(config)
    operate.served_here(canonical, settings)
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    with_db(settings, lambda conn: operator_queries.set_paused(conn, canonical, paused, by))
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
            report = with_db(settings, lambda conn: operate.status(conn, settings))
            if as_json:
                echo_json(report)
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


def _print_status(report: list[SubscriberStatus]) -> None:
    typer.echo(
        f"{'subscriber':10} {'state':10} {'backlog':>7} {'oldest':>8} {'ok/fail 5m':>11} {'ok/fail 60m':>12} "
        f"{'p50':>7} {'p99':>7} {'circuit':7} {'last success':19} last error"
    )
    for s in report:
        typer.echo(
            f"{s.subscriber:10} {s.state:10} {s.backlog:>7} {_age(s.oldest_pending_s):>8} "
            f"{s.delivered_5m:>5}/{s.failed_5m:<5} {s.delivered_60m:>6}/{s.failed_60m:<5} "
            f"{_ms(s.latency_p50_s):>7} {_ms(s.latency_p99_s):>7} {s.circuit:7} "
            f"{when(s.last_success):19} {cut(s.last_error or '', 40)}"
        )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=int(seconds))) if seconds >= 60 else f"{seconds:.0f}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"
