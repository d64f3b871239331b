"""The scheduler on a real PostgreSQL with a controlled clock: each time-based event exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook

from relay import codec
from relay.metrics import Metrics
from relay.scheduler import Scheduler
from relay.settings import SchedulerSettings, load_settings
from tests.support.reference import Org, accepted, make_asset, make_org
from tests.support.relay import SECRET, cli, relay_settings, running, wait_until, write_config
from tests.support.sink import Sink

NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def scheduler(ref_db: str, **overrides: Any) -> Scheduler:
    settings = load_settings(None, scheduler=overrides).scheduler
    return Scheduler(settings, metrics=Metrics(), connect=lambda: asyncpg.connect(ref_db))


async def emitted(ref: asyncpg.Connection, event_type: str) -> list[dict[str, Any]]:
    rows = await ref.fetch(
        "SELECT payload::text FROM it_relay.events WHERE event_type = $1 ORDER BY created_at", event_type
    )
    return [codec.loads(r[0]) for r in rows]


@pytest.fixture
async def org(ref: asyncpg.Connection) -> Org:
    return await make_org(ref)


async def _contract(ref: asyncpg.Connection, org: Org, expires: date) -> Any:
    return await ref.fetchval(
        "INSERT INTO it_contracts (organization_id, contract_number, vendor_id, contract_type, expiration_date,"
        " contract_value, auto_renew) VALUES ($1, 'CTR-1', $2, 'support', $3, 48000.00, false) RETURNING id",
        org.id,
        org.vendor,
        expires,
    )


async def test_contract_expiring_at_each_milestone_once(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    await _contract(ref, org, NOON.date() + timedelta(days=91))
    s = scheduler(ref_db)

    def days(d: int) -> datetime:
        return NOON + timedelta(days=d)

    assert await s.run_once(ref, NOON) == []  # 91 days: nothing yet
    assert [e.milestone.split(":")[1] for e in await s.run_once(ref, days(1))] == ["90"]
    assert await s.run_once(ref, days(1)) == []  # same time again
    assert await scheduler(ref_db).run_once(ref, days(2)) == []  # a restarted scheduler
    assert await s.run_once(ref, days(30)) == []  # 61 days left
    assert [e.milestone.split(":")[1] for e in await s.run_once(ref, days(31))] == ["60"]
    events = await emitted(ref, "it_contract_expiring")
    assert [e["days_remaining"] for e in events] == [90, 60]
    payload = accepted(events[0]).payload
    assert payload["contract_value"] == 48000
    assert payload["auto_renew"] is False


async def test_after_downtime_only_the_nearest_milestone(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    await _contract(ref, org, NOON.date() + timedelta(days=90))
    s = scheduler(ref_db)
    await s.run_once(ref, NOON)
    emitted_late = await s.run_once(ref, NOON + timedelta(days=80))  # 10 days left: 60, 30 and 14 were missed
    assert [e.milestone.split(":")[1] for e in emitted_late] == ["14"]
    assert [e["days_remaining"] for e in await emitted(ref, "it_contract_expiring")] == [90, 10]
    assert await s.run_once(ref, NOON + timedelta(days=95)) == []  # expired: nothing stale


async def test_a_renewal_starts_the_milestones_again(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    contract = await _contract(ref, org, NOON.date() + timedelta(days=30))
    s = scheduler(ref_db)
    assert len(await s.run_once(ref, NOON)) == 1
    await ref.execute(
        "UPDATE it_contracts SET expiration_date = expiration_date + 365 WHERE id = $1", contract
    )
    assert await s.run_once(ref, NOON + timedelta(days=1)) == []
    renewed = await s.run_once(ref, NOON + timedelta(days=305))  # 90 days before the new date
    assert [e.milestone for e in renewed] == [f"{NOON.date() + timedelta(days=395)}:90"]


async def test_days_are_counted_in_the_configured_time_zone(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    await _contract(ref, org, date(2026, 12, 27))
    late_evening = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # 27 Nov already in Tokyo
    utc = await scheduler(ref_db).run_once(ref, late_evening, dry_run=True)
    assert [(e.payload["days_remaining"], e.milestone[-2:]) for e in utc] == [(31, "60")]
    tokyo = await scheduler(ref_db, timezone="Asia/Tokyo").run_once(ref, late_evening, dry_run=True)
    assert [(e.payload["days_remaining"], e.milestone[-2:]) for e in tokyo] == [(30, "30")]


async def test_licence_expiring(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    await ref.execute(
        "INSERT INTO it_licenses (organization_id, software_name, software_vendor, license_type, license_count,"
        " cost_per_license, total_cost, purchase_date, expiration_date, renewal_cost)"
        " VALUES ($1, 'Visio', 'Microsoft', 'per_user', 50, 15.50, 775, '2025-12-01', $2, 799.99)",
        org.id,
        NOON.date() + timedelta(days=7),
    )
    emitted_now = await scheduler(ref_db).run_once(ref, NOON)
    # Nobody uses it yet, so it is also under-utilised.
    assert sorted(e.event_type for e in emitted_now) == ["it_license_compliance_alert", "it_license_expiring"]
    payload = accepted((await emitted(ref, "it_license_expiring"))[0]).payload
    assert (payload["days_remaining"], str(payload["renewal_cost"])) == (7, "799.99")


async def test_two_schedulers_at_once_emit_once(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    await _contract(ref, org, NOON.date() + timedelta(days=30))
    conns = [await asyncpg.connect(ref_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(scheduler(ref_db).run_once(c, NOON) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sum(len(r) for r in results) == 1
    assert len(await emitted(ref, "it_contract_expiring")) == 1


async def test_only_one_instance_leads(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    stopping = asyncio.Event()
    schedulers = [scheduler(ref_db, interval_s=0.1) for _ in range(3)]
    tasks = [asyncio.create_task(s.run(stopping)) for s in schedulers]
    try:
        await wait_until(lambda: any(s.leading.is_set() for s in schedulers))
        await asyncio.sleep(0.5)  # the others keep trying every 0.1 s meanwhile
        assert sum(s.leading.is_set() for s in schedulers) == 1
        leader = next(s for s in schedulers if s.leading.is_set())
        # The leader's connection dies: another instance takes over.
        await ref.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        await wait_until(lambda: any(s is not leader and s.leading.is_set() for s in schedulers))
        # The old leader cannot emit (its connection is gone) and notices on its next query.
        await wait_until(lambda: not leader.leading.is_set())
        assert sum(s.leading.is_set() for s in schedulers) == 1
    finally:
        stopping.set()
        await asyncio.gather(*tasks)


async def test_patch_deployment_overdue(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    assets = [await make_asset(ref, org, f"P-{i}") for i in range(3)]
    patch = await ref.fetchval(
        "INSERT INTO it_patches (organization_id, patch_name, severity, target_date)"
        " VALUES ($1, 'VPN 7.4.2', 'critical', $2) RETURNING id",
        org.id,
        NOON.date(),
    )
    for i, asset in enumerate(assets):
        await ref.execute(
            "INSERT INTO it_patch_deployments (patch_id, asset_id, organization_id, status) VALUES ($1, $2, $3, $4)",
            patch,
            asset,
            org.id,
            "deployed" if i == 0 else "pending",
        )
    s = scheduler(ref_db)
    assert await s.run_once(ref, NOON) == []  # due today, not overdue
    assert [e.payload["days_overdue"] for e in await s.run_once(ref, NOON + timedelta(days=1))] == [1]
    assert await s.run_once(ref, NOON + timedelta(days=2)) == []
    assert [e.payload["days_overdue"] for e in await s.run_once(ref, NOON + timedelta(days=9))] == [
        9
    ]  # the 7-day step
    payload = accepted((await emitted(ref, "it_patch_deployment_overdue"))[-1]).payload
    assert payload["affected_asset_count"] == 2
    assert sorted(payload["affected_asset_ids"]) == sorted(assets[1:])
    await ref.execute("UPDATE it_patch_deployments SET status = 'deployed'")
    assert await s.run_once(ref, NOON + timedelta(days=20)) == []


async def _ticket(
    ref: asyncpg.Connection, org: Org, number: str, priority: str = "high"
) -> tuple[Any, datetime]:
    row = await ref.fetchrow(
        "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject, description, requester_id)"
        " VALUES ($1, $2, 'software', $3, 's', 'd', $4) RETURNING id, created_at",
        org.id,
        number,
        priority,
        org.bob,
    )
    assert row is not None
    return row["id"], row["created_at"]


async def test_sla_breaches_once_per_ticket_and_type(ref_db: str, ref: asyncpg.Connection, org: Org) -> None:
    ticket, created = await _ticket(ref, org, "T-1")  # high: respond in 4 h, resolve in 24 h
    s = scheduler(ref_db)
    assert await s.run_once(ref, created + timedelta(hours=3)) == []
    late = await s.run_once(ref, created + timedelta(hours=5))
    assert [e.payload["sla_type"] for e in late] == ["response"]
    assert await s.run_once(ref, created + timedelta(hours=6)) == []
    resolution = await s.run_once(ref, created + timedelta(hours=25))
    assert [e.payload["sla_type"] for e in resolution] == ["resolution"]
    payloads = await emitted(ref, "it_sla_breached")
    first = accepted(payloads[0]).payload
    assert (first["sla_target_hours"], first["actual_hours"], first["breach_time"]) == (
        4,
        5,
        created + timedelta(hours=4),
    )
    assert first["ticket_id"] == ticket


async def test_a_ticket_handled_in_time_never_breaches(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    ticket, created = await _ticket(ref, org, "T-2")
    await ref.execute("UPDATE it_tickets SET status = 'in_progress' WHERE id = $1", ticket)
    await ref.execute("UPDATE it_tickets SET status = 'resolved' WHERE id = $1", ticket)
    assert await scheduler(ref_db).run_once(ref, created + timedelta(days=3)) == []


async def test_time_pending_on_the_requester_does_not_count(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    ticket, created = await _ticket(ref, org, "T-3")
    await ref.execute("UPDATE it_tickets SET status = 'in_progress' WHERE id = $1", ticket)
    # 20 h waiting on the requester, recorded by the ticket clock.
    await ref.execute("UPDATE it_tickets SET pending_seconds = 72000 WHERE id = $1", ticket)
    s = scheduler(ref_db)
    assert await s.run_once(ref, created + timedelta(hours=30)) == []  # 10 h of work
    breach = await s.run_once(ref, created + timedelta(hours=45))  # 25 h of work
    assert [e.payload["sla_type"] for e in breach] == ["resolution"]
    assert breach[0].payload["breach_time"] == created + timedelta(hours=44)


async def _licence(ref: asyncpg.Connection, org: Org, count: int) -> Any:
    return await ref.fetchval(
        "INSERT INTO it_licenses (organization_id, software_name, software_vendor, license_type, license_count,"
        " cost_per_license, total_cost, purchase_date) VALUES ($1, 'Visio', 'Microsoft', 'per_user', $2::int, 1, $2::int,"
        " '2026-01-01') RETURNING id",
        org.id,
        count,
    )


async def _seats(ref: asyncpg.Connection, org: Org, licence: Any, seats: int) -> None:
    await ref.execute("DELETE FROM it_license_assignments WHERE license_id = $1", licence)
    await ref.execute(
        "INSERT INTO it_license_assignments (organization_id, license_id, employee_id)"
        " SELECT $1, $2, $3 FROM generate_series(1, $4)",
        org.id,
        licence,
        org.bob,
        seats,
    )


async def test_compliance_alerts_exactly_at_the_breaks(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    licence = await _licence(ref, org, 100)
    s = scheduler(ref_db)

    async def step(seats: int) -> list[str]:
        await _seats(ref, org, licence, seats)
        return [
            f"{e.payload['compliance_status']}:{e.payload['threshold_breached']}"
            for e in await s.run_once(ref, NOON)
        ]

    assert await step(80) == []  # compliant
    assert await step(105) == ["over_deployed:warning"]  # breaks: 5 % over
    assert await step(106) == []  # stays broken
    assert await step(115) == ["over_deployed:critical"]  # worse: 15 % over
    assert await step(120) == []  # stays critical
    assert await step(105) == []  # better, still broken
    assert await step(90) == []  # compliant again
    assert await step(130) == ["over_deployed:critical"]  # breaks again
    assert await step(30) == ["under_utilized:warning"]  # a different problem
    for payload in await emitted(ref, "it_license_compliance_alert"):
        accepted(payload)


async def test_dry_run_writes_nothing(
    tmp_path: Path, ref_db: str, ref: asyncpg.Connection, org: Org, sink: Sink
) -> None:
    await _contract(ref, org, date(2026, 12, 27))
    config = write_config(tmp_path / "relay.toml", relay_settings(ref_db, sink, ["PF-10"]))
    cmd = ["scheduler", "run-once", "--config", str(config), "--now", "2026-11-27T12:00:00Z"]
    dry = await cli(*cmd, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would emit it_contract_expiring" in dry.stdout
    assert await ref.fetchval("SELECT count(*) FROM it_relay.events") == 0
    assert await ref.fetchval("SELECT count(*) FROM it_relay.scheduler_marks") == 0
    real = await cli(*cmd)
    assert real.returncode == 0, real.stderr
    assert "emitted it_contract_expiring" in real.stdout
    again = await cli(*cmd)
    assert "0 event(s) emitted" in again.stderr
    assert await ref.fetchval("SELECT count(*) FROM it_relay.events") == 1


async def test_a_contract_30_days_from_expiry_reaches_pf10(
    ref_db: str, ref: asyncpg.Connection, org: Org, sink: Sink
) -> None:
    await _contract(ref, org, date.today() + timedelta(days=30))
    settings = relay_settings(ref_db, sink, ["PF-10"], scheduler={"interval_s": 0.2})
    async with running(settings) as daemon:
        await sink.wait_for(lambda r: len(r) == 1)
        assert (
            daemon.metrics.registry.get_sample_value(
                "it_relay_scheduler_emitted_total", {"event_type": "it_contract_expiring"}
            )
            == 1
        )
    request = sink.requests[0]
    body = Webhook(SECRET).verify(request.body, request.headers)
    assert (body["event_type"], body["days_remaining"]) == ("it_contract_expiring", 30)


def test_scheduler_settings_reject_bad_milestones() -> None:
    with pytest.raises(ValueError, match="distinct positive"):
        SchedulerSettings(expiry_milestones_days=[30, 30])


async def test_expiry_marks_are_pruned_once_they_cannot_fire_again(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    from relay import journal

    await _contract(ref, org, date.today() + timedelta(days=7))
    await scheduler(ref_db).run_once(ref, datetime.now(UTC))
    await ref.execute(
        "INSERT INTO it_relay.scheduler_marks VALUES ('contract_expiring', gen_random_uuid(), '2020-01-01:7', gen_random_uuid())"
    )
    await journal.prune(ref, 86400, 86400, 86400)
    left = sorted(
        r[0] for r in await ref.fetch("SELECT kind || ':' || milestone FROM it_relay.scheduler_marks")
    )
    assert left == [f"contract_expiring:{date.today() + timedelta(days=7)}:7"]


async def test_marks_of_closed_tickets_and_patches_go_open_ones_stay_and_nothing_fires_twice(
    ref_db: str, ref: asyncpg.Connection, org: Org
) -> None:
    from relay import journal

    s = scheduler(ref_db)
    old = datetime.now(UTC) - timedelta(days=40)
    closed, _ = await _ticket(ref, org, "T-CLOSED", priority="critical")
    still_open, _ = await _ticket(ref, org, "T-OPEN", priority="critical")
    await ref.execute("UPDATE it_tickets SET status = 'resolved' WHERE id = $1", closed)
    await ref.execute(
        "UPDATE it_tickets SET created_at = $1::timestamptz, resolved_at = $1::timestamptz + interval '9 hours'"
        " WHERE id = $2",
        old,
        closed,
    )
    await ref.execute("UPDATE it_tickets SET created_at = $1 WHERE id = $2", old, still_open)
    assets = [await make_asset(ref, org, f"PM-{i}") for i in range(2)]
    patches: list[Any] = []
    for name in ("done", "waiting"):
        patch = await ref.fetchval(
            "INSERT INTO it_patches (organization_id, patch_name, severity, target_date)"
            " VALUES ($1, $2, 'high', current_date - 10) RETURNING id",
            org.id,
            name,
        )
        await ref.execute(
            "INSERT INTO it_patch_deployments (patch_id, asset_id, organization_id, status)"
            " VALUES ($1, $2, $3, 'pending')",
            patch,
            assets[len(patches)],
            org.id,
        )
        patches.append(patch)
    # The closed ticket's breach was reported 40 days ago, when it still counted.
    assert {e.entity_id for e in await s.run_once(ref, old + timedelta(hours=10))} == {closed, still_open}
    before_now = await s.run_once(ref, datetime.now(UTC))
    assert {e.entity_id for e in before_now} == set(patches)
    await ref.execute("UPDATE it_patch_deployments SET status = 'deployed' WHERE patch_id = $1", patches[0])
    while await journal.prune(ref, 86400, 86400, 86400):
        pass
    marked = {r[0] for r in await ref.fetch("SELECT DISTINCT entity_id FROM it_relay.scheduler_marks")}
    assert marked == {still_open, patches[1]}
    # Pruning never makes anything due again.
    assert await s.run_once(ref, datetime.now(UTC)) == []


@pytest.mark.parametrize("days_from_wall_clock", [-90, -31, 0, 45])
async def test_a_ticket_resolved_late_is_reported_whatever_the_pass_time(
    ref_db: str, ref: asyncpg.Connection, org: Org, days_from_wall_clock: int
) -> None:
    # Critical: resolve within 4 h. Resolved after 8 h; the pass runs 2 h after the resolution,
    # at a time far from the database's clock (`scheduler run-once --now`, or a long outage).
    ticket, _ = await _ticket(ref, org, "T-LATE", priority="critical")
    created = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days_from_wall_clock)
    await ref.execute("UPDATE it_tickets SET status = 'in_progress' WHERE id = $1", ticket)
    await ref.execute("UPDATE it_tickets SET status = 'resolved' WHERE id = $1", ticket)
    await ref.execute(
        "UPDATE it_tickets SET created_at = $2::timestamptz, first_response_at = $2::timestamptz + interval '10 minutes',"
        " resolved_at = $2::timestamptz + interval '8 hours' WHERE id = $1",
        ticket,
        created,
    )
    emitted_now = await scheduler(ref_db).run_once(ref, created + timedelta(hours=10))
    assert [(e.payload["sla_type"], e.payload["actual_hours"]) for e in emitted_now] == [("resolution", 8)]
    assert emitted_now[0].payload["breach_time"] == created + timedelta(hours=4)
