"""Schema management: apply the .sql migrations in order, once, even with several instances."""

from __future__ import annotations

from dataclasses import dataclass

from relay.database import Conn
from relay.errors import SchemaError
from relay.sql import migrations, query

# The relay migration that created it_relay.reference_version.
_REFERENCE_VERSIONING = 5

# pg_advisory_xact_lock key for migrations ("itrelay" in ASCII); any constant unique to it-relay.
_MIGRATION_LOCK = 0x6974_7265_6C61_79


__all__ = [
    "SchemaError",
    "Status",
    "check",
    "check_channel",
    "code_version",
    "reference_version",
    "schema_version",
    "status",
    "upgrade",
]


def code_version() -> int:
    return migrations()[-1].version


async def schema_version(conn: Conn) -> int:
    if not await conn.fetchval(query("schema_exists")):
        return 0
    version: int = await conn.fetchval(query("schema_version"))
    return version


async def upgrade(conn: Conn, *, reference: bool = False, channel: str | None = None) -> list[str]:
    """Apply pending migrations in one transaction; returns the names applied (may be empty).

    `channel` (database.channel) is recorded as the channel it_relay.publish() notifies on.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute(query("migration_lock"), _MIGRATION_LOCK)
        current = await schema_version(conn)
        for migration in migrations():
            if migration.version <= current:
                continue
            await conn.execute(migration.sql)
            await conn.execute(query("record_migration"), migration.version, migration.name)
            applied.append(f"{migration.version:04d}_{migration.name}")
        if channel is not None and await conn.fetchval(query("set_channel"), channel) is not None:
            applied.append(f"channel {channel}")
        if reference:
            done = await reference_version(conn)
            for script in migrations("reference"):
                if script.version <= done:
                    continue
                await conn.execute(script.sql)
                await conn.execute(query("record_reference_migration"), script.version, script.name)
                applied.append(f"reference/{script.version:04d}_{script.name}")
    return applied


async def reference_version(conn: Conn) -> int:
    """The reference schema's recorded version (0: not installed, or installed before versioning)."""
    if await schema_version(conn) < _REFERENCE_VERSIONING:
        return 0
    version: int = await conn.fetchval(query("reference_version"))
    return version


@dataclass(frozen=True, slots=True)
class Status:
    """Where a database stands against this code, and what `db upgrade` would apply."""

    relay: int
    relay_code: int
    relay_pending: list[str]
    reference: int
    reference_code: int
    reference_pending: list[str]
    reference_unversioned: bool  # the IT tables exist, no version recorded (before versioning)


async def status(conn: Conn) -> Status:
    relay = await schema_version(conn)
    reference = await reference_version(conn)
    return Status(
        relay=relay,
        relay_code=code_version(),
        relay_pending=[f"{m.version:04d}_{m.name}" for m in migrations() if m.version > relay],
        reference=reference,
        reference_code=migrations("reference")[-1].version,
        reference_pending=[
            f"reference/{m.version:04d}_{m.name}" for m in migrations("reference") if m.version > reference
        ],
        reference_unversioned=reference == 0 and bool(await conn.fetchval(query("reference_installed"))),
    )


async def check_channel(conn: Conn, channel: str) -> None:
    """Raise SchemaError unless publish() notifies on the channel this relay listens to."""
    recorded = await conn.fetchval(query("channel"))
    if recorded != channel:
        raise SchemaError(
            f"database.channel is {channel!r} but the database publishes on {recorded!r}: "
            "run `it-relay db upgrade` with this configuration to record it"
        )


async def check(conn: Conn) -> int:
    """Raise SchemaError unless the schema is at least as new as this code; returns its version."""
    found = await schema_version(conn)
    needed = code_version()
    if found < needed:
        what = "has no it_relay schema" if found == 0 else f"has it_relay schema version {found}"
        raise SchemaError(
            f"the database {what}; this it-relay needs version {needed}: run `it-relay db upgrade`"
        )
    return found
