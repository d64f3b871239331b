"""RabbitMQ destinations against the real broker (IT_RELAY_TEST_AMQP_URL): delivered only on the
broker's confirm; nacks, returns, channel errors, a broker away and refused credentials retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic

from relay import broker_routes, codec, journal
from relay.brokers.amqp import AmqpBroker, AmqpDestination
from relay.contracts.examples import example
from relay.request import Target, build
from tests.support.brokers import AMQP_ENV, TcpProxy, broker_url, unique, verify, via, write_broker_config
from tests.support.relay import SECRET, cli, relay_settings, running, wait_for_rows
from tests.support.sink import PATIENCE, Sink

SUB = "IT-07"  # receives it_change_implemented
EVENT = "it_change_implemented"
DELIVERED = "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'"


@pytest.fixture
def amqp_url() -> str:
    return broker_url(AMQP_ENV)


class Mq:
    """The test's side of RabbitMQ: what an operator declares, what a consumer reads; cleaned up."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel
        self._exchanges: list[str] = []
        self._queues: list[str] = []

    async def exchange(self, name: str | None = None) -> str:
        name = name or unique("it-relay-test-x")
        await self.channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=False)
        self._exchanges.append(name)
        return name

    async def queue(
        self, exchange: str, pattern: str = "#", arguments: dict[str, Any] | None = None
    ) -> AbstractQueue:
        queue = await self.channel.declare_queue(unique("it-relay-test-q"), arguments=arguments)
        self._queues.append(queue.name)
        await queue.bind(exchange, pattern)
        return queue

    async def take(self, queue: AbstractQueue) -> list[AbstractIncomingMessage]:
        """Every message now in `queue`, acknowledged (room made)."""
        out = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            out.append(message)
        return out

    async def drain(self, queue: AbstractQueue, wanted: set[str]) -> list[AbstractIncomingMessage]:
        """Read `queue` as a consumer does until every id of `wanted` has come."""
        received: list[AbstractIncomingMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30 * PATIENCE
        while not wanted <= {m.message_id for m in received}:
            assert loop.time() < deadline, f"{len(wanted - {m.message_id for m in received})} never came"
            received += await self.take(queue)
            await asyncio.sleep(0.05)
        return received

    async def cleanup(self) -> None:
        for name in self._queues:
            await self.channel.queue_delete(name)
        for name in self._exchanges:
            await self.channel.exchange_delete(name)


@pytest.fixture
async def mq(amqp_url: str) -> AsyncIterator[Mq]:
    connection = await aio_pika.connect(amqp_url)
    made = Mq(connection, await connection.channel())
    try:
        yield made
    finally:
        await made.cleanup()
        await connection.close()


def broker_subscriber(url: str, exchange: str, **more: Any) -> dict[str, Any]:
    return {"url": url, "exchange": exchange, "routing_key": "it.{event_type}.{subscriber}", **more}


async def publish(db: asyncpg.Connection, count: int) -> list[str]:
    async with db.transaction():
        return [
            str(await journal.publish(db, example(EVENT) | {"change_id": str(uuid4())})) for _ in range(count)
        ]


async def delivered(db: asyncpg.Connection, count: int, within: float = 30.0) -> None:
    await wait_for_rows(db, DELIVERED, lambda n: n == count, within)


@given(st.text(max_size=300))
def test_a_routing_key_the_relay_accepts_is_one_the_client_can_send(key: str) -> None:
    if broker_routes.amqp_key_problem(key) is None:
        Basic.Publish(exchange="it.events", routing_key=key).marshal()


async def test_a_routing_key_too_long_for_an_event_goes_dead_without_a_connection() -> None:
    destination = AmqpDestination(
        AmqpBroker("amqp://relay:Pw0rd-not-shown@127.0.0.1:9/"),
        subscriber=SUB,
        exchange="it.events",
        routing_key=broker_routes.parse("k" * 250 + ".{event_type}"),
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
    assert answer.error == "routing_key for this event is longer than 255 bytes"


@pytest.mark.brokers
async def test_a_consumer_verifies_what_the_broker_confirmed(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    queue = await mq.queue(exchange, f"it.{EVENT}.{SUB}")
    settings = relay_settings(
        relay_db, sink, [SUB], subscriber_overrides={SUB: broker_subscriber(amqp_url, exchange)}
    )
    async with running(settings):
        ids = await publish(db, 20)
        await delivered(db, 20)
    messages = await mq.take(queue)
    assert sorted(m.message_id or "" for m in messages) == sorted(ids)
    for message in messages:
        payload = verify(message.body, message.headers)
        assert payload["event_id"] == message.message_id == message.headers["webhook-id"]
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.routing_key == f"it.{EVENT}.{SUB}"
        assert (message.type, message.headers["x-it-event-type"]) == (EVENT, EVENT)
        assert message.headers["x-it-delivery-attempt"] == "1"
    # A broker has no HTTP status: none is recorded, and nothing is reported as an error.
    rows = await db.fetch("SELECT http_status, error FROM it_relay.attempts")
    assert len(rows) == 20 and all(r["http_status"] is None and r["error"] is None for r in rows)


@pytest.mark.brokers
async def test_cloudevents_attributes_follow_the_amqp_binding(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    queue = await mq.queue(exchange)
    routing = "{entity_key}.{organization_id}"
    conf = broker_subscriber(amqp_url, exchange, format="cloudevents", routing_key=routing)
    settings = relay_settings(relay_db, sink, [SUB], subscriber_overrides={SUB: conf})
    async with running(settings):
        (event_id,) = await publish(db, 1)
        await delivered(db, 1)
    (message,) = await mq.take(queue)
    payload = codec.loads(message.body)
    assert message.routing_key == f"change_id:{payload['change_id']}.{payload['organization_id']}"
    headers = message.headers
    assert (headers["cloudEvents_id"], headers["cloudEvents_type"]) == (event_id, EVENT)
    assert headers["cloudEvents_specversion"] == "1.0" and headers["cloudEvents_source"]
    assert not any(str(k).startswith("ce-") for k in headers)
    verify(message.body, headers)


@pytest.mark.brokers
async def test_a_full_queue_nacks_and_every_refused_message_is_retried_until_there_is_room(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    queue = await mq.queue(exchange, arguments={"x-max-length": 3, "x-overflow": "reject-publish"})
    settings = relay_settings(
        relay_db,
        sink,
        [SUB],
        subscriber_overrides={SUB: broker_subscriber(amqp_url, exchange)},
        delivery={"retry_schedule_s": [0.2] * 200, "circuit_failure_threshold": 1000},
    )
    async with running(settings):
        ids = await publish(db, 12)
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.attempts WHERE error LIKE '%nacked by the broker%'",
            lambda n: n > 0,
        )
        assert await db.fetchval(DELIVERED) <= 3
        # A consumer makes room as it reads: the refused messages get in on their retries.
        received = await mq.drain(queue, set(ids))
        await delivered(db, 12)
    assert {m.message_id for m in received} == set(ids)
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE last_error IS NOT NULL") == 0


@pytest.mark.brokers
async def test_an_unroutable_message_is_returned_and_retried_until_a_queue_is_bound(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    settings = relay_settings(
        relay_db, sink, [SUB], subscriber_overrides={SUB: broker_subscriber(amqp_url, exchange)}
    )
    async with running(settings):
        (event_id,) = await publish(db, 1)
        error = await wait_for_rows(
            db, "SELECT last_error FROM it_relay.deliveries", lambda e: e is not None and "unroutable" in e
        )
        assert f"no queue bound to exchange '{exchange}' for routing key 'it.{EVENT}.{SUB}'" in error
        queue = await mq.queue(exchange)
        await delivered(db, 1)
    assert [m.message_id for m in await mq.take(queue)] == [event_id]


@pytest.mark.brokers
async def test_a_missing_exchange_is_a_channel_error_retried_and_spares_other_subscribers(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    missing = unique("it-relay-test-missing")
    good = await mq.exchange()
    queue = await mq.queue(good)
    overrides = {
        "PF-10": broker_subscriber(amqp_url, missing),  # PF-10 also receives it_change_implemented
        SUB: broker_subscriber(amqp_url, good),
    }
    settings = relay_settings(
        relay_db,
        sink,
        ["PF-10", SUB],
        subscriber_overrides=overrides,
        delivery={"retry_schedule_s": [0.2] * 100, "circuit_failure_threshold": 1000},
    )
    async with running(settings):
        ids = await publish(db, 10)
        error = await wait_for_rows(
            db,
            "SELECT max(last_error) FROM it_relay.deliveries WHERE subscriber = 'PF-10'",
            lambda e: e is not None,
        )
        assert f"NOT_FOUND - no exchange '{missing}'" in error
        await wait_for_rows(db, f"{DELIVERED} AND subscriber = $1", lambda n: n == 10, args=[SUB])
        await mq.exchange(missing)
        await mq.queue(missing)
        await delivered(db, 20)
    assert sorted(m.message_id or "" for m in await mq.take(queue)) == sorted(ids)


@pytest.mark.brokers
async def test_a_broker_that_goes_away_and_comes_back_loses_nothing(
    relay_db: str, db: asyncpg.Connection, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    queue = await mq.queue(exchange)
    proxy = await TcpProxy("127.0.0.1", urlsplit(amqp_url).port or 5672).start()
    conf = broker_subscriber(via(amqp_url, proxy.port), exchange)
    settings = relay_settings(
        relay_db,
        sink,
        [SUB],
        subscriber_overrides={SUB: conf},
        delivery={"retry_schedule_s": [0.3] * 100, "circuit_failure_threshold": 1000},
    )
    try:
        async with running(settings):
            first = await publish(db, 5)
            await delivered(db, 5)
            await proxy.stop()
            second = await publish(db, 5)
            await wait_for_rows(
                db,
                "SELECT count(*) FROM it_relay.attempts WHERE error LIKE 'AMQP %' AND error NOT LIKE '%guest:guest%'",
                lambda n: n >= 5,
            )
            await proxy.start()
            await delivered(db, 10)
    finally:
        await proxy.stop()
    assert sorted({m.message_id or "" for m in await mq.take(queue)}) == sorted(first + second)


@pytest.mark.brokers
async def test_refused_credentials_are_retried_masked_everywhere_and_open_the_circuit(
    tmp_path: Path,
    relay_db: str,
    db: asyncpg.Connection,
    sink: Sink,
    mq: Mq,
    amqp_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    exchange = await mq.exchange()
    password = "Wr0ngPassw0rdForTheTest"
    parts = urlsplit(amqp_url)
    netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{parts.port or 5672}"
    bad = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    settings = relay_settings(
        relay_db,
        sink,
        [SUB],
        subscriber_overrides={SUB: broker_subscriber(bad, exchange)},
        delivery={"retry_schedule_s": [0.2] * 50, "circuit_failure_threshold": 2, "circuit_cooldown_s": 60},
    )
    config = write_broker_config(
        tmp_path / "relay.toml",
        relay_settings(relay_db, sink, []),
        {SUB: broker_subscriber(bad, exchange)},
    )
    async with running(settings):
        await publish(db, 3)
        await wait_for_rows(
            db,
            "SELECT circuit FROM it_relay.subscriber_state WHERE subscriber = $1",
            lambda c: c == "open",
            args=[SUB],
        )
    logged = capfd.readouterr().err
    assert "broker connection failed" in logged and "circuit opened" in logged
    error = await db.fetchval("SELECT max(last_error) FROM it_relay.deliveries")
    assert "authentication refused" in error
    shown = [
        logged,
        error,
        json.dumps([dict(r) for r in await db.fetch("SELECT error FROM it_relay.attempts")]),
        (await cli("status", "--json", "--config", str(config))).stdout,
        (await cli("check-config", "--config", str(config))).stdout,
        (await cli("send-test", "--subscriber", SUB, "--config", str(config))).stdout,
    ]
    assert all(password not in text for text in shown)
    assert "***" in shown[4]


@pytest.mark.brokers
async def test_send_test_publishes_a_marked_message_and_fails_on_no_confirm(
    tmp_path: Path, relay_db: str, sink: Sink, mq: Mq, amqp_url: str
) -> None:
    exchange = await mq.exchange()
    queue = await mq.queue(exchange)
    base = relay_settings(relay_db, sink, [])
    config = write_broker_config(tmp_path / "ok.toml", base, {SUB: broker_subscriber(amqp_url, exchange)})
    sent = await cli("send-test", "--subscriber", SUB, "--config", str(config))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "confirmed by the broker" in sent.stdout
    (message,) = await mq.take(queue)
    assert message.headers["x-it-test"] == "true"
    assert codec.loads(message.body)["event_id"] == message.message_id
    verify(message.body, message.headers)
    missing = unique("it-relay-test-missing")
    config = write_broker_config(tmp_path / "bad.toml", base, {SUB: broker_subscriber(amqp_url, missing)})
    refused = await cli("send-test", "--subscriber", SUB, "--config", str(config))
    assert refused.returncode == 1
    assert "not confirmed" in refused.stdout and f"no exchange '{missing}'" in refused.stdout
    assert "Traceback" not in refused.stderr
