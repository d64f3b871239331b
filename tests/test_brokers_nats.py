"""NATS JetStream destinations against the real server (IT_RELAY_TEST_NATS_URL): delivered only on
the stream's PubAck; no stream, a full stream, a server away retried; a retry's duplicate dropped
by Nats-Msg-Id (a relay killed mid-drain stores one copy per event), a replay stored again."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import asyncpg
import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RawStreamMsg, StreamConfig

from relay import broker_routes, codec, journal, operator_queries
from relay.brokers.nats import NatsBroker, NatsDestination
from relay.contracts.examples import example
from relay.request import Target, build
from tests.support.brokers import NATS_ENV, TcpProxy, broker_url, unique, verify, via, write_broker_config
from tests.support.relay import (
    SECRET,
    cli,
    relay_settings,
    running,
    start_relay_process,
    stop_process,
    wait_for_rows,
)
from tests.support.sink import Sink

SUB = "PF-11"  # receives it_report_generated
EVENT = "it_report_generated"
DELIVERED = "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'"
LEASED = "SELECT count(*) FROM it_relay.deliveries WHERE status = 'pending' AND lease_owner IS NOT NULL"


@pytest.fixture
def nats_url() -> str:
    return broker_url(NATS_ENV)


class Js:
    """The test's side of JetStream: the operator's streams, what a consumer reads; cleaned up."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.js: JetStreamContext = client.jetstream()
        self.subject = unique("it-relay-test")  # the first token of this test's subjects
        self._streams: list[str] = []

    async def stream(self, **config: Any) -> str:
        name = unique("IT_RELAY_TEST").replace("-", "_")
        await self.js.add_stream(StreamConfig(name=name, subjects=[f"{self.subject}.>"], **config))
        self._streams.append(name)
        return name

    async def messages(self, stream: str) -> list[RawStreamMsg]:
        state = (await self.js.stream_info(stream)).state
        if not state.messages:
            return []
        return [await self.js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]

    async def cleanup(self) -> None:
        for name in self._streams:
            await self.js.delete_stream(name)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Js]:
    client = await nats.connect(nats_url)
    made = Js(client)
    try:
        yield made
    finally:
        await made.cleanup()
        await client.close()


def broker_subscriber(url: str, js: Js, **more: Any) -> dict[str, Any]:
    return {"url": url, "subject": f"{js.subject}.{{event_type}}.{{subscriber}}", **more}


async def publish(db: asyncpg.Connection, count: int) -> list[str]:
    async with db.transaction():
        return [
            str(await journal.publish(db, example(EVENT) | {"report_run_id": str(uuid4())}))
            for _ in range(count)
        ]


async def delivered(db: asyncpg.Connection, count: int, within: float = 30.0) -> None:
    await wait_for_rows(db, DELIVERED, lambda n: n == count, within)


def ids_of(messages: list[RawStreamMsg]) -> list[str]:
    return [str((m.headers or {})["webhook-id"]) for m in messages]


async def test_replay_is_a_new_generation_returned_by_the_claim(
    relay_db: str, db: asyncpg.Connection
) -> None:
    # The gateway's part of Nats-Msg-Id: a replay increments the delivery's generation, and the
    # claim returns it with the routing values a template names.
    await db.execute(
        "INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, entity_key, status,"
        " routed_at) VALUES ($1, $2, '{}', 'publish', $3, 'report_run_id:r1', 'routed', clock_timestamp())",
        event_id := uuid4(),
        EVENT,
        org := uuid4(),
    )
    # As routing writes it: the entity and journal place copied onto the delivery row.
    await db.execute(
        "INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq)"
        " SELECT event_id, $2, event_type, entity_key, seq FROM it_relay.events WHERE event_id = $1",
        event_id,
        SUB,
    )
    (first,) = await journal.claim_deliveries(db, SUB, "test", 10, 30)
    assert (first.generation, first.entity_key, first.organization_id) == (0, "report_run_id:r1", org)
    await db.execute("UPDATE it_relay.deliveries SET status = 'dead', lease_owner = NULL")
    assert await operator_queries.replay(db, "it_events", operator_queries.Selection(event_id=event_id)) == {
        SUB: 1
    }
    assert await operator_queries.replay(
        db, "it_events", operator_queries.Selection(event_id=event_id), dry_run=True
    ) == {SUB: 1}
    (again,) = await journal.claim_deliveries(db, SUB, "test", 10, 30)
    assert again.generation == 1


@given(st.text(max_size=40))
def test_a_subject_the_relay_accepts_is_one_nats_py_accepts(subject: str) -> None:
    from nats.aio.client import _validate_subject

    if broker_routes.nats_subject_problem(subject) is None:
        _validate_subject(subject, strict=True)


