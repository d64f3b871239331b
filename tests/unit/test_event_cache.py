"""The claims' cache of routed events: bounded by bytes, each entry kept for its claims, the
oldest kept when full (claims come in journal order), stale entries given up."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from relay.event_cache import ENTRY_OVERHEAD, EventCache, EventParts

AT = datetime(2026, 11, 30, tzinfo=UTC)


def parts(body: bytes) -> EventParts:
    return EventParts(body=body, journaled_at=AT, organization_id=None, traceparent=None)


@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=60), budget=st.integers(0, 20000))
def test_when_full_the_oldest_entries_stay_and_the_budget_holds(sizes: list[int], budget: int) -> None:
    cache = EventCache(budget, clock=lambda: 0.0)
    ids = [uuid4() for _ in sizes]
    kept: list[UUID] = []
    total = 0
    for event_id, size in zip(ids, sizes, strict=True):
        took = cache.put(event_id, parts(b"x" * size), uses=2)
        assert cache.size_bytes <= budget
        fits = total + size + ENTRY_OVERHEAD <= budget
        assert took == fits
        if fits:
            total += size + ENTRY_OVERHEAD
            kept.append(event_id)
    found, missing = cache.take(ids)
    assert list(found) == kept
    assert missing == [i for i in ids if i not in found]
    assert all(found[i].body == b"x" * sizes[ids.index(i)] for i in found)


def test_an_entry_lasts_until_each_of_its_deliveries_was_claimed_once() -> None:
    cache = EventCache()
    event_id = uuid4()
    assert cache.put(event_id, parts(b"{}"), uses=2)
    assert list(cache.take([event_id])[0]) == [event_id]
    assert list(cache.take([event_id])[0]) == [event_id]
    # A retry's claim reads the journal: the entry is gone, and so is its memory.
    assert cache.take([event_id]) == ({}, [event_id])
    assert (len(cache), cache.size_bytes) == (0, 0)
    # Nothing waits for a claim (every delivery was handed over at routing): nothing is kept.
    assert not cache.put(uuid4(), parts(b"{}"), uses=0)
    assert len(cache) == 0


def test_a_stale_entry_makes_room_for_a_new_one() -> None:
    now = [0.0]
    cache = EventCache(2 * (10 + ENTRY_OVERHEAD), stale_s=60, clock=lambda: now[0])
    held, other, new = uuid4(), uuid4(), uuid4()
    assert cache.put(held, parts(b"h" * 10), uses=1)  # a delivery held behind its entity's head
    now[0] = 30.0
    assert cache.put(other, parts(b"o" * 10), uses=1)
    assert not cache.put(new, parts(b"n" * 10), uses=1)  # full of entries still wanted
    now[0] = 61.0
    assert cache.put(new, parts(b"n" * 10), uses=1)
    assert cache.take([held, other, new])[1] == [held]


def test_a_take_names_each_missing_event_once_in_order_and_counts_hits() -> None:
    cache = EventCache()
    known, a, b = uuid4(), uuid4(), uuid4()
    cache.put(known, parts(b"{}"), uses=5)
    found, missing = cache.take([a, known, b, a, known])
    assert (list(found), missing) == ([known], [a, b])
    assert (cache.hits, cache.misses) == (1, 2)


def test_putting_an_event_again_replaces_it_without_counting_it_twice() -> None:
    cache = EventCache()
    event_id = uuid4()
    cache.put(event_id, parts(b"a" * 100), uses=1)
    cache.put(event_id, parts(b"b" * 10), uses=1)
    assert (len(cache), cache.size_bytes) == (1, 10 + ENTRY_OVERHEAD)
    assert cache.take([event_id])[0][event_id].body == b"b" * 10


def test_an_entry_is_never_served_past_its_time_even_with_room_to_spare() -> None:
    # An event id used again after retention pruned its event must not get the old body back.
    now = [0.0]
    cache = EventCache(stale_s=60, clock=lambda: now[0])
    event_id = uuid4()
    cache.put(event_id, parts(b"old"), uses=2)
    now[0] = 60.0
    assert cache.take([event_id]) == ({}, [event_id])
    assert (len(cache), cache.size_bytes) == (0, 0)
