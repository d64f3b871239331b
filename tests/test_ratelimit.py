"""The shared rate limit: its rule (slots 1/rate apart, whoever asks), the bucket in PostgreSQL held
to the twin's, a lane on the twin (pace, 429 holds, ordered entities), and two relay processes
whose combined rate a real subscriber measures."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import journal, ratelimit
from relay.contracts.examples import example
from relay.destination import Answer
from relay.ratelimit import HORIZON_S
from relay.request import Request
from relay.testing.twin import Twin
from tests.support.relay import (
    relay_settings,
    start_relay_process,
    stop_process,
    wait_for_rows,
    wait_until,
    write_config,
)
from tests.support.sink import Sink
from tests.test_loops_twin import Relay, Scripted, delivery, make_relay, ordered, publish_for

__all__ = ["make_relay"]  # the fixture, shared with tests/test_loops_twin.py

# ─── The rule ───────────────────────────────────────────────────────────────────────────────────


@given(
    rate=st.sampled_from([0.5, 3.0, 10.0, 50.0, 1000.0]),
    asks=st.lists(
        st.tuples(st.floats(0, 0.7), st.integers(1, 40), st.integers(0, 40), st.floats(0, 2)),
        min_size=1,
        max_size=40,
    ),
)
@settings(max_examples=400, deadline=None)
def test_slots_are_one_over_rate_apart_whoever_asks_and_never_saved_up(
    rate: float, asks: list[tuple[float, int, int, float]]
) -> None:
    """Callers ask at increasing times, use part of what they got, give the rest back, sometimes
    hold: every slot handed out is in [now, now + horizon], at most `want` of them, and all the
    slots anyone used are at least 1/rate apart."""
    next_slot, now = 0.0, 0.0
    used: list[float] = []
    for gap, want, keep, hold in asks:
        now += gap
        if hold > 1.9:
            next_slot = ratelimit.held(next_slot, now, hold)
            continue
        grant, next_slot = ratelimit.grant(next_slot, now, want, rate)
        assert 0 <= grant.granted <= want
        slots = [now + grant.first_in_s + i * grant.spacing_s for i in range(grant.granted)]
        assert all(now - 1e-9 <= s <= now + HORIZON_S + 1e-9 for s in slots)
        if grant.granted == 0:
            assert grant.wait_s > 0
        kept = min(keep, grant.granted)
        used += slots[:kept]
        if grant.granted:
            assert isinstance(grant.mark, float)
            next_slot = ratelimit.given_back(next_slot, grant.mark, grant.granted - kept, rate)
    used.sort()
    assert all(b - a >= 1 / rate - 1e-9 for a, b in itertools.pairwise(used))


def test_an_idle_bucket_saves_nothing_up_and_a_hold_moves_its_next_slot() -> None:
    grant, slot = ratelimit.grant(0.0, 100.0, 50, 10.0)
    # After 100 s idle: 11 slots within the next second (now, +0.1, ..., +1.0), not 1,000.
    assert (grant.granted, grant.first_in_s) == (11, 0.0)
    assert slot == pytest.approx(101.1)
    nothing, _ = ratelimit.grant(slot, 100.0, 5, 10.0)
    assert nothing.granted == 0 and nothing.wait_s == pytest.approx(0.1)
    assert ratelimit.held(slot, 100.0, 30.0) == 130.0
    # Given back only while nobody took a slot after the grant.
    assert ratelimit.given_back(slot, slot, 5, 10.0) == pytest.approx(100.6)
    assert ratelimit.given_back(slot + 0.1, slot, 5, 10.0) == slot + 0.1


# ─── The bucket in PostgreSQL, held to the twin's ──────────────────────────────────────────────


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_bucket_in_postgresql_gives_what_the_twin_gives(db: asyncpg.Connection) -> None:
    # The bucket in PostgreSQL reads the server's clock, which moves between calls (by more than a
    # slot on a busy machine): the twin's clock is set to the server's at each of its grants.
    clock = Clock()
    twin = Twin(clock)
    server_at: list[float] = []
    taken: list[Any] = []  # the twin's grants so far: server_at[len(taken)] is its next one's time

    async def pg_take(*a: Any) -> Any:
        grant = await journal.take_tokens(db, *a)
        server_at.append(grant.at_s)
        return grant

    async def pg_hold(*a: Any) -> None:
        await journal.hold_tokens(db, *a)

    async def twin_take(*a: Any) -> Any:
        clock.now = 1000.0 + server_at[len(taken)] - server_at[0]
        taken.append(a)
        return await twin.take_tokens(*a)

    async def twin_hold(*a: Any) -> None:
        clock.now = 1000.0 + server_at[len(taken)] - server_at[0]  # just before the next grant
        await twin.hold_tokens(*a)

    results: dict[str, list[Any]] = {"pg": [], "twin": []}
    for name, take, back, hold in (
        (
            "pg",
            pg_take,
            lambda *a: journal.return_tokens(db, *a),
            pg_hold,
        ),
        ("twin", twin_take, twin.return_tokens, twin_hold),
    ):
        first = await take("GR", 100, 10.0, 1.0)
        again = await take("GR", 5, 10.0, 1.0)
        await back("GR", first.mark, 6, 10.0)
        after_back = await take("GR", 3, 10.0, 1.0)
        await back("GR", first.mark, 5, 10.0)  # a stale mark: nothing comes back
        other = await take("GR", 1, 10.0, 1.0)
        await hold("GR", 30.0)
        held = await take("GR", 1, 10.0, 1.0)
        results[name] = [
            (first.granted, round(first.first_in_s, 1), first.spacing_s),
            (again.granted, round(again.wait_s, 1)),
            (after_back.granted, round(after_back.first_in_s, 1)),
            (other.granted, round(other.first_in_s, 1)),
            (held.granted, round(held.wait_s)),
        ]
    assert results["pg"] == results["twin"]
    if server_at[-1] - server_at[0] < 0.04:  # the exact figures, when the server's clock hardly moved
        assert results["twin"] == [(11, 0.0, 0.1), (0, 0.1), (3, 0.5), (1, 0.8), (0, 29)]
    # Each subscriber has its own bucket.
    assert (await journal.take_tokens(db, "FA", 3, 10.0, 1.0)).granted == 3


# ─── A lane on the twin ─────────────────────────────────────────────────────────────────────────


@dataclass
class Timed(Scripted):
    """Scripted, with the time each request was sent."""

    sent_at: list[float] = field(default_factory=list)

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        self.sent_at.append(time.monotonic())
        return await super().send(request, timeout_s, at)


def windows(times: list[float], width: float = 1.0) -> int:
    """The most requests in any window of `width` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.fixture
