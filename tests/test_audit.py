"""Every operator action is on record (issue 26, §5): pause and resume with a reason, replay,
backfill, release, republish and dismiss each write one it_relay.audit row in their own
transaction, `audit list` shows them, `deliveries show` tells an event's story with them, and a
dismissed rejection leaves the default list. Against a real PostgreSQL and a real subscriber."""

from __future__ import annotations

import getpass
import json
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from relay import codec, journal
from relay.contracts.examples import example
from tests.support.cli import run_cli
from tests.support.relay import relay_settings, running, wait_for_rows, write_config
from tests.support.sink import Reply, Sink

HOLD = {"FA": {"ordering": "entity", "on_exhausted": "hold"}}
WHO = f"{getpass.getuser()}@{socket.gethostname()}"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


async def _audit(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM it_relay.audit ORDER BY id")
    return [dict(r) for r in rows]


async def test_every_operator_action_writes_one_record(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(410, body=b"gone"))
    settings = relay_settings(relay_db, sink, ["FA", "PF-10", "HR"], subscriber_overrides=HOLD)
    config = str(write_config(tmp_path / "relay.toml", settings))
    asset = str(uuid4())
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    role = await db.fetchval("SELECT session_user")
    async with running(settings):
        # FA's first event for the asset goes dead (410) and holds the second.
        head = str(await journal.publish(db, example("it_asset_purchased") | {"asset_id": asset}))
        # Dead before the next is published: a routing racing the head's fall writes its row
        # pending, not held (it waits behind the head all the same).
        await wait_for_rows(
            db,
            "SELECT string_agg(status, ',') FROM it_relay.deliveries WHERE subscriber = 'FA'",
            lambda v: v == "dead",
        )
        held = str(await journal.publish(db, example("it_asset_purchased") | {"asset_id": asset}))
        await wait_for_rows(
            db,
            "SELECT string_agg(status, ',' ORDER BY seq) FROM it_relay.deliveries WHERE subscriber = 'FA'",
            lambda v: v == "dead,held",
        )
        acts = [
            ["subscribers", "pause", "PF-10", "--reason", "  vendor maintenance, ticket CHG-7  "],
            ["subscribers", "resume", "pf-10"],
            ["release", "--subscriber", "FA", "--entity", f"asset_id:{asset}"],
            ["replay", "--event-id", head, "--subscriber", "FA"],
            ["backfill", "--subscriber", "HR", "--since", since],
        ]
        for args in acts:
            done = await run_cli(*args, "--config", config)
            assert done.returncode == 0, (args, done.stderr)
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE subscriber = 'FA' AND status = 'delivered'",
            lambda v: v == 2,
        )
        shown = await run_cli("deliveries", "show", head, "--config", config)
    records = await _audit(db)
    assert [r["action"] for r in records] == ["pause", "resume", "release", "replay", "backfill"]
    for r in records:
        assert (r["db_role"], f"{r['os_user']}@{r['host']}") == (role, WHO)
        assert r["at"] > datetime.now(UTC) - timedelta(minutes=10)
    pause, resume, release, replay, backfill = records
    assert (pause["subscriber"], pause["reason"]) == ("PF-10", "vendor maintenance, ticket CHG-7")
    assert (resume["subscriber"], resume["reason"]) == ("PF-10", None)
    assert json.loads(release["arguments"]) == {"subscriber": "FA", "entity": f"asset_id:{asset}"}
    assert release["count"] == 1 and {str(e) for e in release["event_ids"]} == {head, held}
    assert json.loads(replay["arguments"]) == {"event_id": head, "subscriber": "FA"}
    assert (replay["count"], [str(e) for e in replay["event_ids"]]) == (1, [head])
    # HR served from the start: the backfill found nothing to add, and is on record all the same.
    assert (backfill["count"], backfill["event_ids"], backfill["subscriber"]) == (0, [], "HR")
    assert json.loads(backfill["arguments"])["since"].startswith(since[:16])

    # The event's story: the dead attempt, the operator's release and replay, the delivery.
    assert shown.returncode == 0, shown.stderr
    story = shown.stdout.splitlines()
    fa = story.index(next(line for line in story if line.startswith("FA: delivered after 2 attempt(s)")))
    steps = [line.strip() for line in story[fa + 1 :] if not line.startswith("     ")]
    assert re.fullmatch(rf"#1 {STAMP} HTTP 410 in \d+ms", steps[0]), steps
    assert re.fullmatch(rf"released by {re.escape(WHO)} \({role}\) at {STAMP}", steps[1]), steps
    assert re.fullmatch(rf"replayed by {re.escape(WHO)} \({role}\) at {STAMP}", steps[2]), steps
    assert re.fullmatch(rf"#2 {STAMP} HTTP 200 in \d+ms", steps[3]), steps

    listed = await run_cli("audit", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "at", "action", "by", "subscriber", "count", "arguments;", "reason"]
    assert [line.split()[4] for line in lines[1:]] == ["backfill", "replay", "release", "resume", "pause"]
    assert lines[-1].endswith("PF-10           -  vendor maintenance, ticket CHG-7")
    assert f"--event-id {head} --subscriber FA" in lines[2]
    as_json = await run_cli("audit", "list", "--config", config, "--json", "--limit", "2")
    newest = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["action"] for e in newest] == ["backfill", "replay"]
    assert newest[1]["event_ids"] == [head] and newest[1]["db_role"] == role
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await run_cli("audit", "list", "--config", config, "--since", later)).stdout.count("\n") == 1


