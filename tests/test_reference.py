"""The IT reference schema: each of the 26 trigger-based events from ordinary statements.

Every payload a trigger writes must pass the Python contract with unknown fields rejected, so the
SQL and the models agree field for field; statements that must not fire produce nothing.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from functools import partial

import asyncpg
import pytest
from standardwebhooks import Webhook

from relay.contracts import REGISTRY
from tests.support.postgres import Roles
from tests.support.reference import (
    Org,
    accepted,
    caused,
    make_asset,
    make_license,
    make_org,
    make_ticket,
)
from tests.support.relay import SECRET, relay_settings, running
from tests.support.sink import Sink


@pytest.fixture
async def org(ref: asyncpg.Connection) -> Org:
    return await make_org(ref)


def types(payloads: list[dict[str, object]]) -> list[str]:
    return [str(p["event_type"]) for p in payloads]


async def test_every_trigger_based_event_has_a_trigger(ref: asyncpg.Connection) -> None:
    trigger_based = {t for t, c in REGISTRY.items() if c.emitter == "trigger"}
    assert len(trigger_based) == 26
    source = await ref.fetchval(
        "SELECT string_agg(prosrc, ' ') FROM pg_proc WHERE proname LIKE 'it_notify_%'"
    )
    assert {t for t in trigger_based if f"'{t}'" in source} == trigger_based
    names = {r[0] for r in await ref.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    for documented in (
        "it_asset_purchased_trigger",
        "it_asset_disposed_trigger",
        "it_ticket_status_changed_trigger",
        "it_license_renewed_trigger",
        "it_provisioning_status_trigger",
        "it_account_status_trigger",
    ):
        assert documented in names
    assert await ref.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'it_notify_asset_purchased'") == 1


# ─── IT-01 ───────────────────────────────────────────────────────────────────────────────────


async def test_asset_purchased_fires_once_when_cost_and_date_are_first_both_set(
    ref: asyncpg.Connection, org: Org
) -> None:
    asset = await make_asset(ref, org)
    assert (
        await caused(
            ref, lambda: ref.execute("UPDATE it_assets SET purchase_cost = 1999.99 WHERE id = $1", asset)
        )
        == []
    )
    fired = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_assets SET purchase_date = '2026-11-20', po_number = 'PO-1', warranty_months = 36 WHERE id = $1",
            asset,
        ),
    )
    assert types(fired) == ["it_asset_purchased"]
    event = accepted(fired[0])
    assert event.payload["purchase_cost"] == Decimal("1999.99")
    assert event.payload["vendor_name"] == "Lenovo"
    # Never twice: setting the purchase fields again, or clearing and resetting them.
    assert (
        await caused(
            ref, lambda: ref.execute("UPDATE it_assets SET purchase_cost = 2100 WHERE id = $1", asset)
        )
        == []
    )
    assert (
        await caused(
            ref, lambda: ref.execute("UPDATE it_assets SET purchase_date = NULL WHERE id = $1", asset)
        )
        == []
    )
    assert (
        await caused(
            ref, lambda: ref.execute("UPDATE it_assets SET purchase_date = '2026-11-21' WHERE id = $1", asset)
        )
        == []
    )


async def test_asset_purchased_fires_on_insert_with_both_fields(ref: asyncpg.Connection, org: Org) -> None:
    fired = await caused(
        ref,
        lambda: make_asset(
            ref, org, "IT-0002", purchase_cost=Decimal("10.50"), purchase_date=date(2026, 11, 1)
        ),
    )
    assert types(fired) == ["it_asset_purchased"]
    accepted(fired[0])


async def test_asset_assigned(ref: asyncpg.Connection, org: Org) -> None:
    asset = await make_asset(ref, org, building="B2", room="201")
    fired = await caused(
        ref,
        lambda: ref.execute(
            "INSERT INTO it_asset_assignments (organization_id, asset_id, employee_id, assigned_by) VALUES ($1, $2, $3, $4)",
            org.id,
            asset,
            org.bob,
            org.alice,
        ),
    )
    assert types(fired) == ["it_asset_assigned"]
    payload = accepted(fired[0]).payload
    assert payload["employee_name"] == "Bob Builder"
    assert payload["location"] == {"site_id": org.site, "building": "B2", "room": "201"}


async def test_asset_maintenance_required(ref: asyncpg.Connection, org: Org) -> None:
    asset = await make_asset(ref, org)
    fired = await caused(
        ref,
        lambda: ref.execute(
            "INSERT INTO it_maintenance_requests (organization_id, asset_id, maintenance_type, description, priority, requested_by)"
            " VALUES ($1, $2, 'repair', 'Battery swells', 'high', $3)",
            org.id,
            asset,
            org.bob,
        ),
    )
    assert types(fired) == ["it_asset_maintenance_required"]
    accepted(fired[0])


async def test_asset_disposed_only_on_the_change_to_disposed(ref: asyncpg.Connection, org: Org) -> None:
    asset = await make_asset(ref, org)
    assert (
        await caused(ref, lambda: ref.execute("UPDATE it_assets SET status = 'retired' WHERE id = $1", asset))
        == []
    )
    fired = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_assets SET status = 'disposed', disposal_method = 'recycled', disposal_date = '2026-11-27',"
            " disposal_value = 25, certificate_of_destruction = true, disposed_by = $2 WHERE id = $1",
            asset,
            org.alice,
        ),
    )
    assert types(fired) == ["it_asset_disposed"]
    accepted(fired[0])
    assert (
        await caused(ref, lambda: ref.execute("UPDATE it_assets SET room = 'bin' WHERE id = $1", asset)) == []
    )


# ─── IT-02 ───────────────────────────────────────────────────────────────────────────────────


async def test_ticket_created(ref: asyncpg.Connection, org: Org) -> None:
    fired = await caused(ref, lambda: make_ticket(ref, org))
    assert types(fired) == ["it_ticket_created"]
    payload = accepted(fired[0]).payload
    assert (payload["requester_name"], payload["requester_email"]) == ("Bob Builder", "bob@acme.example")


async def test_ticket_status_changed_only_when_status_really_changes(
    ref: asyncpg.Connection, org: Org
) -> None:
    ticket = await make_ticket(ref, org)
    fired = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_tickets SET status = 'in_progress', assigned_to_id = $2, updated_by = $2 WHERE id = $1",
            ticket,
            org.alice,
        ),
    )
    assert types(fired) == ["it_ticket_status_changed"]
    payload = accepted(fired[0]).payload
    assert (payload["old_status"], payload["new_status"], payload["changed_by"]) == (
        "open",
        "in_progress",
        org.alice,
    )
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_tickets SET status = 'in_progress', subject = 'x' WHERE id = $1", ticket
            ),
        )
        == []
    )
    row = await ref.fetchrow("SELECT first_response_at, resolved_at FROM it_tickets WHERE id = $1", ticket)
    assert row is not None
    assert row["first_response_at"] is not None
    assert row["resolved_at"] is None


async def test_changed_by_comes_from_the_session_when_the_row_has_none(
    ref: asyncpg.Connection, org: Org
) -> None:
    ticket = await make_ticket(ref, org)

    async def change() -> None:
        async with ref.transaction():
            await ref.execute("SELECT set_config('app.user_id', $1, true)", str(org.carol))
            await ref.execute("UPDATE it_tickets SET status = 'resolved' WHERE id = $1", ticket)

    fired = await caused(ref, change)
    assert accepted(fired[0]).payload["changed_by"] == org.carol


# ─── IT-04 ───────────────────────────────────────────────────────────────────────────────────


async def test_license_created_never_carries_the_raw_key(ref: asyncpg.Connection, org: Org) -> None:
    fired = await caused(ref, lambda: make_license(ref, org))
    assert types(fired) == ["it_license_created"]
    assert accepted(fired[0]).payload["license_key"] == "[REDACTED]"
    dump = await ref.fetchval("SELECT string_agg(payload::text, ' ') FROM it_relay.events")
    assert "RAW-LICENCE-KEY" not in dump
    without = await caused(ref, lambda: make_license(ref, org, key=None))
    assert "license_key" not in accepted(without[0]).payload


async def test_license_renewed_only_when_the_expiry_moves_later(ref: asyncpg.Connection, org: Org) -> None:
    licence = await make_license(ref, org)
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_licenses SET expiration_date = '2027-06-30' WHERE id = $1", licence
            ),
        )
        == []
    )
    fired = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_licenses SET expiration_date = '2028-06-30', renewal_cost = 799, updated_by = $2 WHERE id = $1",
            licence,
            org.alice,
        ),
    )
    assert types(fired) == ["it_license_renewed"]
    payload = accepted(fired[0]).payload
    assert (payload["old_expiration_date"], payload["new_expiration_date"]) == (
        date(2027, 6, 30),
        date(2028, 6, 30),
    )
    assert payload["renewal_cost"] == Decimal("799")
    assert (
        await caused(
            ref, lambda: ref.execute("UPDATE it_licenses SET license_count = 12 WHERE id = $1", licence)
        )
        == []
    )


async def test_a_renewal_without_its_cost_is_refused_not_reported_as_the_purchase_total(
    ref: asyncpg.Connection, org: Org
) -> None:
    licence = await make_license(ref, org)
    with pytest.raises(asyncpg.NotNullViolationError, match="extending expiration_date needs renewal_cost"):
        await ref.execute("UPDATE it_licenses SET expiration_date = '2028-06-30' WHERE id = $1", licence)
    assert (
        await ref.fetchval("SELECT count(*) FROM it_relay.events WHERE event_type = 'it_license_renewed'")
        == 0
    )


# ─── IT-05 ───────────────────────────────────────────────────────────────────────────────────


async def test_security_incident_created(ref: asyncpg.Connection, org: Org) -> None:
    asset = await make_asset(ref, org)
    fired = await caused(
        ref,
        lambda: ref.execute(
            "INSERT INTO it_security_incidents (organization_id, incident_number, incident_type, severity, description,"
            " affected_asset_ids, affected_user_ids, detected_at, reported_by, site_id)"
            " VALUES ($1, 'SEC-1', 'phishing', 'high', 'Credential phishing', $2, $3, now(), $4, $5)",
            org.id,
            [asset],
            [org.bob],
            org.alice,
            org.site,
        ),
    )
    assert types(fired) == ["it_security_incident_created"]
    assert accepted(fired[0]).payload["affected_asset_ids"] == [asset]


async def test_critical_vulnerability_detected_with_its_assets_at_commit(
    ref: asyncpg.Connection, org: Org
) -> None:
    assets = [await make_asset(ref, org, f"IT-V{i}") for i in range(3)]

    async def record(severity: str) -> uuid.UUID:
        async with ref.transaction():
            vuln: uuid.UUID = await ref.fetchval(
                "INSERT INTO it_vulnerabilities (organization_id, cve_id, vulnerability_name, severity, cvss_score,"
                " remediation_available) VALUES ($1, 'CVE-2026-1', 'VPN RCE', $2, 9.8, true) RETURNING id",
                org.id,
                severity,
            )
            for a in assets:
                await ref.execute("INSERT INTO it_vulnerability_assets VALUES ($1, $2, $3)", vuln, a, org.id)
            return vuln

    fired = await caused(ref, lambda: record("critical"))
    assert types(fired) == ["it_critical_vulnerability_detected"]
    payload = accepted(fired[0]).payload
    assert payload["affected_asset_count"] == 3
    assert sorted(payload["affected_asset_ids"]) == sorted(assets)
    holder: list[uuid.UUID] = []

    async def medium() -> None:
        holder.append(await record("medium"))

    assert await caused(ref, medium) == []
    escalated = await caused(
        ref,
        lambda: ref.execute("UPDATE it_vulnerabilities SET severity = 'critical' WHERE id = $1", holder[0]),
    )
    assert types(escalated) == ["it_critical_vulnerability_detected"]


# ─── IT-06 ───────────────────────────────────────────────────────────────────────────────────


async def _request(ref: asyncpg.Connection, org: Org, status: str = "draft") -> uuid.UUID:
    request: uuid.UUID = await ref.fetchval(
        "INSERT INTO it_purchase_requests (organization_id, request_number, requester_id, request_type, estimated_cost,"
        " justification, vendor_id, approval_status) VALUES ($1, 'PR-1', $2, 'hardware', 3499.00, 'Replacement', $3, $4)"
        " RETURNING id",
        org.id,
        org.bob,
        org.vendor,
        status,
    )
    return request


async def test_purchase_request_submitted_and_approved_on_their_transitions(
    ref: asyncpg.Connection, org: Org
) -> None:
    request = await _request(ref, org)
    submitted = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_purchase_requests SET approval_status = 'submitted' WHERE id = $1", request
        ),
    )
    assert types(submitted) == ["it_purchase_request_submitted"]
    assert accepted(submitted[0]).payload["requester_name"] == "Bob Builder"
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_purchase_requests SET approval_status = 'submitted', justification = 'x' WHERE id = $1",
                request,
            ),
        )
        == []
    )
    approved = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_purchase_requests SET approval_status = 'approved', approved_by = $2, approval_notes = 'ok' WHERE id = $1",
            request,
            org.carol,
        ),
    )
    assert types(approved) == ["it_purchase_request_approved"]
    assert accepted(approved[0]).payload["approved_by"] == org.carol
    direct = await caused(ref, lambda: _request(ref, org, "submitted"))
    assert types(direct) == ["it_purchase_request_submitted"]


async def test_purchase_request_received_with_its_items(ref: asyncpg.Connection, org: Org) -> None:
    request = await _request(ref, org, "approved")

    async def receive() -> None:
        async with ref.transaction():
            await ref.execute(
                "UPDATE it_purchase_requests SET received_date = '2026-11-27', received_by = $2,"
                " po_number = 'PO-9' WHERE id = $1",
                request,
                org.alice,
            )
            await ref.execute(
                "INSERT INTO it_purchase_request_items (organization_id, request_id, item_description,"
                " quantity, serial_numbers) VALUES ($1, $2, 'ThinkPad X1', 2, '{S1,S2}')",
                org.id,
                request,
            )
            await ref.execute(
                "INSERT INTO it_purchase_request_items (organization_id, request_id, item_description,"
                " quantity) VALUES ($1, $2, 'USB-C dock', 2)",
                org.id,
                request,
            )

    fired = await caused(ref, receive)
    assert types(fired) == ["it_purchase_request_received"]
    items = accepted(fired[0]).payload["items_received"]
    assert items == [
        {"item_description": "ThinkPad X1", "quantity": 2, "serial_numbers": ["S1", "S2"]},
        {"item_description": "USB-C dock", "quantity": 2},
    ]
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_purchase_requests SET received_date = '2026-11-28' WHERE id = $1", request
            ),
        )
        == []
    )


# ─── IT-07 ───────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("status", "event_type"), [("completed", "it_report_generated"), ("failed", "it_report_failed")]
)
async def test_report_run_finishes(ref: asyncpg.Connection, org: Org, status: str, event_type: str) -> None:
    run = await ref.fetchval(
        "INSERT INTO it_report_runs (organization_id, report_id, report_name, report_type, format, requested_by)"
        " VALUES ($1, gen_random_uuid(), 'Inventory', 'asset_inventory', 'pdf', $2) RETURNING id",
        org.id,
        org.bob,
    )
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_report_runs SET status = 'running', started_at = now() WHERE id = $1", run
            ),
        )
        == []
    )
    fired = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_report_runs SET status = $2, finished_at = now(), row_count = 10, error_code = 'timeout',"
            " error_message = 'Query took too long' WHERE id = $1",
            run,
            status,
        ),
    )
    assert types(fired) == [event_type]
    payload = dict(fired[0])
    if status == "completed":
        payload.pop("error_code", None)
        payload.pop("error_message", None)
    accepted(payload)


# ─── IT-08 ───────────────────────────────────────────────────────────────────────────────────


async def test_provisioning_started_and_completed(ref: asyncpg.Connection, org: Org) -> None:
    instance = await ref.fetchval(
        "INSERT INTO it_onboarding_instances (organization_id, employee_id, task_count) VALUES ($1, $2, 4) RETURNING id",
        org.id,
        org.bob,
    )
    started = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_onboarding_instances SET status = 'in_progress', updated_by = $2 WHERE id = $1",
            instance,
            org.alice,
        ),
    )
    assert types(started) == ["it_provisioning_started"]
    accepted(started[0])
    assert (
        await caused(
            ref,
            lambda: ref.execute(
                "UPDATE it_onboarding_instances SET status = 'in_progress', tasks_completed = 2 WHERE id = $1",
                instance,
            ),
        )
        == []
    )
    completed = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_onboarding_instances SET status = 'completed', tasks_completed = 4 WHERE id = $1",
            instance,
        ),
    )
    assert types(completed) == ["it_provisioning_completed"]
    accepted(completed[0])


async def test_account_provisioned_and_deactivated(ref: asyncpg.Connection, org: Org) -> None:
    account = await ref.fetchval(
        "INSERT INTO it_access_accounts (organization_id, employee_id, account_type, system_name, username)"
        " VALUES ($1, $2, 'directory', 'Corporate directory', 'bbuilder') RETURNING id",
        org.id,
        org.bob,
    )
    provisioned = await caused(
        ref, lambda: ref.execute("UPDATE it_access_accounts SET status = 'active' WHERE id = $1", account)
    )
    assert types(provisioned) == ["it_account_provisioned"]
    accepted(provisioned[0])
    assert (
        await caused(
            ref,
            lambda: ref.execute("UPDATE it_access_accounts SET status = 'suspended' WHERE id = $1", account),
        )
        == []
    )
    deactivated = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_access_accounts SET status = 'deactivated', deactivation_reason = 'offboarding' WHERE id = $1",
            account,
        ),
    )
    assert types(deactivated) == ["it_account_deactivated"]
    assert accepted(deactivated[0]).payload["reason"] == "offboarding"


# ─── IT-09 ───────────────────────────────────────────────────────────────────────────────────


async def test_change_lifecycle(ref: asyncpg.Connection, org: Org) -> None:
    change = await ref.fetchval(
        "INSERT INTO it_change_requests (organization_id, change_number, title, change_type, risk_level, requested_by,"
        " requires_cab_review, cab_meeting_date) VALUES ($1, 'CHG-1', 'Core switch firmware', 'normal', 'high', $2, true,"
        " '2026-12-02') RETURNING id",
        org.id,
        org.bob,
    )
    steps = [
        ("status = 'submitted'", ["it_change_submitted", "it_cab_review_required"]),
        ("status = 'approved', approved_by = $2", ["it_change_approved"]),
        (
            "status = 'scheduled', scheduled_start = now() + interval '1 day', scheduled_end = now() + interval '25 hours',"
            " scheduled_by = $2, implementer_id = $2",
            ["it_change_scheduled"],
        ),
        ("status = 'implemented', implemented_by = $2, outcome = 'successful'", ["it_change_implemented"]),
        (
            "status = 'rolled_back', rolled_back_by = $2, rollback_reason = 'Packet loss'",
            ["it_change_rolled_back"],
        ),
    ]
    for assignment, expected in steps:
        statement = f"UPDATE it_change_requests SET {assignment} WHERE id = $1 AND $2::uuid IS NOT NULL"
        fired = await caused(ref, partial(ref.execute, statement, change, org.alice))
        assert types(fired) == expected, assignment
        for payload in fired:
            accepted(payload)
    assert (
        await caused(
            ref,
            lambda: ref.execute("UPDATE it_change_requests SET status = 'rolled_back' WHERE id = $1", change),
        )
        == []
    )
    other = await ref.fetchval(
        "INSERT INTO it_change_requests (organization_id, change_number, title, change_type, risk_level, requested_by,"
        " status) VALUES ($1, 'CHG-2', 'Printer driver', 'standard', 'low', $2, 'submitted') RETURNING id",
        org.id,
        org.bob,
    )
    rejected = await caused(
        ref,
        lambda: ref.execute(
            "UPDATE it_change_requests SET status = 'rejected', rejected_by = $2, rejection_reason = 'No plan' WHERE id = $1",
            other,
            org.carol,
        ),
    )
    assert types(rejected) == ["it_change_rejected"]
    accepted(rejected[0])


# ─── it_check_license_compliance ─────────────────────────────────────────────────────────────


async def _use(ref: asyncpg.Connection, org: Org, licence: uuid.UUID, seats: int) -> None:
    for _ in range(seats):
        await ref.execute(
            "INSERT INTO it_license_assignments (organization_id, license_id, employee_id) VALUES ($1, $2, $3)",
            org.id,
            licence,
            org.bob,
        )


async def _scope(conn: asyncpg.Connection, organization: uuid.UUID) -> None:
    """Put the session in one organization's context, as the application does."""
    await conn.execute("SELECT set_config('app.organization_id', $1, false)", str(organization))


