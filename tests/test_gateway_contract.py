"""One contract, two implementations: the same calls give the same results on PostgreSQL (the
gateway) and in memory (the twin), so the unit tier's twin cannot drift from the journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from relay import codec, journal
from relay.contracts.examples import example
from relay.event_cache import EventCache
from relay.gateway import Gateway
from relay.ingest import route
from relay.model import DeliveryResult, Instance, RoutedEvent
from relay.testing.twin import Twin
from tests.support.postgres import fresh_name, upgraded, with_database

OWNER, OTHER = "host:1:aaaa", "host:2:bbbb"


@dataclass
class Store:
    """A port implementation and how to journal an event into it (as publish() would)."""

    port: Gateway | Twin
    conn: asyncpg.Connection | None = None

    async def journal(self, payload: dict[str, Any]) -> UUID:
        if self.conn is not None:
            return await journal.publish(self.conn, payload)
        assert isinstance(self.port, Twin)
        event_id = UUID(str(payload["event_id"]))
        self.port.journal(event_id, str(payload["event_type"]), codec.dumps(payload).decode())
        return event_id


@pytest.fixture(params=["twin", pytest.param("postgres", marks=pytest.mark.db)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "twin":
        yield Store(Twin())
        return
    server: str = request.getfixturevalue("pg_server_url")
    name = fresh_name()
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = await upgraded(with_database(server, name))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    conn = await asyncpg.connect(url)
    try:
        yield Store(Gateway(pool), conn)
    finally:
        await conn.close()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def payload(tag: str) -> dict[str, Any]:
    return example("it_asset_purchased") | {"event_id": str(uuid4()), "asset_tag": tag}


def of_asset(asset: str, tag: str) -> dict[str, Any]:
    """An event of one entity (its asset_id)."""
    return payload(tag) | {"asset_id": asset}


def delivered(event_id: UUID) -> DeliveryResult:
    """FA's first attempt at the event, delivered."""
    return DeliveryResult(
        event_id=event_id,
        subscriber="FA",
        status="delivered",
        attempts=1,
        failed_rounds=0,
        retry_in_s=None,
        last_status=200,
        last_error=None,
    )


async def route_all(store: Store, limit: int = 100) -> list[UUID]:
    """Route every pending event to its contract's subscribers (FA here), as the router does."""
    async with store.port.routing(limit) as batch:
        routed = []
        for event in batch.events:
            outcome = route(event.event_id, event.payload, "keep")
            assert isinstance(outcome, RoutedEvent)
            routed.append(outcome)
        await batch.write(routed, [])
    return [r.event_id for r in routed]


async def test_routing_takes_pending_events_in_journal_order_once(store: Store) -> None:
    ids = [await store.journal(payload(f"T-{i}")) for i in range(5)]
    async with store.port.routing(3) as batch:
        assert [e.event_id for e in batch.events] == ids[:3]
        assert {e.source for e in batch.events} == {"publish"}
    # Nothing written: the three are still pending, and come first again.
    assert await route_all(store, 3) == ids[:3]
    assert await route_all(store) == ids[3:]
    assert await route_all(store) == []


async def test_a_routing_batch_that_fails_leaves_its_events_pending(store: Store) -> None:
    event_id = await store.journal(payload("FAILS"))

    async def route_then_die() -> None:
        async with store.port.routing(10) as batch:
            outcome = route(batch.events[0].event_id, batch.events[0].payload, "keep")
            assert isinstance(outcome, RoutedEvent)
            await batch.write([outcome], [])
            raise RuntimeError("the router died mid-batch")

    with pytest.raises(RuntimeError):
        await route_then_die()
    assert await route_all(store) == [event_id]


def routed_of(batch: Any) -> list[RoutedEvent]:
    out = []
    for event in batch.events:
        outcome = route(event.event_id, event.payload, "keep")
        assert isinstance(outcome, RoutedEvent)
        out.append(outcome)
    return out


