"""Upgrades: a database made by the previous release (its relay migrations and its unversioned
reference scripts, kept as a fixture) is brought to this version with its data intact."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from relay import migrate
from relay.sql import migrations
from tests.support.reference import make_asset, make_license, make_org, make_ticket
from tests.support.relay import cli, relay_settings, write_config
from tests.support.sink import Sink

PREVIOUS = Path(__file__).parent / "fixtures" / "reference_before_versioning"


async def _previous_release(conn: asyncpg.Connection) -> None:
    """What `db upgrade --reference-schema` of the previous release left: relay migrations 1-2
    (unchanged since) and the reference scripts, applied without a recorded version."""
    await conn.execute("SET it_relay.channel = 'it_events'")
    async with conn.transaction():
        for m in migrations()[:2]:
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO it_relay.schema_version (version, name) VALUES ($1, $2)", m.version, m.name
            )
        for script in sorted(PREVIOUS.glob("*.sql")):
            await conn.execute(script.read_text())


async def test_a_previous_release_database_upgrades_with_its_data(
    tmp_path: Path, database_url: str, sink: Sink
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _previous_release(conn)
        org = await make_org(conn)
        asset = await make_asset(conn, org, "KEEP-1")
        await make_license(conn, org)
        await make_ticket(conn, org)
        before = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("organizations", "it_assets", "it_licenses", "it_tickets", "it_relay.events")
        }
        config = write_config(tmp_path / "relay.toml", relay_settings(database_url, sink, ["FA"]))
        status = await cli("db", "status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert "relay schema: version 2" in status.stdout
        assert "reference schema: installed before versioning" in status.stdout
        assert (
            "db upgrade --reference-schema would apply: reference/0001_baseline, "
            "reference/0002_onboarding_start_date" in status.stdout
        )

        applied = await migrate.upgrade(conn, reference=True, channel="it_events")
        assert [a for a in applied if a.startswith("reference/")] == [
            "reference/0001_baseline",
            "reference/0002_onboarding_start_date",
        ]
        assert await migrate.reference_version(conn) == 2
        start_date = "SELECT data_type FROM information_schema.columns WHERE table_name = 'it_onboarding_instances' AND column_name = 'start_date'"
        assert await conn.fetchval(start_date) == "date"
        assert await migrate.schema_version(conn) == migrate.code_version()
        after = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in before}
        assert after == before
        assert await conn.fetchval("SELECT asset_tag FROM it_assets WHERE id = $1", asset) == "KEEP-1"
        # The upgraded schema works: views in their new place, triggers publish.
        assert await conn.fetchval("SELECT count(*) FROM it_relay.license_compliance") == 1
        assert await conn.fetchval("SELECT to_regclass('public.it_relay_ticket_clocks')") is None
        await conn.execute(
            "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject, description,"
            " requester_id) VALUES ($1, 'TKT-AFTER', 'hardware', 'low', 's', 'd', $2)",
            org.id,
            org.bob,
        )
        assert await conn.fetchval("SELECT count(*) FROM it_relay.events") == before["it_relay.events"] + 1

        # Applied once: a second upgrade applies nothing, and says so.
        assert await migrate.upgrade(conn, reference=True, channel="it_events") == []
        again = await cli("db", "status", "--config", str(config))
        assert "reference schema: version 2 (this it-relay: 2)" in again.stdout
        assert again.stdout.strip().endswith("nothing to apply")
    finally:
        await conn.close()


async def test_db_status_of_an_empty_database(tmp_path: Path, database_url: str, sink: Sink) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(database_url, sink, ["FA"]))
    result = await cli("db", "status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"relay schema: not installed (this it-relay: {migrate.code_version()})"
    assert lines[1] == "reference schema: not installed (this it-relay: 2)"
    assert lines[2].startswith("db upgrade would apply: 0001_journal, 0002_scheduler")