async def test_a_rejection_is_dismissed_or_republished_on_record(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"])
    config = str(write_config(tmp_path / "relay.toml", settings))
    bad = example("it_ticket_created") | {"priority": "urgent"}
    async with running(settings):
        fixable = str(await journal.publish(db, bad))
        junk = str(await journal.publish(db, bad | {"subject": "junk"}))
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 2)
        ids = {
            str(r["event_id"]): r["id"]
            for r in await db.fetch("SELECT id, event_id FROM it_relay.rejected_events")
        }
        dismissed = await run_cli(
            "rejections", "dismiss", str(ids[junk]), "--reason", "test traffic", "--config", config
        )
        assert dismissed.returncode == 0, dismissed.stderr
        assert (
            dismissed.stdout.strip() == f"rejection {ids[junk]} dismissed (`rejections list --all` shows it)"
        )
        again = await run_cli("rejections", "dismiss", junk, "--config", config)
        assert (
            again.returncode == 1 and f"rejection {ids[junk]} was dismissed already, by {WHO}" in again.stderr
        )
        default = await run_cli("rejections", "list", "--config", config)
        assert junk not in default.stdout and fixable in default.stdout
        everything = await run_cli("rejections", "list", "--all", "--config", config)
        assert f"{junk}  " in everything.stdout and "(dismissed)" in everything.stdout

        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(codec.dumps(bad | {"priority": "high"}))
        republished = await run_cli(
            "rejections", "republish", fixable, "--file", str(fixed), "--config", config
        )
        assert republished.returncode == 0, republished.stderr
        await sink.wait_for(lambda r: len(r) == 1)
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 1
        )
        late = await run_cli("rejections", "dismiss", str(ids[fixable]), "--config", config)
        assert late.returncode == 1 and f"was republished as {fixable}: nothing to dismiss" in late.stderr
        shown = await run_cli("deliveries", "show", fixable, "--config", config)
        as_json = await run_cli("deliveries", "show", fixable, "--config", config, "--json")
    dismiss, republish = await _audit(db)
    assert (dismiss["action"], dismiss["reason"], dismiss["count"]) == ("dismiss", "test traffic", 1)
    assert [str(e) for e in dismiss["event_ids"]] == [junk]
    assert (republish["action"], [str(e) for e in republish["event_ids"]]) == ("republish", [fixable])
    assert json.loads(republish["arguments"]) == {"id": ids[fixable], "file": str(fixed)}
    # The story ends with the delivery, the rejection shown resolved by whom.
    story = shown.stdout.splitlines()
    rejected = next(i for i, line in enumerate(story) if line.startswith("rejected "))
    assert story[rejected + 1].startswith(f"  resolved: republished by {WHO} (")
    assert story[rejected + 1].endswith(f", as {fixable}")
    assert story[-1].startswith("  #1 ") and "HTTP 200" in story[-1]
    journey = json.loads(as_json.stdout)
    assert journey["rejection"]["resolved_event_id"] == fixable
    assert [a["action"] for a in journey["audit"]] == ["republish"]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("", "--reason: give one line of printable text"),
        ("two\nlines", "--reason: give one line of printable text"),
        ("nul\x00byte", "--reason: give one line of printable text"),
        ("escape\x1b[31m", "--reason: give one line of printable text"),
        ("x" * 501, "at most 500 characters"),
        ("surrogate \udcff", "--reason: give one line of printable text"),
    ],
)
async def test_a_hostile_reason_is_a_one_line_error_and_nothing_is_done(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink, reason: str, message: str
) -> None:
    config = str(write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10"])))
    result = await run_cli("subscribers", "pause", "PF-10", "--reason", reason, "--config", config)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert await db.fetchval("SELECT count(*) FROM it_relay.audit") == 0
    assert await db.fetchval("SELECT count(*) FROM it_relay.subscriber_state") == 0


async def test_a_licence_key_in_a_reason_is_not_kept(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = str(write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10"])))
    result = await run_cli(
        "subscribers",
        "pause",
        "PF-10",
        "--reason",
        "vendor sent license_key=LIC-RAW-7Q2W-9Z",
        "--config",
        config,
    )
    assert result.returncode == 0, result.stderr
    kept = await db.fetchval("SELECT reason FROM it_relay.audit")
    assert "LIC-RAW-7Q2W-9Z" not in kept and kept.startswith("vendor sent license_key=")
    listed = await run_cli("audit", "list", "--config", config)
    assert "LIC-RAW-7Q2W-9Z" not in listed.stdout


async def test_a_filtered_subscribers_backfill_goes_through_its_filter_and_is_on_record(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        for severity in ("critical", "low"):
            await journal.publish(db, example("it_security_incident_created") | {"severity": severity})
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.events WHERE status = 'routed'", lambda v: v == 2
        )
    only_critical = {"GR": {"filter": {"severity": {"$in": ["critical"]}}}}
    config = write_config(
        tmp_path / "relay.toml",
        relay_settings(relay_db, sink, ["PF-10", "GR"], subscriber_overrides=only_critical),
    )
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    done = await run_cli("backfill", "--subscriber", "GR", "--since", since, "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "created 1 deliveries for GR: it_security_incident_created 1 (1 left out by its filter)"
    )
    # Nothing runs to deliver them yet: said so.
    assert "warning: no relay instance is alive: GR's deliveries wait until one runs" in done.stderr
    (record,) = await _audit(db)
    delivered_to_gr = await db.fetchval("SELECT event_id FROM it_relay.deliveries WHERE subscriber = 'GR'")
    assert (record["action"], record["count"], record["event_ids"]) == ("backfill", 1, [delivered_to_gr])
