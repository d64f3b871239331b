"""A real PostgreSQL for tests: $IT_RELAY_TEST_DATABASE_URL, else an embedded pgserver."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

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


def fresh_name() -> str:
    return f"it_relay_test_{uuid.uuid4().hex[:12]}"


async def upgraded(url: str, *, reference: bool = False) -> str:
    """Apply the relay's schema (and the IT reference schema) to a database; returns its URL."""
    import asyncpg

    from relay import migrate

    conn = await asyncpg.connect(url)
    try:
        await migrate.upgrade(conn, reference=reference)
    finally:
        await conn.close()
    return url
