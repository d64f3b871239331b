"""`it-relay demo`: the whole mission on an embedded PostgreSQL, in about half a minute.

Schema and reference tables, local webhook subscribers (FA fails its first attempt, to show a
retry), the daemon and the scheduler in-process, then ordinary statements on the IT tables. Prints
each delivery as it completes, shows the licence key arrived redacted and that every signature
verified, and exits 0 when everything routed was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date, timedelta

import asyncpg
import typer

from relay import codec, logs, migrate
from relay.contracts import REGISTRY, SUBSCRIBERS
from relay.daemon import Daemon
from relay.errors import UserError
from relay.settings import load_settings
from relay.testing.sink import Reply, Sink

SECRET = "whsec_ZGVtby1zZWNyZXQtZm9yLWl0LXJlbGF5LTAxMjM0NTY3"
LICENCE_KEY = "VISIO-7H2K9-DEMO-KEY-0001"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Causes:
    """Which table change journaled which event (the demo prints it beside each delivery)."""

    def __init__(self, conn: asyncpg.Connection, echo: Callable[[str], None]) -> None:
        self._conn = conn
        self._echo = echo
        self.by_event: dict[str, str] = {}

    async def changed(self, change: str) -> None:
        """Record the events journaled since the last change as caused by `change`."""
        rows = await self._conn.fetch(
            "SELECT event_id::text, event_type FROM it_relay.events ORDER BY created_at, event_id"
        )
        # The scheduler's events are its own, whenever its pass happens to run.
        fresh = [
            r
            for r in rows
            if r["event_id"] not in self.by_event and REGISTRY[r["event_type"]].emitter != "scheduler"
        ]
        for r in fresh:
            self.by_event[r["event_id"]] = change
        fired = ", ".join(r["event_type"] for r in fresh) or "no event"
        self._echo(f"  {change:58} -> {fired}")

    def of(self, event_id: str) -> str:
        return self.by_event.get(event_id, "the scheduler (time-based)")


async def _statements(conn: asyncpg.Connection, causes: Causes) -> None:
    """Ordinary work on the IT tables; every event below comes from a trigger or the scheduler."""
    org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Acme Health') RETURNING id")
    site = await conn.fetchval(
        "INSERT INTO sites (organization_id, name) VALUES ($1, 'HQ') RETURNING id", org
    )
    alice, bob = [
        await conn.fetchval(
            "INSERT INTO employees (organization_id, full_name, email) VALUES ($1, $2, $3) RETURNING id",
            org,
            name,
            email,
        )
        for name, email in (("Alice Admin", "alice@acme.example"), ("Bob Builder", "bob@acme.example"))
    ]
    vendor = await conn.fetchval(
        "INSERT INTO it_vendors (organization_id, vendor_name) VALUES ($1, 'Lenovo') RETURNING id", org
    )
    await conn.execute("SELECT set_config('app.user_id', $1, false)", str(alice))
    asset = await conn.fetchval(
        "INSERT INTO it_assets (organization_id, asset_tag, asset_name, asset_type, purchase_cost, purchase_date, vendor_id,"
        " site_id, po_number) VALUES ($1, 'IT-000123', 'ThinkPad X1 Carbon', 'laptop', 1999.99, current_date, $2, $3, 'PO-7781')"
        " RETURNING id",
        org,
        vendor,
        site,
    )
    await causes.changed("INSERT it_assets IT-000123 (bought, vendor and cost set)")
    await conn.execute(
        "INSERT INTO it_asset_assignments (organization_id, asset_id, employee_id, assigned_by, room)"
        " VALUES ($1, $2, $3, $4, '2.14')",
        org,
        asset,
        bob,
        alice,
    )
    await causes.changed("INSERT it_asset_assignments (IT-000123 to Bob)")
    ticket = await conn.fetchval(
        "INSERT INTO it_tickets (organization_id, ticket_number, category, priority, subject, description, requester_id,"
        " affected_asset_id) VALUES ($1, 'TKT-1042', 'hardware', 'high', 'Laptop does not boot', 'Black screen', $2, $3)"
        " RETURNING id",
        org,
        bob,
        asset,
    )
    await causes.changed("INSERT it_tickets TKT-1042")
    await conn.execute(
        "UPDATE it_tickets SET status = 'in_progress', assigned_to_id = $2 WHERE id = $1", ticket, alice
    )
    await causes.changed("UPDATE it_tickets TKT-1042 SET status = 'in_progress'")
    await conn.execute(
        "INSERT INTO it_licenses (organization_id, software_name, software_vendor, license_type, license_key, license_count,"
        " cost_per_license, total_cost, purchase_date, expiration_date, vendor_id) VALUES ($1, 'Visio', 'Microsoft',"
        " 'per_user', $2, 50, 15.50, 775.00, current_date, current_date + 365, $3)",
        org,
        LICENCE_KEY,
        vendor,
    )
    await causes.changed("INSERT it_licenses Visio (50 seats, with a licence key)")
    await conn.execute(
        "INSERT INTO it_contracts (organization_id, contract_number, vendor_id, contract_type,"
        " expiration_date, contract_value, auto_renew) VALUES ($1, 'CTR-2024-007', $2, 'support', $3,"
        " 48000.00, false)",
        org,
        vendor,
        date.today() + timedelta(days=30),
    )
    await causes.changed("INSERT it_contracts CTR-2024-007 (expires in 30 days)")
    request = await conn.fetchval(
        "INSERT INTO it_purchase_requests (organization_id, request_number, requester_id, request_type, estimated_cost,"
        " justification, vendor_id, approval_status) VALUES ($1, 'PR-2026-118', $2, 'hardware', 3499.00, 'Replacement',"
        " $3, 'submitted') RETURNING id",
        org,
        bob,
        vendor,
    )
    await causes.changed("INSERT it_purchase_requests PR-2026-118 (submitted)")
    await conn.execute(
        "UPDATE it_purchase_requests SET approval_status = 'approved', approved_by = $2 WHERE id = $1",
        request,
        alice,
    )
    await causes.changed("UPDATE it_purchase_requests PR-2026-118 SET approved")
    await conn.execute(
        "INSERT INTO it_security_incidents (organization_id, incident_number, incident_type, severity, description,"
        " affected_asset_ids, detected_at, reported_by) VALUES ($1, 'SEC-311', 'phishing', 'high', 'Credential phishing',"
        " $2, now(), $3)",
        org,
        [asset],
        alice,
    )
    await causes.changed("INSERT it_security_incidents SEC-311 (high)")
    await conn.execute(
        "INSERT INTO it_change_requests (organization_id, change_number, title, change_type, risk_level, requested_by,"
        " status, requires_cab_review) VALUES ($1, 'CHG-42', 'Core switch firmware', 'normal', 'high', $2, 'submitted', true)",
        org,
        alice,
    )
    await causes.changed("INSERT it_change_requests CHG-42 (submitted, needs CAB)")


async def _run(echo: Callable[[str], None]) -> int:
    # pgserver's platformdirs warns about XDG_RUNTIME_DIR on machines without a login session.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pgserver
    except ImportError:
        raise UserError("the demo needs the embedded PostgreSQL: pip install 'it-relay[embedded]'") from None
    logs.configure("WARNING", "console")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="it-relay-demo-") as data_dir:
        echo("starting an embedded PostgreSQL ...")
        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        # Every subscriber on one local server that verifies each signature; FA fails once, so
        # the demo shows a retry.
        sink = Sink(SECRET)
        sink.script("/hooks/FA", Reply(503, body=b"warming up"))
        try:
            url = server.get_uri()
            conn = await asyncpg.connect(url)
            applied = await migrate.upgrade(conn, reference=True)
            echo(f"schema: {', '.join(applied)}")
            await sink.start()
            listen = "127.0.0.1:9464" if _free(9464) else "127.0.0.1:0"
            settings = load_settings(
                None,
                database={"url": url, "poll_interval_s": 1.0},
                server={"listen": listen},
                delivery={"retry_schedule_s": [1, 5, 30], "inprocess_retries": 0},
                scheduler={"interval_s": 1.0},
                subscribers={
                    s: {"url": f"http://127.0.0.1:{sink.port}/hooks/{s}", "secret": SECRET}
                    for s in SUBSCRIBERS
                },
            )
            daemon = Daemon(settings)
            task = asyncio.create_task(daemon.run(install_signal_handlers=False))
            while daemon.readiness() is not None:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            assert daemon.server is not None
            echo(
                f"relay ready; metrics at http://127.0.0.1:{daemon.server.port}/metrics while the demo runs\n"
            )
            echo("changes to the IT tables, and the events their triggers journaled:")
            causes = Causes(conn, echo)
            await _statements(conn, causes)
            echo("")
            code = await _watch(conn, sink, echo, causes)
            echo("")
            received = [codec.loads(r.body) for r in sink.requests if r.verified]
            licence = [p for p in received if p["event_type"] == "it_license_created"]
            raw_anywhere = any(LICENCE_KEY.encode() in r.body for r in sink.requests)
            if licence:
                echo(
                    f"licence key as FA received it: {licence[0].get('license_key')!r}"
                    f" (raw key seen anywhere: {'YES' if raw_anywhere else 'no'})"
                )
            verified = len(received)
            echo(f"signatures verified: {verified} of {verified + sink.rejected_signatures}")
            if raw_anywhere or sink.rejected_signatures:
                code = 1
            echo(f"done in {time.monotonic() - started:.1f}s; stopping")
            daemon.stop()
            await asyncio.wait_for(task, 30)
            await conn.close()
            return code
        finally:
            await sink.stop()
            server.cleanup()


async def _watch(conn: asyncpg.Connection, sink: Sink, echo: Callable[[str], None], causes: Causes) -> int:
    """Print each delivery when it settles; 0 once every routed one is delivered."""
    echo(f"{'event':34} {'subscriber':10} {'status':9} {'attempts':>8} {'latency':>9}  caused by")
    shown: set[tuple[str, str]] = set()
    retrying: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 45
    expected_types = {"it_contract_expiring"}
    while time.monotonic() < deadline:
        rows = await conn.fetch(
            "SELECT d.event_id::text, d.event_type, d.subscriber, d.status, d.attempts, d.last_error,"
            " extract(epoch FROM d.delivered_at - e.created_at) AS latency"
            " FROM it_relay.deliveries d JOIN it_relay.events e USING (event_id) ORDER BY e.created_at, d.subscriber"
        )
        for r in rows:
            key = (r["event_id"], r["subscriber"])
            # A written retry outcome (an in-flight claim has counted its attempt, but no error yet).
            if r["status"] == "pending" and r["last_error"] is not None and key not in retrying:
                retrying.add(key)
                echo(
                    f"{r['event_type']:34} {r['subscriber']:10} {'pending':9} {r['attempts']:>8} {'':>9}"
                    f"  {r['last_error']}: will retry"
                )
            if r["status"] != "pending" and key not in shown:
                shown.add(key)
                latency = f"{r['latency'] * 1000:.0f} ms" if r["latency"] is not None else ""
                echo(
                    f"{r['event_type']:34} {r['subscriber']:10} {r['status']:9} {r['attempts']:>8} {latency:>9}"
                    f"  {causes.of(r['event_id'])}"
                )
        types = {r["event_type"] for r in rows}
        settled = rows and all(r["status"] == "delivered" for r in rows)
        if (
            settled
            and expected_types <= types
            and len(rows) == sum(len(REGISTRY[t].subscribers) for t in _event_types(rows))
        ):
            rejected = await conn.fetchval("SELECT count(*) FROM it_relay.rejected_events")
            echo(f"\n{len(rows)} deliveries of {len(types)} event types delivered; {rejected} rejected")
            return 0 if not rejected else 1
        await asyncio.sleep(0.2)
    echo("\ntimed out waiting for every delivery")
    return 1


def _event_types(rows: list[asyncpg.Record]) -> list[str]:
    return list({r["event_id"]: r["event_type"] for r in rows}.values())


def main() -> int:
    """Run the demo; returns the exit code."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(typer.echo))
    return 130
