"""`it-relay status` and the production host (issue 26, §2, §3, §6): an outage or a stopped relay is
seen at once, the instances alive and their configuration are named, read-only commands need no
credential, and the daemon's start names the port it bound; all against a real PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import asyncpg

from relay import journal
from relay.contracts.examples import example
from tests.support.cli import run_cli
from tests.support.relay import (
    EXAMPLE,
    relay_settings,
    running,
    start_relay_process,
    stop_process,
    wait_for_rows,
    wait_until,
    write_config,
)
from tests.support.sink import Reply, Sink


async def test_with_no_instance_alive_status_says_so_and_counts_the_unrouted(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10"]))
    async with db.transaction():
        for _ in range(3):
            await journal.publish(db, example("it_ticket_created"))
    result = await run_cli("status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unrouted_events"] == 3 and report["instances"] == []
    (warning,) = report["warnings"]
    assert warning.startswith("no relay instance is alive (none recorded itself in the last 11s)")
    assert warning.endswith("nothing is routed or delivered; 3 events wait unrouted")
    # Served by this configuration when nothing runs to say otherwise.
    assert {s["subscriber"]: s["state"] for s in report["subscribers"]}["PF-10"] == "served"
    text = await run_cli("status", "--config", str(config))
    lines = text.stdout.splitlines()
    assert "events not routed yet: 3" in lines and "instances alive: 0" in text.stdout
    assert lines[-1] == f"warning: {warning}"


async def test_status_shows_dead_now_and_instances_on_another_configuration(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # The daemon serves FA (a 410: dead at once); the operator's config has FA and GR.
    sink.script("/fa", Reply(410, body=b"gone"))
    daemon_settings = relay_settings(relay_db, sink, ["FA"])
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA", "GR"]))
    async with running(daemon_settings) as daemon:
        await journal.publish(db, example("it_asset_disposed"))
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'dead'", lambda v: v == 1
        )
        await wait_until(lambda: daemon.metrics.registry.get_sample_value("it_relay_instances") == 1)
        result = await run_cli("status", "--config", str(config), "--json")
        text = await run_cli("status", "--config", str(config))
    report = json.loads(result.stdout)
    by_name = {s["subscriber"]: s for s in report["subscribers"]}
    assert by_name["FA"]["dead"] == 1 and by_name["FA"]["backlog"] == 0
    assert by_name["FA"]["last_error"] == "HTTP 410"
    # GR is in the command's file, not in what runs: not served, and said so.
    assert by_name["GR"]["state"] == "not served"
    (instance,) = report["instances"]
    assert instance["subscribers"] == ["FA"] and instance["config"] != report["config"]
    assert instance["heartbeat_age_s"] < 30
    other, idle = report["warnings"]
    assert (
        f"({instance['config']}) run another configuration than this command read ({report['config']})"
        in other
    )
    assert "systemctl reload it-relay" in other
    assert idle == "configured here but served by no live instance: GR"
    fa = next(line for line in text.stdout.splitlines() if line.startswith("FA "))
    assert re.match(r"FA\s+served\s+0\s+-\s+-\s+1\s", fa), fa
    assert f"{instance['host']} pid {instance['pid']} it-relay {instance['version']}" in text.stdout


def _production_config(tmp_path: Path, relay_db: str) -> Path:
    """The shipped example (credentials for the database password and PF-10's secret) on this
    test's database."""
    text = EXAMPLE.read_text().replace("postgresql://it_relay@localhost:5432/encore", relay_db)
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


READ_ONLY = [
    ["status"],
    ["status", "--json"],
    ["deliveries", "list"],
    ["rejections", "list"],
    ["subscribers", "list"],
    ["db", "status"],
    ["audit", "list"],
    ["check-config"],
]


async def test_read_only_commands_run_from_a_shell_without_the_units_credentials(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection
) -> None:
    config = _production_config(tmp_path, relay_db)
    event_id = str(await journal.publish(db, example("it_ticket_created")))
    for args in [*READ_ONLY, ["deliveries", "show", event_id]]:
        result = await run_cli(*args, "--config", str(config))
        assert result.returncode == 0, (args, result.stderr)
        assert "CREDENTIALS_DIRECTORY" not in result.stderr or args == ["check-config"], args
    # send-test signs with PF-10's secret: it says which credential it needs and how.
    signed = await run_cli("send-test", "--subscriber", "PF-10", "--config", str(config))
    assert signed.returncode == 2
    assert signed.stderr.startswith(
        "it-relay: error: config error: subscribers.PF-10.secret_credential: send-test signs with it"
    )
    assert "CREDENTIALS_DIRECTORY" in signed.stderr and signed.stderr.count("\n") == 1


async def test_the_daemon_logs_the_port_it_bound_and_serves_no_created_series(
    tmp_path: Path, relay_db: str, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10"]))
    log = tmp_path / "relay.log"
    proc = start_relay_process(config, log)
    try:
        await wait_until(lambda: "it-relay started" in log.read_text(), within=30)
        started = next(
            json.loads(line) for line in log.read_text().splitlines() if "it-relay started" in line
        )
        url = started["metrics"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) and not url.endswith(":0/metrics")
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            exposition = await response.text()
    finally:
        assert await stop_process(proc) == 0
    assert "it_relay_deliveries_total" in exposition
    assert "_created" not in exposition
