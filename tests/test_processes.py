"""The relay as real processes: replay, several instances, SIGKILL, SIGTERM, lost connections."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import asyncpg

from relay import codec, journal
from relay.contracts.examples import example
from relay.settings import SubscriberSettings
from tests.support.relay import (
    cli,
    relay_settings,
    running,
    start_relay_process,
    stop_process,
    wait_for_rows,
    wait_ready,
    wait_until,
    write_config,
)
from tests.support.sink import Reply, Sink


async def publish_many(
    db: asyncpg.Connection, count: int, event_type: str = "it_asset_assigned"
) -> list[str]:
    payloads = [example(event_type) | {"asset_tag": f"A-{i}"} for i in range(count)]
    async with db.transaction():
        return [str(await journal.publish(db, p)) for p in payloads]


async def test_dead_then_replay_delivers_with_the_same_webhook_id(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(410))
    settings = relay_settings(relay_db, sink, ["FA"])
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        event_id = str(await journal.publish(db, example("it_asset_purchased")))
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "dead")
        listed = await cli("deliveries", "list", "--config", str(config), "--status", "dead", "--json")
        assert listed.returncode == 0, listed.stderr
        row = json.loads(listed.stdout.splitlines()[0])
        assert (row["event_id"], row["subscriber"], row["last_status"]) == (event_id, "FA", 410)
        replayed = await cli("replay", "--config", str(config), "--event-id", event_id)
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout.strip() == "re-queued 1 deliveries: FA 1"
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "delivered")
    first, second = sink.at("/fa")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert second.headers["x-it-delivery-attempt"] == "2"


async def test_replay_all_dead_of_a_subscriber(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/pf-10", *[Reply(404)] * 3)
    settings = relay_settings(relay_db, sink, ["PF-10", "HR"])
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        await publish_many(db, 3)
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'dead'", lambda v: v == 3
        )
        result = await cli(
            "replay",
            "--config",
            str(config),
            "--subscriber",
            "PF-10",
            "--status",
            "dead",
            "--since",
            "2000-01-01T00:00:00Z",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "re-queued 3 deliveries: PF-10 3"
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 6
        )
    nothing = await cli("replay", "--config", str(config), "--subscriber", "PF-10", "--status", "dead")
    assert nothing.returncode == 1
    assert "nothing to replay" in nothing.stderr


async def test_two_processes_deliver_each_pair_exactly_once(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10", "HR"]))
    logs = [tmp_path / f"relay{i}.log" for i in range(2)]
    procs = [start_relay_process(config, log) for log in logs]
    try:
        # Both listening before the first event: otherwise one may relay it all alone.
        await wait_ready(*logs, procs=procs)
        ids = await publish_many(db, 300)
        # Every outcome written; a graceful stop then lets nothing more out.
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v >= 600,
            within=60,
        )
    finally:
        codes = [await stop_process(p) for p in procs]
    assert codes == [0, 0]
    pairs = Counter((r.headers["webhook-id"], r.path) for r in sink.requests)
    assert set(pairs) == {(i, p) for i in ids for p in ("/pf-10", "/hr")}
    assert max(pairs.values()) == 1


async def test_sigkill_mid_run_then_restart_completes_every_delivery(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # Slow answers keep deliveries in flight when the process is killed.
    sink.script("/pf-10", *[Reply(200, delay_s=0.05)] * 400)
    settings = relay_settings(relay_db, sink, ["PF-10", "HR"], delivery={"lease_s": 3.0})
    config = write_config(tmp_path / "relay.toml", settings)
    proc = start_relay_process(config, tmp_path / "relay.log")
    ids = await publish_many(db, 400)
    await sink.wait_for(lambda r: len(r) >= 100, within=30)
    await stop_process(proc, signal.SIGKILL)
    before = len(sink.requests)
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 800,
            within=60,
        )
    finally:
        assert await stop_process(proc) == 0
    pairs = Counter((r.headers["webhook-id"], r.path) for r in sink.requests)
    assert set(pairs) == {(i, p) for i in ids for p in ("/pf-10", "/hr")}
    duplicates = sum(n - 1 for n in pairs.values())
    # Only what was in flight (at most one lane's max_in_flight per subscriber) may repeat.
    assert duplicates <= 2 * SubscriberSettings.model_fields["max_in_flight"].default, duplicates
    assert before < len(sink.requests)


async def test_sigterm_finishes_in_flight_deliveries_and_exits_0(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(200, delay_s=1.5))
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        await journal.publish(db, example("it_asset_purchased"))
        await sink.wait_for(lambda r: len(r) == 1, within=20)
    finally:
        code = await stop_process(proc, signal.SIGTERM)
    assert code == 0
    assert await db.fetchval("SELECT status FROM it_relay.deliveries") == "delivered"
    log = (tmp_path / "relay.log").read_text()
    assert "it-relay stopped" in log


async def test_sighup_reloads_subscribers_without_dropping_what_is_in_flight(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    """SIGHUP mid-delivery (a slow answer in flight): HR is added and FA re-pointed, a changed
    poll interval is named as needing a restart, the delivery in flight completes; then a broken
    configuration changes nothing."""
    sink.script("/fa", Reply(200, delay_s=1.0))
    config = tmp_path / "relay.toml"
    write_config(config, relay_settings(relay_db, sink, ["FA"]))
    log_path = tmp_path / "relay.log"
    proc = start_relay_process(config, log_path)
    try:
        await journal.publish(db, example("it_asset_purchased"))
        await sink.wait_for(lambda r: len(r) == 1, within=20)
        write_config(
            config,
            relay_settings(
                relay_db,
                sink,
                ["FA", "HR"],
                subscriber_overrides={"FA": {"url": sink.url("/fa-new")}},
                database={"poll_interval_s": 0.7},
            ),
        )
        proc.send_signal(signal.SIGHUP)
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "delivered")
        await _wait_for_line(log_path, "configuration reloaded")
        await journal.publish(db, example("it_asset_purchased") | {"asset_tag": "AFTER-HUP"})
        await journal.publish(db, example("it_asset_assigned"))  # HR (and PF-10, not served)
        await sink.wait_for(lambda r: len(sink.at("/fa-new")) == 1 and len(sink.at("/hr")) == 1, within=20)
        config.write_text("[delivery]\nconcurrency = -1\n")
        proc.send_signal(signal.SIGHUP)
        await _wait_for_line(log_path, "reload failed")
        await journal.publish(db, example("it_asset_purchased") | {"asset_tag": "AFTER-BAD"})
        await sink.wait_for(lambda r: len(sink.at("/fa-new")) == 2, within=20)
        assert proc.poll() is None
    finally:
        code = await stop_process(proc, signal.SIGTERM)
    assert code == 0
    text = log_path.read_text()
    restart = next(json.loads(line) for line in text.splitlines() if "need a restart" in line)
    assert restart["keys"] == ["database.poll_interval_s"]
    reloaded = next(json.loads(line) for line in text.splitlines() if "configuration reloaded" in line)
    assert reloaded["added"] == ["HR"] and reloaded["removed"] == []
    assert len(sink.at("/fa")) == 1  # only the one in flight at the reload


async def _wait_for_line(path: Path, text: str) -> None:
    await wait_until(lambda: text in path.read_text(), within=20)


async def test_listener_reconnects_and_catches_up_after_its_backend_is_terminated(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])) as daemon:
        assert daemon.listener is not None
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay:listener'"
        )
        assert pid is not None
        assert (
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay'"
            )
            >= 1
        )
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        # Published while the listener is down or reconnecting: found by the catch-up scan.
        await journal.publish(db, example("it_ticket_created"))
        await sink.wait_for(lambda r: len(r) == 1, within=20)
        await wait_for_rows(
            db,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay:listener'",
            lambda v: v is not None and v != pid,
        )
        assert daemon.listener.connections >= 2
        await journal.publish(db, example("it_ticket_created") | {"ticket_number": "after"})
        await sink.wait_for(lambda r: len(r) == 2, within=20)


async def test_run_refuses_an_old_schema(tmp_path: Path, database_url: str, sink: Sink) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(database_url, sink, ["FA"]))
    result = await cli("run", "--config", str(config))
    assert result.returncode == 3
    assert "it-relay: error: the database has no it_relay schema" in result.stderr
    assert "Traceback" not in result.stderr
    upgraded = await cli("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert "0001_journal" in upgraded.stdout
    again = await cli("db", "upgrade", "--config", str(config))
    assert again.stdout.strip() == "schema is up to date"


async def test_emit_publishes_through_the_producer_api(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    events = tmp_path / "events.json"
    events.write_bytes(codec.dumps([example("it_asset_purchased"), example("it_license_created")]))
    result = await cli("emit", str(events), "--config", str(config))
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2
    assert await db.fetchval("SELECT count(*) FROM it_relay.events WHERE source = 'publish'") == 2


async def test_emit_publishes_nothing_when_one_event_is_invalid(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    events = tmp_path / "events.json"
    events.write_bytes(codec.dumps([example("it_asset_purchased"), {"event_type": "nope"}]))
    refused = await cli("emit", str(events), "--config", str(config))
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == ["[1] event_type: not an event of the IT contracts"]
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 0
    forced = await cli("emit", str(events), "--config", str(config), "--no-validate")
    assert forced.returncode == 0, forced.stderr
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 2


async def test_a_scheduler_pass_in_the_future_needs_dry_run_or_force(
    tmp_path: Path, ref_db: str, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(ref_db, sink, ["PF-10"]))
    refused = await cli("scheduler", "run-once", "--config", str(config), "--now", "2099-01-01T00:00:00Z")
    assert refused.returncode == 2
    assert "is later than the database's clock" in refused.stderr and "--dry-run" in refused.stderr
    assert "Traceback" not in refused.stderr
    looked = await cli(
        "scheduler", "run-once", "--config", str(config), "--now", "2099-01-01T00:00:00Z", "--dry-run"
    )
    assert looked.returncode == 0, looked.stderr
    forced = await cli(
        "scheduler", "run-once", "--config", str(config), "--now", "2099-01-01T00:00:00Z", "--force"
    )
    assert forced.returncode == 0, forced.stderr


async def test_cli_database_errors_are_one_line(tmp_path: Path, sink: Sink) -> None:
    config = write_config(
        tmp_path / "relay.toml", relay_settings("postgresql://nobody@127.0.0.1:1/none", sink, ["FA"])
    )
    result = await cli("deliveries", "list", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("it-relay: error: database at 127.0.0.1:1: cannot connect")
    assert "Traceback" not in result.stderr


async def test_a_busy_metrics_port_is_named(tmp_path: Path, relay_db: str, sink: Sink) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "relay.toml",
            relay_settings(relay_db, sink, ["FA"], server={"listen": f"127.0.0.1:{port}"}),
        )
        result = await cli("run", "--config", str(config))
    assert result.returncode == 1
    assert f"it-relay: error: server.listen 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr


async def test_send_test_signs_an_example_through_the_delivery_path(tmp_path: Path, sink: Sink) -> None:
    from standardwebhooks import Webhook

    from tests.support.relay import SECRET

    sink.script("/fa", Reply(200, body=b'{"ok": true, "license_key": "RAW-ECHO"}'), Reply(503, body=b"down"))
    config = write_config(
        tmp_path / "relay.toml", relay_settings("postgresql://nobody@127.0.0.1:1/none", sink, ["FA"])
    )
    ok = await cli("send-test", "--subscriber", "fa", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    first_line, excerpt = ok.stdout.splitlines()[:2]
    assert first_line.startswith("FA <- it_asset_purchased ") and ": HTTP 200 in " in first_line
    assert "RAW-ECHO" not in excerpt and '"ok": true' in excerpt
    request = sink.requests[0]
    assert request.headers["x-it-test"] == "true"
    assert Webhook(SECRET).verify(request.body, request.headers)["event_type"] == "it_asset_purchased"
    failed = await cli(
        "send-test", "--subscriber", "FA", "--event-type", "it_license_created", "--config", str(config)
    )
    assert failed.returncode == 1
    assert ": HTTP 503 in " in failed.stdout
    for args, message in [
        (["--subscriber", "XX"], "not a subscriber of the contracts"),
        (["--subscriber", "HR"], "HR: not configured here"),
        (["--subscriber", "FA", "--event-type", "it_ticket_created"], "not routed to FA"),
    ]:
        refused = await cli("send-test", *args, "--config", str(config))
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr and "Traceback" not in refused.stderr


async def test_deliveries_list_shows_the_whole_error_when_asked(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={"FA": {"url": f"http://127.0.0.1:{port}/fa?token=s3cr3t"}},
        delivery={"retry_schedule_s": [60]},
    )
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        await journal.publish(db, example("it_asset_purchased"))
        error = await wait_for_rows(
            db, "SELECT last_error FROM it_relay.deliveries WHERE attempts > 0", lambda v: v is not None
        )
    assert len(error) > 14 and "s3cr3t" not in error
    narrow = await cli("deliveries", "list", "--config", str(config))
    wide = await cli("deliveries", "list", "--config", str(config), "--wide")
    assert narrow.returncode == wide.returncode == 0
    assert error not in narrow.stdout and "…" in narrow.stdout
    assert wide.stdout.splitlines()[1].endswith(error)


async def test_a_delivered_event_is_one_debug_line_with_its_latency(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    log_path = tmp_path / "relay.log"
    proc = start_relay_process(config, log_path, log_level="DEBUG")
    try:
        event_id = str(await journal.publish(db, example("it_asset_purchased")))
        await wait_for_rows(
            db, "SELECT status FROM it_relay.deliveries", lambda v: v == "delivered", within=30
        )
    finally:
        assert await stop_process(proc) == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    delivered = [line for line in lines if line.get("event") == "delivered"]
    assert len(delivered) == 1
    assert (delivered[0]["event_id"], delivered[0]["subscriber"], delivered[0]["level"]) == (
        event_id,
        "FA",
        "debug",
    )
    assert delivered[0]["latency_ms"] >= 0