async def test_an_event_whose_subject_renders_unusable_goes_dead_without_a_connection() -> None:
    # Nothing listens on port 9: the answer comes before any connection is tried.
    destination = NatsDestination(
        NatsBroker("nats://relay:Pw0rd-not-shown@127.0.0.1:9"),
        subscriber=SUB,
        subject=broker_routes.parse("it.{entity_key}"),
    )
    request = build(
        Target(name=SUB, url="", secrets=[SECRET]),
        event_id=str(uuid4()),
        event_type=EVENT,
        body=b"{}",
        attempt=1,
        at=datetime.now(UTC),
    )
    answer = await destination.send(request, 5.0, datetime.now(UTC))
    await destination.aclose()
    assert (answer.outcome, answer.status) == ("dead", None)
    assert answer.error is not None and "empty token" in answer.error


@pytest.mark.brokers
async def test_a_consumer_verifies_what_the_stream_acknowledged(
    relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    stream = await js.stream()
    conf = broker_subscriber(nats_url, js, format="cloudevents")
    settings = relay_settings(relay_db, sink, [SUB], subscriber_overrides={SUB: conf})
    async with running(settings):
        ids = await publish(db, 20)
        await delivered(db, 20)
    messages = await js.messages(stream)
    assert sorted(ids_of(messages)) == sorted(ids)
    for message in messages:
        headers = message.headers or {}
        payload = verify(message.data or b"", headers)
        assert payload["event_id"] == headers["webhook-id"] == headers["ce-id"]
        assert headers["Nats-Msg-Id"] == f"{payload['event_id']}:{SUB}:0"
        assert (headers["ce-type"], headers["ce-specversion"]) == (EVENT, "1.0")
        assert headers["content-type"] == "application/json"
        assert message.subject == f"{js.subject}.{EVENT}.{SUB}"
    rows = await db.fetch("SELECT http_status, error FROM it_relay.attempts")
    assert len(rows) == 20 and all(r["http_status"] is None and r["error"] is None for r in rows)


@pytest.mark.brokers
async def test_a_full_stream_refuses_and_every_refused_message_is_retried_until_there_is_room(
    relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    stream = await js.stream(max_msgs=3, discard=DiscardPolicy.NEW)
    settings = relay_settings(
        relay_db,
        sink,
        [SUB],
        subscriber_overrides={SUB: broker_subscriber(nats_url, js)},
        delivery={"retry_schedule_s": [0.2] * 200, "circuit_failure_threshold": 1000},
    )
    async with running(settings):
        ids = await publish(db, 12)
        error = await wait_for_rows(
            db,
            "SELECT max(error) FROM it_relay.attempts WHERE error LIKE '%JetStream refused%'",
            lambda e: e is not None,
        )
        assert "maximum messages exceeded" in error
        assert await db.fetchval(DELIVERED) == 3
        config = (await js.js.stream_info(stream)).config
        config.max_msgs = 100  # room made
        await js.js.update_stream(config)
        await delivered(db, 12)
    assert sorted(ids_of(await js.messages(stream))) == sorted(ids)


@pytest.mark.brokers
async def test_no_stream_is_retried_until_one_captures_the_subject(
    relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    settings = relay_settings(
        relay_db, sink, [SUB], subscriber_overrides={SUB: broker_subscriber(nats_url, js)}
    )
    async with running(settings):
        (event_id,) = await publish(db, 1)
        await wait_for_rows(
            db,
            "SELECT last_error FROM it_relay.deliveries",
            lambda e: e is not None and "no stream captures this subject" in e,
        )
        stream = await js.stream()
        await delivered(db, 1)
    assert ids_of(await js.messages(stream)) == [event_id]


@pytest.mark.brokers
async def test_a_server_that_goes_away_and_comes_back_loses_nothing(
    relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    stream = await js.stream()
    proxy = await TcpProxy("127.0.0.1", urlsplit(nats_url).port or 4222).start()
    settings = relay_settings(
        relay_db,
        sink,
        [SUB],
        subscriber_overrides={SUB: broker_subscriber(via(nats_url, proxy.port), js)},
        delivery={"retry_schedule_s": [0.3] * 100, "circuit_failure_threshold": 1000},
    )
    try:
        async with running(settings):
            first = await publish(db, 5)
            await delivered(db, 5)
            await proxy.stop()
            second = await publish(db, 5)
            await wait_for_rows(
                db, "SELECT count(*) FROM it_relay.attempts WHERE error LIKE 'NATS %'", lambda n: n >= 5
            )
            await proxy.start()
            await delivered(db, 10)
    finally:
        await proxy.stop()
    assert sorted(ids_of(await js.messages(stream))) == sorted(first + second)


@pytest.mark.brokers
@pytest.mark.faults
async def test_a_relay_killed_mid_drain_leaves_one_stored_copy_per_event(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    count = 6000
    stream = await js.stream(duplicate_window=300.0)
    # A short lease: the killed relay's claims (published, their outcome never written) are
    # claimed again soon, and published again under the same Nats-Msg-Id.
    base = relay_settings(relay_db, sink, [], delivery={"lease_s": 5.0, "timeout_s": 2.0})
    # Paused at first, so that every event is routed before the drain starts: a lane that waits
    # on the router between batches holds no claim, and the kill must find claims.
    conf = broker_subscriber(nats_url, js, max_in_flight=64, enabled=False)
    config = write_broker_config(tmp_path / "relay.toml", base, {SUB: conf})
    # Journaled in one statement before the relay starts: a backlog the relay is still draining
    # when it is killed, even on a fast machine.
    await db.execute(
        "SELECT it_relay.publish(jsonb_set($1::jsonb, '{report_run_id}', to_jsonb(gen_random_uuid()::text)))"
        " FROM generate_series(1, $2)",
        codec.dumps(example(EVENT)).decode(),
        count,
    )
    ids = [str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM it_relay.events")]
    proc = start_relay_process(config, tmp_path / "relay.log")
    try:
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.deliveries", lambda n: n == count, 60)
        resumed = await cli("subscribers", "resume", SUB, "--config", str(config))
        assert resumed.returncode == 0, resumed.stderr
        await wait_for_rows(db, DELIVERED, lambda n: n >= 300, 60)
        # Killed while it holds claims (published or about to be, their outcome not written). On a
        # loaded machine the claims seen may all be written before the signal lands: what counts is
        # the leases the dead process left, so kill again (a fresh process) until it left some.
        stale = 0
        for _ in range(5):
            await wait_for_rows(db, LEASED, lambda n: n >= 10, 60)
            await stop_process(proc, signal.SIGKILL)
            assert await db.fetchval(DELIVERED) < count, "killed too late: the drain had ended"
            stale = await db.fetchval(LEASED)
            proc = start_relay_process(config, tmp_path / "relay.log")
            if stale:
                break
        assert stale > 0, "no kill found a claim in flight"
        await delivered(db, count, 120)
    finally:
        await stop_process(proc)
    stored = Counter(str((m.headers or {})["Nats-Msg-Id"]) for m in await js.messages(stream))
    assert set(stored) == {f"{i}:{SUB}:0" for i in ids}
    assert max(stored.values()) == 1
    # The killed relay's claims were claimed again (and published again, dropped as duplicates).
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE attempts > 1") >= stale


@pytest.mark.brokers
async def test_a_replay_is_stored_again(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink, js: Js, nats_url: str
) -> None:
    stream = await js.stream(duplicate_window=300.0)
    conf = broker_subscriber(nats_url, js)
    settings = relay_settings(relay_db, sink, [SUB], subscriber_overrides={SUB: conf})
    config = write_broker_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, []), {SUB: conf})
    async with running(settings):
        (event_id,) = await publish(db, 1)
        await delivered(db, 1)
        replayed = await cli("replay", "--config", str(config), "--event-id", event_id)
        assert replayed.returncode == 0, replayed.stderr
        await wait_for_rows(
            db, "SELECT attempts FROM it_relay.deliveries WHERE status = 'delivered'", lambda n: n == 2
        )
    stored = [str((m.headers or {})["Nats-Msg-Id"]) for m in await js.messages(stream)]
    assert stored == [f"{event_id}:{SUB}:0", f"{event_id}:{SUB}:1"]


@pytest.mark.brokers
async def test_send_test_publishes_a_marked_message_and_fails_without_a_stream(
    tmp_path: Path, relay_db: str, sink: Sink, js: Js, nats_url: str
) -> None:
    base = relay_settings(relay_db, sink, [])
    config = write_broker_config(tmp_path / "relay.toml", base, {SUB: broker_subscriber(nats_url, js)})
    refused = await cli("send-test", "--subscriber", SUB, "--config", str(config))
    assert refused.returncode == 1
    assert "not confirmed" in refused.stdout and "no stream captures this subject" in refused.stdout
    stream = await js.stream()
    sent = await cli("send-test", "--subscriber", SUB, "--config", str(config))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    (message,) = await js.messages(stream)
    headers = message.headers or {}
    assert headers["x-it-test"] == "true"
    verify(message.data or b"", headers)
