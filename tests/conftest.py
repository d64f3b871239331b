from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.support.postgres import Roles, fresh_name, server_url, upgraded, with_database
from tests.support.sink import Sink


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with server_url() as url:
        yield url


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped after the test."""
    name = fresh_name()
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def roles(pg_server_url: str, database_url: str) -> AsyncIterator[Roles]:
    made = Roles(pg_server_url, database_url)
    yield made
    await made.drop()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything that touches PostgreSQL is a `db` test; .ci/run re-runs those on the server.
    for item in items:
        if "pg_server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture
async def relay_db(database_url: str) -> str:
    """A clean database with the it_relay schema applied."""
    return await upgraded(database_url)


@pytest.fixture
async def db(relay_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the relay database, for the test's own statements."""
    conn = await asyncpg.connect(relay_db)
    yield conn
    await conn.close()


@pytest.fixture
async def ref_db(database_url: str) -> str:
    """A clean database with the it_relay schema and the IT reference schema."""
    return await upgraded(database_url, reference=True)


@pytest.fixture
async def ref(ref_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database with the reference schema."""
    conn = await asyncpg.connect(ref_db)
    yield conn
    await conn.close()
