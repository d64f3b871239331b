"""Hostile database logins: hijacked SECURITY DEFINER functions, grants that leak across tenants,
forged notifications. Each test here failed on the relay before it was hardened (issue 10)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import asyncpg
import pytest

from relay import codec
from relay.contracts.examples import example
from tests.support.cli import run_cli
from tests.support.postgres import Roles, as_user, database_of
from tests.support.reference import make_asset, make_license, make_org, make_ticket
from tests.support.relay import cli, relay_settings, running, wait_for_rows, write_config
from tests.support.sink import Sink

DOCS = Path(__file__).parent.parent / "docs" / "database.md"

DEFINER_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name, p.proconfig,
       p.proacl IS NULL
       OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
         AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


async def test_every_security_definer_function_pins_pg_temp_last_and_is_not_public(
    ref: asyncpg.Connection,
) -> None:
    # From the catalog, not a list: a function added later is held to the same two rules.
    functions = await ref.fetch(DEFINER_FUNCTIONS)
    names = {f["name"] for f in functions}
    assert {"it_relay.publish(jsonb)", "it_check_license_compliance(uuid,uuid)"} <= names
    assert len(functions) >= 20  # the trigger functions and their look-ups too
    for f in functions:
        path = next((c.split("=", 1)[1] for c in f["proconfig"] or [] if c.startswith("search_path=")), "")
        assert [part.strip() for part in path.split(",")][-1] == "pg_temp", (
            f"{f['name']}: search_path={path!r}"
        )
        assert not f["public_execute"], f"{f['name']}: PUBLIC may execute it"


async def test_a_login_without_grants_cannot_hijack_or_read_across_organisations(
    ref_db: str, ref: asyncpg.Connection, roles: Roles
) -> None:
    a, b = await make_org(ref, "Acme"), await make_org(ref, "Globex")
    mine = await make_license(ref, a, key="RAW-KEY-OF-ACME")
    await make_license(ref, b, key="RAW-KEY-OF-GLOBEX")
    hostile = await roles.create("hostile", "LOGIN")
    conn = await asyncpg.connect(as_user(ref_db, hostile))
    try:
        # The attack: temporary views named like the IT tables, which a search_path without
        # pg_temp last would consult first, inside a function running as the schema owner.
        await conn.execute(
            "CREATE TEMP VIEW it_licenses AS SELECT l.*, 'HIJACKED' AS marker FROM"
            " (SELECT gen_random_uuid() AS id, 'HIJACKED' AS software_name, 1 AS license_count,"
            f" '{b.id}'::uuid AS organization_id) l"
        )
        await conn.execute(
            "CREATE TEMP VIEW it_license_assignments AS SELECT NULL::uuid AS license_id, NULL::timestamptz AS revoked_at"
        )
        for call, args in [
            ("SELECT * FROM it_check_license_compliance($1)", (b.id,)),
            ("SELECT it_relay.publish($1::jsonb)", (codec.dumps(example("it_ticket_created")).decode(),)),
            ("SELECT it_employee_name($1)", (b.bob,)),
            ("SELECT it_vendor_name($1)", (b.vendor,)),
        ]:
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match=r"permission denied for (function|schema)"
            ):
                await conn.fetch(call, *args)
        # Even a tenant's role with EXECUTE gets only its own organisation's real rows.
        await ref.execute(f"GRANT EXECUTE ON FUNCTION it_check_license_compliance(uuid, uuid) TO {hostile}")
        await conn.execute("SELECT set_config('app.organization_id', $1, false)", str(a.id))
        rows = await conn.fetch("SELECT * FROM it_check_license_compliance($1)", a.id)
        assert [r["license_id"] for r in rows] == [mine]
        assert "HIJACKED" not in str(rows)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="outside this session's organization"):
            await conn.fetch("SELECT * FROM it_check_license_compliance($1)", b.id)
    finally:
        await conn.close()


def _recipe(names: dict[str, str], database: str) -> list[str]:
    """The SQL blocks of docs/database.md, in order, with this test's role and database names."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.DOTALL)
    out = []
    for sql in blocks:
        sql = re.sub(r"\bencore\b", f'"{database}"', sql)
        # it_relay is the relay's role and its schema: rename every bare mention, then give the
        # schema positions their name back.
        for role, name in names.items():
            sql = re.sub(rf"\b{role}\b(?!\.)", name, sql)
        sql = re.sub(rf"\b(SCHEMA(?: IF NOT EXISTS)?) {names['it_relay']}\b", r"\1 it_relay", sql)
        out.append(sql)
    return out