async def test_license_compliance(ref: asyncpg.Connection, org: Org) -> None:
    over = await make_license(ref, org, count=10)
    under = await make_license(ref, org, count=10)
    fine = await make_license(ref, org, count=10)
    await _use(ref, org, over, 12)
    await _use(ref, org, under, 4)
    await _use(ref, org, fine, 8)
    await ref.execute(
        "UPDATE it_license_assignments SET revoked_at = now() WHERE id = (SELECT id FROM it_license_assignments"
        " WHERE license_id = $1 LIMIT 1)",
        fine,
    )
    await _scope(ref, org.id)
    rows = {
        r["license_id"]: r for r in await ref.fetch("SELECT * FROM it_check_license_compliance($1)", org.id)
    }
    assert (
        rows[over]["compliance_status"],
        rows[over]["usage_count"],
        rows[over]["variance"],
        rows[over]["variance_percent"],
    ) == ("over_deployed", 12, 2, Decimal("20.00"))
    assert (rows[under]["compliance_status"], rows[under]["variance"], rows[under]["variance_percent"]) == (
        "under_utilized",
        -6,
        Decimal("-60.00"),
    )
    assert (rows[fine]["compliance_status"], rows[fine]["usage_count"]) == ("compliant", 7)
    one = await ref.fetch("SELECT * FROM it_check_license_compliance($1, $2)", org.id, over)
    assert [r["license_id"] for r in one] == [over]
    other_org = await make_org(ref, "Globex")
    # Only the session's own organization: asking for another is refused, not answered empty.
    for args in ((other_org.id,), (other_org.id, over)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="outside this session's organization"):
            await ref.fetch(
                f"SELECT * FROM it_check_license_compliance({', '.join('$' + str(i + 1) for i in range(len(args)))})",
                *args,
            )
    await ref.execute("RESET app.organization_id")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no organization context"):
        await ref.fetch("SELECT * FROM it_check_license_compliance($1)", org.id)
    signature = await ref.fetchrow(
        "SELECT prosecdef, proconfig, pg_get_function_identity_arguments(oid) AS args FROM pg_proc"
        " WHERE proname = 'it_check_license_compliance'"
    )
    assert signature is not None
    assert signature["prosecdef"]
    assert signature["proconfig"] == ["search_path=public, pg_temp"]
    assert signature["args"] == "p_organization_id uuid, p_license_id uuid"