async def test_routing_leases_what_caught_up_lanes_ask_for_in_journal_order(store: Store) -> None:
    ids = [await store.journal(payload(f"L-{i}")) for i in range(4)]
    async with store.port.routing(10) as batch:
        # HR is not routed it_asset_purchased: asking for it leases nothing.
        leased = (await batch.write(routed_of(batch), [], {"FA": 2, "HR": 5}, OWNER, 30)).leased
    assert [(c.event_id, c.subscriber, c.attempts, c.failed_rounds) for c in leased] == [
        (ids[0], "FA", 1, 0),
        (ids[1], "FA", 1, 0),
    ]
    assert codec.loads(leased[0].body)["asset_tag"] == "L-0"
    assert leased[0].sequence is not None and leased[1].sequence is not None
    assert leased[0].sequence < leased[1].sequence
    # The leased rows are this instance's: another claims only the rest; the outcomes are ours.
    rest = await store.port.claim_deliveries("FA", OTHER, 10, 30)
    assert [c.event_id for c in rest] == ids[2:]
    done = delivered(ids[0])
    assert await store.port.write_results([done], OTHER) == 0
    assert await store.port.write_results([done], OWNER) == 1


async def test_routing_leases_an_ordered_lane_only_its_entities_heads(store: Store) -> None:
    x, y, z = str(uuid4()), str(uuid4()), str(uuid4())
    cases = ((x, "X1"), (x, "X2"), (y, "Y1"), (z, "Z0"), (z, "Z1"))
    x1, x2, y1, z0, _z1 = [await store.journal(of_asset(a, t)) for a, t in cases]
    async with store.port.routing(10) as batch:
        # Z0 stays unrouted (as a republish or another instance's lock would leave it).
        routed = [r for r in routed_of(batch) if r.event_id != z0]
        written = await batch.write(routed, [], {"FA": 10}, OWNER, 30, ordered={"FA"})
    # X2 is behind X1 in the same batch, Z1 behind the unrouted Z0: only heads are leased.
    assert [c.event_id for c in written.leased] == [x1, y1]
    assert await store.port.claim_deliveries("FA", OTHER, 10, 30, ordered=True) == []
    done = delivered(x1)
    assert await store.port.write_results([done], OWNER) == 1
    # A later routing leases nothing: X3 is behind X2 (pending), and Z0, though now Z's head, has
    # Z1's row already written (a routing leases only an entity with nothing unfinished).
    x3 = await store.journal(of_asset(x, "X3"))
    async with store.port.routing(10) as batch:
        written = await batch.write(routed_of(batch), [], {"FA": 10}, OWNER, 30, ordered={"FA"})
    assert written.leased == [] and written.routed == {x3, z0}
    claimed = await store.port.claim_deliveries("FA", OTHER, 10, 30, ordered=True)
    assert sorted(c.event_id for c in claimed) == sorted([x2, z0])


async def test_a_routing_offers_an_ordered_lane_places_in_journal_order_and_a_waiting_row_keeps_its_place(
    store: Store,
) -> None:
    x, y = str(uuid4()), str(uuid4())
    x1, _x2, _y1 = [await store.journal(of_asset(a, t)) for a, t in ((x, "X1"), (x, "X2"), (y, "Y1"))]
    async with store.port.routing(10) as batch:
        written = await batch.write(routed_of(batch), [], {"FA": 2}, OWNER, 30, ordered={"FA"})
    # Two places, the first two rows in journal order: X1 leased, X2 waits behind it; Y1 is third.
    assert [c.event_id for c in written.leased] == [x1]


async def test_a_routing_that_fails_leases_nothing(store: Store) -> None:
    event_id = await store.journal(payload("LOST"))

    async def lease_then_die() -> None:
        async with store.port.routing(10) as batch:
            assert len((await batch.write(routed_of(batch), [], {"FA": 1}, OWNER, 30)).leased) == 1
            raise RuntimeError("the router died before its commit")

    with pytest.raises(RuntimeError):
        await lease_then_die()
    assert await route_all(store) == [event_id]
    [claimed] = await store.port.claim_deliveries("FA", OTHER, 5, 30)
    assert (claimed.event_id, claimed.attempts) == (event_id, 1)


