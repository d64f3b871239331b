"""Operator commands: replay and backfill, subscribers' run-time state; and the registration of
every operator command (the delivery log, status, rejections, the audit). Arguments are parsed and
records printed here; what the commands decide is `relay.operate`, what they read and write
`relay.operator_queries`; each action is recorded in the audit in its own transaction."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from relay import audit_queries, operate, operator_queries
from relay.cli_audit import register as register_audit
from relay.cli_common import AsJson, ConfigOption, acting, echo_json, event_id_option, load, utc, with_db
from relay.cli_deliveries import DeliveryState, Status, deliveries_app, status_value
from relay.cli_rejections import rejections_app
from relay.cli_status import status
from relay.errors import InputError, UserError
from relay.operator_queries import Selection

# Above this many deliveries, replay asks first (and refuses without a terminal unless --yes).
CONFIRM_ABOVE = 10

subscribers_app = typer.Typer(
    help="Subscribers' run-time state, shared by every instance.", no_args_is_help=True
)

Until = Annotated[datetime | None, typer.Option(help="Before this time (UTC if no offset).")]


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `it-relay` application."""
    app.add_typer(deliveries_app, name="deliveries")
    app.add_typer(subscribers_app, name="subscribers")
    app.add_typer(rejections_app, name="rejections")
    app.command()(replay)
    app.command()(backfill)
    app.command()(status)
    register_audit(app)


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
        if dry_run:  # a look that finds nothing is an answer, not a failure
            typer.echo("would re-queue 0 deliveries: no delivery matches")
            return
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
    action = acting(
        "replay",
        {
            "event_id": event_id,
            "subscriber": selection.subscribers and selection.subscribers[0],
            "all_subscribers": all_subscribers,
            "status": selection.status,
            "event_type": selection.event_type,
            "since": selection.since,
            "until": selection.until,
        },
        subscriber=selection.subscribers[0] if selection.subscribers else None,
    )
    done = with_db(settings, lambda conn: operator_queries.replay(conn, channel, selection, audit=action))
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
        status=status_value(status),
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
    action = acting("backfill", {"subscriber": name, "since": begin, "until": end}, subscriber=name)

    condition = settings.subscribers[name].filter

    async def fill(conn: asyncpg.Connection) -> tuple[dict[str, int], int | None, str | None]:
        instances = await audit_queries.live_instances(conn, operate.alive_within_s(settings))
        warning = operate.backfill_warning(name, instances)
        channel = settings.database.channel
        if condition is None:
            counts = await operator_queries.backfill(
                conn,
                channel,
                subscriber=name,
                event_types=types,
                since=begin,
                until=end,
                dry_run=dry_run,
                audit=action,
            )
            return counts, None, warning
        # Only what its filter lets through, as routing would have decided.
        counts, left_out = await operator_queries.backfill_filtered(
            conn,
            channel,
            subscriber=name,
            event_types=types,
            since=begin,
            until=end,
            dry_run=dry_run,
            condition=condition,
            audit=action,
        )
        return counts, left_out, warning

    counts, left_out, warning = with_db(settings, fill)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    total = sum(counts.values())
    verb = "would create" if dry_run else "created"
    detail = ", ".join(f"{t} {n}" for t, n in counts.items())
    filtered = f" ({left_out} left out by its filter)" if left_out else ""
    typer.echo(f"{verb} {total} deliveries for {name}" + (f": {detail}" if detail else "") + filtered)


# ─── subscribers ─────────────────────────────────────────────────────────────────────────────


@subscribers_app.command("list")
def subscribers_list(config: ConfigOption = None, as_json: AsJson = False) -> None:
    """Every subscriber of the contracts: served, paused or not served here, why, and the event
    types the contracts route to it."""
    settings = load(config)
    items = with_db(settings, lambda conn: operate.subscribers(conn, settings))
    if as_json:
        echo_json(items)
        return
    for item in items:
        typer.echo(f"{item.subscriber:8} {item.state:11} {item.why}".rstrip())
        typer.echo(f"         takes {len(item.event_types)}: {', '.join(item.event_types)}")


Reason = Annotated[str | None, typer.Option("--reason", help="Why, for the record (it-relay audit list).")]


def _set_paused(name: str, paused: bool, config: Path | None, reason: str | None) -> None:
    canonical = operate.subscriber_named(name, "SUBSCRIBER")
    why = operate.reason_given(reason)
    settings = load(config)
    operate.served_here(canonical, settings)
    action = acting("pause" if paused else "resume", {}, subscriber=canonical, reason=why)
    by = f"{action.os_user or '?'}@{action.host or '?'}"
    with_db(settings, lambda conn: operator_queries.set_paused(conn, canonical, paused, by, audit=action))
    verb = "paused" if paused else "resumed"
    typer.echo(
        f"{canonical} {verb} for every instance (picked up within {settings.database.poll_interval_s:g} s)"
    )


@subscribers_app.command("pause")
def subscribers_pause(
    subscriber: Annotated[str, typer.Argument(metavar="SUBSCRIBER")],
    config: ConfigOption = None,
    reason: Reason = None,
) -> None:
    """Hold a subscriber's deliveries (they are still created) on every instance, without a restart."""
    _set_paused(subscriber, True, config, reason)


@subscribers_app.command("resume")
def subscribers_resume(
    subscriber: Annotated[str, typer.Argument(metavar="SUBSCRIBER")],
    config: ConfigOption = None,
    reason: Reason = None,
) -> None:
    """Deliver a paused subscriber's held deliveries again, on every instance."""
    _set_paused(subscriber, False, config, reason)
