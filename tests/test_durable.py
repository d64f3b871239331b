"""What exists nowhere else is committed synchronously, even through the daemon's pool (whose
commits are asynchronous): proven by the `synchronous_commit` in force when each row's
transaction commits, captured by a deferred trigger of the test's own."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay import (
    audit_queries,
    codec,
    database,
    journal,
    operator_queries,
    routing_queries,
    scheduler_queries,
)
from relay.contracts.examples import example
from relay.gateway import Gateway
from relay.listener import Listener
from relay.metrics import Metrics
from relay.model import AuditAction, DeliveryResult, NotifiedEvent, Rejection
from relay.planning import Emission, StateUpdate
from relay.settings import load_settings
from relay.sql import QUERIES
from tests.support.relay import listening, wait_for_rows, wait_until

OBSERVED = (
    "events",
    "rejected_events",
    "deliveries",
    "subscriber_state",
    "scheduler_marks",
    "compliance_state",
    "audit",
)

# Deferred: the trigger runs at COMMIT, so it sees the setting the commit itself obeys.
CAPTURE = """
CREATE TABLE public.commit_modes (id bigserial, tbl text NOT NULL, mode text NOT NULL);
CREATE FUNCTION public.capture_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.commit_modes (tbl, mode) VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
"""


@pytest.fixture
async def observed(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test's connection, with every commit to the relay's tables observed."""
    await db.execute(CAPTURE)
    for table in OBSERVED:
        await db.execute(
            f"CREATE CONSTRAINT TRIGGER capture_commit_mode AFTER INSERT OR UPDATE OR DELETE "
            f"ON it_relay.{table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION public.capture_commit_mode()"
        )
    return db


@pytest.fixture
async def pool(relay_db: str) -> AsyncIterator[asyncpg.Pool]:
    """The daemon's pool, as configured by default (asynchronous commits)."""
    pool = await database.create_pool(load_settings(None, database={"url": relay_db}).database)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    yield pool
    await pool.close()


async def _modes(db: asyncpg.Connection) -> dict[str, set[str]]:
    rows = await db.fetch("SELECT tbl, mode FROM public.commit_modes")
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["tbl"], set()).add(r["mode"])
    return out


# ─── the listener ─────────────────────────────────────────────────────────────────────────────

STUB = json.dumps({"event_id": "00000000-0000-4000-8000-00000000000{}", "event_type": "it_asset_assigned"})
BATCHES: dict[str, tuple[list[str], list[str]]] = {
    # name: (what is notified, ingest.legacy_senders)
    "invalid text": (['["\\ud800"]', '{"a": "\\u0000"}', '{"event_type": "x", "y": "\\udfff"}'], []),
    "not json": (["{not json", "license_key=RAW", "[1,"], []),
    "untrusted sender": (
        [codec.dumps(example("it_asset_assigned") | {"asset_tag": f"U-{i}"}).decode() for i in range(3)],
        ["no_such_role_for_this_test"],
    ),
    "an id naming no event": ([STUB.replace("{}", str(i)) for i in range(3)], []),
}


@pytest.mark.parametrize("kind", list(BATCHES))
async def test_a_batch_of_only_rejections_commits_synchronously(
    relay_db: str, observed: asyncpg.Connection, pool: asyncpg.Pool, kind: str
) -> None:
    notified, senders = BATCHES[kind]
    settings = load_settings(None, database={"url": relay_db})
    listener = Listener(
        connect=lambda: database.connect(settings.database, database.LISTENER_APPLICATION),
        store=Gateway(pool),
        channel=settings.database.channel,
        metrics=Metrics(),
        on_wake=lambda _everything: None,
        legacy_senders=senders,
        poll_interval_s=0.2,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(listening(listener, stopping))
    try:
        await wait_until(listener.connected.is_set, task=task)
        # One transaction: the listener hears them together, as one batch.
        async with observed.transaction():
            for raw in notified:
                await observed.execute("SELECT pg_notify('it_events', $1)", raw)
        # The sender stays connected until judged: an untrusted one is recognised by its live pid.
        await wait_for_rows(observed, "SELECT count(*) FROM it_relay.rejected_events", lambda v: v == 3)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
    assert await observed.fetchval("SELECT count(*) FROM it_relay.events") == 0
    assert await _modes(observed) == {"rejected_events": {"on"}}


# ─── every gateway write of a sole record ─────────────────────────────────────────────────────


async def _routed_event(db: asyncpg.Connection, subscriber: str) -> uuid.UUID:
    """A routed event with one delivery (the test's own rows, written before observing)."""
    event_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO it_relay.events (event_id, event_type, payload, source, status, routed_at) "
        "VALUES ($1, 'it_asset_assigned', $2::jsonb, 'publish', 'routed', clock_timestamp())",
        event_id,
        codec.dumps(example("it_asset_assigned") | {"event_id": str(event_id)}).decode(),
    )
    await db.execute(
        "INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, status) "
        "VALUES ($1, $2, 'it_asset_assigned', 'dead')",
        event_id,
        subscriber,
    )
    return event_id