async def test_two_unlocked_routings_of_the_same_events_route_each_once(store: Store) -> None:
    ids = [await store.journal(payload(f"U-{i}")) for i in range(3)]
    async with (
        store.port.routing(10, exclusive=False) as first,
        store.port.routing(10, exclusive=False) as second,
    ):
        # Both read the same three: neither read took a lock.
        assert [e.event_id for e in first.events] == [e.event_id for e in second.events] == ids
        won = await first.write(routed_of(first), [], {"FA": 5}, OWNER, 30)
        lost = await second.write(routed_of(second), [], {"FA": 5}, OTHER, 30)
    assert won.routed == set(ids) and [c.event_id for c in won.leased] == ids
    assert (lost.routed, lost.rejected, lost.leased) == (frozenset(), frozenset(), [])
    # One delivery each, leased to the winner: nothing is left for anyone to claim.
    assert await store.port.claim_deliveries("FA", OTHER, 10, 0) == []
    assert await route_all(store) == []


async def test_an_unlocked_routing_skips_events_a_locked_one_holds(store: Store) -> None:
    ids = [await store.journal(payload(f"K-{i}")) for i in range(2)]
    async with store.port.routing(1) as locked:
        assert [e.event_id for e in locked.events] == ids[:1]
        async with store.port.routing(10, exclusive=False) as unlocked:
            assert [e.event_id for e in unlocked.events] == ids
            # No wait on the held row (SKIP LOCKED): the other event is routed here, at once.
            written = await unlocked.write(routed_of(unlocked), [])
        assert written.routed == {ids[1]}
        assert (await locked.write(routed_of(locked), [])).routed == {ids[0]}
    claimed = await store.port.claim_deliveries("FA", OWNER, 10, 30)
    assert sorted(c.event_id for c in claimed) == sorted(ids)


# The claims' cache of routed events is the gateway's alone (the twin's claims read its dicts).
@pytest.mark.parametrize("store", [pytest.param("postgres", marks=pytest.mark.db)], indirect=True)
async def test_a_claim_carries_the_same_event_whether_this_instance_routed_it_or_not(store: Store) -> None:
    assert isinstance(store.port, Gateway)
    ids = [await store.journal(payload(f"P-{i}")) for i in range(3)]
    await route_all(store)
    # Routed here: the claim reads only deliveries, the events' parts come from the routing.
    routed_here = await store.port.claim_deliveries("FA", OWNER, 10, 30)
    assert store.port.events.hits == 3
    await store.port.release_leases(OWNER, [(c.event_id, "FA") for c in routed_here])
    # As another instance, that routed nothing: the same parts, read from the journal.
    store.port.events = EventCache()
    elsewhere = await store.port.claim_deliveries("FA", OTHER, 10, 30)
    assert store.port.events.misses == 3
    assert [c.event_id for c in routed_here] == ids
    assert routed_here == elsewhere


async def test_an_ordered_claim_leases_each_entitys_head_and_none_behind_an_unrouted_event(
    store: Store,
) -> None:
    x, y = str(uuid4()), str(uuid4())
    x1, x2, y1, y2 = [
        await store.journal(of_asset(a, t)) for a, t in ((x, "X1"), (x, "X2"), (y, "Y1"), (y, "Y2"))
    ]
    # X1 stays unrouted (left out of the batch, as a republish or another instance's lock would).
    async with store.port.routing(10) as batch:
        await batch.write([r for r in routed_of(batch) if r.event_id != x1], [])
    first = await store.port.claim_deliveries("FA", OWNER, 10, 30, ordered=True)
    assert [c.event_id for c in first] == [y1]  # X2 waits for X1; Y2 waits for Y1 in flight
    assert await route_all(store) == [x1]
    second = await store.port.claim_deliveries("FA", OWNER, 10, 30, ordered=True)
    assert [c.event_id for c in second] == [x1]
    done = delivered(y1)
    assert await store.port.write_results([done], OWNER) == 1
    third = await store.port.claim_deliveries("FA", OWNER, 10, 30, ordered=True)
    assert [c.event_id for c in third] == [y2]
    assert x2 not in [c.event_id for c in third]


async def test_ordered_claims_take_entities_in_turn_from_where_the_last_one_ended(store: Store) -> None:
    def of(n: int, tag: str) -> dict[str, Any]:
        return of_asset(f"{n}0000000-0000-4000-8000-000000000000", tag)

    a1, a2, b1, c1 = [await store.journal(of(n, t)) for n, t in ((1, "A1"), (1, "A2"), (2, "B1"), (3, "C1"))]
    await route_all(store)
    assert [c.event_id for c in await store.port.claim_deliveries("FA", OWNER, 1, 30, ordered=True)] == [a1]
    done = delivered(a1)
    assert await store.port.write_results([done], OWNER) == 1
    # A2 is now its entity's head and the oldest due row, yet B and C have their turns first.
    turns = [await store.port.claim_deliveries("FA", OWNER, 1, 30, ordered=True) for _ in range(4)]
    assert [[c.event_id for c in t] for t in turns] == [[b1], [c1], [a2], []]


