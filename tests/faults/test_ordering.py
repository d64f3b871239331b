"""Per-entity order, end to end: real PostgreSQL, a real subscriber that fails at random, two relay
instances of which one is killed mid-run. For every entity, the first successful delivery of each
event follows journal order, and no entity ever has two requests in flight."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import codec, journal
from relay.contracts.examples import example
from tests.support.postgres import fresh_name, upgraded, with_database
from tests.support.relay import (
    relay_settings,
    running,
    start_relay_process,
    stop_process,
    wait_for_rows,
    write_config,
)
from tests.support.sink import Sink

pytestmark = pytest.mark.faults

# What the subscriber answers an event's attempts with before it accepts it (410: gone, dead).
FAILURES = [(503, {}), (500, {}), (429, {"retry-after": "1"}), (410, {})]


@dataclass
class Subscriber:
    """Answers from a plan per event; records each entity's requests in flight and what it accepted."""

    plan: dict[str, list[int]]
    open: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    overlaps: list[str] = field(default_factory=list)
    accepted: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        entity = request.headers.get("x-it-entity-key", "")
        event_id = request.headers["webhook-id"]
        self.requests += 1
        self.open[entity] += 1
        if self.open[entity] > 1:
            self.overlaps.append(entity)
        try:
            await asyncio.sleep(random.uniform(0, 0.02))
            steps = self.plan.get(event_id, [])
            if steps:
                status, headers = FAILURES[steps.pop(0)]
                return web.Response(status=status, headers=headers)
            sequence = int(request.headers["x-it-entity-sequence"])
            if event_id not in {e for _, e in self.accepted[entity]}:
                self.accepted[entity].append((sequence, event_id))
            assert codec.loads(body)["event_id"] == event_id
            return web.Response(status=200)
        finally:
            self.open[entity] -= 1


@pytest.fixture
async def subscriber_server() -> AsyncIterator[tuple[Subscriber, int]]:
    sub = Subscriber({})
    app = web.Application()
    app.router.add_post("/fa", sub.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield sub, int(site.name.rsplit(":", 1)[1])
    await runner.cleanup()


async def fresh_relay_db(server: str) -> str:
    name = fresh_name()
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return await upgraded(with_database(server, name))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), entities=st.integers(3, 8), events=st.integers(20, 40))
async def test_order_holds_per_entity_across_two_instances_one_killed(
    pg_server_url: str,
    subscriber_server: tuple[Subscriber, int],
    tmp_path: Path,
    seed: int,
    entities: int,
    events: int,
) -> None:
    rng = random.Random(seed)
    sub, port = subscriber_server
    sub.plan.clear()
    sub.accepted.clear()
    sub.overlaps.clear()
    url = await fresh_relay_db(pg_server_url)
    sink = Sink()  # only for relay_settings' URLs; FA is pointed at the subscriber above
    overrides = {
        "FA": {
            "url": f"http://127.0.0.1:{port}/fa",
            "ordering": "entity",
            "on_exhausted": "skip",
            "max_in_flight": 4,
        }
    }
    delivery = {
        "retry_schedule_s": [0.05, 0.1, 0.1, 0.1],
        "inprocess_retries": 0,
        "lease_s": 3.0,
        "timeout_s": 1.0,
    }
    config = relay_settings(url, sink, ["FA"], subscriber_overrides=overrides, delivery=delivery)
    db = await asyncpg.connect(url)
    other = start_relay_process(
        write_config(tmp_path / f"relay-{seed}.toml", config), tmp_path / f"relay-{seed}.log"
    )
    try:
        async with running(config):
            assets = [str(uuid4()) for _ in range(entities)]
            producers = [await asyncpg.connect(url) for _ in range(3)]
            published: list[str] = []

            async def produce(conn: asyncpg.Connection, share: list[int]) -> None:
                for i in share:
                    event_id = str(uuid4())
                    # Mostly retried and delivered; now and then gone for good (dead: skipped).
                    sub.plan[event_id] = [rng.randrange(3) for _ in range(rng.choice([0, 0, 1, 2]))]
                    if rng.random() < 0.05:
                        sub.plan[event_id].append(3)
                    payload = example("it_asset_purchased") | {
                        "event_id": event_id,
                        "asset_id": assets[rng.randrange(entities)],
                        "asset_tag": f"T-{i}",
                    }
                    await journal.publish(conn, payload)
                    published.append(event_id)

            shares = [list(range(k, events, 3)) for k in range(3)]
            await asyncio.gather(*(produce(c, s) for c, s in zip(producers, shares, strict=True)))
            for conn in producers:
                await conn.close()
            # Mid-run, the other instance dies without a word: its leases expire, this one goes on.
            await wait_for_rows(
                db,
                "SELECT count(*) FROM it_relay.deliveries WHERE status <> 'pending'",
                lambda v: v >= events // 3,
            )
            await stop_process(other, signal.SIGKILL)
            await wait_for_rows(
                db,
                "SELECT count(*) FROM it_relay.deliveries WHERE status IN ('delivered', 'dead')",
                lambda v: v == events,
                within=90,
            )
        rows = await db.fetch(
            "SELECT d.event_id::text, d.status, e.seq, e.entity_key FROM it_relay.deliveries d "
            "JOIN it_relay.events e USING (event_id)"
        )
    finally:
        if other.poll() is None:
            await stop_process(other, signal.SIGKILL)
        await db.close()
    assert sub.overlaps == [], f"two requests in flight for {set(sub.overlaps)}"
    delivered = {r["event_id"]: r for r in rows if r["status"] == "delivered"}
    for entity, accepted in sub.accepted.items():
        sequences = [s for s, _ in accepted]
        assert sequences == sorted(sequences), f"{entity} accepted out of journal order"
        expected = sorted((r["seq"], r["event_id"]) for r in delivered.values() if r["entity_key"] == entity)
        assert accepted == expected, entity
    assert {r["event_id"] for r in rows} == set(published)
