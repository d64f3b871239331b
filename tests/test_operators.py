"""Operator commands through the CLI against a real PostgreSQL and real subscribers: subscriber
lifecycle, attempt history, status, follow, rejections, safe bulk replay. Each command runs once
as a subprocess (the installed entry point); the other runs are in this process (run_cli)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from relay import codec, journal
from relay.contracts.examples import example
from tests.support.cli import run_cli
from tests.support.relay import SECRET, cli, relay_settings, running, wait_for_rows, wait_until, write_config
from tests.support.sink import PATIENCE, Reply, Sink

KEY = "LIC-OPS-7Q2W-9Z"


def _config(tmp_path: Path, relay_db: str, sink: Sink, subscribers: list[str]) -> Path:
    return write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, subscribers))


async def _statuses(db: asyncpg.Connection, event_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT subscriber, status FROM it_relay.deliveries WHERE event_id = $1", event_id)
    return {r["subscriber"]: r["status"] for r in rows}


async def test_a_subscriber_not_served_gets_no_deliveries_until_it_is_backfilled(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = _config(tmp_path, relay_db, sink, ["PF-10"])
    async with running(relay_settings(relay_db, sink, ["PF-10"])) as daemon:
        event_id = str(await journal.publish(db, example("it_asset_assigned")))
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 1
        )
        assert await _statuses(db, event_id) == {"PF-10": "delivered"}  # no row for HR: not served
        counted = daemon.metrics.registry.get_sample_value(
            "it_relay_unconfigured_deliveries_total", {"subscriber": "HR"}
        )
        assert counted == 1
        status = await run_cli("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr
        states = {s["subscriber"]: s["state"] for s in json.loads(status.stdout)["subscribers"]}
        assert states["PF-10"] == "served" and states["HR"] == "not served"

        # HR configured for the command, not yet for the running instance: a backfill would wait.
        await wait_until(lambda: daemon.metrics.registry.get_sample_value("it_relay_instances") == 1)
        config = _config(tmp_path, relay_db, sink, ["PF-10", "HR"])
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        early = await run_cli(
            "backfill", "--config", str(config), "--subscriber", "HR", "--since", since, "--dry-run"
        )
        assert early.returncode == 0, early.stderr
        assert "warning: no live instance serves HR yet" in early.stderr

    # HR comes online: configured, then backfilled from the journal.
    async with running(relay_settings(relay_db, sink, ["PF-10", "HR"])) as daemon:
        await wait_until(lambda: daemon.metrics.registry.get_sample_value("it_relay_instances") == 1)
        looked = await cli(
            "backfill", "--config", str(config), "--subscriber", "hr", "--since", since, "--dry-run"
        )
        assert looked.returncode == 0, looked.stderr
        assert looked.stdout.strip() == "would create 1 deliveries for HR: it_asset_assigned 1"
        assert "warning" not in looked.stderr
        assert set(await _statuses(db, event_id)) == {"PF-10"}
        done = await run_cli("backfill", "--config", str(config), "--subscriber", "HR", "--since", since)
        assert done.stdout.strip() == "created 1 deliveries for HR: it_asset_assigned 1", done.stderr
        await sink.wait_for(lambda r: len(r) == 2)
        again = await run_cli("backfill", "--config", str(config), "--subscriber", "HR", "--since", since)
        assert again.stdout.strip() == "created 0 deliveries for HR"
        # Its wake-up names a journaled event: nothing is recorded as a rejection.
        assert await db.fetchval("SELECT count(*) FROM it_relay.rejected_events") == 0
    assert sink.requests[1].path == "/hr"
    assert sink.requests[1].headers["webhook-id"] == event_id


async def test_pause_holds_deliveries_on_every_instance_and_resume_releases_them(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    subscribers = ["PF-10", "GR"]
    config = _config(tmp_path, relay_db, sink, subscribers)
    async with running(relay_settings(relay_db, sink, subscribers)) as daemon:
        paused = await cli("subscribers", "pause", "pf-10", "--config", str(config))
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("PF-10 paused for every instance")
        lane = daemon.components.dispatcher.lanes["PF-10"] if daemon.components else None
        assert lane is not None
        await wait_until(lambda: lane.paused)  # picked up from the database, no restart
        assert (
            daemon.metrics.registry.get_sample_value("it_relay_subscriber_paused", {"subscriber": "PF-10"})
            == 1
        )

        event_id = str(await journal.publish(db, example("it_security_incident_created")))
        await sink.wait_for(lambda r: len(r) == 1)
        assert [r.path for r in sink.requests] == ["/gr"]
        held = await db.fetchrow(
            "SELECT status, attempts FROM it_relay.deliveries WHERE event_id = $1 AND subscriber = 'PF-10'",
            event_id,
        )
        assert held is not None
        assert (held["status"], held["attempts"]) == ("pending", 0)
        listed = await cli("subscribers", "list", "--config", str(config), "--json")
        by_name = {s["subscriber"]: s for s in json.loads(listed.stdout)}
        assert by_name["PF-10"]["state"] == "paused" and by_name["PF-10"]["why"].startswith("paused by ")
        assert by_name["GR"]["state"] == "served" and by_name["HR"]["state"] == "not served"
        # Which event types each takes, by the contracts.
        assert by_name["HR"]["event_types"] == ["it_asset_assigned"]
        text = await run_cli("subscribers", "list", "--config", str(config))
        lines = text.stdout.splitlines()
        assert lines[lines.index(next(x for x in lines if x.startswith("HR "))) + 1] == (
            "         takes 1: it_asset_assigned"
        )

        resumed = await run_cli("subscribers", "resume", "PF-10", "--config", str(config))
        assert resumed.returncode == 0, resumed.stderr
        await sink.wait_for(lambda r: len(r) == 2)
    assert sink.requests[1].path == "/pf-10"


async def test_enabled_false_is_paused_and_resume_overrides_it(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"], subscriber_overrides={"PF-10": {"enabled": False}})
    config = _config(tmp_path, relay_db, sink, ["PF-10"])
    async with running(settings) as daemon:
        lane = daemon.components.dispatcher.lanes["PF-10"] if daemon.components else None
        assert lane is not None and lane.paused
        await journal.publish(db, example("it_ticket_created"))
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.deliveries", lambda v: v == 1)
        assert sink.requests == []
        await cli("subscribers", "resume", "PF-10", "--config", str(config))
        await sink.wait_for(lambda r: len(r) == 1)


async def test_every_attempt_is_recorded_and_shown_scrubbed(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # The subscriber answers with an error body that echoes a licence key and the signing secret.
    echo = json.dumps({"error": "bad", "license_key": KEY, "secret": SECRET}).encode() + b"x" * 4000
    sink.script("/fa", Reply(422, body=echo), Reply(503, body=b"busy"), Reply(200, body=b"ok"))
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        delivery={"retry_schedule_s": [0.2, 0.2], "inprocess_retries": 1, "inprocess_retry_wait_s": 0},
    )
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        # 422 is final (dead): replay it so the next attempts happen.
        event_id = str(await journal.publish(db, example("it_asset_purchased")))
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "dead")
        await cli("replay", "--config", str(config), "--event-id", event_id)
        await wait_for_rows(db, "SELECT status FROM it_relay.deliveries", lambda v: v == "delivered")
    shown = await cli("deliveries", "show", event_id, "--config", str(config), "--json")
    assert shown.returncode == 0, shown.stderr
    journey = json.loads(shown.stdout)
    assert journey["event"]["event_type"] == "it_asset_purchased"
    (delivery,) = journey["deliveries"]
    history = delivery["history"]
    assert [(a["attempt"], a["http_status"]) for a in history] == [(1, 422), (2, 503), (3, 200)]
    assert all(a["duration_ms"] >= 0 for a in history)
    first = history[0]["response_excerpt"]
    assert len(first.encode()) <= 1024 + 64 and KEY not in first and SECRET not in first
    assert SECRET.removeprefix("whsec_") not in first
    text = await run_cli("deliveries", "show", event_id, "--config", str(config))
    assert "#1 " in text.stdout and "HTTP 422" in text.stdout and "#3 " in text.stdout
    assert KEY not in text.stdout
    dump = await db.fetchval("SELECT string_agg(coalesce(response_excerpt, ''), '') FROM it_relay.attempts")
    assert KEY not in dump and SECRET not in dump
    missing = await run_cli(
        "deliveries", "show", "00000000-0000-0000-0000-000000000001", "--config", str(config)
    )
    assert missing.returncode == 1 and "no event" in missing.stderr


async def test_status_reports_each_subscriber(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(500), Reply(500), Reply(500), Reply(500))
    settings = relay_settings(relay_db, sink, ["FA", "GR"], delivery={"retry_schedule_s": [60]})
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        event_id = str(await journal.publish(db, example("it_asset_disposed")))
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE event_id = $1 AND attempts = 1 AND lease_owner IS NULL",
            lambda v: v == 2,
            args=[event_id],
        )
        result = await cli("status", "--config", str(config), "--json")
        text = await run_cli("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    report = {s["subscriber"]: s for s in json.loads(result.stdout)["subscribers"]}
    assert report["GR"]["state"] == "served" and report["GR"]["delivered_5m"] == 1
    assert report["GR"]["backlog"] == 0 and report["GR"]["last_success"] is not None
    assert report["GR"]["latency_p50_s"] is not None
    assert report["FA"]["backlog"] == 1 and report["FA"]["failed_5m"] == 1
    assert report["FA"]["oldest_pending_s"] is not None and report["FA"]["last_error"] == "HTTP 500"
    assert report["PF-10"]["state"] == "not served"
    assert report["FA"]["next_attempt"] is not None and report["FA"]["dead"] == 0
    whole = json.loads(result.stdout)
    (instance,) = whole["instances"]
    assert instance["pid"] == os.getpid() and instance["config"] == whole["config"]
    assert whole["warnings"] == [] and whole["unrouted_events"] == 0
    assert text.returncode == 0 and "FA" in text.stdout and "HTTP 500" in text.stdout
    # The next attempt in about a minute, human; the last success with its zone; the instance.
    fa = next(line for line in text.stdout.splitlines() if line.startswith("FA "))
    assert re.search(r" (\d+s|1m00s) ", fa), fa
    assert " UTC" in next(line for line in text.stdout.splitlines() if line.startswith("GR "))
    assert f"pid {os.getpid()} it-relay " in text.stdout and "instances alive: 1" in text.stdout


async def test_deliveries_list_follow_streams_new_outcomes(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"])
    config = write_config(tmp_path / "relay.toml", settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    follow = subprocess.Popen(  # noqa: ASYNC220 - read from a thread below
        [sys.executable, "-m", "relay", "deliveries", "list", "--config", str(config), "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        async with running(settings):
            event_id = str(await journal.publish(db, example("it_ticket_created")))
            line = await asyncio.wait_for(_line_with(follow, event_id), 30 * PATIENCE)
        assert json.loads(line)["status"] == "delivered"
        # The command's own connection is named apart from the daemon's in pg_stat_activity (it
        # connects for each poll: wait until one is seen).
        await wait_for_rows(
            db,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'it-relay:cli'",
            lambda v: v >= 1,
        )
    finally:
        follow.terminate()
        follow.wait(10)


async def _line_with(proc: subprocess.Popen[bytes], needle: str) -> str:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.to_thread(proc.stdout.readline)
        if not raw:
            raise AssertionError(f"--follow ended: {proc.stderr.read().decode() if proc.stderr else ''}")
        if needle in raw.decode():
            return raw.decode()


async def test_a_rejected_event_is_listed_shown_corrected_and_republished(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"])
    config = write_config(tmp_path / "relay.toml", settings)
    bad = example("it_ticket_created") | {"priority": "urgent", "license_key": KEY}
    async with running(settings):
        event_id = str(await journal.publish(db, bad))
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 1)
        listed = await cli("rejections", "list", "--config", str(config), "--reason", "schema", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["event_id"] == event_id and row["errors"][0].startswith("priority:")
        shown = await cli("rejections", "show", str(row["id"]), "--config", str(config))
        assert "priority: Input should be" in shown.stdout and KEY not in shown.stdout
        assert "[REDACTED]" in shown.stdout

        unchanged = await run_cli("rejections", "republish", event_id, "--config", str(config))
        assert unchanged.returncode == 1 and "still invalid" in unchanged.stderr
        assert unchanged.stderr.count("\n") == 1 and "priority:" in unchanged.stdout

        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(codec.dumps(bad | {"priority": "high"}))
        republished = await cli(
            "rejections", "republish", str(row["id"]), "--file", str(fixed), "--config", str(config)
        )
        assert republished.returncode == 0, republished.stderr
        await sink.wait_for(lambda r: len(r) == 1)
        twice = await run_cli(
            "rejections", "republish", str(row["id"]), "--file", str(fixed), "--config", str(config)
        )
        assert twice.returncode == 1 and "already republished" in twice.stderr
        open_ones = await run_cli("rejections", "list", "--config", str(config))
        assert event_id not in open_ones.stdout
    delivered = sink.requests[0]
    assert delivered.headers["webhook-id"] == event_id
    body = json.loads(delivered.body)
    assert body["priority"] == "high" and KEY not in delivered.body.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rejections", "show", "x'; DROP TABLE it_relay.events; --"], "give a rejection id"),
        (["rejections", "list", "--reason", "bogus"], "'bogus' is not one of 'not_json'"),
        (["rejections", "republish", "1", "--file", "/nonexistent/fix.json"], "cannot read"),
        (["replay", "--subscriber", "PF-99", "--status", "dead"], "not a subscriber of the contracts"),
        (
            ["replay", "--all-subscribers", "--status", "gone"],
            "'gone' is not one of 'pending', 'delivered', 'dead'",
        ),
        (["replay", "--all-subscribers"], "--status is required"),
        (["replay", "--all-subscribers", "--subscriber", "FA", "--status", "dead"], "not both"),
        (
            [
                "replay",
                "--all-subscribers",
                "--status",
                "dead",
                "--since",
                "2026-02-01",
                "--until",
                "2026-01-01",
            ],
            "--until must be later",
        ),
        (["replay", "--event-id", "not-a-uuid"], "must be a UUID"),
        (
            ["replay", "--event-type", "it_nothing", "--all-subscribers", "--status", "dead"],
            "not an event type",
        ),
        (["backfill", "--subscriber", "HR", "--since", "2026-01-01"], "not configured here"),
        (["subscribers", "pause", "nobody"], "not a subscriber of the contracts"),
        (["subscribers", "pause", "HR"], "not served here"),
        (["deliveries", "show", "12"], "must be a UUID"),
        (["deliveries", "list", "--subscriber", "PF-99;"], "not a subscriber"),
    ],
)
async def test_bad_operator_arguments_are_one_line_errors(
    tmp_path: Path, relay_db: str, sink: Sink, args: list[str], message: str
) -> None:
    config = _config(tmp_path, relay_db, sink, ["FA", "PF-10"])
    result = await run_cli(*args, "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


async def test_bulk_replay_counts_first_filters_and_asks(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10", "HR", "GR"])
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        start = await journal.database_now(db)
        async with db.transaction():
            for i in range(6):
                await journal.publish(db, example("it_asset_assigned") | {"asset_tag": f"A-{i}"})
            await journal.publish(db, example("it_security_incident_created"))
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 14
        )
        base = ["replay", "--config", str(config), "--status", "delivered"]
        looked = await run_cli(*base, "--all-subscribers", "--dry-run")
        assert looked.stdout.strip() == "would re-queue 14 deliveries: GR 1, HR 6, PF-10 7", looked.stderr
        typed = await run_cli(
            *base, "--all-subscribers", "--event-type", "it_security_incident_created", "--dry-run"
        )
        assert typed.stdout.strip() == "would re-queue 2 deliveries: GR 1, PF-10 1"
        later = (start + timedelta(hours=1)).isoformat()
        none = await run_cli(*base, "--all-subscribers", "--since", later)
        assert none.returncode == 1 and "nothing to replay" in none.stderr
        # Looking and finding nothing is an answer: exit 0, said plainly.
        looked_none = await run_cli(*base, "--all-subscribers", "--since", later, "--dry-run")
        assert looked_none.returncode == 0, looked_none.stderr
        assert looked_none.stdout.strip() == "would re-queue 0 deliveries: no delivery matches"
        refused = await run_cli(*base, "--all-subscribers")  # 14 > 10, and no terminal to ask on
        assert refused.returncode == 2 and "add --yes" in refused.stderr
        assert len(sink.requests) == 14
        done = await run_cli(*base, "--subscriber", "pf-10", "--until", later, "--yes")
        assert done.stdout.strip() == "re-queued 7 deliveries: PF-10 7", done.stderr
        await sink.wait_for(lambda r: len(r) == 21)
    assert sum(r.path == "/pf-10" for r in sink.requests) == 14


async def test_status_watch_redraws_until_ctrl_c(tmp_path: Path, relay_db: str, sink: Sink) -> None:
    config = _config(tmp_path, relay_db, sink, ["PF-10"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    watch = subprocess.Popen(  # noqa: ASYNC220 - read from a thread below
        [sys.executable, "-m", "relay", "status", "--config", str(config), "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        # Two redraws of the table, each under a title with the time and the interval, without a
        # restart (the screen-clearing escape is only for a terminal: click strips it from a pipe).
        for _ in range(2):
            title = await asyncio.wait_for(_line_with(watch, "it-relay status at "), 30 * PATIENCE)
            assert re.fullmatch(
                r"it-relay status at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, every 2 s \(Ctrl-C ends\)\n", title
            )
            line = await asyncio.wait_for(_line_with(watch, "subscriber state"), 30 * PATIENCE)
            assert "\x1b" not in line
        watch.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(watch.wait, 30 * PATIENCE)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert code == 0
    assert watch.stderr is not None and "Traceback" not in watch.stderr.read().decode()
