"""`it-relay deliveries list | show`: the delivery log (streamed with --follow) and one event's
journey, its attempts interleaved with the operators' actions that touched it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated

import asyncpg
import typer

from relay import codec, journal, operate, operator_queries
from relay.cli_audit import arguments_text, done_by
from relay.cli_common import AsJson, ConfigOption, cut, echo_json, event_id_option, load, with_db
from relay.display import duration, when
from relay.model import AttemptRow, AuditEntry, DeliveryHistory, DeliveryRow, DeliveryStatus, Journey
from relay.settings import Settings
from relay.subscriber_policy import SubscriberPolicy, policies, policy_text

deliveries_app = typer.Typer(help="The delivery log.", no_args_is_help=True)


# The delivery statuses, as stored and shown everywhere (a retry waits as pending).
DeliveryState = DeliveryStatus
Status = Annotated[DeliveryStatus | None, typer.Option(help="The delivery status.")]


def status_value(value: DeliveryStatus | None) -> str | None:
    return value


# The `last` column (HTTP status or error) when not --wide; the whole of it with --wide or --json.
LAST_WIDTH = 40
HEADER = f"{'event_id':36}  {'event_type':34} {'subscriber':10} {'status':9} {'att':>3}  {'when':34} last"


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
    """List deliveries, newest first (pending ones with their next attempt, dead ones since when);
    with --follow, then stream new outcomes."""
    wanted_status = status_value(status)
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
        typer.echo(HEADER)
    _print_deliveries(rows, as_json=as_json, wide=wide)
    if follow:
        after = max((r.updated_at for r in rows), default=None)
        _follow(settings, after, wanted_status, name, kind, as_json=as_json, wide=wide)


def delivery_line(r: DeliveryRow, *, wide: bool) -> str:
    """One row of the table; `last` is its last column, so --wide keeps the table whole."""
    last = r.last_error or (f"HTTP {r.last_status}" if r.last_status is not None else "")
    return (
        f"{r.event_id!s:36}  {r.event_type:34} {r.subscriber:10} {r.status:9} {r.attempts:>3}  "
        f"{since(r):34} {last if wide else cut(last, LAST_WIDTH)}"
    ).rstrip()


def since(r: DeliveryRow) -> str:
    """What a delivery's status dates from: its next attempt while pending, else since when."""
    if r.status == "pending":
        return f"next {when(r.next_attempt_at)}"
    if r.status == "delivered":
        return f"delivered {when(r.delivered_at or r.updated_at)}"
    return f"{r.status} since {when(r.updated_at)}"


def _print_deliveries(rows: Iterable[DeliveryRow], *, as_json: bool, wide: bool) -> None:
    for r in rows:
        if as_json:
            echo_json(r)
        else:
            typer.echo(delivery_line(r, wide=wide))


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
    """One event: its (redacted) payload, its rejection if any, and per subscriber every attempt
    with the operators' actions that touched it (replayed by whom, when)."""
    wanted = event_id_option(event_id)
    assert wanted is not None
    settings = load(config)
    journey = with_db(settings, lambda conn: operate.journey(conn, wanted))
    if as_json:
        echo_json(journey)
        return
    for line in journey_lines(journey, {p.subscriber: p for p in policies(settings)}):
        typer.echo(line)


def journey_lines(journey: Journey, policy: Mapping[str, SubscriberPolicy] | None = None) -> list[str]:
    """The journey as `deliveries show` prints it: the event, its rejection and how that ended,
    then the policy each subscriber follows, and each delivery's attempts and the actions on it,
    in time order."""
    lines: list[str] = []
    event = journey.event
    for_event = [
        a for a in journey.audit if a.subscriber is None and a.action not in ("republish", "dismiss")
    ]
    if event is not None:
        lines.append(
            f"event {event.event_id} {event.event_type}: {event.status} "
            f"(journaled {when(event.created_at)} via {event.source})"
        )
        lines += codec.dumps(event.payload, indent=True).decode().splitlines()
    if journey.rejection is not None:
        lines += _rejection_lines(journey)
    # Actions on the event as a whole (no subscriber named): with what they selected.
    lines += [f"{done_by(a)}: {arguments_text(a.arguments)}" for a in for_event]
    if not journey.deliveries:
        lines.append("no deliveries")
    followed = [p for d in journey.deliveries if (p := (policy or {}).get(d.subscriber)) is not None]
    if followed:
        lines.append("policies its deliveries follow (this configuration):")
        lines += [f"  {p.subscriber}: {policy_text(p)}" for p in followed]
    for d in journey.deliveries:
        lines += _delivery_lines(d, [a for a in journey.audit if a.subscriber == d.subscriber])
    return lines


def _rejection_lines(journey: Journey) -> list[str]:
    r = journey.rejection
    assert r is not None
    lines = [f"rejected {when(r.received_at)} ({r.reason}, rejection {r.id}): {'; '.join(r.errors)}"]
    acts = {a.action: a for a in journey.audit if a.action in ("republish", "dismiss")}
    if r.resolved_at is not None:
        by = acts.get("republish")
        who = done_by(by) if by else f"republished at {when(r.resolved_at)}"
        lines.append(f"  resolved: {who}, as {r.resolved_event_id}")
    elif r.dismissed_at is not None:
        by = acts.get("dismiss")
        lines.append(f"  {done_by(by) if by else f'dismissed by {r.dismissed_by} at {when(r.dismissed_at)}'}")
    return lines


def _delivery_lines(d: DeliveryHistory, actions: list[AuditEntry]) -> list[str]:
    lines = [f"{d.subscriber}: {d.status} after {d.attempts} attempt(s), {since(d)}"]
    story: list[tuple[datetime, AttemptRow | AuditEntry]] = [(a.attempted_at, a) for a in d.history]
    story += [(a.at, a) for a in actions]
    for _, item in sorted(story, key=lambda pair: pair[0]):
        if isinstance(item, AuditEntry):
            lines.append(f"  {done_by(item)}")
            continue
        outcome = item.error or f"HTTP {item.http_status}"
        lines.append(
            f"  #{item.attempt} {when(item.attempted_at)} {outcome} in {duration(item.duration_ms / 1000)}"
        )
        if item.response_excerpt:
            lines.append("     " + item.response_excerpt.replace("\n", "\n     "))
    return lines
