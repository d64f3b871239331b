"""`it-relay audit list`: every operator action on record (it_relay.audit), newest first; and how
an action reads where it is shown ("replayed by alice@ops-1 (it_relay) at …")."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from relay import audit_queries
from relay.cli_common import ConfigOption, Since, cut, echo_json, load, utc, with_db
from relay.display import when
from relay.model import AuditActionName, AuditEntry

audit_app = typer.Typer(help="Operators' actions on record.", no_args_is_help=True)

VERBS: dict[AuditActionName, str] = {
    "pause": "paused",
    "resume": "resumed",
    "replay": "replayed",
    "backfill": "backfilled",
    "republish": "republished",
    "release": "released",
    "dismiss": "dismissed",
}


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def who(entry: AuditEntry) -> str:
    """The operator: OS user and host as the command saw them, and the database role it used."""
    person = f"{entry.os_user or '?'}@{entry.host or '?'}"
    return f"{person} ({entry.db_role})"


def done_by(entry: AuditEntry) -> str:
    """One action as a line of an event's story: what, by whom, when, and why when said."""
    count = f", {entry.count} in all" if entry.count is not None and entry.count > 1 else ""
    reason = f": {entry.reason}" if entry.reason else ""
    return f"{VERBS[entry.action]} by {who(entry)} at {when(entry.at)}{count}{reason}"


def arguments_text(arguments: dict[str, Any]) -> str:
    """The arguments as options, as the operator typed them (near enough)."""
    parts = []
    for name, value in arguments.items():
        option = "--" + name.replace("_", "-")
        parts.append(option if value is True else f"{option} {value}")
    return " ".join(parts)


@audit_app.command("list")
def audit_list(
    config: ConfigOption = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, for scripts.")] = False,
) -> None:
    """Operators' actions, newest first: when, who (OS user, host, database role), what, with which
    arguments, how many deliveries or events, and why."""
    settings = load(config)
    rows = with_db(settings, lambda conn: audit_queries.entries(conn, since=utc(since), limit=limit))
    if as_json:
        for entry in rows:
            echo_json(entry)
        return
    typer.echo(
        f"{'id':>6}  {'at':23}  {'action':9} {'by':30} {'subscriber':10} {'count':>6}  arguments; reason"
    )
    for e in rows:
        details = "; ".join(part for part in (arguments_text(e.arguments), e.reason) if part)
        typer.echo(
            f"{e.id:>6}  {when(e.at):23}  {e.action:9} {cut(who(e), 30):30} {e.subscriber or '-':10} "
            f"{'-' if e.count is None else e.count:>6}  {details}".rstrip()
        )
