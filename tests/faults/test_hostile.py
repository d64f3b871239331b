"""10k hostile payloads, by NOTIFY and by it_relay.publish: the relay stays up, rejects each bad one
with a reason, delivers each good one, and no raw licence key reaches the database, the logs, a
webhook body or /metrics."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import asyncpg
import httpx
import pytest

from relay import codec
from relay.contracts import EVENT_TYPES, REGISTRY, Accepted, parse_event
from relay.contracts.examples import example
from relay.ingest import classify
from relay.redaction import redact
from tests.support.relay import relay_settings, start_relay_process, stop_process, wait_for_rows, write_config
from tests.support.sink import Sink

pytestmark = pytest.mark.faults
N = 10_000
KEY_NAMES = ["license_key", "License_Key", "LICENSE-KEY", "licenseKey", "license key", "LicenseKey"]


def _text(value: Any) -> str:
    """JSON text of a generated value; the stdlib for what orjson's depth limit refuses."""
    try:
        return codec.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=float)


class Generator:
    """Seeded hostile payloads; every raw licence key it plants is remembered."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.keys: list[str] = []

    def key(self) -> str:
        body = "".join(
            self.rng.choice(string.ascii_letters + string.digits + "\"\\'{}:,é中") for _ in range(12)
        )
        key = f"RAWKEY{len(self.keys):05d}{body}"
        self.keys.append(key)
        return key

    def plant(self, value: Any, depth: int = 0) -> Any:
        """A licence key somewhere below value, under any spelling."""
        name = self.rng.choice(KEY_NAMES)
        if depth > 3 or not isinstance(value, dict) or self.rng.random() < 0.4:
            return (
                {**value, name: self.key()}
                if isinstance(value, dict)
                else {"wrapped": value, name: self.key()}
            )
        field = self.rng.choice([*value.keys(), "nested"])
        inner = value.get(field) if isinstance(value.get(field), dict) else {}
        return {
            **value,
            field: self.plant(inner, depth + 1)
            if self.rng.random() < 0.7
            else [self.plant(inner, depth + 1)],
        }

    def payload(self) -> tuple[str, str | dict[str, Any]]:
        """('notify', text) or ('publish', object)."""
        base = example(self.rng.choice(EVENT_TYPES))
        base["organization_id"] = (
            str(self.rng.getrandbits(128) % 10**30).zfill(32)[:8] + base["organization_id"][8:]
        )
        value = self._KINDS[self.rng.randrange(12)](self, base)
        if isinstance(value, Text):
            return "notify", value.text
        if self.rng.random() < 0.5 and isinstance(value, dict):
            return "publish", value
        return "notify", _text(value)

    def _planted(self, base: dict[str, Any]) -> Any:  # valid, with a key planted somewhere
        return self.plant(base)

    def _wrong_types(self, base: dict[str, Any]) -> Any:
        field = self.rng.choice(list(base))
        return self.plant(base | {field: self.rng.choice([None, 7, 1.5, True, [], {}, "x"])})

    def _missing_fields(self, base: dict[str, Any]) -> Any:
        return self.plant({k: v for k, v in base.items() if self.rng.random() < 0.7})

    def _unknown_type(self, base: dict[str, Any]) -> Any:
        return self.plant(
            base | {"event_type": "it_" + "".join(self.rng.choices(string.ascii_lowercase, k=8))}
        )

    def _long_string(self, base: dict[str, Any]) -> Any:  # a 7,999-byte string
        return self.plant(base | {"description": "x" * 7_999})

    def _deep(self, base: dict[str, Any]) -> Any:
        deep: Any = {KEY_NAMES[0]: self.key()}
        for _ in range(self.rng.choice([10, 70, 300])):
            deep = [deep]
        return base | {"extra": deep}

    def _not_an_object(self, base: dict[str, Any]) -> Any:
        return self.rng.choice([[self.plant(base)], "just a string", 42, None])

    def _broken_json(self, base: dict[str, Any]) -> Any:  # broken JSON text with a key in it
        text = _text(self.plant(base))
        return Text(text[: self.rng.randrange(1, len(text))])

    def _random_text(self, base: dict[str, Any]) -> Any:
        return Text("".join(self.rng.choices(string.printable + "é中\u2028", k=self.rng.randrange(1, 200))))

    def _edge_numbers(self, base: dict[str, Any]) -> Any:
        return self.plant(base | {self.rng.choice(list(base)): self.rng.choice([10**40, -(10**30), 1e308])})

    def _odd_unicode(self, base: dict[str, Any]) -> Any:  # NUL escapes and odd unicode
        return self.plant(base | {"subject": "a\u0000b\ud7ff\U0001f511"})

    def _valid(self, base: dict[str, Any]) -> Any:
        return base

    _KINDS: ClassVar[list[Callable[[Generator, dict[str, Any]], Any]]] = [
        _planted,
        _wrong_types,
        _missing_fields,
        _unknown_type,
        _long_string,
        _deep,
        _not_an_object,
        _broken_json,
        _random_text,
        _edge_numbers,
        _odd_unicode,
        _valid,
    ]


@dataclass(frozen=True)
class Text:
    """A notification sent as this exact text (not JSON of a value)."""

    text: str


ACCOUNTED = """
SELECT (SELECT count(*) FROM unnest($1::uuid[]) AS sent(id)
        WHERE EXISTS (SELECT FROM it_relay.events e WHERE e.event_id = sent.id AND e.status <> 'pending')
           OR EXISTS (SELECT FROM it_relay.rejected_events r WHERE r.event_id = sent.id)),
       (SELECT count(*) FROM it_relay.rejected_events WHERE event_id IS NULL)
