"""Operations: /healthz, /readyz, /metrics, JSON logs, systemd notify, the unit, the Dockerfile, the demo."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import asyncpg
import httpx

from relay import journal
from relay.contracts.examples import example
from relay.metrics import Metrics
from tests.support.notify import NotifySocket
from tests.support.relay import (
    cli,
    relay_settings,
    running,
    start_relay_process,
    stop_process,
    wait_for_rows,
    wait_until,
    write_config,
)
from tests.support.sink import Reply, Sink

ROOT = Path(__file__).parent.parent
DESIGN_METRICS = (
    "it_relay_events_received_total",
    "it_relay_events_rejected_total",
    "it_relay_deliveries_total",
    "it_relay_delivery_duration_seconds",
    "it_relay_event_latency_seconds",
    "it_relay_backlog",
    "it_relay_listener_connected",
    "it_relay_scheduler_emitted_total",
    "it_relay_build_info",
)
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def test_health_readiness_and_metrics(relay_db: str, db: asyncpg.Connection, sink: Sink) -> None:
    sink.script("/fa", Reply(400))
    async with running(relay_settings(relay_db, sink, ["FA", "GR"])) as daemon:
        assert daemon.server is not None
        base = f"http://127.0.0.1:{daemon.server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.text) == (200, "ready\n")
            await journal.publish(db, example("it_asset_disposed") | {"license_key": "RAW-KEY-IN-METRICS?"})
            await db.execute("SELECT pg_notify('it_events', 'not json')")
            await wait_for_rows(
                db, "SELECT count(*) FROM it_relay.deliveries WHERE status <> 'pending'", lambda v: v == 2
            )
            await wait_for_rows(db, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 1)
            page = await client.get("/metrics")
            assert page.headers["content-type"].startswith("text/plain")
            text = page.text
            for name in DESIGN_METRICS:
                assert re.search(rf"^{name}(_bucket|_count|_sum)?[{{ ]", text, re.MULTILINE), name
            assert 'it_relay_deliveries_total{outcome="dead",subscriber="FA"} 1.0' in text
            assert 'it_relay_deliveries_total{outcome="delivered",subscriber="GR"} 1.0' in text
            assert 'it_relay_events_rejected_total{reason="not_json"} 1.0' in text
            assert "it_relay_listener_connected 1.0" in text
            assert "process_resident_memory_bytes" in text
            assert not UUID_RE.search(text)
            assert "RAW-KEY" not in text
            # A schema older than the code makes the instance not ready, with the reason.
            await db.execute(
                "DELETE FROM it_relay.schema_version WHERE version = (SELECT max(version) FROM it_relay.schema_version)"
            )
            await wait_until(lambda: not daemon.schema_current, within=10)
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert "it-relay db upgrade" in not_ready.text


async def test_the_daemon_records_how_late_its_event_loop_runs(relay_db: str, sink: Sink) -> None:
    """A blocking call in the relay's process (or a host with no core free) shows on /metrics."""
    async with running(relay_settings(relay_db, sink, ["FA"])) as daemon:
        assert daemon.server is not None
        registry = daemon.metrics.registry

        def late(le: str | None = None) -> float:
            if le is None:
                return registry.get_sample_value("it_relay_event_loop_lag_seconds_count") or 0.0
            sample = registry.get_sample_value("it_relay_event_loop_lag_seconds_bucket", {"le": le})
            return sample or 0.0

        await wait_until(lambda: late() >= 1)
        # The point: a call that blocks the loop, so nothing else runs meanwhile and every step due is late.
        time.sleep(1.0)  # noqa: ASYNC251
        await wait_until(lambda: late() - late("0.5") >= 1)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{daemon.server.port}/metrics")).text
        assert re.search(r'^it_relay_event_loop_lag_seconds_bucket\{le="0\.5"\} ', text, re.MULTILINE)


async def test_readyz_is_503_while_the_listener_is_down(
    pg_server_url: str, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    name = await db.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_server_url)
    async with running(relay_settings(relay_db, sink, ["FA"])) as daemon:
        assert daemon.server is not None
        url = f"http://127.0.0.1:{daemon.server.port}/readyz"
        # No new connections to the database: the listener cannot come back until we allow it.
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay:listener'"
            )
            await wait_until(lambda: daemon.readiness() is not None)
            async with httpx.AsyncClient() as client:
                down = await client.get(url)
            assert (down.status_code, down.text) == (503, "not ready: listener not connected to PostgreSQL\n")
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        await wait_until(lambda: daemon.readiness() is None, within=30)
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200


