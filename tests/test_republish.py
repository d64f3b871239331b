"""`rejections republish`: an event_id that belongs to anything else is refused with nothing
changed, concurrent republishes take turns, and the producer's retry is judged against the
corrected payload now journaled (accepted as a duplicate; the old payload refused)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import codec, journal, operator_queries, routing_queries
from relay.contracts.examples import example
from relay.ingest import classify, route
from relay.model import NotifiedEvent, PendingEvent, Rejection, RoutedEvent
from tests.support.cli import run_cli
from tests.support.relay import cli, relay_settings, running, wait_for_rows, write_config
from tests.support.sink import Sink

KEY = "LIC-REPUB-4K2Z-77"
BAD = {"priority": "urgent"}  # not a priority of it_ticket_created: the router rejects it


async def _state(db: asyncpg.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Everything a republish may change."""
    events = await db.fetch(
        "SELECT event_id, event_type, payload::text, status, organization_id, published_digest "
        "FROM it_relay.events ORDER BY event_id"
    )
    rejections = await db.fetch(
        "SELECT id, event_id, resolved_at, resolved_event_id FROM it_relay.rejected_events ORDER BY id"
    )
    return [tuple(r) for r in events], [tuple(r) for r in rejections]


async def _not_json(db: asyncpg.Connection, text: str) -> int:
    """A rejection recorded without an event_id (what the listener keeps of text that is not JSON)."""
    await journal.record_rejected(
        db, [Rejection(reason="not_json", errors=("$: not JSON",), raw_text=text, source="notify")]
    )
    rejection_id: int = await db.fetchval("SELECT max(id) FROM it_relay.rejected_events")
    return rejection_id


async def _rejection_of(db: asyncpg.Connection, event_id: uuid.UUID) -> int:
    rejection_id: int = await db.fetchval(
        "SELECT id FROM it_relay.rejected_events WHERE event_id = $1", event_id
    )
    return rejection_id


