"""The `it-relay` command line. User errors print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from relay import __version__, codec
from relay.contracts import Accepted, UnknownFields, parse_event, routed_subscribers
from relay.errors import InputError, UserError
from relay.schemas import asyncapi, json_schemas
from relay.settings import load_settings, masked

app = typer.Typer(
    name="it-relay",
    help="Durable relay of the IT module's events from PostgreSQL to signed webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="Export the event contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $IT_RELAY_CONFIG)."),
]


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


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None


def _documents(data: bytes) -> Iterator[Any]:
    """One JSON object, a JSON array of them, or JSON lines; undecodable lines pass through raw."""
    try:
        whole = codec.loads(data)
    except codec.JSONError:
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) <= 1:
            yield data
            return
        for line in lines:
            try:
                yield codec.loads(line)
            except codec.JSONError:
                yield line
        return
    if isinstance(whole, list):
        yield from whole
    else:
        yield whole


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
    invalid = 0
    count = 0
    for index, document in enumerate(_documents(_read_input(source))):
        count += 1
        result = parse_event(document, policy)
        if isinstance(result, Accepted):
            typer.echo(f"[{index}] ok {result.event_type}")
            continue
        invalid += 1
        for error in result.errors:
            typer.echo(f"[{index}] {error}")
    if count == 0:
        raise InputError("no events in the input")
    typer.echo(f"{count - invalid} valid, {invalid} invalid", err=True)
    raise typer.Exit(1 if invalid else 0)


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


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the configuration and print it with secrets masked (exit 2 naming a bad key)."""
    settings = load_settings(config)
    typer.echo(json.dumps(masked(settings), indent=2))
    missing = sorted(routed_subscribers() - settings.subscribers.keys())
    disabled = sorted(n for n, s in settings.subscribers.items() if not s.enabled)
    if missing:
        typer.echo(
            f"warning: routed subscribers without config (their deliveries wait, counted as "
            f"unconfigured): {', '.join(missing)}",
            err=True,
        )
    if disabled:
        typer.echo(f"warning: disabled subscribers (deliveries wait): {', '.join(disabled)}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"it-relay: error: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Console entry point."""
    # Typer's standalone mode handles usage errors (exit 2) and exits via SystemExit.
    try:
        app()
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