"""


def _notified_identity(raw: str) -> UUID | None:
    """The event id the relay journals a notification under; None for one rejected without an id."""
    try:
        item = classify(raw)
    except Exception:
        return None  # the listener records such a notification as a rejection
    assert item is not None, "a generated notification is a bare wake-up"
    return item.event_id


def _pg_dump(url: str) -> str:
    from tests.support.postgres import TEST_URL_ENV

    if os.environ.get(TEST_URL_ENV):
        binary = shutil.which("pg_dump") or "pg_dump"
    else:
        import pgserver

        binary = str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump")
    result = subprocess.run(
        [binary, "--data-only", url], capture_output=True, text=True, timeout=300, check=True
    )
    return result.stdout


async def test_ten_thousand_hostile_payloads(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    generator = Generator(seed=7)
    payloads = [generator.payload() for _ in range(N)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    settings = relay_settings(relay_db, sink, server={"listen": f"127.0.0.1:{metrics_port}"})
    config = write_config(tmp_path / "relay.toml", settings)
    log_path = tmp_path / "relay.log"
    proc = start_relay_process(config, log_path)
    refused = 0
    sent: list[tuple[str, str | dict[str, Any]]] = []
    # What the test expects to find for each payload it got through: an event it can name (the id
    # publish() returned, or the id the relay derives from a notified object) that ends routed,
    # rejected or refused as unstorable; or, for a notification with no identity, one rejection.
    expected_ids: set[UUID] = set()
    anonymous = 0
    try:
        await wait_for_rows(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'it-relay:listener'",
            lambda v: v == 1,
        )
        for via, value in payloads:
            try:
                if via == "notify":
                    assert isinstance(value, str)
                    await db.execute("SELECT pg_notify('it_events', $1)", value)
                else:
                    expected_ids.add(await db.fetchval("SELECT it_relay.publish($1::jsonb)", _text(value)))
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                # The producer API refuses what PostgreSQL cannot hold (a \u0000, a number beyond
                # numeric, a payload over NOTIFY's 8000 bytes): the producer sees the error.
                refused += 1
                continue
            sent.append((via, value))
            if via == "notify":
                assert isinstance(value, str)
                identity = _notified_identity(value)
                if identity is None:
                    anonymous += 1
                else:
                    expected_ids.add(identity)
        # Done when every payload sent is accounted for, by identity, and no delivery is pending:
        # a count that merely stops moving proves nothing while notifications are still queued.
        await wait_for_rows(
            db,
            ACCOUNTED,
            lambda row: row[0] >= len(expected_ids) and row[1] >= anonymous,
            within=240,
            args=(list(expected_ids),),
            fetch="row",
        )
        await wait_for_rows(
            db,
            "SELECT count(*) FROM it_relay.deliveries WHERE status = 'pending'",
            lambda v: v == 0,
            within=240,
        )
        assert proc.poll() is None, "the relay exited"
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    finally:
        code = await stop_process(proc)
    assert code == 0
    assert len(sent) + refused == N
    accounted = await db.fetchrow(ACCOUNTED, list(expected_ids))
    assert accounted is not None
    assert tuple(accounted) == (len(expected_ids), anonymous)
    assert await db.fetchval("SELECT count(*) FROM it_relay.events WHERE status = 'pending'") == 0
    # Every valid payload was delivered to each subscriber of its contract; every other was rejected.
    rejected = await db.fetchval("SELECT count(*) FROM it_relay.rejected_events")
    routed = await db.fetchval("SELECT count(*) FROM it_relay.events WHERE status = 'routed'")
    assert rejected > N // 3
    assert routed > N // 20
    reasons = {r[0] for r in await db.fetch("SELECT DISTINCT reason FROM it_relay.rejected_events")}
    assert reasons == {
        "not_json",
        "not_an_object",
        "unknown_event_type",
        "schema",
        "too_deep",
        "invalid_text",
    }
    deliveries = await db.fetchval("SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'")
    assert deliveries == len(sink.requests)
    # Exactly the valid payloads were routed: each publish is its own event; identical notified
    # payloads share their canonical id, so they are one event.
    valid_published, valid_notified = 0, set()
    for via, v in sent:
        text = v if isinstance(v, str) else _text(v)
        result = parse_event(text)
        # PostgreSQL cannot store a \u0000 in jsonb: such a notified event is rejected as unstorable.
        if isinstance(result, Accepted) and "\\u0000" not in text:
            if via == "publish":
                valid_published += 1
            else:
                valid_notified.add(codec.canonical_event_id(redact(codec.loads(v))))  # type: ignore[arg-type]
    assert routed == valid_published + len(valid_notified)
    types = [r[0] for r in await db.fetch("SELECT event_type FROM it_relay.events WHERE status = 'routed'")]
    assert deliveries == sum(len(REGISTRY[t].subscribers) for t in types)
    # No raw key anywhere.
    dump = _pg_dump(relay_db)
    logs = log_path.read_text()
    bodies = b"\n".join(r.body for r in sink.requests).decode()
    for key in generator.keys:
        forms = {key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]}
        for where, text in (("pg_dump", dump), ("logs", logs), ("webhook bodies", bodies)):
            assert not any(f in text for f in forms), f"a raw licence key in {where}"
    assert "RAWKEY" not in dump
    assert "RAWKEY" not in logs
    assert "RAWKEY" not in bodies
    assert "RAWKEY" not in metrics
    assert 'it_relay_events_rejected_total{reason="schema"}' in metrics
    assert refused < N // 4
