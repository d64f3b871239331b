"""The `it-relay` command line. User errors print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn
from uuid import uuid4

import asyncpg
import typer

from relay import __version__, cli_common, codec, database, journal, migrate, operate
from relay.attempts import SendTestResult
from relay.attempts import send_test as send_one
from relay.cli_common import ConfigOption, LogFormat, LogLevel
from relay.cli_filters import register as register_filter_commands
from relay.cli_operate import register as register_operator_commands
from relay.cli_order import register as register_order_commands
from relay.contracts import Accepted, UnknownFields, parse_event, routed_subscribers
from relay.contracts.examples import example
from relay.daemon import Daemon
from relay.destination import HttpDestination, Watched, destinations_for
from relay.errors import InputError, UserError
from relay.ingest import route
from relay.metrics import Metrics
from relay.model import Answer, RoutedEvent
from relay.planning import Emission
from relay.redaction import redact
from relay.scheduler import Scheduler
from relay.schemas import asyncapi, json_schemas
from relay.sender import make_sender
from relay.settings import load_settings, masked, sources

app = typer.Typer(
    name="it-relay",
    help="Durable relay of the IT module's events from PostgreSQL to signed webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="Export the event contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"it-relay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """it-relay."""


@app.command()
def validate(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="Events as JSON, a JSON array or JSON lines.")
    ],
    unknown_fields: Annotated[
        str, typer.Option(help="Policy for fields the contract does not name: keep, drop or reject.")
    ] = "keep",
) -> None:
    """Validate events against the contracts: exit 0 if all are valid, 1 otherwise."""
    if unknown_fields not in ("keep", "drop", "reject"):
        raise InputError("--unknown-fields must be keep, drop or reject")
    policy: UnknownFields = unknown_fields  # type: ignore[assignment]
    invalid = _report(list(cli_common.documents(cli_common.read_input(source))), policy, quiet=False)
    raise typer.Exit(1 if invalid else 0)


def _report(documents: list[Any], policy: UnknownFields, *, quiet: bool) -> int:
    """Validate each document, print one line per problem (and per valid one unless quiet);
    returns how many are invalid."""
    if not documents:
        raise InputError("no events in the input")
    invalid = 0
    for index, document in enumerate(documents):
        result = parse_event(document, policy)
        if isinstance(result, Accepted):
            if not quiet:
                typer.echo(f"[{index}] ok {result.event_type}")
            continue
        invalid += 1
        for error in result.errors:
            typer.echo(f"[{index}] {error}")
    typer.echo(f"{len(documents) - invalid} valid, {invalid} invalid", err=True)
    return invalid


class SchemaFormat(StrEnum):
    jsonschema = "jsonschema"
    asyncapi = "asyncapi"


@schemas_app.command("export")
def schemas_export(
    fmt: Annotated[
        SchemaFormat, typer.Option("--format", help="jsonschema or asyncapi.")
    ] = SchemaFormat.jsonschema,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write to (default: stdout).")
    ] = None,
) -> None:
    """Write one JSON Schema per event, or one AsyncAPI 3.0 document."""
    documents = {"asyncapi.json": asyncapi()} if fmt is SchemaFormat.asyncapi else json_schemas()
    if out is None:
        single = next(iter(documents.values())) if len(documents) == 1 else documents
        typer.echo(codec.dumps(single, indent=True).decode())
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, document in documents.items():
            (out / name).write_bytes(codec.dumps(document, indent=True) + b"\n")
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror}") from None
    typer.echo(f"wrote {len(documents)} file(s) to {out}", err=True)


@app.command()
def run(config: ConfigOption = None, log_level: LogLevel = None, log_format: LogFormat = None) -> None:
    """Run the relay daemon until SIGTERM or SIGINT."""
    settings = cli_common.load(config, log_level and log_level.value, log_format and log_format.value)
    # SIGHUP reads the same sources again (the file, IT_RELAY_* variables, credentials).
    cli_common.run_async(Daemon(settings, reload_settings=lambda: load_settings(config)).run())


@app.command()
def demo() -> None:
    """The whole mission on an embedded PostgreSQL: triggers, relay, scheduler, signed webhooks."""
    from relay import demo as demo_module

    raise typer.Exit(demo_module.main())


db_app = typer.Typer(help="The relay's database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOption = None,
    reference_schema: Annotated[
        bool, typer.Option("--reference-schema", help="Also the IT reference tables, triggers and views.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Connect as this URL instead of database.url (the schema owner's login; its password "
            "from PGPASSWORD or ~/.pgpass, never database.password, which is the relay's).",
        ),
    ] = None,
) -> None:
    """Create or migrate the it_relay schema (idempotent; safe with several instances)."""
    settings = cli_common.load(config)
    if database_url is not None:
        settings = settings.as_owner(database_url)
    channel = settings.database.channel
    applied = cli_common.with_db(
        settings,
        lambda conn: migrate.upgrade(conn, reference=reference_schema, channel=channel),
        check=False,
    )
    typer.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@db_app.command("status")
def db_status(config: ConfigOption = None) -> None:
    """The relay's and the reference schema's versions, and what `db upgrade` would apply."""
    settings = cli_common.load(config)
    st = cli_common.with_db(settings, migrate.status, check=False)
    relay = "not installed" if st.relay == 0 else f"version {st.relay}"
    typer.echo(f"relay schema: {relay} (this it-relay: {st.relay_code})")
    if st.reference_unversioned:
        reference = "installed before versioning (no version recorded)"
    else:
        reference = "not installed" if st.reference == 0 else f"version {st.reference}"
    typer.echo(f"reference schema: {reference} (this it-relay: {st.reference_code})")
    # A database without the reference schema gets it only when asked (--reference-schema).
    reference_due = st.reference_pending if (st.reference or st.reference_unversioned) else []
    if st.relay_pending:
        typer.echo("db upgrade would apply: " + ", ".join(st.relay_pending))
    if reference_due:
        typer.echo("db upgrade --reference-schema would apply: " + ", ".join(reference_due))
    if not st.relay_pending and not reference_due:
        typer.echo("nothing to apply")


@app.command()
def emit(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="Events as JSON, a JSON array or JSON lines.")
    ],
    config: ConfigOption = None,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Publish even events the contracts reject.")
    ] = False,
) -> None:
    """Publish events through it_relay.publish (one transaction); prints their event ids.

    Every event is validated first, as `validate` does: if one is invalid, none is published.
    """
    settings = cli_common.load(config)
    documents = list(cli_common.documents(cli_common.read_input(source)))
    if not no_validate and _report(documents, "keep", quiet=True):
        raise typer.Exit(1)
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise InputError(f"[{index}] not a JSON object")

    async def publish_all(conn: asyncpg.Connection) -> list[str]:
        async with conn.transaction():
            return [str(await journal.publish(conn, d)) for d in documents]

    for event_id in cli_common.with_db(settings, publish_all):
        typer.echo(event_id)


scheduler_app = typer.Typer(help="The scheduler of time-based events.", no_args_is_help=True)
app.add_typer(scheduler_app, name="scheduler")


@scheduler_app.command("run-once")
def scheduler_run_once(
    config: ConfigOption = None,
    now: Annotated[
        datetime | None, typer.Option(help="Run as if it were this time (default: now; UTC if no offset).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be emitted; write nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Emit even at a --now later than the database's clock.")
    ] = False,
) -> None:
    """One scheduler pass: emit every time-based event due at --now that was not emitted yet."""
    settings = cli_common.load(config)
    when = (now.replace(tzinfo=now.tzinfo or UTC)) if now else datetime.now(UTC)
    scheduler = Scheduler(
        settings.scheduler,
        metrics=Metrics(),
        connect=lambda: database.connect(settings.database, database.SCHEDULER_APPLICATION),
    )

    async def run_once(conn: asyncpg.Connection) -> list[Emission]:
        if not (dry_run or force):
            db_now = await journal.database_now(conn)
            # A pass in the future writes events dated then and uses up their milestones for good.
            if when > db_now + timedelta(minutes=1):
                raise InputError(
                    f"--now {when.isoformat()} is later than the database's clock ({db_now.isoformat()}): "
                    "the events would be dated in the future and their milestones used up; "
                    "add --dry-run to look, or --force"
                )
        return await scheduler.run_once(conn, when, dry_run=dry_run)

    emissions = cli_common.with_db(settings, run_once, application=database.SCHEDULER_APPLICATION)
    verb = "would emit" if dry_run else "emitted"
    for e in emissions:
        typer.echo(f"{verb} {e.event_type} {e.entity_id} ({e.milestone})")
        if dry_run:
            typer.echo("  " + codec.dumps(redact(e.payload)).decode())
    typer.echo(f"{len(emissions)} event(s) {verb} at {when.isoformat()}", err=True)


@app.command("send-test")
def send_test(
    subscriber: Annotated[str, typer.Option("--subscriber", help="The subscriber to test, e.g. PF-10.")],
    event_type: Annotated[
        str | None, typer.Option("--event-type", help="An event type routed to it (default: the first).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Send one signed example event (x-it-test: true, a fresh event_id); exit 0 on 2xx."""
    settings = cli_common.load(config)
    name = operate.subscriber_named(subscriber)
    conf = settings.subscribers.get(name)
    if conf is None:
        raise InputError(
            f"--subscriber {name}: not configured here (no [subscribers.{name}] in the configuration)"
        )
    routed = operate.routed_event_types(name)
    chosen = event_type or routed[0]
    if chosen not in routed:
        raise InputError(f"--event-type {chosen!r}: not routed to {name} (routed: {', '.join(routed)})")
    routed_event = route(uuid4(), codec.dumps(example(chosen)).decode(), settings.validation.unknown_fields)
    assert isinstance(routed_event, RoutedEvent), "a contract example must validate"

    async def send() -> tuple[SendTestResult, Answer | None]:
        d = settings.delivery
        sender = make_sender(
            d.transport, 1, d.max_response_bytes, proxy=d.proxy, proxies=settings.subscriber_proxies()
        )
        # The subscriber's own destination (a webhook or a broker), watched for its answer.
        watched = Watched(destinations_for({name: conf}, HttpDestination(sender))[name])
        try:
            result = await send_one(watched, conf, settings.delivery, routed_event.body, chosen)
            return result, watched.answer
        finally:
            await watched.aclose()
            await sender.aclose()

    result, answer = cli_common.run_async(send())
    delivered = answer is not None and answer.outcome == "delivered"
    if conf.kind != "http":
        outcome = "confirmed by the broker" if delivered else "not confirmed"
    else:
        outcome = "no response" if result.status is None else f"HTTP {result.status}"
    typer.echo(f"{name} <- {chosen} {result.event_id}: {outcome} in {result.elapsed_s * 1000:.0f} ms")
    if result.excerpt:
        typer.echo(result.excerpt)
    raise typer.Exit(0 if delivered else 1)


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the configuration and print it with secrets masked (exit 2 naming a bad key)."""
    settings = load_settings(config)
    path, variables = sources(config)
    read = [f"file {path}" if path else "no file (--config FILE or IT_RELAY_CONFIG)"]
    if variables:
        read.append("environment " + ", ".join(variables))
    typer.echo(f"sources: {'; '.join(read)}; defaults for the rest", err=True)
    typer.echo(json.dumps(masked(settings), indent=2))
    missing = sorted(routed_subscribers() - settings.subscribers.keys())
    disabled = sorted(n for n, s in settings.subscribers.items() if not s.enabled)
    if missing:
        typer.echo(
            f"note: not served here (no deliveries are created for them): {', '.join(missing)}",
            err=True,
        )
    if disabled:
        typer.echo(
            f"note: paused by enabled = false (deliveries are created and held): {', '.join(disabled)}",
            err=True,
        )
    if settings.ingest.legacy and not settings.ingest.legacy_senders:
        typer.echo(
            "warning: full-payload notifications are accepted from any role that can NOTIFY "
            f"{settings.database.channel}; set ingest.legacy_senders, or ingest.legacy = false",
            err=True,
        )


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"it-relay: error: {message}", err=True)
    sys.exit(code)


register_operator_commands(app)
register_order_commands(app)
register_filter_commands(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`argv`: the arguments, default the command line's)."""
    try:
        code = app(args=None if argv is None else list(argv), standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.TyperException as exc:
        _usage_error(exc)
    except typer.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: typer.TyperException) -> NoReturn:
    """Click's usage errors as one line (its own format is a usage block and a framed message)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":
        # A group run without a command: typer has shown its help already; exit 2 as click does.
        sys.exit(2)
    message = exc.format_message()
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _fail(" ".join(message.split()) + hint, exc.exit_code)
