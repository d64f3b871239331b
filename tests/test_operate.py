"""What the operator commands decide, without a database or a command line (relay.operate): the
served / paused rule, each status line, names given by an operator, republish checks; and that
`--json` prints the record's fields."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import operate
from relay.cli_common import echo_json
from relay.contracts import REGISTRY, SUBSCRIBERS
from relay.contracts.examples import example
from relay.errors import InputError, UserError
from relay.model import (
    NotifiedEvent,
    Rejection,
    RejectionDetail,
    SubscriberState,
    SubscriberStats,
    effectively_paused,
)
from relay.settings import Settings, canonical_subscriber, load_settings
from tests.support.relay import SECRET

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _settings(**subscribers: dict[str, Any]) -> Settings:
    return load_settings(
        None,
        database={"url": "postgresql://nobody@127.0.0.1:1/none"},
        subscribers={
            name.replace("_", "-"): {"url": "http://127.0.0.1:9/x", "secret": SECRET, **conf}
            for name, conf in subscribers.items()
        },
    )


def _shared(paused: bool | None) -> SubscriberState:
    return SubscriberState(
        paused=paused,
        changed_at=None if paused is None else NOW,
        changed_by=None if paused is None else "ops@host",
        circuit="closed",
        circuit_changed_at=None,
    )


@given(operator=st.sampled_from([None, True, False]), enabled=st.booleans())
def test_an_operators_pause_or_resume_overrides_the_configuration(
    operator: bool | None, enabled: bool
) -> None:
    shared = _shared(operator)
    expected = (not enabled) if operator is None else operator
    assert effectively_paused(shared, enabled=enabled) is expected
    assert effectively_paused(None, enabled=enabled) is (not enabled)


def test_served_paused_or_not_served_and_why() -> None:
    settings = _settings(PF_10={}, GR={"enabled": False})
    states = {"PF-10": _shared(True)}
    assert operate.serving("PF-10", settings, states) == "paused"
    assert operate.serving("GR", settings, {}) == "paused"
    assert operate.serving("GR", settings, {"GR": _shared(False)}) == "served"
    assert operate.serving("HR", settings, states) == "not served"
    with pytest.raises(InputError, match=r"^HR: not served here \(no \[subscribers.HR\]"):
        operate.served_here("HR", settings)
    with pytest.raises(InputError, match="not configured here"):
        operate.backfill_types("HR", settings)
    assert operate.backfill_types("PF-10", settings) == operate.routed_event_types("PF-10")
    assert "it_ticket_created" in operate.routed_event_types("PF-10")


def _stats(**changes: Any) -> SubscriberStats:
    base = SubscriberStats(
        subscriber="FA",
        backlog=3,
        oldest_pending=NOW - timedelta(seconds=90.04),
        delivered_5m=1,
        failed_5m=2,
        delivered_60m=4,
        failed_60m=5,
        p50_s=0.12345,
        p99_s=None,
        last_success=None,
        last_error="HTTP 500",
        last_error_at=NOW,
        paused=None,
        circuit=None,
        circuit_changed_at=None,
        now=NOW,
    )
    return dataclasses.replace(base, **changes)


def test_a_status_line_from_the_figures_and_without_any() -> None:
    line = operate.status_line("FA", "served", _stats())
    assert (line.backlog, line.oldest_pending_s, line.latency_p50_s, line.latency_p99_s) == (
        3,
        90.0,
        0.123,
        None,
    )
    assert line.circuit == "closed" and line.last_error == "HTTP 500"
    assert (
        operate.status_line("FA", "served", _stats(circuit="open", oldest_pending=None)).oldest_pending_s
        is None
    )
    empty = operate.status_line("HR", "not served", None)
    assert (empty.backlog, empty.delivered_60m, empty.circuit, empty.last_success) == (0, 0, "closed", None)


def test_json_is_the_record_serialised(capsys: pytest.CaptureFixture[str]) -> None:
    line = operate.status_line("FA", "served", _stats())
    echo_json([line])
    (printed,) = json.loads(capsys.readouterr().out)
    assert list(printed) == [f.name for f in dataclasses.fields(line)]
    assert printed["last_error_at"] == NOW.isoformat()


@given(st.text(max_size=40))
def test_any_subscriber_name_is_a_contract_subscriber_or_a_one_line_error(name: str) -> None:
    if canonical_subscriber(name) is not None:
        assert operate.subscriber_named(name) in SUBSCRIBERS
        return
    with pytest.raises(InputError, match="not a subscriber of the contracts") as refused:
        operate.subscriber_named(name)
    assert "\n" not in str(refused.value)


@given(st.text(max_size=40))
def test_any_event_type_is_a_contracts_or_a_one_line_error(value: str) -> None:
    if value in REGISTRY:
        assert operate.event_type_named(value) == value
        return
    with pytest.raises(InputError, match=r"^--event-type .*: not an event type of the contracts$") as refused:
        operate.event_type_named(value)
    assert "\n" not in str(refused.value)


def _rejection(event_id: uuid.UUID | None, payload: Any, resolved: bool = False) -> RejectionDetail:
    return RejectionDetail(
        id=7,
        event_id=event_id,
        event_type="it_ticket_created",
        reason="schema",
        errors=("priority: Input should be 'low', 'medium', 'high' or 'critical'",),
        source="publish",
        received_at=NOW,
        resolved_at=NOW if resolved else None,
        resolved_event_id=uuid.uuid4() if resolved else None,
        payload=payload,
        raw_text=None,
    )


def test_what_is_republished_and_under_which_id() -> None:
    rejected = uuid.uuid4()
    bad = example("it_ticket_created") | {"priority": "urgent", "event_id": str(rejected)}
    row = _rejection(rejected, bad)
    with pytest.raises(UserError, match="already republished"):
        operate.republishable(_rejection(rejected, bad, resolved=True), None)
    with pytest.raises(UserError, match="kept no event object"):
        operate.republishable(_rejection(None, "{not json"), None)
    assert operate.republishable(row, None) == bad
    still = operate.revalidated(operate.republishable(row, None), row, "keep")
    assert isinstance(still, Rejection) and still.errors
    fixed = operate.revalidated(bad | {"priority": "high"}, row, "keep")
    assert isinstance(fixed, NotifiedEvent) and fixed.event_id == rejected
    # No event_id in the corrected file: the rejection's; another one: refused.
    unnamed = {k: v for k, v in bad.items() if k != "event_id"} | {"priority": "high"}
    named = operate.revalidated(unnamed, row, "keep")
    assert isinstance(named, NotifiedEvent) and named.event_id == rejected
    with pytest.raises(InputError, match="is not the rejected one"):
        operate.revalidated(bad | {"priority": "high", "event_id": str(uuid.uuid4())}, row, "keep")
