"""Realistic rows on the IT reference tables, and a way to see which events a statement caused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from relay import codec
from relay.contracts import Accepted, validate


@dataclass(frozen=True)
class Org:
    id: UUID
    site: UUID
    alice: UUID  # IT staff
    bob: UUID  # employee
    carol: UUID  # manager
    vendor: UUID


async def make_org(conn: asyncpg.Connection, name: str = "Acme") -> Org:
    org = await conn.fetchval("INSERT INTO organizations (name) VALUES ($1) RETURNING id", name)
    site = await conn.fetchval(
        "INSERT INTO sites (organization_id, name) VALUES ($1, 'HQ') RETURNING id", org
    )
    people = [
        await conn.fetchval(
            "INSERT INTO employees (organization_id, full_name, email) VALUES ($1, $2, $3) RETURNING id",
            org,
            full,
            f"{full.split()[0].lower()}@{name.lower()}.example",
        )
        for full in ("Alice Admin", "Bob Builder", "Carol Chief")
    ]
    vendor = await conn.fetchval(
        "INSERT INTO it_vendors (organization_id, vendor_name) VALUES ($1, 'Lenovo') RETURNING id", org
    )
    alice, bob, carol = people
    return Org(org, site, alice, bob, carol, vendor)


async def make_asset(conn: asyncpg.Connection, org: Org, tag: str = "IT-0001", **columns: Any) -> UUID:
    values = {
        "organization_id": org.id,
        "asset_tag": tag,
        "asset_name": "ThinkPad X1",
        "asset_type": "laptop",
        "site_id": org.site,
        "vendor_id": org.vendor,
        **columns,
    }
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    asset: UUID = await conn.fetchval(
        f"INSERT INTO it_assets ({names}) VALUES ({params}) RETURNING id", *values.values()
    )
    return asset


async def make_ticket(conn: asyncpg.Connection, org: Org) -> UUID:
    ticket: UUID = await conn.fetchval(
        "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject, description, requester_id)"
        " VALUES ($1, 'TKT-1', 'hardware', 'high', 'No boot', 'Black screen', $2) RETURNING id",
        org.id,
        org.bob,
    )
    return ticket


async def make_license(
    conn: asyncpg.Connection, org: Org, count: int = 10, key: str | None = "RAW-LICENCE-KEY-9F3A"
) -> UUID:
    licence: UUID = await conn.fetchval(
        "INSERT INTO it_licenses (organization_id, software_name, software_vendor, license_type, license_key,"
        " license_count, cost_per_license, total_cost, purchase_date, expiration_date, vendor_id)"
        " VALUES ($1, 'Visio', 'Microsoft', 'per_user', $2, $3, 15.50, 155.00, '2026-11-01', '2027-10-31', $4) RETURNING id",
        org.id,
        key,
        count,
        org.vendor,
    )
    return licence


async def journal_ids(conn: asyncpg.Connection) -> set[UUID]:
    return {r[0] for r in await conn.fetch("SELECT event_id FROM it_relay.events")}


async def caused(conn: asyncpg.Connection, action: Callable[[], Awaitable[Any]]) -> list[dict[str, Any]]:
    """The payloads of the events journaled while `action` ran (in journal order)."""
    before = await journal_ids(conn)
    await action()
    rows = await conn.fetch("SELECT event_id, payload::text FROM it_relay.events ORDER BY created_at")
    return [codec.loads(r[1]) for r in rows if r[0] not in before]


def accepted(payload: dict[str, Any]) -> Accepted:
    result = validate(payload, "reject")
    assert isinstance(result, Accepted), getattr(result, "errors", result)
    return result
