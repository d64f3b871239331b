"""The scheduler's rules, pure: what is due at a given time, from rows the views return.

Each time-based event is planned from plain rows and a clock passed in, never read here, so a
pass can be replayed at any `--now` and every rule is unit-tested without a database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

Row = Mapping[str, Any]


class SlaTarget(Protocol):
    """A priority's targets in hours (the settings' `scheduler.sla_hours` values are these)."""

    @property
    def response(self) -> float: ...

    @property
    def resolution(self) -> float: ...


_HOURS = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Emission:
    kind: str
    entity_id: uuid.UUID
    milestone: str
    payload: dict[str, Any]

    @property
    def event_type(self) -> str:
        return str(self.payload["event_type"])


@dataclass(frozen=True, slots=True)
class StateUpdate:
    license_id: uuid.UUID
    state: str
    episode: int


@dataclass(slots=True)
class Plan:
    emissions: list[Emission] = field(default_factory=list)
    states: list[StateUpdate] = field(default_factory=list)


def _money(value: Any) -> Any:
    return None if value is None else Decimal(value)


def _strip(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


def _reached(days: int, milestones: Iterable[int]) -> int | None:
    """The nearest milestone reached `days` before expiry: 25 days left of 90/60/30/14/7 is 30."""
    reached = [m for m in milestones if days <= m]
    return min(reached) if reached and days >= 0 else None


def plan_expiring(
    contracts: Iterable[Row], licences: Iterable[Row], today: date, now: datetime, milestones: Sequence[int]
) -> list[Emission]:
    """Contract and licence expiry: the nearest milestone reached, keyed by the expiry date (a renewal starts afresh)."""
    out: list[Emission] = []
    for c in contracts:
        days = (c["expiration_date"] - today).days
        m = _reached(days, milestones)
        if m is not None:
            out.append(
                Emission(
                    "contract_expiring",
                    c["contract_id"],
                    f"{c['expiration_date']}:{m}",
                    _strip(
                        {
                            "event_type": "it_contract_expiring",
                            "contract_id": c["contract_id"],
                            "contract_number": c["contract_number"],
                            "vendor_id": c["vendor_id"],
                            "vendor_name": c["vendor_name"],
                            "contract_type": c["contract_type"],
                            "expiration_date": c["expiration_date"],
                            "days_remaining": days,
                            "contract_value": _money(c["contract_value"]),
                            "auto_renew": c["auto_renew"],
                            "organization_id": c["organization_id"],
                            "timestamp": now,
                        }
                    ),
                )
            )
    for lic in licences:
        days = (lic["expiration_date"] - today).days
        m = _reached(days, milestones)
        if m is not None:
            out.append(
                Emission(
                    "license_expiring",
                    lic["license_id"],
                    f"{lic['expiration_date']}:{m}",
                    _strip(
                        {
                            "event_type": "it_license_expiring",
                            "license_id": lic["license_id"],
                            "software_name": lic["software_name"],
                            "software_vendor": lic["software_vendor"],
                            "license_type": lic["license_type"],
                            "expiration_date": lic["expiration_date"],
                            "days_remaining": days,
                            "license_count": lic["license_count"],
                            "renewal_cost": _money(lic["renewal_cost"]),
                            "organization_id": lic["organization_id"],
                            "timestamp": now,
                        }
                    ),
                )
            )
    return out


def plan_patches(
    patches: Iterable[Row], today: date, now: datetime, overdue_days: Sequence[int]
) -> list[Emission]:
    """Patches past their target date with assets still without them, at the largest step reached."""
    out: list[Emission] = []
    for p in patches:
        overdue = (today - p["target_date"]).days
        reached = [d for d in overdue_days if overdue >= d]
        if not reached:
            continue
        step = max(reached)
        out.append(
            Emission(
                "patch_overdue",
                p["patch_id"],
                f"{p['target_date']}:{step}",
                {
                    "event_type": "it_patch_deployment_overdue",
                    "patch_id": p["patch_id"],
                    "patch_name": p["patch_name"],
                    "severity": p["severity"],
                    "target_date": p["target_date"],
                    "days_overdue": overdue,
                    "affected_asset_ids": list(p["affected_asset_ids"]),
                    "affected_asset_count": p["affected_asset_count"],
                    "organization_id": p["organization_id"],
                    "timestamp": now,
                },
            )
        )
    return out


def _hours(delta: timedelta) -> Decimal:
    return (Decimal(delta.total_seconds()) / 3600).quantize(_HOURS, ROUND_HALF_UP)


def plan_sla(tickets: Iterable[Row], now: datetime, targets: Mapping[Any, SlaTarget]) -> list[Emission]:
    """SLA breaches, once per ticket and type.

    Response: from creation to the first time the ticket left 'open' (or now, while it is open).
    Resolution: from creation to resolution (or now), minus the time spent in 'pending' waiting
    on the requester; a ticket resolved within its target never breaches.
    """
    out: list[Emission] = []
    for t in tickets:
        target = targets.get(t["priority"])
        if target is None:
            continue
        created: datetime = t["created_at"]
        response_end = t["first_response_at"] or now
        resolution_end = t["resolved_at"] or now
        pending = timedelta(seconds=float(t["pending_seconds"] or 0))
        if t["pending_since"] is not None and t["resolved_at"] is None:
            pending += max(timedelta(0), now - t["pending_since"])
        clocks = {
            "response": (response_end - created, timedelta(hours=target.response), timedelta(0)),
            "resolution": (resolution_end - created - pending, timedelta(hours=target.resolution), pending),
        }
        for sla_type, (elapsed, allowed, paused) in clocks.items():
            if elapsed <= allowed:
                continue
            out.append(
                Emission(
                    "sla_breached",
                    t["ticket_id"],
                    sla_type,
                    _strip(
                        {
                            "event_type": "it_sla_breached",
                            "ticket_id": t["ticket_id"],
                            "ticket_number": t["ticket_number"],
                            "sla_type": sla_type,
                            "sla_target_hours": Decimal(str(allowed.total_seconds() / 3600)).normalize(),
                            "actual_hours": _hours(elapsed),
                            "breach_time": created + allowed + paused,
                            "priority": t["priority"],
                            "assigned_to_id": t["assigned_to_id"],
                            "organization_id": t["organization_id"],
                            "timestamp": now,
                        }
                    ),
                )
            )
    return out


_SEVERITY = {"warning": 1, "critical": 2}


def compliance_level(row: Row, warning_percent: float, critical_percent: float) -> str | None:
    """warning or critical for a non-compliant licence; None when compliant.

    Over-deployment is graded by variance_percent against the thresholds; under-use is a warning.
    """
    if row["compliance_status"] == "over_deployed":
        pct = Decimal(row["variance_percent"])
        if pct > Decimal(str(critical_percent)):
            return "critical"
        return "warning" if pct > Decimal(str(warning_percent)) else None
    if row["compliance_status"] == "under_utilized":
        return "warning"
    return None


def plan_compliance(
    rows: Iterable[Row],
    states: Mapping[uuid.UUID, tuple[str, int]],
    now: datetime,
    warning_percent: float,
    critical_percent: float,
) -> Plan:
    """Alerts when a licence breaks (or gets worse), never again while it stays broken."""
    plan = Plan()
    for row in rows:
        license_id = row["license_id"]
        previous, episode = states.get(license_id, ("ok", 0))
        level = compliance_level(row, warning_percent, critical_percent)
        if level is None:
            if previous != "ok":
                plan.states.append(StateUpdate(license_id, "ok", episode))
            continue
        state = f"{row['compliance_status']}:{level}"
        if previous == "ok":
            episode += 1
            alert = True
        else:
            old_status, _, old_level = previous.partition(":")
            alert = old_status != row["compliance_status"] or _SEVERITY[level] > _SEVERITY.get(old_level, 0)
        if state != previous or episode != states.get(license_id, ("ok", 0))[1]:
            plan.states.append(StateUpdate(license_id, state, episode))
        if alert:
            plan.emissions.append(
                Emission(
                    "license_compliance",
                    license_id,
                    f"{episode}:{state}",
                    {
                        "event_type": "it_license_compliance_alert",
                        "license_id": license_id,
                        "software_name": row["software_name"],
                        "compliance_status": row["compliance_status"],
                        "license_count": row["license_count"],
                        "usage_count": row["usage_count"],
                        "variance": row["variance"],
                        "variance_percent": Decimal(row["variance_percent"]),
                        "threshold_breached": level,
                        "organization_id": row["organization_id"],
                        "timestamp": now,
                    },
                )
            )
    return plan