async def set_row(store: Store, event_id: UUID, status: str, holds: bool = False) -> None:
    """FA's row of an event put in a state by hand (what a routing racing a hold can leave)."""
    if store.conn is not None:
        await store.conn.execute(
            "UPDATE it_relay.deliveries SET status = $2, holds = $3 WHERE event_id = $1 AND subscriber = 'FA'",
            event_id,
            status,
            holds,
        )
        return
    assert isinstance(store.port, Twin)
    row = store.port.deliveries[(event_id, "FA")]
    row.status, row.holds = status, holds  # type: ignore[assignment]


async def test_an_ordered_claim_passes_an_entity_a_dead_head_holds_and_takes_a_held_row_nothing_holds(
    store: Store,
) -> None:
    x, y = str(uuid4()), str(uuid4())
    x1, x2, y1, y2 = [
        await store.journal(of_asset(a, t)) for a, t in ((x, "X1"), (x, "X2"), (y, "Y1"), (y, "Y2"))
    ]
    await route_all(store)
    # X2 pending behind its dead, holding head; Y2 held with its dead head no longer holding.
    await set_row(store, x1, "dead", holds=True)
    await set_row(store, y1, "dead")
    await set_row(store, y2, "held")
    claimed = await store.port.claim_deliveries("FA", OWNER, 10, 30, ordered=True)
    assert [c.event_id for c in claimed] == [y2]
    assert x2 not in [c.event_id for c in claimed]
    # Taken as pending: its outcome is written like any head's.
    assert await store.port.write_results([delivered(y2)], OWNER) == 1


async def test_rows_routed_pending_behind_a_holding_head_are_made_held_and_no_other_row(store: Store) -> None:
    x, y = str(uuid4()), str(uuid4())
    x1, x2, x3, y1, y2 = [
        await store.journal(of_asset(a, t))
        for a, t in ((x, "X1"), (x, "X2"), (x, "X3"), (y, "Y1"), (y, "Y2"))
    ]
    await route_all(store)
    # X2 and X3 pending behind their dead, holding head (a routing raced its fall); Y1 dead
    # without holding, so Y2 stays pending.
    await set_row(store, x1, "dead", holds=True)
    await set_row(store, y1, "dead")
    assert await store.port.hold_stragglers() == 2
    statuses = {e: await row_status(store, e) for e in (x1, x2, x3, y1, y2)}
    assert statuses == {x1: "dead", x2: "held", x3: "held", y1: "dead", y2: "pending"}
    assert await store.port.hold_stragglers() == 0


async def row_status(store: Store, event_id: UUID) -> str:
    if store.conn is not None:
        status: str = await store.conn.fetchval(
            "SELECT status FROM it_relay.deliveries WHERE event_id = $1 AND subscriber = 'FA'", event_id
        )
        return status
    assert isinstance(store.port, Twin)
    return store.port.deliveries[(event_id, "FA")].status


async def test_claims_lease_in_due_order_count_the_attempt_and_skip_leased_rows(store: Store) -> None:
    ids = [await store.journal(payload(f"C-{i}")) for i in range(3)]
    await route_all(store)
    first = await store.port.claim_deliveries("FA", OWNER, 2, 30)
    assert [(c.event_id, c.attempts, c.failed_rounds) for c in first] == [(ids[0], 1, 0), (ids[1], 1, 0)]
    assert codec.loads(first[0].body)["asset_tag"] == "C-0"
    second = await store.port.claim_deliveries("FA", OTHER, 5, 30)
    assert [c.event_id for c in second] == [ids[2]]
    assert await store.port.claim_deliveries("FA", OTHER, 5, 30) == []
    # Another subscriber's lane has nothing of these.
    assert await store.port.claim_deliveries("HR", OWNER, 5, 30) == []
    assert await store.port.backlog() == {"FA": 3}