async def limited(make_relay: Any) -> Any:
    async def start(rate: float, subscriber: dict[str, Any] | None = None, **kwargs: Any) -> Relay:
        relay: Relay = await make_relay(
            kwargs.pop("settings", None),
            subscriber={"rate_limit_per_s": rate, "max_in_flight": 8} | (subscriber or {}),
        )
        # The lane sends through its limiter's wrapper: the scripted destination goes inside it.
        timed = Timed(**kwargs)
        relay.destination = timed
        lane = relay.dispatcher.lanes["FA"]
        assert lane.limiter is not None
        lane.destination.destination = timed  # type: ignore[attr-defined]
        return relay

    return start


async def test_a_lane_sends_at_the_rate_and_never_in_a_burst(limited: Any) -> None:
    relay: Relay = await limited(20.0)
    await relay.publish(30)
    await wait_until(lambda: relay.statuses() == {"delivered": 30}, within=10)
    sent = relay.destination.sent_at  # type: ignore[attr-defined]
    # A slot used late (at most half a slot: the limiter's slack) brings the next one closer.
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.5 / 20 - 0.005
    assert windows(sent) <= 21
    # Claimed no more than the tokens it had: every attempt was a first attempt.
    assert {d.attempts for d in relay.twin.deliveries.values()} == {1}


async def test_after_a_pause_the_first_goes_at_once_and_the_rest_at_the_rate(limited: Any) -> None:
    relay: Relay = await limited(10.0)
    await relay.publish(3)
    await wait_until(lambda: relay.statuses() == {"delivered": 3})
    await asyncio.sleep(1.5)  # idle: a token bucket would save up; this one does not
    before = len(relay.destination.sent_at)  # type: ignore[attr-defined]
    await relay.publish(12, tag="LATER")
    await wait_until(lambda: relay.statuses() == {"delivered": 15}, within=10)
    later = relay.destination.sent_at[before:]  # type: ignore[attr-defined]
    assert windows(later) <= 11
    assert min(b - a for a, b in itertools.pairwise(later)) >= 0.05 - 0.005