def _file(tmp_path: Path, name: str, payload: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_bytes(codec.dumps(payload))
    return str(path)


async def test_an_event_id_that_belongs_to_anything_else_is_refused_with_nothing_changed(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"])
    config = str(write_config(tmp_path / "relay.toml", settings))
    legacy = example("it_asset_assigned") | {"asset_tag": "LEGACY-1"}
    async with running(settings):
        delivered = await journal.publish(db, example("it_ticket_created"))
        rejected = await journal.publish(db, example("it_ticket_created") | BAD)
        # A legacy producer's event, journaled under the canonical id of its payload.
        await db.execute("SELECT pg_notify('it_events', $1)", codec.dumps(legacy).decode())
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'",
            lambda v: v == 2,
        )
        await wait_for_rows(
            db,
            "SELECT status FROM it_relay.events WHERE event_id = $1",
            lambda v: v == "rejected",
            args=[rejected],
        )
    pending = await journal.publish(db, example("it_asset_assigned"))  # no relay running: stays pending
    untrusted = uuid.uuid4()  # a rejection under an event_id that has no journal row
    await journal.record_rejected(
        db,
        [
            Rejection(
                reason="untrusted_sender",
                errors=("$: sent by role 'x', not one of ingest.legacy_senders",),
                event_id=untrusted,
                event_type="it_ticket_created",
                payload=example("it_ticket_created") | {"event_id": str(untrusted)},
                source="notify",
            )
        ],
    )
    target, other = await _not_json(db, "{not json 1"), await _not_json(db, "{not json 2")
    taken = uuid.uuid4()  # another rejection without an event_id, republished as `taken`
    fixed = example("it_ticket_created")
    done = await run_cli(
        "rejections",
        "republish",
        str(other),
        "--file",
        _file(tmp_path, "other", fixed | {"event_id": str(taken)}),
        "--config",
        config,
    )
    assert done.returncode == 0, done.stderr

    rejected_by = await _rejection_of(db, rejected)
    untrusted_by = await _rejection_of(db, untrusted)
    cases = {
        "a delivered event": (
            fixed | {"event_id": str(delivered)},
            f"{delivered} already belongs to another event (routed",
        ),
        "a pending event": (
            fixed | {"event_id": str(pending)},
            f"{pending} already belongs to another event (pending",
        ),
        "an event rejected by the router": (
            fixed | {"event_id": str(rejected)},
            f"{rejected} already belongs to rejection {rejected_by}",
        ),
        "a rejection with an event_id": (
            fixed | {"event_id": str(untrusted)},
            f"{untrusted} already belongs to rejection {untrusted_by}",
        ),
        "a rejection without one, republished": (
            fixed | {"event_id": str(taken)},
            f"{taken} already belongs to rejection {other}",
        ),
        "the same id spelled otherwise": (
            fixed | {"event_id": str(delivered).upper()},
            f"{delivered} already belongs to another event",
        ),
        # No event_id in the file: the canonical id of the payload, a journaled legacy event's.
        "a legacy event's canonical id": (legacy, "already belongs to another event (routed"),
    }
    before = await _state(db)
    for name, (payload, message) in cases.items():
        result = await run_cli(
            "rejections",
            "republish",
            str(target),
            "--file",
            _file(tmp_path, "fix", payload),
            "--config",
            config,
        )
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert message in result.stderr and result.stderr.endswith(": nothing republished\n"), (
            name,
            result.stderr,
        )
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, name
        assert await _state(db) == before, f"{name}: something changed"

    # A rejection's own event may be republished, named or not in the corrected file.
    own = await run_cli(
        "rejections",
        "republish",
        str(rejected_by),
        "--file",
        _file(tmp_path, "own", fixed | {"event_id": str(rejected)}),
        "--config",
        config,
    )
    assert own.returncode == 0, own.stderr
    unnamed = await run_cli(
        "rejections",
        "republish",
        str(untrusted_by),
        "--file",
        _file(tmp_path, "unnamed", fixed),
        "--config",
        config,
    )
    assert unnamed.returncode == 0, unnamed.stderr
    rows = await db.fetch(
        "SELECT event_id, status, payload->>'priority' AS priority FROM it_relay.events WHERE event_id = ANY($1::uuid[])",
        [rejected, untrusted],
    )
    assert {(r["event_id"], r["status"], r["priority"]) for r in rows} == {
        (rejected, "pending", fixed["priority"]),
        (untrusted, "pending", fixed["priority"]),
    }
    resolved = await db.fetch(
        "SELECT id, resolved_event_id FROM it_relay.rejected_events WHERE resolved_at IS NOT NULL ORDER BY id"
    )
    assert sorted((r["id"], r["resolved_event_id"]) for r in resolved) == sorted(
        [(other, taken), (rejected_by, rejected), (untrusted_by, untrusted)]
    )


def _corrected(event_id: uuid.UUID, subject: str = "fixed") -> NotifiedEvent:
    event = classify(
        codec.dumps(example("it_ticket_created") | {"event_id": str(event_id), "subject": subject}).decode()
    )
    assert isinstance(event, NotifiedEvent)
    return event


async def _blocked_on_a_lock(db: asyncpg.Connection, conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()
    await wait_for_rows(
        db,
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1 AND datname = current_database()",
        lambda v: v == "Lock",
        args=[pid],
    )


async def test_concurrent_republishes_take_turns(relay_db: str, db: asyncpg.Connection) -> None:
    first, second = await _not_json(db, "{a"), await _not_json(db, "{b")
    wanted = uuid.uuid4()
    a, b = await asyncpg.connect(relay_db), await asyncpg.connect(relay_db)
    try:
        # Two rejections, one id: the second waits on the first's uncommitted journal row, then
        # finds the id taken.
        held = a.transaction()
        await held.start()
        assert await operator_queries.republish(a, "it_events", first, _corrected(wanted, "first")) is None
        other = asyncio.create_task(
            operator_queries.republish(b, "it_events", second, _corrected(wanted, "second"))
        )
        await _blocked_on_a_lock(db, b)
        await held.commit()
        assert await other == f"event_id {wanted} was taken by another event meanwhile"

        # One rejection, twice: the second waits on the first's lock of it, then finds it resolved.
        again = await _not_json(db, "{c")
        held = a.transaction()
        await held.start()
        assert await operator_queries.republish(a, "it_events", again, _corrected(uuid.uuid4())) is None
        twice = asyncio.create_task(
            operator_queries.republish(b, "it_events", again, _corrected(uuid.uuid4()))
        )
        await _blocked_on_a_lock(db, b)
        await held.commit()
        assert (await twice or "").startswith(f"rejection {again} was already republished as ")
    finally:
        await a.close()
        await b.close()
    subject = await db.fetchval("SELECT payload->>'subject' FROM it_relay.events WHERE event_id = $1", wanted)
    assert subject == "first"
    assert await db.fetchval("SELECT resolved_at FROM it_relay.rejected_events WHERE id = $1", second) is None
    assert await db.fetchval("SELECT count(*) FROM it_relay.events") == 2


async def test_concurrent_cli_republishes_of_one_id_one_wins(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = str(write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["PF-10"])))
    wanted = str(uuid.uuid4())
    ids = [await _not_json(db, f"{{x{i}") for i in range(2)]
    results = await asyncio.gather(
        *(
            cli(
                "rejections",
                "republish",
                str(r),
                "--file",
                _file(
                    tmp_path,
                    f"c{r}",
                    example("it_ticket_created") | {"event_id": wanted, "subject": f"by {r}"},
                ),
                "--config",
                config,
            )
            for r in ids
        )
    )
    assert sorted(r.returncode for r in results) == [0, 1], [r.stderr for r in results]
    (loser,) = [r for r in results if r.returncode == 1]
    assert wanted in loser.stderr and loser.stderr.count("\n") == 1
    won = await db.fetchval("SELECT payload->>'subject' FROM it_relay.events WHERE event_id = $1", wanted)
    resolved = await db.fetch(
        "SELECT id FROM it_relay.rejected_events WHERE resolved_event_id = $1", uuid.UUID(wanted)
    )
    assert [f"by {r['id']}" for r in resolved] == [won]


# ─── the producer's retry after a republish ───────────────────────────────────────────────────


async def _publish(db: asyncpg.Connection, payload: dict[str, Any]) -> uuid.UUID:
    event_id: uuid.UUID = await db.fetchval(
        "SELECT it_relay.publish($1::jsonb)", codec.dumps(payload).decode()
    )
    return event_id


async def test_the_producer_retries_the_corrected_payload_after_a_republish(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    settings = relay_settings(relay_db, sink, ["PF-10"])
    config = str(write_config(tmp_path / "relay.toml", settings))
    event_id = str(uuid.uuid4())
    bad = example("it_ticket_created") | BAD | {"event_id": event_id, "license_key": KEY}
    good = bad | {"priority": "high"}
    async with running(settings):
        await _publish(db, bad)
        await wait_for_rows(db, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 1)
        # The operator corrects what `rejections show` shows (the key already redacted there).
        shown = await run_cli("rejections", "show", event_id, "--config", config, "--json")
        payload = json.loads(shown.stdout)["payload"] | {"priority": "high"}
        assert payload["license_key"] == "[REDACTED]"
        done = await run_cli(
            "rejections",
            "republish",
            event_id,
            "--file",
            _file(tmp_path, "fixed", payload),
            "--config",
            config,
        )
        assert done.returncode == 0, done.stderr
        await sink.wait_for(lambda r: len(r) == 1)
        # The producer's own retry of the corrected event (raw key and all) is a duplicate ...
        assert str(await _publish(db, good)) == event_id
        assert str(await _publish(db, dict(reversed(list(good.items()))))) == event_id
        # ... and its old payload is refused as different, not silently taken.
        with pytest.raises(asyncpg.UniqueViolationError, match=f"event_id {event_id} was already published"):
            await _publish(db, bad)
    assert len(sink.requests) == 1
    assert json.loads(sink.requests[0].body)["priority"] == "high"
    row = await db.fetchrow("SELECT status, payload->>'priority' AS priority FROM it_relay.events")
    assert row is not None
    assert (row["status"], row["priority"]) == ("routed", "high")


SUBJECTS = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
EXTRA = st.dictionaries(
    st.sampled_from(["note", "License-Key", "licence_key", "ref", "x"]),
    st.one_of(st.integers(-(2**40), 2**40), SUBJECTS, st.booleans()),
    max_size=3,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subject=SUBJECTS, extra=EXTRA, spelling=st.sampled_from([str, lambda u: str(u).upper()]))
def test_the_idempotency_check_follows_the_journaled_payload(
    relay_db: str, subject: str, extra: dict[str, Any], spelling: Any
) -> None:
    asyncio.run(_follows(relay_db, subject, extra, spelling))


async def _follows(url: str, subject: str, extra: dict[str, Any], spelling: Any) -> None:
    event_id = uuid.uuid4()
    bad = example("it_ticket_created") | BAD | extra | {"event_id": spelling(event_id)}
    good = bad | {"priority": "high", "subject": subject}
    conn = await asyncpg.connect(url)
    try:
        await _publish(conn, bad)
        # What the router does with an invalid event, through the same gateway call.
        reason = Rejection(reason="schema", errors=("priority: x",), event_id=event_id, source="journal")
        pending = await _pending_as_read(conn, event_id)
        written = await routing_queries.write_routing(conn, pending, [], [(event_id, reason)])
        assert written.rejected == {event_id}
        corrected = classify(codec.dumps(good).decode())
        assert isinstance(corrected, NotifiedEvent)
        assert (
            await operator_queries.republish(
                conn, "it_events", await _rejection_of(conn, event_id), corrected
            )
            is None
        )
        assert await _publish(conn, good) == event_id
        with pytest.raises(asyncpg.UniqueViolationError, match="already published with a different payload"):
            await _publish(conn, bad)
    finally:
        await conn.close()


async def _pending_as_read(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[PendingEvent]:
    """The event as an unlocked routing reads it, if it is pending."""
    return [e for e in await routing_queries.claim_events(conn, 1000, lock=False) if e.event_id == event_id]


async def _read_then_rejected_and_republished(
    conn: asyncpg.Connection,
) -> tuple[uuid.UUID, list[PendingEvent], Rejection]:
    """An invalid event read by a slow routing, then rejected by another and republished
    corrected (priority "high"): the event id, the stale read, and the rejection."""
    event_id = uuid.uuid4()
    bad = example("it_ticket_created") | BAD | {"event_id": str(event_id)}
    await _publish(conn, bad)
    reason = Rejection(reason="schema", errors=("priority: x",), event_id=event_id, source="journal")
    stale = await _pending_as_read(conn, event_id)
    fresh = await _pending_as_read(conn, event_id)
    assert (await routing_queries.write_routing(conn, fresh, [], [(event_id, reason)])).rejected == {event_id}
    corrected = classify(codec.dumps(bad | {"priority": "high"}).decode())
    assert isinstance(corrected, NotifiedEvent)
    await operator_queries.republish(conn, "it_events", await _rejection_of(conn, event_id), corrected)
    return event_id, stale, reason


async def test_a_routing_that_read_an_event_before_its_republish_leaves_the_corrected_one(
    relay_db: str,
) -> None:
    # Routing reads pending events without a lock: a slow router still holding what it read of an
    # event before another rejected it and an operator republished it must not judge the
    # corrected payload by the old one.
    conn = await asyncpg.connect(relay_db)
    try:
        event_id, stale, reason = await _read_then_rejected_and_republished(conn)
        late = await routing_queries.write_routing(conn, stale, [], [(event_id, reason)])
        assert (late.routed, late.rejected) == (frozenset(), frozenset())
        row = await conn.fetchrow(
            "SELECT status, payload->>'priority' AS p FROM it_relay.events WHERE event_id = $1", event_id
        )
        assert row is not None and (row["status"], row["p"]) == ("pending", "high")
    finally:
        await conn.close()


async def test_a_routing_written_from_a_read_before_a_republish_routes_nothing(relay_db: str) -> None:
    # The routing statement's own guard: a routing judged on what it read before the event was
    # rejected and republished takes nothing, though the event is pending again; the corrected
    # event is routed by the next read, with its corrected payload.
    conn = await asyncpg.connect(relay_db)
    try:
        event_id, stale, _ = await _read_then_rejected_and_republished(conn)
        [fresh] = await _pending_as_read(conn, event_id)
        as_routed = route(event_id, fresh.payload, "keep")
        assert isinstance(as_routed, RoutedEvent)
        late = await routing_queries.write_routing(conn, stale, [as_routed], [])
        assert (late.routed, late.leased) == (frozenset(), [])
        assert (
            await conn.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE event_id = $1", event_id) == 0
        )
        assert (await routing_queries.write_routing(conn, [fresh], [as_routed], [])).routed == {event_id}
    finally:
        await conn.close()


async def test_a_republished_event_names_its_entity_as_publish_does(db: asyncpg.Connection) -> None:
    """Until it is routed, an ordered subscriber's later events of its entity wait for it: the
    checks find unrouted events by their entity."""
    corrected = _corrected(uuid.uuid4())
    assert await operator_queries.republish(db, "it_events", await _not_json(db, "{e"), corrected) is None
    later = await journal.publish(db, example("it_ticket_created") | {"event_id": str(uuid.uuid4())})
    rows = await db.fetch(
        "SELECT event_id, entity_key, routed_at IS NULL AS unrouted FROM it_relay.events ORDER BY seq"
    )
    assert [r["event_id"] for r in rows] == [corrected.event_id, later]
    assert rows[0]["entity_key"] is not None and rows[0]["entity_key"] == rows[1]["entity_key"]
    assert all(r["unrouted"] for r in rows)