async def test_a_released_lease_gives_the_attempt_back_and_only_its_owner_can_release(store: Store) -> None:
    event_id = await store.journal(payload("R"))
    await route_all(store)
    [claimed] = await store.port.claim_deliveries("FA", OWNER, 1, 30)
    await store.port.release_leases(OTHER, [(event_id, "FA")])
    assert await store.port.claim_deliveries("FA", OTHER, 1, 30) == []
    await store.port.release_leases(OWNER, [(event_id, "FA")])
    [again] = await store.port.claim_deliveries("FA", OTHER, 1, 30)
    assert (again.event_id, again.attempts) == (claimed.event_id, 1)


async def test_outcomes_are_written_only_by_the_lease_holder_and_schedule_the_next_attempt(
    store: Store,
) -> None:
    a = await store.journal(payload("A"))
    b = await store.journal(payload("B"))
    await route_all(store)
    await store.port.claim_deliveries("FA", OWNER, 2, 30)

    def result(event_id: UUID, status: str, retry_in_s: float | None) -> DeliveryResult:
        return DeliveryResult(
            event_id=event_id,
            subscriber="FA",
            status=status,  # type: ignore[arg-type]
            attempts=1,
            failed_rounds=0 if status == "delivered" else 1,
            retry_in_s=retry_in_s,
            last_status=200 if status == "delivered" else 503,
            last_error=None if status == "delivered" else "HTTP 503",
        )

    assert await store.port.write_results([result(a, "delivered", None)], OTHER) == 0
    written = await store.port.write_results(
        [result(a, "delivered", None), result(b, "pending", 3600)], OWNER
    )
    assert written == 2
    assert await store.port.backlog() == {"FA": 1}
    due = await store.port.seconds_until_due("FA")
    assert due is not None and 3500 < due <= 3600
    assert await store.port.claim_deliveries("FA", OWNER, 5, 30) == []


async def test_a_subscriber_with_nothing_pending_has_nothing_due(store: Store) -> None:
    assert await store.port.seconds_until_due("FA") is None
    await store.journal(payload("D"))
    await route_all(store)
    due = await store.port.seconds_until_due("FA")
    assert due is not None and due <= 0
    await store.port.claim_deliveries("FA", OWNER, 1, 30)
    leased = await store.port.seconds_until_due("FA")
    assert leased is not None and 25 < leased <= 30  # due again when its lease expires


async def test_circuit_states_are_shared_and_pauses_read_back(store: Store) -> None:
    assert await store.port.subscriber_states() == {}
    await store.port.set_circuit("FA", "open")
    states = await store.port.subscriber_states()
    assert states["FA"].circuit == "open" and states["FA"].paused is None
    await store.port.set_circuit("FA", "closed")
    assert (await store.port.subscriber_states())["FA"].circuit == "closed"


async def test_the_schema_is_current(store: Store) -> None:
    assert await store.port.schema_current() is True


async def test_the_gauges_count_pending_dead_and_unrouted(store: Store) -> None:
    assert await store.port.subscriber_gauges() == {}
    ids = [await store.journal(payload(f"G-{i}")) for i in range(3)]
    assert await store.port.unrouted_events() == 3
    await route_all(store)
    assert await store.port.unrouted_events() == 0
    await store.port.claim_deliveries("FA", OWNER, 1, 30)
    dead = DeliveryResult(
        event_id=ids[0],
        subscriber="FA",
        status="dead",
        attempts=1,
        failed_rounds=0,
        retry_in_s=None,
        last_status=410,
        last_error="HTTP 410",
    )
    assert await store.port.write_results([dead], OWNER) == 1
    gauges = (await store.port.subscriber_gauges())["FA"]
    assert (gauges.pending, gauges.dead) == (2, 1)
    assert 0 <= gauges.oldest_pending_s < 60


async def test_instances_record_themselves_and_leave(store: Store) -> None:
    def me(owner: str) -> Instance:
        return Instance(
            owner=owner, host="h", pid=1, version="0", config="abc", subscribers=["FA"], leading=False
        )

    assert await store.port.instance_heartbeat(me(OWNER), 30) == 1
    assert await store.port.instance_heartbeat(me(OTHER), 30) == 2
    assert await store.port.instance_heartbeat(me(OWNER), 30) == 2  # a heartbeat, not a new one
    await store.port.instance_gone(OTHER)
    assert await store.port.instance_heartbeat(me(OWNER), 30) == 1
