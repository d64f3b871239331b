"""What every it-relay command shares: loading settings, one database connection, who acts,
one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import typer

from relay import codec, database, logs, migrate, model
from relay.errors import InputError, UserError
from relay.model import AuditAction, AuditActionName
from relay.redaction import MASK, mask_url
from relay.sender import describe
from relay.settings import Settings, load_settings, secrets_unread, sources

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $IT_RELAY_CONFIG)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON, for scripts.")]
Since = Annotated[datetime | None, typer.Option(help="From this time (UTC if no offset).")]


def load(
    config: Path | None,
    log_level: str | None = None,
    log_format: model.LogFormat | None = None,
    *,
    secrets: bool = False,
) -> Settings:
    """The configuration; subscribers' secrets and credentials read and checked only with
    `secrets` (the daemon, send-test): every other command needs only the database."""
    with contextlib.nullcontext() if secrets else secrets_unread():
        settings = load_settings(config)
    path, variables = sources(config)
    if path is None and not variables:
        # Said before anything fails to connect with the defaults' made-up database.
        typer.echo(
            "note: no configuration (--config FILE or IT_RELAY_CONFIG): using the defaults, "
            f"database.url {shown_database_url(settings.database.url)}",
            err=True,
        )
    logs.configure(
        (log_level or settings.logging.level).upper(),
        log_format or settings.logging.format,
    )
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        # uvloop when installed (Linux, a dependency): measured faster for the relay's socket I/O.
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(coro)
    except database.DB_ERRORS as exc:
        raise UserError(f"database: {describe(exc)}") from None


def shown_database_url(url: str) -> str:
    """A database URL fit to show: its password masked, its user (a role name, no secret) kept."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" in userinfo:
        return mask_url(url)
    # mask_url takes a bare userinfo for a token; a database URL's is its login's name.
    shown = mask_url(urlunsplit(parts._replace(netloc=f"{MASK}@{host}")))
    return shown.replace(f"{MASK}@", f"{userinfo}@", 1)


def with_db(
    settings: Settings,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    application: str = database.CLI_APPLICATION,
    check: bool = True,
) -> T:
    """Run `work` on one connection (after the schema check), then close it; errors are one line."""

    async def go() -> T:
        conn = await database.connect_for_command(settings.database, application)
        try:
            if check:
                await migrate.check(conn)
            return await work(conn)
        finally:
            await conn.close()

    return run_async(go())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


LogLevel = Annotated[
    model.LogLevel | None, typer.Option("--log-level", case_sensitive=False, help="The log level.")
]
LogFormat = Annotated[
    model.LogFormat | None, typer.Option("--log-format", help="The log format (default: auto).")
]


def event_id_option(value: str | None) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise InputError("--event-id must be a UUID") from None


def cut(text: str, width: int) -> str:
    """Text cut to a column, marked as cut (the whole of it: --wide or --json)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def utc(value: datetime | None) -> datetime | None:
    """A time given without an offset, as UTC."""
    return value.replace(tzinfo=value.tzinfo or UTC) if value else None


def echo_json(value: Any) -> None:
    """A record, or a list of records, as JSON: fields by name, nested records as objects."""
    if isinstance(value, list):
        value = [dataclasses.asdict(v) for v in value]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    typer.echo(codec.dumps(value).decode())


def read_input(source: str) -> bytes:
    """A FILE argument's bytes, or standard input's for `-`."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None


def documents(data: bytes) -> Iterator[Any]:
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


def acting(
    action: AuditActionName,
    arguments: Mapping[str, Any],
    *,
    subscriber: str | None = None,
    reason: str | None = None,
) -> AuditAction:
    """An action of the operator running this command, to be recorded with it: their OS user and
    host beside the database role the record gets from the session."""
    return AuditAction(
        action=action,
        arguments={k: _plain(v) for k, v in arguments.items() if v is not None and v is not False},
        os_user=_os_user(),
        host=socket.gethostname() or None,
        subscriber=subscriber,
        reason=reason,
    )


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return None


def _plain(value: Any) -> Any:
    """An argument as JSON keeps it: times, ids and paths as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