async def _seed(conn: asyncpg.Connection, org_name: str) -> UUID:
    """An organisation with a row in most IT tables (as a superuser: no row-level scope)."""
    org = await make_org(conn, org_name)
    await make_asset(conn, org, f"{org_name}-1")
    await make_ticket(conn, org)
    licence = await make_license(conn, org, key=f"RAW-KEY-{org_name}")
    await conn.execute(
        "INSERT INTO it_license_assignments (organization_id, license_id, employee_id) VALUES ($1, $2, $3)",
        org.id,
        licence,
        org.bob,
    )
    await conn.execute(
        "INSERT INTO it_contracts (organization_id, contract_number, vendor_id, contract_type, expiration_date,"
        " contract_value, auto_renew) VALUES ($1, 'CTR-1', $2, 'support', current_date + 30, 48000, false)",
        org.id,
        org.vendor,
    )
    return org.id


RELATIONS = """
SELECT c.oid::regclass::text AS name, n.nspname AS schema,
       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id'
                                            AND NOT a.attisdropped) AS scoped,
       (SELECT quote_ident(a.attname) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
           AND a.attidentity = '' ORDER BY a.attnum LIMIT 1) AS writable,
       has_table_privilege(c.oid, 'SELECT') AS can_select,
       has_table_privilege(c.oid, 'UPDATE') AS can_update,
       has_table_privilege(c.oid, 'DELETE') AS can_delete
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('public', 'it_relay') AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
"""

FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('public', 'it_relay') AND p.prosecdef AND has_function_privilege(p.oid, 'EXECUTE')
"""


async def _assert_isolated(app: asyncpg.Connection, mine: UUID, theirs: UUID) -> None:
    """Scoped to `mine`, the application role sees and changes nothing of `theirs`, anywhere."""
    async with app.transaction():
        await app.execute("SELECT set_config('app.organization_id', $1, true)", str(mine))
        relations = await app.fetch(RELATIONS)
        readable = [r for r in relations if r["can_select"]]
        assert len(readable) >= 20, [r["name"] for r in readable]
        for r in relations:
            if r["schema"] == "it_relay":
                assert not (r["can_select"] or r["can_update"] or r["can_delete"]), r["name"]
                continue
            if not (r["can_select"] or r["can_update"] or r["can_delete"]):
                continue
            assert r["scoped"], f"{r['name']} is reachable but has no organization_id"
            foreign = f"FROM {r['name']} WHERE organization_id IS DISTINCT FROM $1"
            if r["can_select"]:
                assert await app.fetchval(f"SELECT count(*) {foreign}", mine) == 0, r["name"]
            if r["can_update"]:
                result = await app.execute(
                    f"UPDATE {r['name']} SET {r['writable']} = {r['writable']} WHERE organization_id IS DISTINCT FROM $1",
                    mine,
                )
                assert result == "UPDATE 0", r["name"]
            if r["can_delete"]:
                assert await app.execute(f"DELETE {foreign}", mine) == "DELETE 0", r["name"]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with app.transaction():
                await app.execute("INSERT INTO sites (organization_id, name) VALUES ($1, 'sneaky')", theirs)
        # Functions that run as their owner: only the two the recipe grants, and the compliance
        # check refuses the other organisation.
        executable = {r["name"] for r in await app.fetch(FUNCTIONS)}
        assert executable == {"it_relay.publish(jsonb)", "it_check_license_compliance(uuid,uuid)"}
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app.transaction():
                await app.fetch("SELECT * FROM it_check_license_compliance($1)", theirs)
        assert len(await app.fetch("SELECT * FROM it_check_license_compliance($1)", mine)) == 1
        # Rolled back: the DELETEs above changed nothing anyway.
        raise _Rollback


class _Rollback(Exception):
    pass


async def test_the_documented_roles_recipe_runs_and_isolates_tenants(
    tmp_path: Path, database_url: str, roles: Roles, sink: Sink
) -> None:
    suffix = uuid4().hex[:8]
    names = {role: f"{role}_{suffix}" for role in ("it_owner", "it_relay", "it_app")}
    roles.adopt(*names.values())
    before, after = _recipe(names, database_of(database_url))
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(before)
        # One config file, the relay's login; the owner's for the upgrade only.
        settings = relay_settings(as_user(database_url, names["it_relay"]), sink, ["PF-10"], scheduler={})
        config = write_config(tmp_path / "relay.toml", settings)
        # The relay's login may not create the schema: the error gives the form that works.
        refused = await run_cli("db", "upgrade", "--config", str(config))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        host = urlsplit(database_url).netloc.rpartition("@")[2]
        assert (
            f"{names['it_relay']} (database.url, the relay's login) may not change the schema"
            in refused.stderr
        )
        assert (
            f"run it as the schema owner: it-relay db upgrade --config {config} "
            f"--database-url postgresql://OWNER@{host}/{database_of(database_url)}"
        ) in refused.stderr
        upgraded = await cli(
            "db",
            "upgrade",
            "--config",
            str(config),
            "--reference-schema",
            "--database-url",
            as_user(database_url, names["it_owner"]),
        )
        assert upgraded.returncode == 0, upgraded.stderr
        owner = await asyncpg.connect(as_user(database_url, names["it_owner"]))
        try:
            await owner.execute(after)
        finally:
            await owner.close()
        mine, theirs = await _seed(admin, "Acme"), await _seed(admin, "Globex")
        app = await asyncpg.connect(as_user(database_url, names["it_app"]))
        try:
            # The daemon (with its scheduler) as the relay's role delivers what the
            # application's writes publish through the triggers.
            async with running(settings):
                async with app.transaction():
                    await app.execute("SELECT set_config('app.organization_id', $1, true)", str(mine))
                    site = await app.fetchval("SELECT id FROM sites")
                    await app.execute(
                        "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject,"
                        " description, requester_id) SELECT $1, 'TKT-APP', 'hardware', 'low', 'Mouse', 'Broken',"
                        " id FROM employees LIMIT 1",
                        mine,
                    )
                    assert site is not None
                await sink.wait_for(lambda r: any(b'"TKT-APP"' in x.body for x in r), within=30)
                # A legacy full-payload notification is journaled by the relay's login too.
                legacy = example("it_ticket_created") | {"ticket_number": "TKT-LEGACY"}
                await app.execute("SELECT pg_notify('it_events', $1)", codec.dumps(legacy).decode())
                await sink.wait_for(lambda r: any(b'"TKT-LEGACY"' in x.body for x in r), within=30)
                await wait_for_rows(
                    admin,
                    "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
                    lambda v: v >= 1,
                )
            scheduled = await cli("scheduler", "run-once", "--config", str(config))
            assert scheduled.returncode == 0, scheduled.stderr
            # The operator's commands work with the relay's login, and are on record under it.
            for args in (
                ["subscribers", "pause", "PF-10", "--reason", "recipe"],
                ["replay", "--subscriber", "PF-10", "--status", "delivered", "--yes"],
                ["status", "--json"],
                ["audit", "list"],
                ["rejections", "list", "--all"],
            ):
                done = await run_cli(*args, "--config", str(config))
                assert done.returncode == 0, (args, done.stderr)
            roles_on_record = await admin.fetch("SELECT db_role, action FROM it_relay.audit ORDER BY id")
            assert [(r["db_role"], r["action"]) for r in roles_on_record] == [
                (names["it_relay"], "pause"),
                (names["it_relay"], "replay"),
            ]
            # Written by the relay's login, never rewritten by it.
            relay = await asyncpg.connect(as_user(database_url, names["it_relay"]))
            try:
                for change in ("DELETE FROM it_relay.audit", "UPDATE it_relay.audit SET reason = 'x'"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await relay.execute(change)
            finally:
                await relay.close()
            with pytest.raises(_Rollback):
                await _assert_isolated(app, mine, theirs)
        finally:
            await app.close()
        assert await admin.fetchval("SELECT count(*) FROM it_relay.rejected_events") == 0
    finally:
        await admin.close()


async def test_legacy_notifications_are_journaled_only_from_trusted_senders(
    relay_db: str, db: asyncpg.Connection, roles: Roles, sink: Sink
) -> None:
    trusted, stranger = await roles.create("it_app", "LOGIN"), await roles.create("stranger", "LOGIN")
    good = example("it_asset_assigned") | {"asset_tag": "TRUSTED"}
    forged = example("it_asset_assigned") | {"asset_tag": "FORGED", "license_key": "RAW-FORGED-KEY"}

    async def notify(role: str, payload: dict[str, object]) -> None:
        conn = await asyncpg.connect(as_user(relay_db, role))
        try:
            await conn.execute("SELECT pg_notify('it_events', $1)", codec.dumps(payload).decode())
            # Stay connected until the relay has judged it: the check is by the live backend's pid.
            await wait_for_rows(
                db,
                "SELECT (SELECT count(*) FROM it_relay.events) + (SELECT count(*) FROM it_relay.rejected_events)",
                lambda v: v >= seen + 1,
            )
        finally:
            await conn.close()

    settings = relay_settings(relay_db, sink, ["PF-10"], ingest={"legacy_senders": [trusted]})
    async with running(settings):
        seen = 0
        await notify(stranger, forged)
        seen = 1
        await notify(trusted, good)
        await sink.wait_for(lambda r: len(r) == 1)
    assert b"TRUSTED" in sink.requests[0].body
    rejected = await db.fetchrow("SELECT reason, errors, payload::text FROM it_relay.rejected_events")
    assert rejected is not None
    assert rejected["reason"] == "untrusted_sender"
    assert rejected["errors"] == [f"$: sent by role '{stranger}', not one of ingest.legacy_senders"]
    assert "FORGED" in rejected["payload"] and "RAW-FORGED-KEY" not in rejected["payload"]
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 1

    # Legacy ingestion off: even a trusted role's full payload is only kept as a rejection.
    async with running(relay_settings(relay_db, sink, ["PF-10"], ingest={"legacy": False})):
        seen = 2
        await notify(trusted, good | {"asset_tag": "LATE"})
    reasons = [r[0] for r in await db.fetch("SELECT reason FROM it_relay.rejected_events ORDER BY id")]
    assert reasons == ["untrusted_sender", "untrusted_sender"]
    assert len(sink.requests) == 1


async def test_check_config_warns_while_any_role_may_send_legacy_events(tmp_path: Path) -> None:
    open_config = tmp_path / "open.toml"
    open_config.write_text('[database]\nurl = "postgresql://it_relay@db/encore"\n')
    result = await cli("check-config", "--config", str(open_config))
    assert result.returncode == 0, result.stderr
    assert "full-payload notifications are accepted from any role" in result.stderr
    closed = tmp_path / "closed.toml"
    closed.write_text(open_config.read_text() + '[ingest]\nlegacy_senders = ["it_app"]\n')
    result = await cli("check-config", "--config", str(closed))
    assert result.returncode == 0, result.stderr
    assert "full-payload notifications" not in result.stderr
