"""The `it-relay` command line. User errors print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn
from uuid import uuid4

import asyncpg
import typer

from relay import __version__, cli_common, codec, database, early_signals, journal, operate
from relay.attempts import SendTestResult
from relay.attempts import send_test as send_one
from relay.cli_common import ConfigOption, LogFormat, LogLevel
from relay.cli_filters import register as register_filter_commands
from relay.cli_operate import register as register_operator_commands
from relay.cli_order import register as register_order_commands
from relay.cli_setup import register as register_setup_commands
from relay.contracts import Accepted, UnknownFields, parse_event
from relay.contracts.examples import example
from relay.daemon import Daemon
from relay.destination import HttpDestination, Watched, destinations_for
from relay.errors import ConfigError, InputError, UserError
from relay.ingest import route
from relay.metrics import Metrics
from relay.model import Answer, RoutedEvent
from relay.planning import Emission
from relay.redaction import redact
from relay.scheduler import Scheduler
from relay.schemas import asyncapi, json_schemas
from relay.sender import make_sender
from relay.settings import CredentialUnavailable, load_settings

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
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """it-relay."""
    # The daemon adopts the signals held while it started; every other command acts on them now.
    if ctx.invoked_subcommand != "run":
        early_signals.release()


@app.command()
def validate(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="Events as JSON, a JSON array or JSON lines.")
    ],
    unknown_fields: Annotated[
        UnknownFields,
        typer.Option(help="Policy for fields the contract does not name: keep, drop or reject."),
    ] = "keep",
) -> None:
    """Validate events against the contracts: exit 0 if all are valid, 1 otherwise."""
    invalid = _report(list(cli_common.documents(cli_common.read_input(source))), unknown_fields, quiet=False)
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
    settings = cli_common.load(config, log_level, log_format, secrets=True)
    # SIGHUP reads the same sources again (the file, IT_RELAY_* variables, credentials).
    cli_common.run_async(
        Daemon(settings, reload_settings=lambda: load_settings(config), owns_process=True).run()
    )


@app.command()
def demo() -> None:
    """The whole mission on an embedded PostgreSQL: triggers, relay, scheduler, signed webhooks."""
    from relay import demo as demo_module

    raise typer.Exit(demo_module.main())


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
        connect=lambda: database.connect_for_command(settings.database),
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

    emissions = cli_common.with_db(settings, run_once)
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
    """Send one signed example event (x-it-test: true, a fresh event_id); exit 0 on 2xx. It signs
    with the subscriber's secret: a secret_credential is read from $CREDENTIALS_DIRECTORY."""
    settings = cli_common.load(config)
    name = operate.subscriber_named(subscriber)
    conf = settings.subscribers.get(name)
    if conf is None:
        raise InputError(
            f"--subscriber {name}: not configured here (no [subscribers.{name}] in the configuration)"
        )
    try:
        conf.check_secrets()  # this subscriber's only: send-test needs no other secret, nor the database
    except CredentialUnavailable as exc:
        raise ConfigError(
            f"config error: subscribers.{name}.{exc.key}: send-test signs with it, and reads it from "
            "$CREDENTIALS_DIRECTORY, which systemd sets only for the unit; run send-test with "
            "CREDENTIALS_DIRECTORY set to the credential files' directory (docs/operations.md)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"config error: subscribers.{name}: {exc}") from None
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


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"it-relay: error: {message}", err=True)
    sys.exit(code)


register_setup_commands(app)
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