async def test_under_use_threshold_is_a_setting(ref: asyncpg.Connection, org: Org) -> None:
    licence = await make_license(ref, org, count=10)
    await _use(ref, org, licence, 7)
    await _scope(ref, org.id)
    status = "SELECT compliance_status FROM it_check_license_compliance($1, $2)"
    assert await ref.fetchval(status, org.id, licence) == "compliant"
    async with ref.transaction():
        await ref.execute("SET LOCAL it.license_under_utilized_percent = 80")
        assert await ref.fetchval(status, org.id, licence) == "under_utilized"


# ─── Row-level security ──────────────────────────────────────────────────────────────────────


async def test_a_session_scoped_to_one_organisation_sees_and_changes_only_its_rows(
    ref: asyncpg.Connection, roles: Roles
) -> None:
    a, b = await make_org(ref, "Acme"), await make_org(ref, "Globex")
    await make_asset(ref, a, "A-1")
    b_asset = await make_asset(ref, b, "B-1")
    app = await roles.create("it_app_test")
    await ref.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}")
    await ref.execute(f"GRANT USAGE ON SCHEMA it_relay TO {app}")
    async with ref.transaction():
        await ref.execute(f"SET LOCAL ROLE {app}")
        await ref.execute("SELECT set_config('app.organization_id', $1, true)", str(a.id))
        assert [r[0] for r in await ref.fetch("SELECT asset_tag FROM it_assets")] == ["A-1"]
        assert await ref.fetchval("SELECT count(*) FROM employees") == 3
        assert await ref.execute("UPDATE it_assets SET room = 'x' WHERE id = $1", b_asset) == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ref.execute("INSERT INTO sites (organization_id, name) VALUES ($1, 'sneaky')", b.id)
    async with ref.transaction():
        await ref.execute(f"SET LOCAL ROLE {app}")
        assert await ref.fetchval("SELECT count(*) FROM it_assets") == 0  # no scope, no rows
    tables = await ref.fetch(
        "SELECT relname, relrowsecurity FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
    )
    assert all(r["relrowsecurity"] for r in tables), [r["relname"] for r in tables if not r["relrowsecurity"]]