async def test_systemd_notify_socket(tmp_path: Path, relay_db: str, sink: Sink) -> None:
    notify = NotifySocket(tmp_path)
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    import os

    os.environ["NOTIFY_SOCKET"] = notify.address
    os.environ["WATCHDOG_USEC"] = "400000"
    try:
        proc = start_relay_process(config, tmp_path / "relay.log")
    finally:
        del os.environ["NOTIFY_SOCKET"]
        del os.environ["WATCHDOG_USEC"]
    try:
        await asyncio.wait_for(notify.until("READY=1"), 30)
        await asyncio.wait_for(notify.until("WATCHDOG=1"), 10)
    finally:
        code = await stop_process(proc, signal.SIGTERM)
    await asyncio.wait_for(notify.until("STOPPING=1"), 10)
    notify.close()
    assert code == 0
    joined = "\n".join(notify.messages)
    assert "STATUS=relaying" in joined
    assert joined.index("READY=1") < joined.index("STOPPING=1")


async def test_logs_are_json_lines_with_event_fields(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(422))
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        event_id = str(
            await journal.publish(db, example("it_license_created") | {"license_key": "RAW-LOGGED-KEY"})
        )
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "dead")
    finally:
        await stop_process(proc)
    lines = [
        json.loads(line) for line in (tmp_path / "relay.log").read_text().splitlines() if line.startswith("{")
    ]
    dead = next(line for line in lines if line["event"] == "delivery dead")
    assert (dead["event_id"], dead["event_type"], dead["subscriber"], dead["attempt"], dead["status"]) == (
        event_id,
        "it_license_created",
        "FA",
        1,
        422,
    )
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
    assert "RAW-LOGGED-KEY" not in (tmp_path / "relay.log").read_text()


def test_the_template_unit_is_the_service_unit_but_for_its_instance_lines() -> None:
    """it-relay@.service may not drift from it-relay.service: only its comments, description,
    per-instance metrics port and overrides differ."""

    def directives(name: str) -> list[str]:
        text = (ROOT / "systemd" / name).read_text()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    single, template = directives("it-relay.service"), directives("it-relay@.service")
    extra = [line for line in template if line not in single]
    assert extra == [
        "Description=it-relay instance %i: IT module event relay (PostgreSQL LISTEN/NOTIFY to signed webhooks)",
        "Environment=IT_RELAY_SERVER__LISTEN=127.0.0.1:946%i",
        "EnvironmentFile=-/etc/it-relay/%i.env",
    ]
    assert [line for line in single if line not in template] == [
        "Description=it-relay: IT module event relay (PostgreSQL LISTEN/NOTIFY to signed webhooks)"
    ]


def test_systemd_unit_is_hardened_notify_service() -> None:
    unit = (ROOT / "systemd" / "it-relay.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=",
        "User=it-relay",
        "LoadCredential=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "ExecStart=/opt/it-relay/bin/it-relay run",
    ):
        assert line in unit, line


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2
    assert all(s.startswith("python:3.11-slim") for s in stages)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["it-relay", "run"]' in text
    assert re.search(r"^HEALTHCHECK .*\n?.*healthz", text, re.MULTILINE)
    # The image installs the way the README says to install.
    assert "python -m build --wheel" in text
    assert "python -m build --wheel" in readme
    assert re.search(r"pip install .*\.whl", text)
    assert re.search(r"pip install .*\.whl", readme)
    for instruction in re.findall(r"^([A-Z]+) ", text, re.MULTILINE):
        assert instruction in {
            "FROM",
            "WORKDIR",
            "COPY",
            "RUN",
            "ENV",
            "USER",
            "EXPOSE",
            "HEALTHCHECK",
            "ENTRYPOINT",
            "CMD",
        }


def test_alert_rules_name_real_metrics() -> None:
    rules = (ROOT / "config" / "prometheus-alerts.yml").read_text()
    metrics = Metrics()
    metrics.prepare(["PF-10"])
    exposed = {s.name for family in metrics.registry.collect() for s in family.samples}
    named = set(re.findall(r"\bit_relay_[a-z_]+", rules))
    assert named >= {"it_relay_backlog", "it_relay_subscriber_paused", "it_relay_listener_connected"}
    assert named <= exposed, named - exposed


async def test_demo_runs_the_mission_and_exits_0() -> None:
    result = await cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "licence key as FA received it: '[REDACTED]' (raw key seen anywhere: no)" in result.stdout
    verified = re.search(r"signatures verified: (\d+) of (\d+)", result.stdout)
    assert verified
    assert verified.group(1) == verified.group(2)
    assert "it_asset_purchased                 FA         delivered        2" in result.stdout
    assert "it_contract_expiring" in result.stdout
    assert "Traceback" not in result.stderr
    # Each event with the table change that caused it; nothing printed once the server has gone.
    lines = result.stdout.splitlines()
    assert "  INSERT it_tickets TKT-1042" in "\n".join(lines)
    delivered = [line for line in lines if " delivered " in line]
    assert delivered and all(
        ("INSERT " in line or "UPDATE " in line or "scheduler" in line) for line in delivered
    )
    assert any(
        line.startswith("it_ticket_created") and "INSERT it_tickets TKT-1042" in line for line in lines
    )
    assert any(line.startswith("it_contract_expiring") and "the scheduler" in line for line in lines)
    assert lines[-1].startswith("done in ") and "metrics" not in lines[-1]
