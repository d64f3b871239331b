"""Per-subscriber policy end to end, on PostgreSQL with real subscribers: a filter per operator
through routing (and backfill, republish and `filters test` honouring it), each subscriber's own
retry schedule and retryable statuses, static headers received and masked everywhere."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from relay import codec, database, journal, operator_queries
from relay.contracts.examples import example
from relay.gateway import Gateway
from relay.metrics import Metrics
from relay.router import Router
from relay.settings import SubscriberSettings, load_settings
from tests.support.cli import run_cli
from tests.support.relay import SECRET, relay_settings, running, wait_for_rows, write_config
from tests.support.sink import Reply, Sink
from tests.test_loops_twin import Relay, make_relay

__all__ = ["make_relay"]  # the twin's fixture, shared with tests/test_loops_twin.py

INCIDENT = example("it_security_incident_created")
VULNERABILITY = example("it_critical_vulnerability_detected")
# Four events GR is routed, each with its own values for the fields the filters look at.
EVENTS = {
    "critical-incident": INCIDENT | {"severity": "critical", "incident_number": "SEC-1"},
    "low-incident": {k: v for k, v in INCIDENT.items() if k != "site_id"}
    | {"severity": "low", "incident_number": "INC-22"},
    "high-vuln": VULNERABILITY | {"severity": "high", "cvss_score": Decimal("9.8"), "cve_id": "CVE-2026-1"},
    "medium-vuln": VULNERABILITY
    | {"severity": "medium", "cvss_score": Decimal("5.0"), "remediation_available": False, "cve_id": None},
}
ALL = set(EVENTS)


@pytest.fixture
async def gateway(relay_db: str) -> AsyncIterator[Gateway]:
    pool = await database.create_pool(load_settings(None, database={"url": relay_db}).database)
    try:
        yield Gateway(pool)
    finally:
        await pool.close()


CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("implicit", {"severity": "critical"}, {"critical-incident"}),
    ("$eq", {"incident_number": {"$eq": "SEC-1"}}, {"critical-incident"}),
    ("$neq", {"severity": {"$neq": "critical"}}, ALL - {"critical-incident"}),
    ("$gt", {"cvss_score": {"$gt": 5}}, {"high-vuln"}),
    ("$gte", {"cvss_score": {"$gte": 5}}, {"high-vuln", "medium-vuln"}),
    ("$lt", {"cvss_score": {"$lt": 9.8}}, {"medium-vuln"}),
    ("$lte", {"cvss_score": {"$lte": 9.8}}, {"high-vuln", "medium-vuln"}),
    ("$in", {"severity": {"$in": ["critical", "high"]}}, {"critical-incident", "high-vuln"}),
    ("$nin", {"severity": {"$nin": ["critical", "high"]}}, {"low-incident", "medium-vuln"}),
    ("$startsWith", {"incident_number": {"$startsWith": "SEC-"}}, {"critical-incident"}),
    ("$endsWith", {"incident_number": {"$endsWith": "-22"}}, {"low-incident"}),
    ("$exist", {"site_id": {"$exist": False}}, {"low-incident", "high-vuln", "medium-vuln"}),
    (
        "$and",
        {"$and": [{"severity": {"$in": ["high", "medium"]}}, {"remediation_available": True}]},
        {"high-vuln"},
    ),
    ("$or", {"$or": [{"severity": "low"}, {"cve_id": "CVE-2026-1"}]}, {"low-incident", "high-vuln"}),
    (
        "$not",
        {"$not": {"event_type": "it_critical_vulnerability_detected"}},
        {"critical-incident", "low-incident"},
    ),
    ("array", {"affected_asset_ids": INCIDENT["affected_asset_ids"][0]}, ALL),
]


async def test_a_filter_per_operator_decides_which_events_get_a_delivery(
    gateway: Gateway, db: asyncpg.Connection
) -> None:
    metrics = Metrics()
    router = Router(
        store=gateway, metrics=metrics, unknown_fields="keep", configured=[], on_routed=lambda _: None
    )
    dropped = 0
    for name, condition, expected in CASES:
        subscribers = {"GR": SubscriberSettings(url="http://gr.invalid/", secret=SECRET, filter=condition)}
        router.serve(subscribers)
        ids = {key: await journal.publish(db, payload) for key, payload in EVENTS.items()}
        while await router.route_batch():
            pass
        got = await db.fetch(
            "SELECT event_id FROM it_relay.deliveries WHERE subscriber = 'GR' AND event_id = ANY($1::uuid[])",
            list(ids.values()),
        )
        passed = {key for key, event_id in ids.items() if event_id in {r["event_id"] for r in got}}
        assert passed == expected, name
        # Routed all the same (PF-10 is not served here: no row for it either).
        statuses = await db.fetch(
            "SELECT status FROM it_relay.events WHERE event_id = ANY($1::uuid[])", list(ids.values())
        )
        assert {r["status"] for r in statuses} == {"routed"}, name
        dropped += len(ALL - expected)
    assert (
        metrics.registry.get_sample_value("it_relay_events_filtered_total", {"subscriber": "GR"}) == dropped
    )


async def test_gr_gets_only_critical_and_high_incidents_backfill_and_republish_too(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    gr = {"filter": {"severity": {"$in": ["critical", "high"]}}}
    settings = relay_settings(relay_db, sink, ["GR", "PF-10"], subscriber_overrides={"GR": gr})
    async with running(settings) as daemon:
        ids = {key: str(await journal.publish(db, payload)) for key, payload in EVENTS.items()}
        # PF-10 gets all four; GR the two critical or high ones.
        await sink.wait_for(lambda r: len(r) == 6)
        # A rejected event, corrected and republished, is routed through the filter too.
        raw = codec.dumps(INCIDENT | {"severity": "critical", "incident_number": None}).decode()
        await db.execute("SELECT pg_notify('it_events', $1)", raw)
        rejection = await wait_for_rows(
            db, "SELECT id FROM it_relay.rejected_events", lambda v: v is not None
        )
        fixed = tmp_path / "fixed.json"
        fixed.write_text(codec.dumps(json.loads(raw) | {"incident_number": "SEC-9"}).decode())
        config = write_config(tmp_path / "relay.toml", settings)
        republished = await run_cli(
            "rejections", "republish", str(rejection), "--file", str(fixed), "--config", str(config)
        )
        assert republished.returncode == 0, republished.stderr
        await sink.wait_for(lambda r: len(r) == 8)
        filtered = daemon.metrics.registry.get_sample_value(
            "it_relay_events_filtered_total", {"subscriber": "GR"}
        )
    assert {r.headers["webhook-id"] for r in sink.at("/gr")} >= {ids["critical-incident"], ids["high-vuln"]}
    assert {json.loads(r.body)["severity"] for r in sink.at("/gr")} == {"critical", "high"}
    assert filtered == 2
    # Replay re-queues the rows there are: none was created for what the filter dropped.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM it_relay.deliveries WHERE subscriber = 'GR' AND event_id = ANY($1::uuid[])",
            [UUID(ids["low-incident"]), UUID(ids["medium-vuln"])],
        )
        == 0
    )
    # A subscriber added later gets, from the journal, only what its filter lets through.
    since = await db.fetchval("SELECT min(created_at) FROM it_relay.events")
    counts, left_out = await operator_queries.backfill_filtered(
        db,
        "it_events",
        subscriber="Audit",
        event_types=["it_security_incident_created", "it_critical_vulnerability_detected"],
        since=since,
        until=None,
        dry_run=True,
        condition={"cvss_score": {"$gte": 9}},
    )
    assert (sum(counts.values()), left_out) == (1, 4)


async def test_filters_test_shows_which_events_of_a_file_would_pass(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        f"[subscribers.GR]\nurl = 'http://gr.invalid/'\nsecret = '{SECRET}'\n"
        "filter = { severity = { '$in' = ['critical', 'high'] } }\n"
    )
    events = tmp_path / "events.jsonl"
    lines = [*EVENTS.values(), example("it_ticket_created"), {"event_type": "it_security_incident_created"}]
    events.write_text("\n".join(codec.dumps(e).decode() for e in lines) + "\n")
    ran = await run_cli("filters", "test", "--subscriber", "gr", str(events), "--config", str(config))
    assert ran.returncode == 1  # one event is invalid
    out = ran.stdout.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "[0] passes",
        "[1] filtered out",
        "[2] passes",
        "[3] filtered out",
        "[4] not routed to GR",
        "[5] invalid (schema)",
    ]
    assert ran.stderr.strip().endswith("GR: 2 pass, 2 filtered, 1 not routed, 1 invalid")
    tried = await run_cli(
        "filters",
        "test",
        "--subscriber",
        "GR",
        str(events),
        "--config",
        str(config),
        "--filter",
        '{"license_key": {"$exist": true}}',
    )
    assert tried.returncode == 2
    assert tried.stderr.strip().splitlines()[-1] == (
        "it-relay: error: --filter: license_key: names a licence key, which is redacted before any filter sees it"
    )


async def test_each_subscriber_retries_on_its_own_schedule_and_statuses(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    # FA's deploys answer 404 for a while: retried, on its own short schedule, then dead.
    # HR's 404 means gone; its 503s follow the default schedule (3 waits) and then succeed.
    sink.script("/fa", Reply(404), Reply(404), Reply(404))
    sink.script("/hr", Reply(503), Reply(503), Reply(503), Reply(200))
    sink.script("/pf-10", Reply(404))
    settings = relay_settings(
        relay_db,
        sink,
        ["FA", "HR", "PF-10"],
        subscriber_overrides={"FA": {"retry_on_status": [404], "retry_schedule_s": [0.5]}},
    )
    async with running(settings):
        purchased = str(await journal.publish(db, example("it_asset_purchased")))  # FA
        assigned = str(await journal.publish(db, example("it_asset_assigned")))  # PF-10 and HR
        fa = f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{purchased}' AND subscriber = 'FA'"
        await wait_for_rows(db, fa, lambda v: v == "dead/2")
        hr = f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{assigned}' AND subscriber = 'HR'"
        await wait_for_rows(db, hr, lambda v: v == "delivered/4")
        pf = f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{assigned}' AND subscriber = 'PF-10'"
        await wait_for_rows(db, pf, lambda v: v == "dead/1")
    first, second = sink.at("/fa")
    assert second.at - first.at >= 0.5 - 0.05
    assert len(sink.at("/fa")) == 2  # FA's schedule has one wait: two attempts, then dead
    # `deliveries show` and `status` say which policy each subscriber's deliveries follow.
    config = write_config(tmp_path / "relay.toml", settings)
    shown = await run_cli("deliveries", "show", purchased, "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = lines.index("policies its deliveries follow (this configuration):")
    assert (
        lines[at + 1] == "  FA: no filter; no rate limit; retried after 500ms (own); 4xx retried: 404 (own)"
    )
    assert lines[at + 2].startswith("FA: dead after 2 attempt(s)")
    status = await run_cli("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert (
        "  FA: no filter; no rate limit; retried after 500ms (own); 4xx retried: 404 (own)" in status.stdout
    )
    assert (
        "  HR: no filter; no rate limit; retried after 300ms, 300ms, 300ms (delivery's); "
        "4xx retried: 408, 425, 429 (default)"
    ) in status.stdout
    as_json = await run_cli("status", "--config", str(config), "--json")
    policies = {p["subscriber"]: p for p in json.loads(as_json.stdout)["policies"]}
    assert policies["FA"]["retry_on_status"] == [404] and policies["FA"]["statuses_from"] == "subscriber"


async def test_static_headers_are_received_and_never_stored_or_shown(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "gw-token-8f3a1c9e7b5d4f20"
    (tmp_path / "api.key").write_text("key-from-a-file-77aa\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "tenant").write_text("tenant-credential-31\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    headers = {
        "headers": {"Authorization": f"Bearer {token}"},
        "headers_file": {"X-Api-Key": str(tmp_path / "api.key")},
        "headers_credential": {"X-Tenant-Token": "tenant"},
    }
    # The gateway answers 502 and echoes what it was sent, the token among it.
    sink.script(
        "/fa",
        Reply(502, body=f'{{"error": "bad upstream", "auth": "Bearer {token}", "raw": "{token}"}}'.encode()),
    )
    settings = relay_settings(relay_db, sink, ["FA"], subscriber_overrides={"FA": headers})
    async with running(settings):
        event_id = str(await journal.publish(db, example("it_asset_purchased")))
        await wait_for_rows(
            db,
            f"SELECT status FROM it_relay.deliveries WHERE event_id = '{event_id}'",
            lambda v: v == "delivered",
        )
    first, second = sink.at("/fa")
    for received in (first, second):
        assert received.headers["authorization"] == f"Bearer {token}"
        assert received.headers["x-api-key"] == "key-from-a-file-77aa"
        assert received.headers["x-tenant-token"] == "tenant-credential-31"
        assert received.headers["webhook-id"] == event_id  # the relay's own headers are untouched
    stored = await db.fetchval(
        "SELECT string_agg(coalesce(error, '') || coalesce(response_excerpt, ''), ' ') FROM it_relay.attempts"
    )
    assert "bad upstream" in stored and token not in stored
    # check-config shows them masked.
    config = tmp_path / "relay.toml"
    config.write_text(
        f"[subscribers.FA]\nurl = 'http://fa.invalid/'\nsecret = '{SECRET}'\n"
        f"headers = {{ Authorization = 'Bearer {token}' }}\n"
        f"headers_file = {{ X-Api-Key = '{tmp_path / 'api.key'}' }}\n"
    )
    shown = await run_cli("check-config", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    fa = json.loads(shown.stdout)["subscribers"]["FA"]
    assert fa["headers"] == {"Authorization": "**********"}
    assert token not in shown.stdout and "key-from-a-file" not in shown.stdout
    # `status` names the headers a subscriber's requests carry, never their values.
    status = await run_cli("status", "--config", str(write_config(tmp_path / "relay2.toml", settings)))
    assert "headers Authorization, X-Api-Key, X-Tenant-Token" in status.stdout
    assert token not in status.stdout and "tenant-credential" not in status.stdout


async def test_a_reload_swaps_every_policy_value_on_the_lane_and_the_router(make_relay: Any) -> None:
    relay: Relay = await make_relay()
    lane = relay.dispatcher.lanes["FA"]
    assert lane.limiter is None and lane.filter is None
    assert lane.policy.retry_on_status == frozenset({408, 425, 429})

    def conf(**policy: Any) -> SubscriberSettings:
        return SubscriberSettings.model_validate({"url": "http://fa.invalid/hook", "secret": SECRET} | policy)

    reloaded = conf(
        rate_limit_per_s=5,
        retry_on_status=[404],
        retry_schedule_s=[1, 2],
        headers={"Authorization": "Bearer reloaded-token"},
        filter={"asset_tag": {"$startsWith": "KEEP"}},
    )
    relay.dispatcher.reconfigure({"FA": reloaded}, {"FA": relay.destination})
    relay.router.serve({"FA": reloaded})
    limiter = lane.limiter
    assert limiter is not None and limiter.rate_per_s == 5
    assert lane.policy.retry_on_status == frozenset({404})
    assert list(lane.policy.schedule_s) == [1.0, 2.0]
    assert lane.target.headers == {"Authorization": "Bearer reloaded-token"}
    assert lane.filter == {"asset_tag": {"$startsWith": "KEEP"}}
    # Routing follows the new filter at once.
    await relay.publish(1, tag="DROP")
    kept = await relay.publish(1, tag="KEEP")
    assert [k[0] for k in relay.twin.deliveries] == kept
    # A later reload keeps the limiter (and a hold it may be under), with the new rate...
    relay.dispatcher.reconfigure({"FA": conf(rate_limit_per_s=7)}, {"FA": relay.destination})
    assert lane.limiter is limiter and limiter.rate_per_s == 7
    # ... and one without the key removes it: the lane sends straight to its destination again.
    relay.dispatcher.reconfigure({"FA": conf()}, {"FA": relay.destination})
    unlimited = relay.dispatcher.lanes["FA"]
    assert unlimited.limiter is None and unlimited.filter is None
    assert unlimited.destination is relay.destination


async def test_filters_test_takes_hostile_input_with_one_line_answers(tmp_path: Path) -> None:
    events = tmp_path / "hostile.jsonl"
    deep = "[" * 5000 + "]" * 5000
    events.write_bytes(b"\xff\xfe{not json\n" + deep.encode() + b"\n" + b'"license_key=ABCD-1234"\n')
    ran = await run_cli(
        "filters", "test", "--subscriber", "GR", str(events), "--filter", '{"severity": "high"}'
    )
    assert ran.returncode == 1 and "Traceback" not in ran.stdout + ran.stderr
    assert "ABCD-1234" not in ran.stdout + ran.stderr
    assert [line.split(" ")[1] for line in ran.stdout.splitlines()] == ["invalid"] * 3
    for given, error in (
        ("{not json", "--filter: not JSON"),
        ('{"severity": {"$regex": "h.*"}}', "--filter: severity.$regex: unknown operator"),
        ('["severity"]', "--filter: a filter is a table of conditions"),
    ):
        refused = await run_cli("filters", "test", "--subscriber", "GR", str(events), "--filter", given)
        assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
            f"it-relay: error: {error}"
        ), refused.stderr
    unknown = await run_cli("filters", "test", "--subscriber", "GR-99", str(events))
    assert unknown.returncode == 2 and "--subscriber 'GR-99': not a subscriber" in unknown.stderr
