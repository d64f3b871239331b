"""Which notifications make the listener wake the router or the lanes after it has looked at them.

publish() journals its event and announces it by id: the router is woken as the notification
arrives, and waking it again once the id is confirmed would cost a read that finds nothing, in
front of the deliveries the first routing just handed out. Legacy events journaled by the listener
itself, and a replay's wake-up for the lanes, must still wake."""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID, uuid4

import asyncpg

from relay.contracts.examples import example
from relay.listener import Listener
from relay.metrics import Metrics
from relay.model import NotifiedEvent, Rejection


class IngestStore:
    """The listener's port over a dict: which ids are journaled, what was journaled here."""

    def __init__(self, known: set[UUID]) -> None:
        self.known = set(known)
        self.journaled: list[NotifiedEvent] = []
        self.rejected: list[Rejection] = []

    async def journaled_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        return {i for i in ids if i in self.known}

    async def backend_roles(self, pids: Sequence[int]) -> dict[int, str]:
        return dict.fromkeys(pids, "producer")

    async def journal_batch(
        self, events: Sequence[NotifiedEvent], rejections: Sequence[Rejection]
    ) -> list[Rejection]:
        self.journaled += events
        self.rejected += rejections
        self.known |= {e.event_id for e in events}
        return []


async def _never() -> asyncpg.Connection:
    raise AssertionError("the listener under test never connects")


def _listener(store: IngestStore, wakes: list[bool]) -> Listener:
    return Listener(
        connect=_never,
        store=store,
        channel="it_events",
        metrics=Metrics(),
        on_wake=wakes.append,
        legacy_senders=["producer"],
    )


async def _heard(listener: Listener, *notified: str) -> None:
    for raw in notified:
        listener._on_notify(None, 4242, "it_events", raw)
    await listener.ingest_step()


async def test_an_announcement_of_a_journaled_event_wakes_the_router_once_as_it_arrives() -> None:
    ids = [uuid4() for _ in range(3)]
    wakes: list[bool] = []
    listener = _listener(IngestStore(set(ids)), wakes)
    await _heard(
        listener, *(json.dumps({"event_id": str(i), "event_type": "it_asset_assigned"}) for i in ids)
    )
    # One wake per notification as it arrived (router only), none once they were confirmed.
    assert wakes == [False, False, False]


async def test_a_legacy_event_journaled_by_the_listener_wakes_the_router_after_it_is_written() -> None:
    store = IngestStore(set())
    wakes: list[bool] = []
    listener = _listener(store, wakes)
    await _heard(listener, json.dumps(example("it_asset_assigned")))
    assert len(store.journaled) == 1
    # The first wake came before the event existed; the second finds it journaled.
    assert wakes == [False, False]


async def test_a_replay_wake_up_wakes_every_lane() -> None:
    replayed = uuid4()
    wakes: list[bool] = []
    listener = _listener(IngestStore({replayed}), wakes)
    await _heard(listener, json.dumps({"event_id": str(replayed), "wake": "deliveries"}))
    assert wakes == [False, True]


async def test_an_announcement_naming_no_event_is_rejected_and_wakes_nothing_more() -> None:
    store = IngestStore(set())
    wakes: list[bool] = []
    listener = _listener(store, wakes)
    await _heard(listener, json.dumps({"event_id": str(uuid4()), "event_type": "it_asset_assigned"}))
    assert store.journaled == []
    assert len(store.rejected) == 1
    assert wakes == [False]
