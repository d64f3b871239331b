"""Property: random sequences of inserts and updates on the IT tables, in one transaction or many,
give exactly one event per fact, every one accepted by its contract (unknown fields rejected).

A small model of the tables says which facts each committed change makes; the journal must hold
exactly those events, no fewer (a fact missed) and no more (a fact published twice), and none may
be refused by the contracts. Writes the reference schema refuses (a disposal without its method, a
renewal without its cost) are part of the sequences: they must fail and leave no event behind.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import codec
from relay.contracts import Accepted, parse_event
from tests.support.reference import Org, make_org

pytestmark = pytest.mark.db

SEVERITIES = ["low", "medium", "high", "critical"]
TICKET_STATUSES = ["open", "in_progress", "pending", "resolved", "closed"]

# One operation: a kind and small integers that pick an entity and a variant.
OPERATION = st.tuples(
    st.sampled_from(
        [
            "asset",
            "asset_set",
            "dispose",
            "ticket",
            "ticket_status",
            "licence",
            "renew",
            "vulnerability",
            "escalate",
            "request",
            "request_status",
            "receive",
        ]
    ),
    st.integers(0, 7),
    st.integers(0, 7),
)
# Each operation, and whether the transaction commits after it.
PROGRAM = st.lists(st.tuples(OPERATION, st.booleans()), min_size=1, max_size=14)


@dataclass
class Model:
    """What the committed and in-transaction state of the tables is, and the facts it made."""

    assets: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    licences: list[dict[str, Any]] = field(default_factory=list)
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    facts: Counter[tuple[str, UUID]] = field(default_factory=Counter)

    def commit(self) -> None:
        """Deferred facts, decided at commit: escalated to critical, received."""
        for v in self.vulnerabilities:
            if v["severity"] == "critical" and not v["critical_at_commit"]:
                self.facts["it_critical_vulnerability_detected", v["id"]] += 1
            v["critical_at_commit"] = v["severity"] == "critical"
        for r in self.requests:
            if r["received"] and not r["received_at_commit"]:
                self.facts["it_purchase_request_received", r["id"]] += 1
            r["received_at_commit"] = r["received"]


async def _op_asset(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    fields = {"purchase_cost": a % 2 == 0, "purchase_date": a % 3 != 0, "vendor_id": b % 2 == 0}
    asset = await conn.fetchval(
        "INSERT INTO it_assets (organization_id, asset_tag, asset_name, asset_type, site_id, purchase_cost,"
        " purchase_date, vendor_id) VALUES ($1, $2, 'ThinkPad', 'laptop', $3, $4, $5, $6) RETURNING id",
        org.id,
        f"A-{n}",
        org.site,
        100 if fields["purchase_cost"] else None,
        date(2026, 11, 1) if fields["purchase_date"] else None,
        org.vendor if fields["vendor_id"] else None,
    )
    entry = {"id": asset, "status": "available", **fields}
    model.assets.append(entry)
    _purchase(model, entry, was_complete=False)


async def _op_asset_set(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.assets:
        return
    entry = model.assets[a % len(model.assets)]
    column = ["purchase_cost", "purchase_date", "vendor_id"][b % 3]
    value: Any = {"purchase_cost": 250, "purchase_date": date(2026, 10, 1), "vendor_id": org.vendor}[column]
    was_complete = _complete(entry)
    await conn.execute(f"UPDATE it_assets SET {column} = $2 WHERE id = $1", entry["id"], value)
    entry[column] = True
    _purchase(model, entry, was_complete)


async def _op_dispose(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.assets:
        return
    entry = model.assets[a % len(model.assets)]
    method = "recycled" if b % 3 else None
    await conn.execute(
        "UPDATE it_assets SET status = 'disposed', disposal_method = coalesce($2, disposal_method)"
        " WHERE id = $1",
        entry["id"],
        method,
    )
    if entry["status"] != "disposed":
        model.facts["it_asset_disposed", entry["id"]] += 1
    entry["status"] = "disposed"


async def _op_ticket(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    ticket = await conn.fetchval(
        "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject, description,"
        " requester_id) VALUES ($1, $2, 'hardware', $3, 'No boot', 'Black screen', $4) RETURNING id",
        org.id,
        f"TKT-{n}",
        SEVERITIES[a % 4],
        org.bob,
    )
    model.tickets.append({"id": ticket, "status": "open"})
    model.facts["it_ticket_created", ticket] += 1


async def _op_ticket_status(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.tickets:
        return
    entry = model.tickets[a % len(model.tickets)]
    status = TICKET_STATUSES[b % len(TICKET_STATUSES)]
    await conn.execute("UPDATE it_tickets SET status = $2 WHERE id = $1", entry["id"], status)
    if status != entry["status"]:
        model.facts["it_ticket_status_changed", entry["id"]] += 1
    entry["status"] = status


async def _op_licence(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    licence = await conn.fetchval(
        "INSERT INTO it_licenses (organization_id, software_name, software_vendor, license_type, license_key,"
        " license_count, cost_per_license, total_cost, purchase_date, expiration_date, vendor_id)"
        " VALUES ($1, 'Visio', 'Microsoft', 'per_user', $2, 10, 15.50, 155.00, '2026-11-01', '2027-10-31', $3)"
        " RETURNING id",
        org.id,
        f"RAW-KEY-{n}" if a % 2 else None,
        org.vendor,
    )
    model.licences.append({"id": licence, "renewal_cost": False})
    model.facts["it_license_created", licence] += 1


async def _op_renew(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.licences:
        return
    entry = model.licences[a % len(model.licences)]
    cost = 140 if b % 2 else None
    await conn.execute(
        "UPDATE it_licenses SET expiration_date = expiration_date + 365,"
        " renewal_cost = coalesce($2, renewal_cost) WHERE id = $1",
        entry["id"],
        cost,
    )
    entry["renewal_cost"] = entry["renewal_cost"] or cost is not None
    model.facts["it_license_renewed", entry["id"]] += 1


async def _op_vulnerability(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    severity = SEVERITIES[a % 4]
    vulnerability = await conn.fetchval(
        "INSERT INTO it_vulnerabilities (organization_id, cve_id, vulnerability_name, severity, cvss_score)"
        " VALUES ($1, $2, 'Remote code execution', $3, 9.8) RETURNING id",
        org.id,
        f"CVE-2026-{1000 + n}",
        severity,
    )
    model.vulnerabilities.append({"id": vulnerability, "severity": severity, "critical_at_commit": False})


async def _op_escalate(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.vulnerabilities:
        return
    entry = model.vulnerabilities[a % len(model.vulnerabilities)]
    # Escalations only: a severity is raised, never lowered, as in the field.
    severity = SEVERITIES[max(SEVERITIES.index(entry["severity"]), b % 4)]
    await conn.execute("UPDATE it_vulnerabilities SET severity = $2 WHERE id = $1", entry["id"], severity)
    entry["severity"] = severity


async def _op_request(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    status = ["draft", "submitted"][a % 2]
    request = await conn.fetchval(
        "INSERT INTO it_purchase_requests (organization_id, request_number, requester_id, request_type,"
        " estimated_cost, justification, vendor_id, approval_status)"
        " VALUES ($1, $2, $3, 'hardware', 3499.00, 'Replacement', $4, $5) RETURNING id",
        org.id,
        f"PR-{n}",
        org.bob,
        org.vendor,
        status,
    )
    model.requests.append({"id": request, "status": status, "received": False, "received_at_commit": False})
    _request_status(model, model.requests[-1], None, status)


async def _op_request_status(
    conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int
) -> None:
    if not model.requests:
        return
    entry = model.requests[a % len(model.requests)]
    status = ["submitted", "approved", "rejected"][b % 3]
    await conn.execute(
        "UPDATE it_purchase_requests SET approval_status = $2, approved_by = $3 WHERE id = $1",
        entry["id"],
        status,
        org.carol,
    )
    _request_status(model, entry, entry["status"], status)
    entry["status"] = status


async def _op_receive(conn: asyncpg.Connection, org: Org, model: Model, a: int, b: int, n: int) -> None:
    if not model.requests:
        return
    entry = model.requests[a % len(model.requests)]
    if not entry["received"]:
        await conn.execute(
            "UPDATE it_purchase_requests SET received_date = '2026-11-20', received_by = $2,"
            " po_number = 'PO-1' WHERE id = $1",
            entry["id"],
            org.alice,
        )
        entry["received"] = True


OPERATIONS: dict[str, Any] = {
    "asset": _op_asset,
    "asset_set": _op_asset_set,
    "dispose": _op_dispose,
    "ticket": _op_ticket,
    "ticket_status": _op_ticket_status,
    "licence": _op_licence,
    "renew": _op_renew,
    "vulnerability": _op_vulnerability,
    "escalate": _op_escalate,
    "request": _op_request,
    "request_status": _op_request_status,
    "receive": _op_receive,
}


async def _apply(conn: asyncpg.Connection, org: Org, model: Model, op: tuple[str, int, int], n: int) -> None:
    """Run one operation; record in the model what it changes and which immediate facts it makes."""
    kind, a, b = op
    await OPERATIONS[kind](conn, org, model, a, b, n)


def _complete(asset: dict[str, Any]) -> bool:
    return bool(asset["purchase_cost"] and asset["purchase_date"] and asset["vendor_id"])


def _purchase(model: Model, asset: dict[str, Any], was_complete: bool) -> None:
    # Fires when cost, date and vendor are first all set.
    if _complete(asset) and not was_complete:
        model.facts["it_asset_purchased", asset["id"]] += 1


def _request_status(model: Model, request: dict[str, Any], old: str | None, new: str) -> None:
    if new in ("submitted", "approved") and old != new:
        model.facts[f"it_purchase_request_{new}", request["id"]] += 1


ENTITY_KEYS = ("asset_id", "ticket_id", "license_id", "vulnerability_id", "request_id")


async def _run(url: str, program: list[tuple[tuple[str, int, int], bool]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        org = await make_org(conn, f"Org{uuid4().hex[:12]}")
        await conn.execute("SELECT set_config('app.user_id', $1, false)", str(org.alice))
        model = Model()
        transaction = None
        for n, (op, commit_after) in enumerate(program):
            if transaction is None:
                transaction = conn.transaction()
                await transaction.start()
            refused: str | None = None
            try:
                # A savepoint per statement: a write the schema refuses undoes only itself (and
                # _apply records nothing for it: the model changes after the statement succeeds).
                async with conn.transaction():
                    await _apply(conn, org, model, op, n)
            except asyncpg.NotNullViolationError as exc:
                refused = exc.column_name
            assert refused in (None, "disposal_method", "renewal_cost")
            if commit_after or n == len(program) - 1:
                await transaction.commit()
                transaction = None
                model.commit()
        rows = await conn.fetch(
            "SELECT event_type, payload::text FROM it_relay.events WHERE organization_id = $1", org.id
        )
    finally:
        await conn.close()
    published: Counter[tuple[str, UUID]] = Counter()
    for row in rows:
        payload = codec.loads(row["payload"])
        verdict = parse_event(payload, "reject")
        assert isinstance(verdict, Accepted), (row["event_type"], getattr(verdict, "errors", None))
        entity = next(UUID(str(payload[k])) for k in ENTITY_KEYS if k in payload)
        published[row["event_type"], entity] += 1
    assert published == model.facts, {"missed": model.facts - published, "extra": published - model.facts}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=PROGRAM)
def test_every_fact_is_one_event_accepted_by_its_contract(
    ref_db: str, program: list[tuple[tuple[str, int, int], bool]]
) -> None:
    asyncio.run(_run(ref_db, program))
