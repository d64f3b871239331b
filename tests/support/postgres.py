"""A real PostgreSQL for tests: $IT_RELAY_TEST_DATABASE_URL, else an embedded pgserver."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

TEST_URL_ENV = "IT_RELAY_TEST_DATABASE_URL"


@contextmanager
def server_url() -> Iterator[str]:
    """The admin URL of a PostgreSQL server for the whole test session."""
    given = os.environ.get(TEST_URL_ENV)
    if given:
        yield given
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="it-relay-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def as_user(url: str, user: str) -> str:
    """The same server and database, logged in as another role (tests run with trust auth)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rsplit('@', 1)[-1]}"))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def fresh_name() -> str:
    return f"it_relay_test_{uuid.uuid4().hex[:12]}"


async def upgraded(url: str, *, reference: bool = False) -> str:
    """Apply the relay's schema (and the IT reference schema) to a database; returns its URL."""
    from relay import migrate

    conn = await asyncpg.connect(url)
    try:
        await migrate.upgrade(conn, reference=reference)
    finally:
        await conn.close()
    return url


class Roles:
    """Roles for one test. Roles belong to the whole server, shared with other test databases and
    other runs, so each gets a unique name and is dropped with everything it holds afterwards."""

    def __init__(self, admin_url: str, database_url: str) -> None:
        self._admin_url = admin_url
        self._database_url = database_url
        self.created: list[str] = []

    def adopt(self, *names: str) -> None:
        """Drop these roles too (roles a test's SQL created by name)."""
        self.created.extend(names)

    async def create(self, base: str, options: str = "NOLOGIN") -> str:
        name = f"{base}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self._admin_url)
        try:
            await admin.execute(f'CREATE ROLE "{name}" {options}')
        finally:
            await admin.close()
        self.created.append(name)
        return name

    async def drop(self) -> None:
        if not self.created:
            return
        conn = await asyncpg.connect(self._database_url)
        try:
            for name in self.created:
                await conn.execute(f'DROP OWNED BY "{name}" CASCADE')
        finally:
            await conn.close()
        admin = await asyncpg.connect(self._admin_url)
        try:
            for name in self.created:
                await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await admin.close()
