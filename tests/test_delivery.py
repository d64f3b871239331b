"""End to end on a real PostgreSQL and real local HTTP subscribers: routing, signing, retries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
from standardwebhooks import Webhook

from relay import codec, journal
from relay.contracts import EVENT_TYPES, REGISTRY
from relay.contracts.examples import all_examples, example
from tests.support.relay import OLD_SECRET, SECRET, path_of, relay_settings, running, wait_for_rows
from tests.support.sink import Reply, Sink


async def publish(db: asyncpg.Connection, payload: dict[str, object]) -> str:
    return str(await journal.publish(db, payload))


def status_of(db: asyncpg.Connection, event_id: str, subscriber: str) -> str:
    return f"SELECT status || '/' || attempts FROM it_relay.deliveries WHERE event_id = '{event_id}' AND subscriber = '{subscriber}'"


async def test_each_event_reaches_exactly_its_contract_subscribers(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    expected = sum(len(c.subscribers) for c in REGISTRY.values())
    async with running(relay_settings(relay_db, sink)):
        ids = {await publish(db, p): p["event_type"] for p in all_examples()}
        # Every outcome written; leaving the block stops the daemon, so nothing more can arrive.
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v >= expected,
            within=30,
        )
    assert len(sink.requests) == expected
    for event_type in EVENT_TYPES:
        got = sorted(r.path for r in sink.requests if r.headers["x-it-event-type"] == event_type)
        assert got == sorted(path_of(s) for s in REGISTRY[event_type].subscribers), event_type
    assert {r.headers["webhook-id"] for r in sink.requests} == set(ids)
    assert (
        await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'") == expected
    )


async def test_body_is_the_redacted_payload_plus_event_id_and_verifies(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    payload = example("it_license_created") | {"license_key": "ABCD-EFGH-RAW"}
    async with running(relay_settings(relay_db, sink, ["FA"])):
        event_id = await publish(db, payload)
        await sink.wait_for(lambda r: len(r) == 1)
    request = sink.requests[0]
    body = Webhook(SECRET).verify(request.body, request.headers)
    assert body["event_id"] == event_id
    assert body["license_key"] == "[REDACTED]"
    assert b"ABCD-EFGH-RAW" not in request.body
    assert body["total_cost"] == 775.00
    assert b'"total_cost":775.00' in request.body.replace(b" ", b"")
    assert {k: v for k, v in body.items() if k not in ("event_id", "license_key")} == json.loads(
        codec.dumps({k: v for k, v in payload.items() if k != "license_key"})
    )
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("it-relay/")
    assert headers["webhook-id"] == event_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    assert headers["x-it-event-type"] == "it_license_created"
    assert headers["x-it-delivery-attempt"] == "1"
    assert "ce-id" not in headers


async def test_rotation_signs_with_every_secret_and_cloudevents_headers(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={
            "FA": {"secret": None, "secrets": [SECRET, OLD_SECRET], "format": "cloudevents"}
        },
    )
    async with running(settings):
        event_id = await publish(db, example("it_asset_purchased"))
        await sink.wait_for(lambda r: len(r) == 1)
    request = sink.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(request.body, request.headers)
    Webhook(OLD_SECRET).verify(request.body, request.headers)
    assert request.headers["ce-id"] == event_id
    assert request.headers["ce-type"] == "it_asset_purchased"
    assert request.headers["ce-specversion"] == "1.0"
    assert request.headers["ce-source"] == "urn:it-relay:IT-01"
    assert request.headers["ce-time"].endswith("Z")


async def test_500_then_200_is_delivered_on_the_second_attempt(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(500))
    async with running(relay_settings(relay_db, sink, ["FA"])):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "delivered/2")
    attempts = [r.headers["x-it-delivery-attempt"] for r in sink.at("/fa")]
    assert attempts == ["1", "2"]
    assert {r.headers["webhook-id"] for r in sink.at("/fa")} == {event_id}
    # Each attempt is signed afresh, and both verify.
    for request in sink.at("/fa"):
        Webhook(SECRET).verify(request.body, request.headers)


async def test_in_process_retry_counts_every_attempt(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(503), Reply(502))
    settings = relay_settings(
        relay_db, sink, ["FA"], delivery={"inprocess_retries": 1, "inprocess_retry_wait_s": 0.05}
    )
    async with running(settings):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "delivered/3")
    assert [r.headers["x-it-delivery-attempt"] for r in sink.at("/fa")] == ["1", "2", "3"]
    row = await db.fetchrow("SELECT failed_rounds, last_status FROM it_relay.deliveries")
    assert row is not None
    assert row["failed_rounds"] == 1


async def test_429_retry_after_is_honoured(relay_db: str, db: asyncpg.Connection, sink: Sink) -> None:
    sink.script("/fa", Reply(429, headers={"Retry-After": "2"}))
    async with running(relay_settings(relay_db, sink, ["FA"])):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "delivered/2")
    first, second = sink.at("/fa")
    # The schedule says 0.3 s; the subscriber asked for 2 s.
    assert second.at - first.at >= 1.9


async def test_400_is_dead_at_once_with_the_status_recorded(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(400))
    async with running(relay_settings(relay_db, sink, ["FA"])):
        event_id = await publish(db, example("it_asset_purchased"))
        # Dead is final: no claim can pick the row up again.
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "dead/1")
    row = await db.fetchrow("SELECT last_status, last_error FROM it_relay.deliveries")
    assert row is not None
    assert (row["last_status"], row["last_error"]) == (400, "HTTP 400")
    assert len(sink.at("/fa")) == 1


async def test_retries_exhausted_is_dead(relay_db: str, db: asyncpg.Connection, sink: Sink) -> None:
    sink.script("/fa", *[Reply(503)] * 10)
    async with running(relay_settings(relay_db, sink, ["FA"], delivery={"retry_schedule_s": [0.1, 0.1]})):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "dead/3")
    assert len(sink.at("/fa")) == 3


async def test_a_timeout_is_retried(relay_db: str, db: asyncpg.Connection, sink: Sink) -> None:
    sink.script("/fa", Reply(200, delay_s=3))
    settings = relay_settings(relay_db, sink, ["FA"], subscriber_overrides={"FA": {"timeout_s": 0.5}})
    async with running(settings):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "delivered/2")
    row = await db.fetchrow("SELECT last_error FROM it_relay.deliveries")
    assert row is not None
    assert row["last_error"] is None
    assert len(sink.at("/fa")) == 2


async def test_connection_refused_is_retried_with_the_reason(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={"FA": {"url": "http://127.0.0.1:9/x"}},
        delivery={"retry_schedule_s": [30]},
    )
    async with running(settings):
        event_id = await publish(db, example("it_asset_purchased"))
        await wait_for_rows(db, status_of(db, event_id, "FA"), lambda v: v == "pending/1")
    row = await db.fetchrow(
        "SELECT last_error, last_status, next_attempt_at > now() + interval '20 s' AS later FROM it_relay.deliveries"
    )
    assert row is not None
    assert row["last_status"] is None
    assert row["last_error"]
    assert row["later"]


async def test_events_published_while_no_relay_runs_are_delivered_when_it_starts(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    for i in range(50):
        await publish(db, example("it_ticket_created") | {"ticket_number": f"T-{i}"})
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        await sink.wait_for(lambda r: len(r) >= 50)
    numbers = sorted(json.loads(r.body)["ticket_number"] for r in sink.requests)
    assert numbers == sorted(f"T-{i}" for i in range(50))


async def test_a_slow_subscriber_does_not_delay_another(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", *[Reply(200, delay_s=5)] * 20)
    settings = relay_settings(
        relay_db,
        sink,
        ["FA", "GR"],
        subscriber_overrides={"FA": {"timeout_s": 10, "max_in_flight": 2}},
        delivery={"timeout_s": 10},
    )
    async with running(settings):
        for _ in range(10):
            await publish(db, example("it_asset_disposed") | {"asset_tag": str(uuid.uuid4())})
        # All ten reach GR and are recorded delivered while FA's first two requests still hang:
        # GR never waited behind FA.
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE subscriber = 'GR' AND status = 'delivered'",
            lambda v: v == 10,
        )
        assert (
            await db.fetchval(
                "SELECT count(*) FROM it_relay.deliveries WHERE subscriber = 'FA' AND status = 'delivered'"
            )
            == 0
        )
        assert len(sink.at("/fa")) <= 2


async def test_legacy_notify_is_journaled_and_delivered(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    payload = example("it_ticket_created")
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        await db.execute("SELECT pg_notify('it_events', $1)", codec.dumps(payload).decode())
        await sink.wait_for(lambda r: len(r) == 1)
    body = json.loads(sink.requests[0].body)
    assert uuid.UUID(body["event_id"]).version == 5
    assert sink.requests[0].headers["webhook-id"] == body["event_id"]
    assert await db.fetchval("SELECT source FROM it_relay.events") == "notify"


async def test_legacy_notify_heard_by_two_instances_is_delivered_once(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10", "HR"])
    async with running(settings), running(settings):
        for i in range(20):
            await db.execute(
                "SELECT pg_notify('it_events', $1)",
                codec.dumps(example("it_asset_assigned") | {"asset_tag": f"A-{i}"}).decode(),
            )
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v >= 40
        )
    assert len(sink.requests) == 40
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 20


async def test_bad_notifications_are_rejected_and_the_relay_goes_on(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        for raw in [
            '{"license_key": "RAW-SECRET-1", oops',
            "[1,2]",
            '{"event_type": "it_nope"}',
            codec.dumps(example("it_ticket_created") | {"priority": "urgent"}).decode(),
        ]:
            await db.execute("SELECT pg_notify('it_events', $1)", raw)
        await publish(db, example("it_ticket_created"))
        await sink.wait_for(lambda r: len(r) == 1)
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 4)
    reasons = sorted(r["reason"] for r in await db.fetch("SELECT reason FROM it_relay.rejected_events"))
    assert reasons == ["not_an_object", "not_json", "schema", "unknown_event_type"]
    raw = await db.fetchval("SELECT raw_text FROM it_relay.rejected_events WHERE reason = 'not_json'")
    assert "RAW-SECRET-1" not in raw
    assert "[REDACTED]" in raw
    errors = await db.fetchval("SELECT errors FROM it_relay.rejected_events WHERE reason = 'schema'")
    assert any(e.startswith("priority: Input should be") for e in errors)


async def test_unknown_fields_policy_applies_to_delivery(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["FA"], validation={"unknown_fields": "drop"})):
        await publish(db, example("it_asset_purchased") | {"internal_note": "x"})
        await sink.wait_for(lambda r: len(r) == 1)
    assert "internal_note" not in json.loads(sink.requests[0].body)


async def test_metrics_count_outcomes(relay_db: str, db: asyncpg.Connection, sink: Sink) -> None:
    sink.script("/fa", Reply(500), Reply(400))
    async with running(relay_settings(relay_db, sink, ["FA"])) as daemon:
        ok = await publish(db, example("it_asset_purchased") | {"asset_tag": "B"})
        await publish(db, example("it_asset_purchased") | {"asset_tag": "A"})
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status <> 'pending'", lambda v: v == 2
        )
        sample = daemon.metrics.registry.get_sample_value
        counts = {
            o: sample("it_relay_deliveries_total", {"subscriber": "FA", "outcome": o})
            for o in ("delivered", "retry", "dead")
        }
        received = sample("it_relay_events_received_total", {"source": "publish"})
    assert counts == {"delivered": 1.0, "retry": 1.0, "dead": 1.0}
    assert received == 2
    assert ok


async def test_circuit_opens_for_a_dead_subscriber_without_burning_attempts(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", *[Reply(503)] * 100)
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        delivery={"circuit_failure_threshold": 2, "circuit_cooldown_s": 60, "retry_schedule_s": [0.05] * 20},
    )
    async with running(settings) as daemon:
        # One transaction: the five become due together, so the first claim takes them all (one
        # by one, the first two failures could open the breaker before the rest were published).
        async with db.transaction():
            for i in range(5):
                await publish(db, example("it_asset_purchased") | {"asset_tag": f"C-{i}"})
        # The first claim had all five in flight; they all fail and open the breaker.
        await sink.wait_for(lambda r: len(r) >= 5)
        opened_with = len(sink.requests)
        # Retries are due every 0.05 s, yet nothing is attempted during the cool-down.
        await asyncio.sleep(1.0)
        sample = daemon.metrics.registry.get_sample_value("it_relay_circuit_open", {"subscriber": "FA"})
    assert sample == 1
    assert len(sink.at("/fa")) == opened_with == 5
    assert await db.fetchval("SELECT sum(attempts) FROM it_relay.deliveries") == len(sink.at("/fa"))
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE status = 'pending'") == 5


async def test_retention_prunes_old_delivered_and_dead(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(400))
    async with running(relay_settings(relay_db, sink, ["FA"])):
        dead = await publish(db, example("it_asset_purchased") | {"asset_tag": "dead"})
        done = await publish(db, example("it_asset_purchased") | {"asset_tag": "done"})
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status <> 'pending'", lambda v: v == 2
        )
    await db.execute("UPDATE it_relay.deliveries SET updated_at = now() - interval '8 days'")
    await db.execute("UPDATE it_relay.events SET routed_at = now() - interval '8 days'")
    # 7 days for delivered, 30 for dead: only the delivered one (and its event) goes.
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400):
        pass
    remaining = {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM it_relay.events")}
    assert remaining == {dead}
    assert done not in remaining
    # The attempts history goes with its delivery.
    tried = "SELECT array_agg(DISTINCT event_id::text) FROM it_relay.attempts"
    assert await db.fetchval(tried) == [dead]
    await db.execute("UPDATE it_relay.deliveries SET updated_at = now() - interval '31 days'")
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400):
        pass
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 0
    assert await db.fetchval("SELECT count(*) FROM it_relay.attempts") == 0


async def test_retention_drops_pending_deliveries_of_a_subscriber_no_longer_served(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/hr", Reply(503))
    async with running(
        relay_settings(relay_db, sink, ["PF-10", "HR"], delivery={"retry_schedule_s": [3600]})
    ):
        await publish(db, example("it_asset_assigned"))
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 1
        )
    await db.execute("UPDATE it_relay.deliveries SET created_at = now() - interval '31 days'")
    await db.execute("UPDATE it_relay.events SET routed_at = now() - interval '31 days'")
    # HR is still served: its pending delivery (and so its event) stays.
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400, served=["PF-10", "HR"]):
        pass
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE status = 'pending'") == 1
    # HR removed from the configuration: past the dead-letter retention nobody will deliver it.
    await db.execute("UPDATE it_relay.deliveries SET updated_at = now() - interval '8 days'")
    while await journal.prune(db, 7 * 86400, 30 * 86400, 30 * 86400, served=["PF-10"]):
        pass
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 0


async def test_an_event_too_large_for_notify_is_delivered_whole(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])):
        await publish(db, example("it_ticket_created") | {"description": "d" * 20_000})
        await sink.wait_for(lambda r: len(r) == 1)
    assert json.loads(sink.requests[0].body)["description"] == "d" * 20_000


async def test_circuit_probes_after_the_cooldown_and_closes_on_success(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", *[Reply(503)] * 3)
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={"FA": {"max_in_flight": 1}},
        delivery={"circuit_failure_threshold": 2, "circuit_cooldown_s": 0.5, "retry_schedule_s": [0.05] * 20},
    )
    async with running(settings) as daemon:
        for i in range(3):
            await publish(db, example("it_asset_purchased") | {"asset_tag": f"P-{i}"})
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda v: v == 3
        )
        gauge = daemon.metrics.registry.get_sample_value("it_relay_circuit_open", {"subscriber": "FA"})
    assert gauge == 0
    # Two failures opened it; the probe after the cool-down failed once more and re-opened it;
    # the next probe succeeded and closed it: no attempts were spent while it was open.
    gaps = [b.at - a.at for a, b in zip(sink.requests, sink.requests[1:], strict=False)]
    assert sum(1 for g in gaps if g >= 0.45) >= 2