async def test_triggers_publish_for_a_scoped_application_role(ref: asyncpg.Connection, roles: Roles) -> None:
    a = await make_org(ref, "Acme")
    app = await roles.create("it_app_test")
    await ref.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {app}")
    await ref.execute(f"GRANT USAGE ON SCHEMA it_relay TO {app}")

    async def insert() -> None:
        async with ref.transaction():
            await ref.execute(f"SET LOCAL ROLE {app}")
            await ref.execute("SELECT set_config('app.organization_id', $1, true)", str(a.id))
            await make_ticket(ref, a)

    fired = await caused(ref, insert)
    assert types(fired) == ["it_ticket_created"]
    accepted(fired[0])


# ─── Scheduler views ─────────────────────────────────────────────────────────────────────────


async def test_scheduler_views(ref: asyncpg.Connection, org: Org) -> None:
    await ref.execute(
        "INSERT INTO it_contracts (organization_id, contract_number, vendor_id, contract_type, expiration_date,"
        " contract_value, auto_renew) VALUES ($1, 'CTR-1', $2, 'support', current_date + 30, 48000, false)",
        org.id,
        org.vendor,
    )
    licence = await make_license(ref, org)
    contract = await ref.fetchrow("SELECT * FROM it_relay.contract_expirations")
    assert contract is not None
    assert (contract["days_remaining"], contract["vendor_name"]) == (30, "Lenovo")
    assert await ref.fetchval("SELECT license_id FROM it_relay.license_expirations") == licence
    assets = [await make_asset(ref, org, f"P-{i}") for i in range(3)]
    patch = await ref.fetchval(
        "INSERT INTO it_patches (organization_id, patch_name, severity, target_date)"
        " VALUES ($1, 'VPN 7.4.2', 'critical', current_date - 3) RETURNING id",
        org.id,
    )
    for i, asset in enumerate(assets):
        await ref.execute(
            "INSERT INTO it_patch_deployments (patch_id, asset_id, organization_id, status) VALUES ($1, $2, $3, $4)",
            patch,
            asset,
            org.id,
            "deployed" if i == 0 else "pending",
        )
    backlog = await ref.fetchrow("SELECT * FROM it_relay.patch_backlog")
    assert backlog is not None
    assert backlog["affected_asset_count"] == 2
    assert sorted(backlog["affected_asset_ids"]) == sorted(assets[1:])
    assert backlog["target_date"] == date.today() - timedelta(days=3)
    ticket = await make_ticket(ref, org)
    clocks = await ref.fetchrow("SELECT * FROM it_relay.ticket_clocks")
    assert clocks is not None
    assert (clocks["ticket_id"], clocks["priority"], clocks["first_response_at"]) == (ticket, "high", None)
    await _use(ref, org, licence, 12)
    compliance = await ref.fetchrow("SELECT * FROM it_relay.license_compliance")
    assert compliance is not None
    assert (compliance["license_id"], compliance["compliance_status"]) == (licence, "over_deployed")


