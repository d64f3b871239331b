"""Connections to PostgreSQL, named in pg_stat_activity: `it-relay`, `it-relay:listener`,
`it-relay:scheduler`, and the commands' own `it-relay:cli`."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from typing import TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.exceptions._base import InternalClientError
from asyncpg.pool import PoolConnectionProxy

from relay.errors import UserError
from relay.sender import describe
from relay.settings import CredentialUnavailable, DatabaseSettings
from relay.sql import QUERIES

# What every gateway function takes: a dedicated connection (the listener, the scheduler, the
# CLI) or one borrowed from the daemon's pool, which asyncpg hands out behind a proxy.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# Everything a lost or restarting database can raise. InternalClientError is asyncpg reporting a
# connection left mid-operation by a dropped socket; it is a database fault, not a bug of ours.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    InternalClientError,
)

APPLICATION = "it-relay"
LISTENER_APPLICATION = "it-relay:listener"
SCHEDULER_APPLICATION = "it-relay:scheduler"
CLI_APPLICATION = "it-relay:cli"


async def connect(settings: DatabaseSettings, application_name: str = APPLICATION) -> asyncpg.Connection:
    """One dedicated connection (never from the pool): the listener, the CLI."""
    conn: asyncpg.Connection = await asyncpg.connect(
        settings.url,
        password=settings.resolved_password(),
        timeout=settings.connect_timeout_s,
        server_settings={"application_name": application_name},
    )
    return conn


# Runs the delivery path's functions once on a new connection (journal.warm_functions), given a timeout.
SessionWarmer: TypeAlias = Callable[[asyncpg.Connection, float], Awaitable[None]]


async def create_pool(
    settings: DatabaseSettings, warm_functions: SessionWarmer | None = None
) -> asyncpg.Pool:
    """The daemon's pool. Its commits do not wait for the WAL flush unless configured to
    (`database.bookkeeping_commit`): a write through it is either redone after a PostgreSQL crash
    (a routing, a claim, an outcome: at worst a delivery goes out again, same event_id), or the
    only record of something and then committed synchronously by its gateway function whatever
    the connection (`journal.sole_record`: rejections, journaled notifications, operators' acts)."""
    server_settings = {"application_name": APPLICATION}
    if settings.bookkeeping_commit == "async":
        server_settings["synchronous_commit"] = "off"
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.url,
        password=settings.resolved_password(),
        min_size=1,
        max_size=settings.pool_size,
        timeout=settings.connect_timeout_s,
        server_settings=server_settings,
        reset=_keep_session,
        init=functools.partial(_warm, warm_functions=warm_functions),
    )
    return pool


# The statements between a producer's commit and the POST, and the outcome after it.
_DELIVERY_PATH = ("peek_events", "mark_routed", "claim_deliveries", "write_results")


# The warm-up only saves time: it never waits long for a lock a migration holds.
_WARM_TIMEOUT_S = 2.0


async def _warm(conn: asyncpg.Connection, warm_functions: SessionWarmer | None = None) -> None:
    """As a pool connection opens: the type look-ups its first statements would make, all at once
    (warm_types), the delivery path's statements prepared once, which loads the server's
    catalogue caches of what they read, and its functions run once on nothing (`warm_functions`,
    from the gateway), so a delivery's first statement on a new connection costs what the others do."""
    await conn.prepare(QUERIES["warm_types"], timeout=_WARM_TIMEOUT_S)
    # A schema missing, older than this code or out of this login's reach, a migration holding a
    # table: the start-up's schema check (`it-relay db upgrade`) or the statement itself says so
    # later, in its own words; a connection that cannot talk still fails to open.
    with contextlib.suppress(asyncpg.PostgresError, TimeoutError):
        for name in _DELIVERY_PATH:
            await conn.prepare(QUERIES[name], timeout=_WARM_TIMEOUT_S)
        if warm_functions is not None:
            await warm_functions(conn, _WARM_TIMEOUT_S)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL): half
    of all round trips in a drain. Pool connections run only named queries, which leave no session
    state (locks are transaction-scoped, settings SET LOCAL, LISTEN only on the listener's own
    connection); asyncpg still rolls back a transaction left open before calling this."""


def address(url: str) -> str:
    """Where a database URL points, as an operator reads it: host:port, or the socket directory."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        given = parse_qs(parts.query).get("host", [os.environ.get("PGHOST", "")])[0]
        port = parse_qs(parts.query).get("port", [os.environ.get("PGPORT", "5432")])[0]
        if given.startswith("/"):
            return f"socket {given} (port {port})"
        hosts = f"{given or 'localhost'}:{port}"
    return ",".join(map(_with_port, hosts.split(",")))


def _with_port(host: str) -> str:
    # An IPv6 literal's colons are inside its brackets.
    return host if ":" in host.rpartition("]")[2] else f"{host}:5432"


async def connect_for_command(
    settings: DatabaseSettings, application_name: str = CLI_APPLICATION
) -> asyncpg.Connection:
    """A command's connection. A password credential that cannot be read outside systemd is left to
    libpq's own sources (PGPASSWORD, ~/.pgpass); every failure is one line naming where and how."""
    try:
        password = settings.resolved_password()
        unread: CredentialUnavailable | None = None
    except CredentialUnavailable as exc:
        password, unread = None, exc
    except ValueError as exc:
        raise UserError(f"database: {exc}") from None
    where = address(settings.url)
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            settings.url,
            password=password,
            timeout=settings.connect_timeout_s,
            server_settings={"application_name": application_name},
        )
    except (OSError, TimeoutError) as exc:
        raise UserError(
            f"database at {where}: cannot connect ({describe(exc)}); is PostgreSQL running there, "
            "and is database.url right?"
        ) from None
    except asyncpg.InvalidPasswordError as exc:
        how = (
            f"database.password_credential was not read ({unread}); give the password as PGPASSWORD "
            "or in ~/.pgpass instead"
            if unread is not None
            else "check database.password (or its _file / _credential)"
        )
        raise UserError(f"database at {where}: {describe(exc)}; {how}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # no such role, no pg_hba.conf entry
        raise UserError(f"database at {where}: {describe(exc)}") from None
    return conn
