"""The loops on the in-memory twin: delivery rounds, slots, the circuit, shutdown and routing, in
seconds and without PostgreSQL. The twin is held to the journal by tests/test_gateway_contract.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any
from uuid import UUID, uuid4

import pytest

from relay import codec
from relay.contracts.examples import example
from relay.destination import Answer
from relay.dispatch import Dispatcher
from relay.gateway import RoutingBatch
from relay.ingest import route
from relay.metrics import Metrics
from relay.model import RoutedEvent
from relay.request import Request
from relay.router import Router
from relay.settings import DeliverySettings, SubscriberSettings
from relay.testing.twin import Twin
from tests.support.relay import wait_until

OWNER = "unit:1:twin"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Scripted:
    """A destination that answers from a script (then 200), records every request and how many
    were in flight at once; `hang` holds answers until released."""

    script: list[Answer | Exception] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    hang: asyncio.Event | None = None
    # Answers for one event (by its asset_tag) before it gets 200s; the script is for any event.
    by_tag: dict[str, list[Answer]] = field(default_factory=dict)
    # Answers spread over time (request n waits spread_s x (n mod 8)), so slots free one by one.
    spread_s: float = 0.0

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        self.requests.append(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.hang is not None:
                await self.hang.wait()
            await asyncio.sleep(self.spread_s * (len(self.requests) % 8))
            own = self.by_tag.get(str(codec.loads(request.body).get("asset_tag")))
            step = (
                own.pop(0) if own else self.script.pop(0) if self.script else Answer("delivered", 200, None)
            )
            if isinstance(step, Exception):
                raise step
            return step
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


def delivery(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "retry_schedule_s": [0.05, 0.05, 0.05],
        "inprocess_retries": 0,
        "circuit_failure_threshold": 2,
        "circuit_cooldown_s": 0.2,
        "shutdown_grace_s": 0.5,
        "jitter": 0.0,
    }
    return DeliverySettings(**(values | overrides))


@dataclass
class Relay:
    twin: Twin
    destination: Scripted
    dispatcher: Dispatcher
    router: Router
    stopping: asyncio.Event

    async def publish(self, n: int, tag: str = "U") -> list[UUID]:
        ids = []
        for i in range(n):
            event_id = uuid4()
            payload = example("it_asset_purchased") | {"event_id": str(event_id), "asset_tag": f"{tag}-{i}"}
            self.twin.journal(event_id, "it_asset_purchased", codec.dumps(payload).decode())
            ids.append(event_id)
        while await self.router.route_batch():
            pass
        self.dispatcher.wake()
        return ids

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.twin.deliveries.values():
            counts[d.status] = counts.get(d.status, 0) + 1
        return counts


@pytest.fixture
async def make_relay() -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        settings: DeliverySettings | None = None,
        max_in_flight: int = 4,
        subscriber: dict[str, Any] | None = None,
        handoff: bool = False,
        **dest: Any,
    ) -> Relay:
        twin = Twin()
        destination = Scripted(**dest)
        metrics = Metrics()
        subscribers = {
            "FA": SubscriberSettings.model_validate(
                {"url": "http://fa.invalid/hook", "secret": SECRET, "max_in_flight": max_in_flight}
                | (subscriber or {})
            )
        }
        dispatcher = Dispatcher(
            store=twin,
            delivery=settings or delivery(),
            subscribers=subscribers,
            destinations={"FA": destination},
            metrics=metrics,
            owner=OWNER,
            poll_interval_s=0.05,
        )
        router = Router(
            store=twin,
            metrics=metrics,
            unknown_fields="keep",
            configured=["FA"],
            on_routed=dispatcher.wake,
            poll_interval_s=0.05,
            handoff=dispatcher if handoff else None,
        )
        stopping = asyncio.Event()
        running.append((stopping, asyncio.create_task(dispatcher.run(stopping))))
        return Relay(twin, destination, dispatcher, router, stopping)

    yield start
    for stopping, task in running:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_every_delivery_goes_out_once_and_a_lane_never_exceeds_its_slots(make_relay: Any) -> None:
    relay: Relay = await make_relay(max_in_flight=3)
    ids = await relay.publish(40)
    await wait_until(lambda: relay.statuses() == {"delivered": 40}, within=10)
    assert sorted(r.headers["webhook-id"] for r in relay.destination.requests) == sorted(map(str, ids))
    assert relay.destination.peak <= 3
    assert relay.dispatcher.in_flight == 0


async def test_a_failed_attempt_waits_its_schedule_then_delivers(make_relay: Any) -> None:
    relay: Relay = await make_relay(script=[Answer("retry", 503, "HTTP 503")])
    [event_id] = await relay.publish(1)
    await wait_until(lambda: relay.statuses() == {"delivered": 1})
    row = relay.twin.deliveries[(event_id, "FA")]
    assert (row.attempts, row.failed_rounds) == (2, 1)
    assert [r.headers["x-it-delivery-attempt"] for r in relay.destination.requests] == ["1", "2"]
    assert [h.http_status for h in row.history] == [503, 200]


async def test_quick_retries_stay_in_one_round(make_relay: Any) -> None:
    relay: Relay = await make_relay(
        delivery(inprocess_retries=2, inprocess_retry_wait_s=0.0),
        script=[Answer("retry", 503, "HTTP 503"), Answer("retry", None, "timeout after 1s")],
    )
    [event_id] = await relay.publish(1)
    await wait_until(lambda: relay.statuses() == {"delivered": 1})
    row = relay.twin.deliveries[(event_id, "FA")]
    assert (row.attempts, row.failed_rounds) == (3, 0)


async def test_a_crash_is_recorded_on_the_schedule_and_goes_dead_when_it_runs_out(make_relay: Any) -> None:
    relay: Relay = await make_relay(script=[RuntimeError("bug")] * 4)
    [event_id] = await relay.publish(1)
    await wait_until(lambda: relay.statuses() == {"dead": 1})
    row = relay.twin.deliveries[(event_id, "FA")]
    assert (row.attempts, row.failed_rounds, row.last_error) == (4, 4, "internal: RuntimeError")


async def test_the_circuit_opens_then_a_probe_that_raises_is_followed_by_one_that_closes_it(
    make_relay: Any,
) -> None:
    refused = Answer("retry", None, "ConnectError: refused")
    relay: Relay = await make_relay(
        delivery(retry_schedule_s=[0.01] * 10),
        max_in_flight=1,
        script=[refused, refused, RuntimeError("bug")],
    )
    await relay.publish(3)
    await wait_until(lambda: relay.statuses() == {"delivered": 3}, within=10)
    lane = relay.dispatcher.lanes["FA"]
    assert lane.breaker.state == "closed" and not lane.breaker.probing
    # Two refusals opened it; nothing was sent until the cool-down let one probe through.
    assert len(relay.destination.requests) == 6


async def test_shutdown_finishes_within_the_grace_and_records_what_was_cut_short(make_relay: Any) -> None:
    hang = asyncio.Event()
    relay: Relay = await make_relay(hang=hang)
    [event_id] = await relay.publish(1)
    await wait_until(lambda: relay.destination.in_flight == 1)
    relay.stopping.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while relay.dispatcher.in_flight:
        await asyncio.sleep(0.01)
        assert loop.time() - started < 5, "shutdown outlived its grace period"
    await wait_until(lambda: relay.twin.deliveries[(event_id, "FA")].lease_owner is None)
    row = relay.twin.deliveries[(event_id, "FA")]
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "interrupted by shutdown")


async def test_a_paused_subscriber_is_not_claimed_until_resumed(make_relay: Any) -> None:
    relay: Relay = await make_relay()
    relay.twin.set_paused("FA", True)
    await relay.dispatcher._states.sync()
    await relay.publish(2)
    await asyncio.sleep(0.2)  # the lane is awake and polling: it must still not claim
    assert relay.destination.requests == []
    relay.twin.set_paused("FA", False)
    await relay.dispatcher._states.sync()
    await wait_until(lambda: relay.statuses() == {"delivered": 2})


async def test_the_router_rejects_a_bad_event_and_routes_the_rest_in_one_batch(make_relay: Any) -> None:
    relay: Relay = await make_relay()
    bad = uuid4()
    relay.twin.journal(bad, "it_asset_purchased", codec.dumps({"event_type": "it_asset_purchased"}).decode())
    ids = await relay.publish(2)
    assert relay.twin.events[bad].status == "rejected"
    assert [r.reason for r in relay.twin.rejections] == ["schema"]
    assert {k[0] for k in relay.twin.deliveries} == set(ids)


async def publish_for(relay: Relay, asset: str, tags: list[str]) -> list[UUID]:
    ids = []
    for tag in tags:
        event_id = uuid4()
        payload = example("it_asset_purchased") | {
            "event_id": str(event_id),
            "asset_id": asset,
            "asset_tag": tag,
        }
        relay.twin.journal(event_id, "it_asset_purchased", codec.dumps(payload).decode())
        ids.append(event_id)
    while await relay.router.route_batch():
        pass
    relay.dispatcher.wake()
    return ids


def ordered(max_in_flight: int = 8, on_exhausted: str = "skip") -> dict[str, Any]:
    return {"ordering": "entity", "on_exhausted": on_exhausted, "max_in_flight": max_in_flight}


async def test_an_ordered_entity_waits_out_its_heads_retry_while_other_entities_go_on(
    make_relay: Any,
) -> None:
    relay: Relay = await make_relay(
        subscriber=ordered(),
        by_tag={"A1": [Answer("retry", 503, "HTTP 503"), Answer("retry", 429, "HTTP 429", 0.2)]},
    )
    a, b = str(uuid4()), str(uuid4())
    first = await publish_for(relay, a, ["A1", "A2", "A3"])
    other = await publish_for(relay, b, ["B1", "B2"])
    await wait_until(lambda: relay.statuses() == {"delivered": 5}, within=10)
    sent = [(r.headers["x-it-entity-key"], r.headers["webhook-id"]) for r in relay.destination.requests]
    for asset, ids in ((a, first), (b, other)):
        mine = [event for key, event in sent if key == f"asset_id:{asset}"]
        # The first of A went out three times (a 503, a 429 with Retry-After); nothing overtook it.
        assert list(dict.fromkeys(mine)) == [str(i) for i in ids]
    assert [e for _, e in sent].count(str(first[0])) == 3
    # Waiting behind the head is never an attempt.
    assert {relay.twin.deliveries[(i, "FA")].attempts for i in first[1:] + other} == {1}
    sequences = [
        int(r.headers["x-it-entity-sequence"])
        for r in relay.destination.requests
        if r.headers["webhook-id"] in map(str, first)
    ]
    assert sequences == sorted(sequences)


async def test_hold_keeps_an_entity_behind_its_dead_head_skip_goes_on(make_relay: Any) -> None:
    gone = Answer("dead", 410, "HTTP 410")
    held: Relay = await make_relay(subscriber=ordered(on_exhausted="hold"), by_tag={"H1": [gone]})
    asset = str(uuid4())
    ids = await publish_for(held, asset, ["H1", "H2", "H3"])
    await wait_until(lambda: held.statuses() == {"dead": 1, "held": 2})
    # One routed later joins the held ones.
    later = await publish_for(held, asset, ["H4"])
    assert held.twin.deliveries[(later[0], "FA")].status == "held"
    assert [r.headers["webhook-id"] for r in held.destination.requests] == [str(ids[0])]

    skipped: Relay = await make_relay(subscriber=ordered(on_exhausted="skip"), by_tag={"S1": [gone]})
    await publish_for(skipped, asset, ["S1", "S2", "S3"])
    await wait_until(lambda: skipped.statuses() == {"dead": 1, "delivered": 2})


async def test_an_unordered_subscriber_does_not_wait_for_an_entitys_head(make_relay: Any) -> None:
    relay: Relay = await make_relay(by_tag={"U1": [Answer("retry", 503, "HTTP 503")]})
    asset = str(uuid4())
    ids = await publish_for(relay, asset, ["U1", "U2"])
    await wait_until(lambda: relay.statuses() == {"delivered": 2})
    # The second went out while the first waited out its retry.
    assert [r.headers["webhook-id"] for r in relay.destination.requests][:2] == [str(ids[0]), str(ids[1])]


async def test_a_reload_that_removes_a_lane_lets_its_attempt_in_flight_finish(make_relay: Any) -> None:
    hang = asyncio.Event()
    relay: Relay = await make_relay(hang=hang)
    first, second = await relay.publish(2)
    await wait_until(lambda: relay.destination.in_flight == 2)
    added, removed = relay.dispatcher.reconfigure({}, {})
    assert (added, removed) == ([], ["FA"])
    hang.set()
    # What was in flight is written; nothing is claimed for FA any more.
    await wait_until(lambda: relay.statuses() == {"delivered": 2})
    await relay.publish(1, tag="AFTER")
    await asyncio.sleep(0.2)  # the lane is gone: nothing may claim the new delivery
    assert relay.statuses() == {"delivered": 2, "pending": 1}
    assert {first, second} == {UUID(r.headers["webhook-id"]) for r in relay.destination.requests}


async def test_a_backlogged_lane_claims_a_quarter_of_its_slots_at_a_time(
    make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slot-by-slot claims cost PostgreSQL a statement per few deliveries; behind a full claim the
    lane waits until a quarter of its slots are free. A lane that is caught up claims at once."""
    relay: Relay = await make_relay(max_in_flight=16, spread_s=0.003)
    asked: list[tuple[int, int]] = []
    claim = relay.twin.claim_deliveries

    async def recording(
        subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
    ) -> Any:
        got = await claim(subscriber, owner, limit, lease_s, ordered)
        asked.append((limit, len(got)))
        return got

    monkeypatch.setattr(relay.twin, "claim_deliveries", recording)
    await relay.publish(400)
    await wait_until(lambda: relay.statuses() == {"delivered": 400}, within=20)
    after_full = [limit for (before, got), (limit, _) in pairwise(asked) if got == before]
    assert after_full, "the backlog was never claimed in full"
    assert min(after_full) >= 4
    assert relay.destination.peak <= 16
    # Caught up: one new event is claimed and sent without waiting for slots to free.
    asked.clear()
    await relay.publish(1, tag="late")
    await wait_until(lambda: relay.statuses() == {"delivered": 401}, within=5)
    assert asked[0][1] == 1


