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

from relay import cli_audit, cli_deliveries, cli_status, codec, operate
from relay.cli_common import echo_json, shown_database_url
from relay.contracts import REGISTRY, SUBSCRIBERS
from relay.contracts.examples import example
from relay.errors import InputError, UserError
from relay.model import (
    AuditEntry,
    DeliveryRow,
    LiveInstance,
    NotifiedEvent,
    Rejection,
    RejectionDetail,
    SubscriberState,
    SubscriberStats,
    effectively_paused,
)
from relay.settings import Settings, canonical_subscriber, fingerprint, load_settings
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


# ─── status, instances, and what the operator reads (issue 26) ────────────────────────────────


def _instance(config: str, subscribers: tuple[str, ...] = ("PF-10",), **changes: Any) -> LiveInstance:
    base = LiveInstance(
        host="relay-1",
        pid=4242,
        version="0.1.0",
        config=config,
        subscribers=subscribers,
        scheduler_leader=True,
        started_at=NOW - timedelta(hours=2),
        heartbeat_age_s=1.5,
    )
    return dataclasses.replace(base, **changes)


def test_status_warns_when_no_instance_is_alive_or_they_run_another_configuration() -> None:
    settings = _settings(PF_10={}, GR={})
    mine = fingerprint(settings)
    alone = operate.status_report(NOW, settings, {}, {}, [], 7)
    (warning,) = alone.warnings
    assert warning == (
        "no relay instance is alive (none recorded itself in the last 25s): nothing is routed or "
        "delivered; 7 events wait unrouted"
    )
    # With nothing alive, this configuration says what is served.
    assert {s.subscriber: s.state for s in alone.subscribers}["GR"] == "served"
    running = operate.status_report(
        NOW, settings, {}, {}, [_instance(mine), _instance("0123abcd4567", pid=7)], 0
    )
    other, idle = running.warnings
    assert other.startswith("relay-1:7 (0123abcd4567) run another configuration than this command read")
    assert idle == "configured here but served by no live instance: GR"
    # What runs decides: GR is configured here, but no instance serves it.
    states = {s.subscriber: s.state for s in running.subscribers}
    assert (states["PF-10"], states["GR"], states["HR"]) == ("served", "not served", "not served")
    same = operate.status_report(NOW, settings, {}, {}, [_instance(mine, ("PF-10", "GR"))], 0)
    assert same.warnings == [] and same.config == mine


def test_a_backfill_warns_when_nothing_alive_serves_the_subscriber() -> None:
    assert (
        operate.backfill_warning("HR", [])
        == "no relay instance is alive: HR's deliveries wait until one runs"
    )
    assert "no live instance serves HR yet" in (operate.backfill_warning("HR", [_instance("x")]) or "")
    assert operate.backfill_warning("PF-10", [_instance("x")]) is None


def test_status_prints_durations_for_people_and_times_with_their_zone() -> None:
    settings = _settings(FA={})
    stats = {
        "FA": _stats(
            oldest_pending=NOW - timedelta(seconds=192),
            p50_s=229.974,
            dead=3,
            next_attempt=NOW + timedelta(hours=2, minutes=5),
            last_success=NOW,
        )
    }
    report = operate.status_report(NOW, settings, stats, {}, [_instance(fingerprint(settings), ("FA",))], 0)
    lines = cli_status.status_lines(report)
    fa = next(line for line in lines if line.startswith("FA "))
    assert fa.split()[:6] == ["FA", "served", "3", "3m12s", "2h05m", "3"]
    assert " 3m49s " in fa and "229974ms" not in fa and "2026-03-01 12:00:00 UTC" in fa
    assert lines[-1] == (
        "  relay-1 pid 4242 it-relay 0.1.0, configuration "
        f"{fingerprint(settings)}, heartbeat 1s ago, since 2026-03-01 10:00:00 UTC, scheduler leader"
    )
    assert "events not routed yet: 0" in lines
    printed = json.loads(codec.dumps(dataclasses.asdict(report)))
    assert list(printed) == [f.name for f in dataclasses.fields(report)]


def _row(status: str, **changes: Any) -> DeliveryRow:
    base = DeliveryRow(
        event_id=uuid.UUID(int=1),
        event_type="it_ticket_created",
        subscriber="PF-10",
        status=status,  # type: ignore[arg-type]
        attempts=2,
        last_status=None,
        last_error="ConnectError: connection refused by 10.0.0.7:443 after the TLS handshake started",
        created_at=NOW,
        updated_at=NOW,
        next_attempt_at=NOW + timedelta(minutes=5),
        delivered_at=None,
    )
    return dataclasses.replace(base, **changes)


def test_the_delivery_log_keeps_its_table_when_wide() -> None:
    header = cli_deliveries.HEADER
    assert header.split()[-1] == "last"
    column = header.index("last")
    for wide in (False, True):
        for row in (_row("pending"), _row("dead"), _row("held"), _row("delivered", delivered_at=NOW)):
            line = cli_deliveries.delivery_line(row, wide=wide)
            assert line[column:].startswith("ConnectError"), line
            assert line[column - 1] == " "
            assert line.endswith("handshake started") is wide
    assert cli_deliveries.since(_row("pending")) == "next 2026-03-01 12:05:00 UTC"
    assert cli_deliveries.since(_row("dead")) == "dead since 2026-03-01 12:00:00 UTC"
    assert cli_deliveries.since(_row("held")) == "held since 2026-03-01 12:00:00 UTC"
    assert cli_deliveries.since(_row("delivered", delivered_at=NOW)) == "delivered 2026-03-01 12:00:00 UTC"
    assert cli_deliveries.delivery_line(
        _row("pending", last_error=None, last_status=503), wide=False
    ).endswith("  HTTP 503")


def test_an_action_reads_as_who_did_it_when() -> None:
    entry = AuditEntry(
        id=1,
        at=NOW,
        action="replay",
        db_role="it_relay",
        os_user="alice",
        host="ops-1",
        arguments={"subscriber": "FA", "status": "dead", "yes": True},
        count=12,
        event_ids=(),
        subscriber="FA",
        reason="vendor fixed it",
    )
    assert cli_audit.done_by(entry) == (
        "replayed by alice@ops-1 (it_relay) at 2026-03-01 12:00:00 UTC, 12 in all: vendor fixed it"
    )
    assert cli_audit.arguments_text(entry.arguments) == "--subscriber FA --status dead --yes"


@given(st.text(max_size=600))
def test_any_reason_is_kept_as_one_printable_line_or_refused_in_one(text: str) -> None:
    given = text.strip()
    if not given or len(given) > operate.REASON_LIMIT or not given.isprintable():
        with pytest.raises(InputError, match=r"^--reason: ") as refused:
            operate.reason_given(text)
        assert "\n" not in str(refused.value)
        return
    kept = operate.reason_given(text)
    assert kept is not None and kept.isprintable() and 0 < len(kept) <= operate.REASON_LIMIT + 16


@given(
    user=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    password=st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=8, max_size=30),
)
def test_a_database_url_is_shown_with_its_user_never_its_password(user: str, password: str) -> None:
    bare = f"postgresql://{user}@db.internal:5432/encore"
    assert shown_database_url(bare) == bare
    shown = shown_database_url(
        f"postgresql://{user}:{password}@db.internal:5432/encore?sslpassword={password}"
    )
    assert password not in shown and shown.startswith(f"postgresql://{user}:***@db.internal")
