"""What a notification means, and where a journaled event goes, decided without a database."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import codec
from relay.contracts import REGISTRY
from relay.contracts.examples import example
from relay.health import Heartbeats
from relay.ingest import announced_id, classify, is_announcement, route, untrusted
from relay.model import NotifiedEvent, Rejection, RoutedEvent


def test_a_full_payload_is_journaled_under_its_canonical_id() -> None:
    payload = example("it_ticket_created") | {"license_key": "RAW-KEY"}
    first = classify(json.dumps(payload))
    reordered = classify(json.dumps(dict(reversed(list(payload.items())))))
    assert isinstance(first, NotifiedEvent) and isinstance(reordered, NotifiedEvent)
    assert first.event_id == reordered.event_id  # two instances hearing it journal one row
    assert first.event_id.version == 5
    assert first.payload["license_key"] == "[REDACTED]"
    assert str(first.organization_id) == payload["organization_id"]


def test_a_given_event_id_is_kept() -> None:
    given = str(uuid4())
    item = classify(json.dumps(example("it_ticket_created") | {"event_id": given}))
    assert isinstance(item, NotifiedEvent) and str(item.event_id) == given


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"license_key": "RAW", oops', "not_json"),
        ("[1, 2]", "not_an_object"),
        ('"just text"', "not_an_object"),
        ("[" * 100 + "]" * 100, "too_deep"),  # deeper than the relay walks
        ('["\\ud800"]', "invalid_text"),  # a lone surrogate (it once stopped all ingestion)
    ],
)
def test_what_is_not_an_event_object_is_a_rejection(raw: str, reason: str) -> None:
    item = classify(raw)
    assert isinstance(item, Rejection)
    assert (item.reason, item.source) == (reason, "notify")
    assert "RAW" not in str(item.raw_text) + str(item.payload)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"event_id": "%s", "event_type": "it_ticket_created"}', (True, False)),
        ('{"event_id": "%s", "event_type": "x", "wake": "deliveries"}', (True, True)),
        ('{"event_id": "%s", "subject": "a full payload"}', (True, False)),
        ('{"event_id": "not-a-uuid"}', (False, False)),
        ("not json", (False, False)),
    ],
)
def test_announced_ids_and_lane_wake_ups(raw: str, expected: tuple[bool, bool]) -> None:
    event_id = uuid4()
    found, lanes = announced_id(raw.replace("%s", str(event_id)) if "%s" in raw else raw)
    assert (found == event_id, lanes) == expected


# Text PostgreSQL can send (no lone surrogates: those are no JSON orjson reads, announcement or not).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["event_id", "event_type", "wake", "subject", "x"]), _json))
def test_only_publishs_own_announcement_is_taken_for_one(value: dict[str, object]) -> None:
    # An announcement's confirmation may wait (relay/listener.py); anything else is looked at at once.
    raw = json.dumps(value)
    expected = value.keys() == {"event_id", "event_type"} and len(raw) <= 160
    assert is_announcement(raw) is expected


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', "", "{" * 500])
def test_what_is_not_an_object_is_no_announcement(raw: str) -> None:
    assert not is_announcement(raw)


def test_a_bare_wake_up_is_not_an_event() -> None:
    assert classify(json.dumps({"event_id": str(uuid4()), "event_type": "it_ticket_created"})) is None


def test_routing_goes_to_exactly_the_contract_subscribers() -> None:
    for event_type, contract in REGISTRY.items():
        event_id = uuid4()
        routed = route(event_id, codec.dumps(example(event_type)).decode(), "keep")
        assert isinstance(routed, RoutedEvent), event_type
        assert (routed.event_type, tuple(routed.subscribers)) == (event_type, tuple(contract.subscribers))
        body = json.loads(routed.body)
        assert body["event_id"] == str(event_id)
        assert routed.entity_key is None or routed.entity_key.split(":", 1)[1] in body.values()


def test_an_invalid_journaled_event_is_rejected_with_its_id_and_paths() -> None:
    event_id = uuid4()
    rejected = route(event_id, json.dumps(example("it_ticket_created") | {"priority": "urgent"}), "keep")
    assert isinstance(rejected, Rejection)
    assert (rejected.reason, rejected.event_id, rejected.source) == ("schema", event_id, "journal")
    assert any(e.startswith("priority: ") for e in rejected.errors)


def test_an_untrusted_sender_keeps_the_redacted_payload_and_the_reason() -> None:
    item = classify(codec.dumps(example("it_license_created") | {"license_key": "RAW-FORGED"}).decode())
    assert isinstance(item, NotifiedEvent)
    rejected = untrusted(item, "sent by role 'x'")
    assert (rejected.reason, rejected.event_id, rejected.errors) == (
        "untrusted_sender",
        item.event_id,
        ("$: sent by role 'x'",),
    )
    assert "RAW-FORGED" not in codec.dumps(rejected.payload).decode()
    broken = classify("{oops")
    assert isinstance(broken, Rejection)
    assert untrusted(broken, "why").errors[0] == "$: why"


def test_heartbeats_name_the_loop_that_stopped_coming_round() -> None:
    now = [0.0]
    beats = Heartbeats(clock=lambda: now[0])
    router = beats.register("router", 5)
    beats.register("lane PF-10", 60)
    now[0] = 24.0
    router()
    assert beats.stalled() == []
    now[0] = 26.0  # the lane is still within 3 x 60 + 10; the router was seen at 24
    assert beats.stalled() == []
    now[0] = 50.0
    assert beats.stalled() == ["router"]
    now[0] = 191.0
    assert beats.stalled() == ["lane PF-10", "router"]
    beats.forget("router")
    assert beats.stalled() == ["lane PF-10"]
