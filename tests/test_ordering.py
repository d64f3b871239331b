"""Ordered delivery end to end on PostgreSQL and a real subscriber: hold behind a dead head, the
operator's release and replay, the gauge and the delivery log."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import asyncpg

from relay import codec, journal
from relay.contracts.examples import example
from tests.support.relay import cli, relay_settings, running, wait_for_rows, wait_until, write_config
from tests.support.sink import Reply, Sink

HOLD = {"FA": {"ordering": "entity", "on_exhausted": "hold", "max_in_flight": 8}}


async def publish(db: asyncpg.Connection, asset: str, tag: str) -> str:
    payload = example("it_asset_purchased") | {"asset_id": asset, "asset_tag": tag}
    return str(await journal.publish(db, payload))


def statuses(ids: list[str]) -> str:
    listed = ", ".join(f"'{i}'" for i in ids)
    return (
        "SELECT string_agg(status, ',' ORDER BY seq) FROM it_relay.deliveries "
        f"WHERE subscriber = 'FA' AND event_id IN ({listed})"
    )


async def test_a_dead_head_holds_its_entity_until_released(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(410))
    settings = relay_settings(relay_db, sink, ["FA"], subscriber_overrides=HOLD)
    config = write_config(tmp_path / "relay.toml", settings)
    held_asset, other_asset = str(uuid4()), str(uuid4())
    async with running(settings) as daemon:
        # The head first, dead before the rest are published: a routing racing the head's fall
        # writes its row pending, not held (it waits behind the head all the same: claim_ordered),
        # and this test is about rows the hold is known to.
        ids = [await publish(db, held_asset, "H-0")]
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead")
        ids += [await publish(db, held_asset, f"H-{i}") for i in range(1, 3)]
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead,held,held")
        # Another entity is not held; an event of the held entity routed later joins the held ones.
        other = await publish(db, other_asset, "O-1")
        ids.append(await publish(db, held_asset, "H-3"))
        await wait_for_rows(db, statuses([other]), lambda v: v == "delivered")
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead,held,held,held")
        await wait_until(
            lambda: (
                daemon.metrics.registry.get_sample_value("it_relay_entities_held", {"subscriber": "FA"}) == 1
            )
        )
        listed = await cli("deliveries", "list", "--status", "held", "--config", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [codec.loads(line) for line in listed.stdout.splitlines()]  # JSON lines
        assert sorted(r["event_id"] for r in rows) == sorted(ids[1:])

        bad = await cli("release", "--subscriber", "FA", "--entity", "asset id", "--config", str(config))
        assert bad.returncode == 2 and "--entity" in bad.stderr and "Traceback" not in bad.stderr
        done = await cli(
            "release", "--subscriber", "fa", "--entity", f"asset_id:{held_asset}", "--config", str(config)
        )
        assert done.returncode == 0, done.stderr
        assert "released 3 held deliveries" in done.stdout
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead,delivered,delivered,delivered")
        again = await cli(
            "release", "--subscriber", "FA", "--entity", f"asset_id:{held_asset}", "--config", str(config)
        )
        assert again.returncode == 1 and "nothing held" in again.stdout
    received = [codec.loads(r.body)["event_id"] for r in sink.at("/fa")]
    mine = [e for e in received if e in ids]
    assert mine == [ids[0], *ids[1:]]  # the head once (410), then the rest in journal order
    sequences = [
        int(r.headers["x-it-entity-sequence"]) for r in sink.at("/fa") if r.headers["webhook-id"] in ids
    ]
    assert sequences == sorted(sequences)


async def test_replaying_the_dead_head_sends_it_first_then_the_held_rest(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(410))
    settings = relay_settings(relay_db, sink, ["FA"], subscriber_overrides=HOLD)
    config = write_config(tmp_path / "relay.toml", settings)
    asset = str(uuid4())
    async with running(settings):
        ids = [await publish(db, asset, "R-0")]
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead")  # as above: no race with the fall
        ids += [await publish(db, asset, f"R-{i}") for i in range(1, 3)]
        await wait_for_rows(db, statuses(ids), lambda v: v == "dead,held,held")
        replayed = await cli("replay", "--event-id", ids[0], "--subscriber", "FA", "--config", str(config))
        assert replayed.returncode == 0, replayed.stderr
        await wait_for_rows(db, statuses(ids), lambda v: v == "delivered,delivered,delivered")
    order = [r.headers["webhook-id"] for r in sink.at("/fa")]
    assert order == [ids[0], ids[0], ids[1], ids[2]]
    assert await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE holds") == 0


async def test_a_backfill_to_an_ordered_subscriber_keeps_each_entitys_journal_order(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    asset = str(uuid4())
    # FA not served yet: the events are journaled and routed, no delivery is created for it.
    async with running(relay_settings(relay_db, sink, ["HR"])):
        ids = [await publish(db, asset, f"B-{i}") for i in range(4)]
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.events WHERE status = 'routed'", lambda v: v == 4
        )
    sink.script("/fa", Reply(503))  # the head waits out a retry; nothing overtakes it
    settings = relay_settings(relay_db, sink, ["FA"], subscriber_overrides=HOLD)
    config = write_config(tmp_path / "relay.toml", settings)
    async with running(settings):
        done = await cli(
            "backfill", "--subscriber", "FA", "--since", "2000-01-01T00:00:00Z", "--config", str(config)
        )
        assert done.returncode == 0, done.stderr
        await wait_for_rows(db, statuses(ids), lambda v: v == "delivered,delivered,delivered,delivered")
    assert [r.headers["webhook-id"] for r in sink.at("/fa")] == [ids[0], *ids]
