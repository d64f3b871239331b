"""Rejections: list and show what was rejected, correct it and publish it again under its event_id,
or dismiss it as junk (each act recorded in the audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from relay import codec, operate, operator_queries
from relay.cli_common import (
    AsJson,
    ConfigOption,
    Since,
    acting,
    cut,
    echo_json,
    event_id_option,
    load,
    utc,
    with_db,
)
from relay.display import when
from relay.errors import InputError, UserError
from relay.model import Rejection, RejectionDetail, RejectionReason, RejectionRow

rejections_app = typer.Typer(help="Rejected events: inspect, correct, publish again.", no_args_is_help=True)


@rejections_app.command("list")
def rejections_list(
    config: ConfigOption = None,
    reason: Annotated[RejectionReason | None, typer.Option(help="The rejection reason.")] = None,
    event_type: Annotated[str | None, typer.Option("--event-type", help="An event type.")] = None,
    since: Since = None,
    resolved: Annotated[bool, typer.Option("--resolved", help="Also those already republished.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Also those republished or dismissed.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, for scripts.")] = False,
) -> None:
    """Rejected events, newest first (neither republished nor dismissed, unless --resolved or --all)."""
    settings = load(config)
    rows = with_db(
        settings,
        lambda conn: operator_queries.list_rejections(
            conn,
            reason=reason,
            event_type=operate.event_type_named(event_type),
            since=utc(since),
            resolved=resolved or everything,
            limit=limit,
            dismissed=everything,
        ),
    )
    if not as_json:
        typer.echo(
            f"{'id':>6}  {'received':23}  {'reason':18} {'event_type':34} {'event_id':36}  first error"
        )
    for r in rows:
        if as_json:
            echo_json(r)
            continue
        typer.echo(_rejection_line(r))


def _rejection_line(r: RejectionRow) -> str:
    first = r.errors[0] if r.errors else ""
    mark = " (resolved)" if r.resolved_at else " (dismissed)" if r.dismissed_at else ""
    return (
        f"{r.id:>6}  {when(r.received_at):23}  {r.reason:18} {r.event_type or '-':34} "
        f"{r.event_id or '-'!s:36}  {cut(first, 60)}{mark}"
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
    r = with_db(settings, lambda conn: operate.rejection(conn, number, event_id, rejection_id))
    if as_json:
        echo_json(r)
        return
    _print_rejection(r)


def _print_rejection(r: RejectionDetail) -> None:
    typer.echo(f"rejection {r.id}: {r.reason} ({r.source}), received {when(r.received_at)}")
    typer.echo(f"event_type: {r.event_type or '-'}  event_id: {r.event_id or '-'}")
    if r.resolved_at:
        typer.echo(f"resolved {when(r.resolved_at)}: republished as {r.resolved_event_id}")
    if r.dismissed_at:
        typer.echo(f"dismissed by {r.dismissed_by} at {when(r.dismissed_at)}")
    for error in r.errors:
        typer.echo(f"  {error}")
    if r.payload is not None:
        typer.echo(codec.dumps(r.payload, indent=True).decode())
    elif r.raw_text:
        typer.echo(r.raw_text)


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
    row = with_db(settings, lambda conn: operate.rejection(conn, number, event_id, rejection_id))
    payload = operate.republishable(row, corrected)
    event = operate.revalidated(payload, row, settings.validation.unknown_fields)
    if isinstance(event, Rejection):
        for error in event.errors:
            typer.echo(error)
        raise UserError(
            f"the event is still invalid ({event.reason}: {len(event.errors)} error(s) above), nothing republished"
        )
    action = acting("republish", {"id": row.id, "file": file})
    refused = with_db(
        settings,
        lambda conn: operator_queries.republish(conn, settings.database.channel, row.id, event, audit=action),
    )
    if refused is not None:
        raise UserError(f"{refused}: nothing republished")
    typer.echo(f"republished {event.event_type} {event.event_id} (rejection {row.id} resolved)")


@rejections_app.command("dismiss")
def rejections_dismiss(
    rejection_id: Annotated[str, typer.Argument(metavar="ID", help="A rejection id, or its event_id.")],
    config: ConfigOption = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
) -> None:
    """Set a rejection aside as junk: left out of `rejections list` (--all shows it), kept until
    its retention, the act recorded in the audit."""
    number, event_id = _rejection_id(rejection_id)
    why = operate.reason_given(reason)
    settings = load(config)
    action = acting("dismiss", {"id": rejection_id}, reason=why)
    by = f"{action.os_user or '?'}@{action.host or '?'}"

    async def dismiss(conn: asyncpg.Connection) -> RejectionDetail:
        row = await operate.rejection(conn, number, event_id, rejection_id)
        if not await operator_queries.dismiss_rejection(conn, row.id, by, audit=action):
            raise UserError(
                operate.not_dismissable(await operate.rejection(conn, row.id, None, rejection_id))
            )
        return row

    row = with_db(settings, dismiss)
    typer.echo(f"rejection {row.id} dismissed (`rejections list --all` shows it)")


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
