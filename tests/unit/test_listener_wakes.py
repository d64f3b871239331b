"""Which notifications make the listener wake the router or the lanes after it has looked at them.

publish() journals its event and announces it by id: the router is woken as the notification
arrives, and waking it again once the id is confirmed would cost a read that finds nothing, in
front of the deliveries the first routing just handed out. Legacy events journaled by the listener
itself, and a replay's wake-up for the lanes, must still wake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from uuid import UUID, uuid4

import asyncpg

from relay.contracts.examples import example
from relay.health import Heartbeats
from relay.listener import Listener
from relay.metrics import Metrics
from relay.model import BATCH_LIMIT, NotifiedEvent, Rejection
from relay.supervisor import supervise
from tests.support.relay import wait_until


class IngestStore:
    """The listener's port over a dict: which ids are journaled, what was journaled here."""

    def __init__(self, known: set[UUID]) -> None:
        self.known = set(known)
        self.confirmations = 0
        self.journaled: list[NotifiedEvent] = []
        self.rejected: list[Rejection] = []

    async def journaled_ids(self, ids: Sequence[UUID]) -> set[UUID]:
        self.confirmations += 1
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


def _listener(store: IngestStore, wakes: list[bool], linger_s: float = 0.025) -> Listener:
    return Listener(
        announcement_linger_s=linger_s,
        connect=_never,
        store=store,
        channel="it_events",
        metrics=Metrics(),
        on_wake=wakes.append,
        legacy_senders=["producer"],
    )


def _announcement(event_id: UUID) -> str:
    return json.dumps({"event_id": str(event_id), "event_type": "it_asset_assigned"})


async def _heard(listener: Listener, *notified: str) -> None:
    for raw in notified:
        listener._on_notify(None, 4242, "it_events", raw)
    await listener.ingest_step()


async def test_an_announcement_of_a_journaled_event_wakes_the_router_once_as_it_arrives() -> None:
    ids = [uuid4() for _ in range(3)]
    wakes: list[bool] = []
    listener = _listener(IngestStore(set(ids)), wakes)
    await _heard(listener, *(_announcement(i) for i in ids))
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
    await _heard(listener, _announcement(uuid4()))
    assert store.journaled == []
    assert len(store.rejected) == 1
    assert wakes == [False]


async def _ingested(listener: Listener, stopping: asyncio.Event, rounds: list[None] | None = None) -> None:
    """The listener's ingest loop as the daemon runs it; `rounds` grows as it comes round."""
    ticks = rounds if rounds is not None else []

    def clock() -> float:
        ticks.append(None)
        return 0.0

    await supervise(listener.ingest_loop(), stopping, Heartbeats(clock))


async def test_announcements_are_confirmed_together_after_a_linger_other_notifications_at_once() -> None:
    ids = [uuid4() for _ in range(3)]
    store = IngestStore(set(ids))
    wakes: list[bool] = []
    # A linger far longer than this test needs: only the legacy event below can end it early.
    listener = _listener(store, wakes, linger_s=600)
    stopping = asyncio.Event()
    rounds: list[None] = []
    task = asyncio.create_task(_ingested(listener, stopping, rounds))
    try:
        # Registered, then beaten before its first step, which on an empty inbox never awaits.
        await wait_until(lambda: len(rounds) >= 2, task=task)
        for i in ids:
            listener._on_notify(None, 4242, "it_events", _announcement(i))
        # The router was woken by each as it arrived; nothing was looked up for them yet.
        assert wakes == [False, False, False]
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.confirmations == 0
        # A legacy notification is journaled at once, and the announcements before it with it.
        listener._on_notify(None, 4242, "it_events", json.dumps(example("it_asset_assigned")))
        await wait_until(lambda: len(store.journaled) == 1, task=task)
        assert store.confirmations == 1
        assert wakes == [False, False, False, False, False]
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def test_lingering_announcements_are_confirmed_once_the_linger_ends_or_a_batch_is_full() -> None:
    unknown = uuid4()
    store = IngestStore(set())
    listener = _listener(store, [], linger_s=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(_ingested(listener, stopping))
    slow = _listener(store, [], linger_s=600)
    inner = asyncio.create_task(_ingested(slow, stopping))
    try:
        # A forged announcement (no such event) is found and rejected after the linger.
        listener._on_notify(None, 4242, "it_events", _announcement(unknown))
        await wait_until(lambda: len(store.rejected) == 1, task=task)
        # A full batch does not wait.
        for _ in range(BATCH_LIMIT):
            slow._on_notify(None, 4242, "it_events", _announcement(uuid4()))
        await wait_until(lambda: len(store.rejected) == 1 + BATCH_LIMIT, task=inner)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(task, inner), 30)
