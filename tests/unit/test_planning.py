"""The scheduler's rules without a database: rows in, emissions out, the clock a parameter.

The database tests (tests/test_scheduler.py) stay the acceptance tier; these pin each rule."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from relay.contracts import Accepted, validate
from relay.planning import compliance_level, plan_compliance, plan_expiring, plan_patches, plan_sla
from relay.settings import SlaTarget

ORG = UUID("00000000-0000-4000-8000-000000000001")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
MILESTONES = [90, 60, 30, 14, 7]
TARGETS = {"critical": SlaTarget(response=1, resolution=4), "low": SlaTarget(response=24, resolution=120)}


def _valid(payload: dict[str, Any]) -> None:
    """Every planned payload passes its contract (with unknown fields rejected)."""
    result = validate(payload | {"event_id": str(uuid4())}, "reject")
    assert isinstance(result, Accepted), getattr(result, "errors", result)


def _licence(expires: date) -> dict[str, Any]:
    return {
        "license_id": uuid4(),
        "software_name": "Visio",
        "software_vendor": "Microsoft",
        "license_type": "per_user",
        "expiration_date": expires,
        "license_count": 10,
        "renewal_cost": Decimal("155.00"),
        "organization_id": ORG,
    }


@pytest.mark.parametrize(
    ("days_left", "milestone"),
    [
        (120, None),  # not yet at any milestone
        (90, 90),
        (61, 90),
        (25, 30),  # the scheduler was down past 60 and 30: only the nearest is due
        (7, 7),
        (0, 7),  # expires today
        (-1, None),  # expired: nothing more to warn about
    ],
)
def test_expiry_emits_the_nearest_milestone_reached(days_left: int, milestone: int | None) -> None:
    licence = _licence(TODAY + timedelta(days=days_left))
    planned = plan_expiring([], [licence], TODAY, NOW, MILESTONES)
    if milestone is None:
        assert planned == []
        return
    (emission,) = planned
    assert (emission.kind, emission.milestone) == (
        "license_expiring",
        f"{licence['expiration_date']}:{milestone}",
    )
    assert emission.payload["days_remaining"] == days_left
    _valid(emission.payload)


def test_a_renewal_starts_the_milestones_afresh() -> None:
    licence = _licence(TODAY + timedelta(days=20))
    before = plan_expiring([], [licence], TODAY, NOW, MILESTONES)[0]
    renewed = plan_expiring(
        [], [licence | {"expiration_date": TODAY + timedelta(days=385)}], TODAY, NOW, [400]
    )
    assert before.milestone != renewed[0].milestone


@pytest.mark.parametrize(("overdue", "step"), [(0, None), (1, 1), (2, 1), (3, 3), (13, 7), (45, 30)])
def test_patch_overdue_at_the_largest_step_reached(overdue: int, step: int | None) -> None:
    patch = {
        "patch_id": uuid4(),
        "patch_name": "VPN 7.4.2",
        "severity": "critical",
        "target_date": TODAY - timedelta(days=overdue),
        "affected_asset_ids": [uuid4(), uuid4()],
        "affected_asset_count": 2,
        "organization_id": ORG,
    }
    planned = plan_patches([patch], TODAY, NOW, [1, 3, 7, 14, 30])
    assert [e.milestone.split(":")[1] for e in planned] == ([] if step is None else [str(step)])
    for e in planned:
        assert e.payload["days_overdue"] == overdue
        _valid(e.payload)


def _ticket(**clock: Any) -> dict[str, Any]:
    return {
        "ticket_id": uuid4(),
        "ticket_number": "TKT-1",
        "priority": "critical",
        "status": "open",
        "assigned_to_id": None,
        "organization_id": ORG,
        "created_at": NOW - timedelta(hours=10),
        "first_response_at": NOW - timedelta(hours=9, minutes=30),
        "resolved_at": None,
        "pending_since": None,
        "pending_seconds": 0,
    } | clock


H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        # Answered in 30 min, resolved in 3 h: within both targets.
        ({"resolved_at": NOW - 7 * H}, {}),
        # Resolved in 6 h against 4 h: a resolution breach, reported even long after.
        ({"resolved_at": NOW - 4 * H}, {"resolution": ("6.00", NOW - 6 * H)}),
        # 6 h, of which 3 h pending on the requester: 3 h counts, no breach.
        ({"resolved_at": NOW - 4 * H, "pending_seconds": 3 * 3600}, {}),
        # Still pending since 8 h ago: 2 h count so far, no breach yet.
        ({"status": "pending", "pending_since": NOW - 8 * H}, {}),
        # Pending 5 h of 10: 5 h count, the breach moves 5 h later.
        ({"status": "pending", "pending_since": NOW - 5 * H}, {"resolution": ("5.00", NOW - 1 * H)}),
        # Never answered: response and resolution both breached.
        (
            {"first_response_at": None},
            {"response": ("10.00", NOW - 9 * H), "resolution": ("10.00", NOW - 6 * H)},
        ),
        # Low priority: 10 h is within 24 h and 120 h.
        ({"priority": "low", "first_response_at": None}, {}),
        # A priority without a target is not measured.
        ({"priority": "unknown"}, {}),
    ],
)
def test_sla_clocks(clock: dict[str, Any], expected: dict[str, tuple[str, datetime]]) -> None:
    planned = plan_sla([_ticket(**clock)], NOW, TARGETS)
    got = {e.milestone: (str(e.payload["actual_hours"]), e.payload["breach_time"]) for e in planned}
    assert got == expected
    for e in planned:
        _valid(e.payload)


def _usage(status: str, pct: str) -> dict[str, Any]:
    return {
        "license_id": LICENCE,
        "software_name": "Visio",
        "compliance_status": status,
        "license_count": 10,
        "usage_count": 10,
        "variance": 0,
        "variance_percent": Decimal(pct),
        "organization_id": ORG,
    }


LICENCE = uuid4()


@pytest.mark.parametrize(
    ("status", "pct", "level"),
    [
        ("compliant", "0", None),
        ("over_deployed", "5", None),  # over, but within the warning threshold
        ("over_deployed", "10.01", "warning"),
        ("over_deployed", "25.01", "critical"),
        ("under_utilized", "-60", "warning"),
    ],
)
def test_compliance_level(status: str, pct: str, level: str | None) -> None:
    assert compliance_level(_usage(status, pct), 10, 25) == level


def test_compliance_alerts_when_a_licence_breaks_or_worsens_never_while_it_stays_broken() -> None:
    states: dict[UUID, tuple[str, int]] = {}
    alerts: list[tuple[str, str]] = []
    for status, pct in [
        ("compliant", "0"),
        ("over_deployed", "12"),  # breaks: episode 1, warning
        ("over_deployed", "15"),  # still a warning: nothing
        ("over_deployed", "30"),  # worse: critical
        ("over_deployed", "12"),  # better, still broken: nothing
        ("compliant", "0"),  # recovers
        ("over_deployed", "12"),  # breaks again: episode 2
    ]:
        plan = plan_compliance([_usage(status, pct)], states, NOW, 10, 25)
        for update in plan.states:
            states[update.license_id] = (update.state, update.episode)
        for e in plan.emissions:
            alerts.append((e.milestone, e.payload["threshold_breached"]))
            _valid(e.payload)
    assert alerts == [
        ("1:over_deployed:warning", "warning"),
        ("1:over_deployed:critical", "critical"),
        ("2:over_deployed:warning", "warning"),
    ]