async def _rejection(db: asyncpg.Connection) -> int:
    row_id: int = await db.fetchval(
        "INSERT INTO it_relay.rejected_events (reason, errors, raw_text, source) "
        "VALUES ('not_json', ARRAY['$: not JSON'], '{oops', 'notify') RETURNING id"
    )
    return row_id


Write = Callable[[database.Conn], Awaitable[Any]]


async def _sole_record_writes(db: asyncpg.Connection) -> dict[str, Write]:
    """One call of every gateway function that writes the only record of something."""
    replayed = await _routed_event(db, "PF-10")
    await _routed_event(db, "PF-10")
    rejected = await _rejection(db)
    junk = await _rejection(db)
    by = AuditAction(action="replay", arguments={"event_id": str(replayed)}, os_user="ops", host="h")
    since = datetime.now(UTC) - timedelta(hours=1)
    fixed = example("it_ticket_created") | {"event_id": str(uuid.uuid4())}
    emission = Emission(
        kind="test", entity_id=uuid.uuid4(), milestone="1", payload=example("it_contract_expiring")
    )
    licence = uuid.uuid4()
    notified = example("it_asset_assigned")
    holding = await _routed_event(db, "PF-10")
    unfit = uuid.uuid4()
    version = await db.fetchval(
        "INSERT INTO it_relay.events (event_id, event_type, payload, source) "
        "VALUES ($1, 'it_ticket_created', '{}'::jsonb, 'publish') RETURNING xmin",
        unfit,
    )
    await db.execute(
        "UPDATE it_relay.deliveries SET status = 'dead', holds = true, entity_key = 'asset_id:held' WHERE event_id = $1",
        holding,
    )
    return {
        "publish": lambda c: journal.publish(c, example("it_ticket_created")),
        "journal_notified": lambda c: journal.journal_notified(
            c,
            [
                NotifiedEvent(
                    event_id=codec.canonical_event_id(notified),
                    event_type="it_asset_assigned",
                    payload=notified,
                    organization_id=None,
                )
            ],
        ),
        "record_rejected": lambda c: journal.record_rejected(
            c, [Rejection(reason="not_json", errors=("$: not JSON",), raw_text="{", source="notify")]
        ),
        "reject_events": lambda c: routing_queries.reject_events(
            c, [(unfit, Rejection(reason="schema", errors=("$: x",), event_id=unfit), version)]
        ),
        # Its payload cannot be stored as jsonb: kept as text, by the fallback.
        "record_rejected_safely": lambda c: journal.record_rejected_safely(
            c, Rejection(reason="schema", errors=("$: x",), payload={"a": "\x00"}, source="notify")
        ),
        "replay": lambda c: operator_queries.replay(
            c, "it_events", operator_queries.Selection(event_id=replayed), audit=by
        ),
        "record": lambda c: audit_queries.record(c, by, count=1, event_ids=[replayed]),
        "dismiss_rejection": lambda c: operator_queries.dismiss_rejection(c, junk, "ops@h", audit=by),
        "backfill": lambda c: operator_queries.backfill(
            c,
            "it_events",
            subscriber="HR",
            event_types=["it_asset_assigned"],
            since=since,
            until=None,
            dry_run=False,
        ),
        "backfill_filtered": lambda c: operator_queries.backfill_filtered(
            c,
            "it_events",
            subscriber="Audit",
            event_types=["it_asset_assigned"],
            since=since,
            until=None,
            dry_run=False,
            condition={"asset_tag": {"$exist": True}},
        ),
        "set_paused": lambda c: operator_queries.set_paused(c, "PF-10", True, "tester"),
        "release_entity": lambda c: operator_queries.release_entity(c, "it_events", "PF-10", "asset_id:held"),
        "republish": lambda c: operator_queries.republish(
            c,
            "it_events",
            rejected,
            NotifiedEvent(
                event_id=uuid.UUID(fixed["event_id"]),
                event_type="it_ticket_created",
                payload=fixed,
                organization_id=None,
            ),
        ),
        "emit_scheduled": lambda c: scheduler_queries.emit_scheduled(c, emission, uuid.uuid4(), []),
        "set_compliance_states": lambda c: scheduler_queries.set_compliance_states(
            c, [StateUpdate(license_id=licence, state="ok", episode=0)]
        ),
    }