async def test_routing_hands_a_caught_up_lane_its_deliveries_without_a_claim(
    make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction between a producer's commit and the POST: the routing leases the rows a
    caught-up lane has room for; the lane's own claims find none of them."""
    relay: Relay = await make_relay(max_in_flight=4, handoff=True)
    found: list[int] = []
    claim = relay.twin.claim_deliveries

    async def recording(
        subscriber: str, owner: str, limit: int, lease_s: float, ordered: bool = False
    ) -> Any:
        got = await claim(subscriber, owner, limit, lease_s, ordered)
        found.append(len(got))
        return got

    # A lane starts backlogged (rows from before a restart go first) until its first claim.
    await wait_until(lambda: not relay.dispatcher.lanes["FA"].backlogged, within=5)
    monkeypatch.setattr(relay.twin, "claim_deliveries", recording)
    ids = await relay.publish(3)
    await wait_until(lambda: relay.statuses() == {"delivered": 3}, within=5)
    assert sorted(r.headers["webhook-id"] for r in relay.destination.requests) == sorted(map(str, ids))
    assert [r.headers["x-it-delivery-attempt"] for r in relay.destination.requests] == ["1"] * 3
    assert sum(found) == 0
    # More than its slots: the routing hands what fits, the lane claims the rest; each goes once.
    found.clear()
    more = await relay.publish(10, tag="M")
    await wait_until(lambda: relay.statuses() == {"delivered": 13}, within=5)
    assert sorted(r.headers["webhook-id"] for r in relay.destination.requests[3:]) == sorted(map(str, more))
    assert sum(found) == 10 - 4
    assert relay.destination.peak <= 4


async def test_rows_leased_for_a_lane_that_changed_during_the_routing_are_given_back(
    make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused between the reservation and the commit: nothing is sent, and the rows are pending
    again at once with their attempt given back, not left leased until the lease runs out."""
    relay: Relay = await make_relay(max_in_flight=4, handoff=True)
    await wait_until(lambda: not relay.dispatcher.lanes["FA"].backlogged, within=5)
    reserve = relay.dispatcher.reserve

    def pausing(wanted: Any) -> Any:
        reservation = reserve(wanted)
        relay.dispatcher.lanes["FA"].paused = True
        return reservation

    monkeypatch.setattr(relay.dispatcher, "reserve", pausing)
    await relay.publish(2)
    rows = list(relay.twin.deliveries.values())
    assert [(d.status, d.lease_owner, d.attempts) for d in rows] == [("pending", None, 0)] * 2
    assert relay.destination.requests == []
    assert relay.dispatcher.in_flight == 0
    relay.dispatcher.lanes["FA"].paused = False
    relay.dispatcher.wake()
    await wait_until(lambda: relay.statuses() == {"delivered": 2}, within=5)
    assert [r.headers["x-it-delivery-attempt"] for r in relay.destination.requests] == ["1", "1"]


@dataclass
class Racing:
    """The twin, with another instance routing every batch this router reads unlocked before
    it writes (the race the unlocked routing's guard is for); `modes` records each read's."""

    twin: Twin
    modes: list[bool] = field(default_factory=list)

    @asynccontextmanager
    async def routing(self, limit: int, exclusive: bool = True) -> AsyncIterator[RoutingBatch]:
        self.modes.append(exclusive)
        async with self.twin.routing(limit, exclusive) as batch:
            if not exclusive:
                async with self.twin.routing(limit, False) as other:
                    await other.write(
                        [
                            r
                            for e in other.events
                            if isinstance(r := route(e.event_id, e.payload, "keep"), RoutedEvent)
                        ],
                        [],
                    )
            yield batch

    async def release_leases(self, owner: str, keys: Sequence[tuple[UUID, str]]) -> None:
        await self.twin.release_leases(owner, keys)


async def test_events_another_instance_routed_first_are_not_counted_and_batches_then_take_locks() -> None:
    store = Racing(Twin())
    metrics = Metrics()
    woken: list[set[str]] = []
    router = Router(
        store=store, metrics=metrics, unknown_fields="keep", configured=["FA"], on_routed=woken.append
    )

    def journal(tag: str) -> UUID:
        event_id = uuid4()
        payload = example("it_asset_purchased") | {"event_id": str(event_id), "asset_tag": tag}
        store.twin.journal(event_id, "it_asset_purchased", codec.dumps(payload).decode())
        return event_id

    def received() -> float:
        return (
            metrics.registry.get_sample_value("it_relay_events_received_total", {"source": "publish"}) or 0.0
        )

    journal("R-0")
    journal("R-1")
    assert await router.route_batch() == 2
    # The other instance took both: not counted here, no lane woken for rows that are not ours.
    assert (received(), woken, store.modes) == (0.0, [], [False])
    assert len(store.twin.deliveries) == 2
    mine = journal("R-2")
    assert await router.route_batch() == 1
    # Seen racing: the next batch was taken with locks, so it was this router's alone.
    assert (received(), woken, store.modes) == (1.0, [{"FA"}], [False, True])
    assert store.twin.events[mine].status == "routed"