async def test_a_429_with_retry_after_holds_the_subscriber_without_spending_attempts(limited: Any) -> None:
    relay: Relay = await limited(
        10.0, script=[Answer("retry", 429, "HTTP 429", 1.0)], subscriber={"max_in_flight": 8}
    )
    ids = await relay.publish(6)
    await wait_until(lambda: relay.statuses() == {"delivered": 6}, within=15)
    sent = relay.destination.sent_at  # type: ignore[attr-defined]
    # The 429 came first; nothing went out in the second it asked for.
    assert sent[1] - sent[0] >= 1.0 - 0.02
    rows = [relay.twin.deliveries[(i, "FA")] for i in ids]
    # Only the one that was answered 429 spent a second attempt; those waiting for their slot
    # went back unattempted.
    assert sorted(r.attempts for r in rows) == [1, 1, 1, 1, 1, 2]
    assert len(sent) == 7


async def test_a_rate_limited_ordered_subscriber_serves_every_entity_in_order(limited: Any) -> None:
    relay: Relay = await limited(25.0, subscriber=ordered(max_in_flight=4))
    entities = [str(i) + "0000000-0000-4000-8000-000000000000" for i in range(1, 6)]
    published = {}
    for n, asset in enumerate(entities):
        published[asset] = await publish_for(relay, asset, [f"E{n}-{k}" for k in range(4)])
    await wait_until(lambda: relay.statuses() == {"delivered": 20}, within=15)
    sent = [r.headers["webhook-id"] for r in relay.destination.requests]
    for ids in published.values():
        assert [i for i in sent if i in set(map(str, ids))] == [str(i) for i in ids]
    assert windows(relay.destination.sent_at) <= 26  # type: ignore[attr-defined]


async def test_quick_retries_take_their_own_slot(limited: Any) -> None:
    relay: Relay = await limited(
        10.0,
        script=[Answer("retry", 503, "HTTP 503")] * 4,
        settings=delivery(inprocess_retries=2, inprocess_retry_wait_s=0.0),
    )
    await relay.publish(4)
    await wait_until(lambda: relay.statuses() == {"delivered": 4}, within=10)
    sent = relay.destination.sent_at  # type: ignore[attr-defined]
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.05 - 0.005
    assert windows(sent) <= 11


# ─── Two relay processes, one subscriber ────────────────────────────────────────────────────────


async def test_two_instances_together_stay_within_the_limit(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    rate = 10.0
    settings = relay_settings(
        relay_db, sink, ["FA"], subscriber_overrides={"FA": {"rate_limit_per_s": rate, "max_in_flight": 8}}
    )
    config = write_config(tmp_path / "relay.toml", settings)
    logs = [tmp_path / f"relay{i}.log" for i in range(2)]
    procs = [start_relay_process(config, log, log_level="DEBUG") for log in logs]
    try:
        await wait_until(
            lambda: all(p.exists() and "it-relay started" in p.read_text() for p in logs), within=30
        )
        # Both processes' first request to the sink (connections, the server's first request) is
        # made before the measured burst; then the bucket sits idle long enough to save up, if
        # it could.
        await journal.publish(db, example("it_asset_purchased") | {"asset_tag": "WARM-UP"})
        await sink.wait_for(lambda r: len(r) == 1)
        await asyncio.sleep(2.0)
        async with db.transaction():
            for i in range(45):
                await journal.publish(db, example("it_asset_purchased") | {"asset_tag": f"R-{i}"})
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 46,
            within=30,
        )
    finally:
        codes = [await stop_process(p) for p in procs]
    assert codes == [0, 0]
    received = sink.at("/fa")[1:]
    assert len({r.headers["webhook-id"] for r in received}) == len(received) == 45
    arrivals = [r.at for r in received]
    # No one-second window above the limit by more than one token, measured where they arrive.
    assert windows(arrivals) <= rate + 1
    # 45 at 10 a second take 4.4 s however they are shared (the first may arrive a little late).
    assert max(arrivals) - min(arrivals) >= 43 / rate
    # Both instances delivered some: the limit is shared, not each instance's own.
    assert all('"delivered"' in log.read_text() for log in logs)