async def test_an_insert_on_the_tickets_table_reaches_the_pf10_webhook(
    ref_db: str, ref: asyncpg.Connection, org: Org, sink: Sink
) -> None:
    async with running(relay_settings(ref_db, sink, ["PF-10"])):
        ticket = await make_ticket(ref, org)
        await sink.wait_for(lambda r: len(r) == 1)
    request = sink.requests[0]
    body = Webhook(SECRET).verify(request.body, request.headers)
    assert (body["event_type"], body["ticket_id"]) == ("it_ticket_created", str(ticket))
    assert request.path == "/pf-10"


# ─── One fact, one event; no event the relay must reject ────────────────────────────────────


async def test_a_vulnerability_escalated_in_its_own_transaction_is_one_event(
    ref: asyncpg.Connection, org: Org
) -> None:
    async def insert_then_escalate() -> None:
        async with ref.transaction():
            vuln = await ref.fetchval(
                "INSERT INTO it_vulnerabilities (organization_id, cve_id, vulnerability_name, severity, cvss_score,"
                " remediation_available) VALUES ($1, 'CVE-2026-2', 'VPN RCE', 'high', 9.8, true) RETURNING id",
                org.id,
            )
            await ref.execute("UPDATE it_vulnerabilities SET severity = 'critical' WHERE id = $1", vuln)

    fired = await caused(ref, insert_then_escalate)
    assert types(fired) == ["it_critical_vulnerability_detected"]
    accepted(fired[0])