async def test_every_gateway_write_of_a_sole_record_commits_synchronously(
    observed: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    writes = await _sole_record_writes(observed)
    assert set(writes) == set(journal.SOLE_RECORDS), "each sole-record writer is called here once"
    seen: dict[str, dict[str, set[str]]] = {}
    for name, write in writes.items():
        await observed.execute("TRUNCATE public.commit_modes")
        async with pool.acquire() as conn:
            await write(conn)
            # Outside a transaction the next statement is asynchronous again: nothing leaks.
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        seen[name] = await _modes(observed)
    assert {name: set().union(*modes.values()) for name, modes in seen.items()} == {
        name: {"on"} for name in writes
    }, seen
    # Written inside the caller's transaction, the caller's commit is the synchronous one.
    await observed.execute("TRUNCATE public.commit_modes")
    async with pool.acquire() as conn, conn.transaction():
        await operator_queries.set_paused(conn, "GR", True, "tester")
        await journal.set_circuit(conn, "GR", "open")
    assert await _modes(observed) == {"subscriber_state": {"on"}}


async def test_bookkeeping_stays_asynchronous(observed: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    # The control: the capture does see an asynchronous commit when the gateway means one.
    event_id = await _routed_event(observed, "PF-10")
    await observed.execute("UPDATE it_relay.deliveries SET status = 'pending'")
    await observed.execute("TRUNCATE public.commit_modes")
    async with pool.acquire() as conn:
        (claimed,) = await journal.claim_deliveries(conn, "PF-10", "me", 10, 30.0)
        assert claimed.event_id == event_id
        await journal.write_results(
            conn,
            [
                DeliveryResult(
                    event_id=event_id,
                    subscriber="PF-10",
                    status="delivered",
                    attempts=1,
                    failed_rounds=0,
                    retry_in_s=None,
                    last_status=200,
                    last_error=None,
                    history=(),
                )
            ],
            "me",
        )
        await journal.set_circuit(conn, "PF-10", "open")
    assert await _modes(observed) == {"deliveries": {"off"}, "subscriber_state": {"off"}}


# ─── every writer is classified ───────────────────────────────────────────────────────────────

_WRITES = re.compile(r"\b(INSERT|DELETE)\b|(?<!FOR )\bUPDATE\b")


def _writing_functions() -> set[str]:
    """it_relay's functions whose latest definition in the migrations writes a table."""
    bodies: dict[str, str] = {}
    for script in sorted((Path(journal.__file__).parent / "sql" / "migrations").glob("*.sql")):
        for name, _, body in _DEFINITION.findall(script.read_text()):
            bodies[name] = body
    return {name for name, body in bodies.items() if _WRITES.search(re.sub(r"--[^\n]*", "", body))}


# A body between dollar quotes, tagged or not ($$ ... $$, $body$ ... $body$).
_DEFINITION = re.compile(
    r"CREATE (?:OR REPLACE )?FUNCTION it_relay\.(\w+)\(.*?\$(\w*)\$(.*?)\$\2\$", re.DOTALL
)
_CALLS = re.compile(r"\bit_relay\.(\w+)\s*\(")


def _writes(sql: str) -> bool:
    # A named query writes by its own statement or through a function of ours that writes
    # (write_results calls write_outcomes, claim_deliveries claim_due).
    code = re.sub(r"--[^\n]*", "", sql)
    return bool(_WRITES.search(code)) or bool(set(_CALLS.findall(code)) & WRITING_FUNCTIONS)


def _calls(node: ast.AST) -> tuple[set[str], set[str]]:
    """The named queries a function runs, and the functions it calls by name."""
    queries, called = set(), set()
    for c in ast.walk(node):
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name):
            called.add(c.func.id)
            if c.func.id == "query" and isinstance(c.args[0], ast.Constant):
                queries.add(str(c.args[0].value))
    return queries, called


WRITING_FUNCTIONS = _writing_functions()

# The gateway modules that write the journal's tables (schema changes, relay.migrate, are apart).
GATEWAY_MODULES = (journal, routing_queries, operator_queries, audit_queries, scheduler_queries)


def test_every_gateway_writer_declares_whether_it_is_a_sole_record() -> None:
    # A new writer cannot be added to the gateway without saying whether a lost commit of it is
    # redone (asynchronous is fine) or lost for good (it must be a sole_record).
    defined = [
        n
        for module in GATEWAY_MODULES
        for n in ast.parse(inspect.getsource(module)).body
        if isinstance(n, ast.AsyncFunctionDef)
    ]
    functions = {n.name: _calls(n) for n in defined}
    assert len(functions) == len(defined), "the marks name writers by function name: one name, one writer"
    writers = {name for name, (queries, _) in functions.items() if any(_writes(QUERIES[q]) for q in queries)}
    while grown := {n for n, (_, called) in functions.items() if called & writers} - writers:
        writers |= grown  # a function that calls a writer writes too
    assert {"record_rejected", "replay", "write_results", "set_paused", "set_compliance_states"} <= writers
    assert {"claim_deliveries", "publish"} <= writers
    public = {w for w in writers if not w.startswith("_")}
    unclassified = public - set(journal.SOLE_RECORDS) - set(journal.REDOABLE)
    assert not unclassified, f"gateway writers neither sole_record nor redoable: {sorted(unclassified)}"
    assert not set(journal.SOLE_RECORDS) & set(journal.REDOABLE)
