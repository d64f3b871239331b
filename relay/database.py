"""Connections to PostgreSQL, named in pg_stat_activity: `it-relay`, `it-relay:listener`, `it-relay:scheduler`."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.exceptions._base import InternalClientError
from asyncpg.pool import PoolConnectionProxy

from relay.settings import DatabaseSettings

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


async def connect(settings: DatabaseSettings, application_name: str = APPLICATION) -> asyncpg.Connection:
    """One dedicated connection (never from the pool): the listener, the CLI."""
    conn: asyncpg.Connection = await asyncpg.connect(
        settings.url,
        password=settings.resolved_password(),
        timeout=settings.connect_timeout_s,
        server_settings={"application_name": application_name},
    )
    return conn


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
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
    )
    return pool