async def test_a_purchase_request_received_in_its_own_transaction_is_one_event(
    ref: asyncpg.Connection, org: Org
) -> None:
    async def insert_then_receive() -> None:
        async with ref.transaction():
            request = await _request(ref, org, "approved")
            await ref.execute(
                "UPDATE it_purchase_requests SET received_date = '2026-11-27', received_by = $2 WHERE id = $1",
                request,
                org.alice,
            )

    fired = await caused(ref, insert_then_receive)
    received = [p for p in fired if p["event_type"] == "it_purchase_request_received"]
    assert len(received) == 1  # (inserted as approved, it also fires it_purchase_request_approved)
    accepted(received[0])


async def test_an_asset_bought_before_its_vendor_is_set_fires_once_the_vendor_is_known(
    ref: asyncpg.Connection, org: Org
) -> None:
    bought = await caused(
        ref,
        lambda: make_asset(
            ref, org, "NO-VENDOR", vendor_id=None, purchase_cost=999, purchase_date=date(2026, 11, 1)
        ),
    )
    assert bought == []  # the event would lack vendor_id and vendor_name: it waits
    asset = await ref.fetchval("SELECT id FROM it_assets WHERE asset_tag = 'NO-VENDOR'")
    fired = await caused(
        ref, lambda: ref.execute("UPDATE it_assets SET vendor_id = $2 WHERE id = $1", asset, org.vendor)
    )
    assert types(fired) == ["it_asset_purchased"]
    assert accepted(fired[0]).payload["vendor_name"] == "Lenovo"
    again = await caused(
        ref, lambda: ref.execute("UPDATE it_assets SET purchase_cost = 1000 WHERE id = $1", asset)
    )
    assert again == []


async def test_a_disposal_without_its_method_is_refused_naming_the_field(
    ref: asyncpg.Connection, org: Org
) -> None:
    asset = await make_asset(ref, org, "OLD-1")
    with pytest.raises(asyncpg.NotNullViolationError, match="needs disposal_method"):
        await ref.execute("UPDATE it_assets SET status = 'disposed' WHERE id = $1", asset)
    assert await ref.fetchval("SELECT status FROM it_assets WHERE id = $1", asset) != "disposed"
