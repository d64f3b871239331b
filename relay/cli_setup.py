"""Setting the relay up: `check-config` (every problem of a configuration, secrets masked, the
credentials it cannot read outside systemd named) and `db upgrade | status` (the schema, created
and migrated by its owner's login)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import typer

from relay import cli_common, migrate
from relay.cli_common import ConfigOption, shown_database_url
from relay.contracts import routed_subscribers
from relay.errors import UserError
from relay.sender import describe
from relay.settings import (
    ConfigErrors,
    CredentialUnavailable,
    Settings,
    load_settings,
    masked,
    secrets_unread,
    sources,
)

db_app = typer.Typer(help="The relay's database schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("check-config")(check_config)


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
    """Create or migrate the it_relay schema (idempotent; safe with several instances). Run it as
    the schema's owner (--database-url): the relay's own login may not create tables."""
    settings = cli_common.load(config)
    if database_url is not None:
        settings = settings.as_owner(database_url)
    channel = settings.database.channel

    async def upgrade(conn: asyncpg.Connection) -> list[str]:
        try:
            return await migrate.upgrade(conn, reference=reference_schema, channel=channel)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise UserError(
                owner_needed(describe(exc), settings, config, given=database_url is not None)
            ) from None

    applied = cli_common.with_db(settings, upgrade, check=False)
    typer.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


def owner_needed(refusal: str, settings: Settings, config: Path | None, *, given: bool) -> str:
    """Why `db upgrade` was refused and the form that works: the schema owner's login."""
    url = urlsplit(settings.database.url)
    login = url.username or "the configured login"
    host = url.netloc.rpartition("@")[2]
    owner = urlunsplit(url._replace(netloc=f"OWNER@{host}", query="", fragment=""))
    if given:
        return (
            f"db upgrade: {refusal}: {login} (--database-url) may not change the schema; "
            "give the login that owns it (docs/database.md, Roles)"
        )
    return (
        f"db upgrade: {refusal}: {login} (database.url, the relay's login) may not change the schema; "
        f"run it as the schema owner: it-relay db upgrade --config {config or '<relay.toml>'} "
        f"--database-url {owner} (its password from PGPASSWORD or ~/.pgpass; docs/database.md, Roles)"
    )


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


def check_config(config: ConfigOption = None) -> None:
    """Validate the configuration and print it with secrets masked (exit 2 naming every bad key).
    Credentials are read when $CREDENTIALS_DIRECTORY is set (as systemd does for the unit)."""
    try:
        with secrets_unread():
            settings = load_settings(config)
    except ConfigErrors as exc:
        for problem in exc.problems:
            typer.echo(f"it-relay: error: config error: {problem}", err=True)
        raise typer.Exit(2) from None
    problems, unread = secret_problems(settings)
    path, variables = sources(config)
    read = [f"file {path}" if path else "no file (--config FILE or IT_RELAY_CONFIG)"]
    if variables:
        read.append("environment " + ", ".join(variables))
    typer.echo(f"sources: {'; '.join(read)}; defaults for the rest", err=True)
    shown = masked(settings)
    shown["database"]["url"] = shown_database_url(settings.database.url)
    typer.echo(json.dumps(shown, indent=2))
    for line in _notes(settings, unread):
        typer.echo(line, err=True)
    for problem in problems:
        typer.echo(f"it-relay: error: config error: {problem}", err=True)
    if problems:
        raise typer.Exit(2)


def secret_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """Every secret read and checked: the problems (naming the key), and the credentials that
    cannot be read here (no $CREDENTIALS_DIRECTORY)."""
    problems: list[str] = []
    unread: list[str] = []
    checks = [("database", settings.database.resolved_password)] + [
        (f"subscribers.{name}", sub.check_secrets) for name, sub in settings.subscribers.items()
    ]
    for where, check in checks:
        try:
            check()
        except CredentialUnavailable as exc:
            unread.append(f"{where}.{exc.key}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return problems, unread


def _notes(settings: Settings, unread: list[str]) -> list[str]:
    notes = []
    missing = sorted(routed_subscribers() - settings.subscribers.keys())
    disabled = sorted(n for n, s in settings.subscribers.items() if not s.enabled)
    if missing:
        notes.append(f"note: not served here (no deliveries are created for them): {', '.join(missing)}")
    if disabled:
        notes.append(
            f"note: paused by enabled = false (deliveries are created and held): {', '.join(disabled)}"
        )
    if unread:
        notes.append(
            f"note: not read (no $CREDENTIALS_DIRECTORY, which systemd sets for the unit): {', '.join(unread)}; "
            "to check them too, run with CREDENTIALS_DIRECTORY set to the credential files' directory"
        )
    if settings.ingest.legacy and not settings.ingest.legacy_senders:
        notes.append(
            "warning: full-payload notifications are accepted from any role that can NOTIFY "
            f"{settings.database.channel}; set ingest.legacy_senders, or ingest.legacy = false"
        )
    return notes
