"""The registry of the 31 IT events: model, publisher spec, subscribers and how each is emitted.

Subscribers come from the contracts document's event summary table ("IT-02 Dashboard" is IT-02).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from relay.contracts import (
    assets,
    changes,
    licenses,
    onboarding,
    procurement,
    reports,
    security,
    tickets,
    vendors,
)
from relay.contracts.types import EventModel

Emitter = Literal["trigger", "scheduler"]

# Every subscriber the document names, in its own spelling.
SUBSCRIBERS: tuple[str, ...] = (
    "PF-10",
    "PF-11",
    "FA",
    "FA-04",
    "HR",
    "HR-03",
    "GR",
    "FM",
    "FW-34",
    "Audit",
    "IT-01",
    "IT-02",
    "IT-07",
)


@dataclass(frozen=True, slots=True)
class EventContract:
    event_type: str
    model: type[EventModel]
    publisher: str
    subscribers: tuple[str, ...]
    emitter: Emitter
    # True for the 13 events whose payloads the document does not spell out (docs/contracts.md).
    derived: bool = False

    @property
    def summary(self) -> str:
        return (self.model.__doc__ or self.event_type).strip().splitlines()[0]


def _c(
    model: type[EventModel],
    publisher: str,
    subscribers: tuple[str, ...],
    emitter: Emitter = "trigger",
    *,
    derived: bool = False,
) -> EventContract:
    event_type = model.model_fields["event_type"].annotation.__args__[0]  # type: ignore[union-attr]
    return EventContract(event_type, model, publisher, subscribers, emitter, derived)


_CONTRACTS = (
    _c(assets.AssetPurchased, "IT-01", ("FA",)),
    _c(assets.AssetAssigned, "IT-01", ("PF-10", "HR")),
    _c(assets.AssetMaintenanceRequired, "IT-01", ("FM", "PF-10")),
    _c(assets.AssetDisposed, "IT-01", ("FA", "GR")),
    _c(tickets.TicketCreated, "IT-02", ("PF-10",)),
    _c(tickets.TicketStatusChanged, "IT-02", ("PF-10",)),
    _c(tickets.SlaBreached, "IT-02", ("PF-10", "IT-02"), "scheduler"),
    _c(vendors.ContractExpiring, "IT-03", ("PF-10",), "scheduler"),
    _c(licenses.LicenseCreated, "IT-04", ("FA",)),
    _c(licenses.LicenseExpiring, "IT-04", ("PF-10",), "scheduler"),
    _c(licenses.LicenseRenewed, "IT-04", ("FA",)),
    _c(licenses.LicenseComplianceAlert, "IT-04", ("PF-10",), "scheduler"),
    _c(security.SecurityIncidentCreated, "IT-05", ("GR", "PF-10")),
    _c(security.CriticalVulnerabilityDetected, "IT-05", ("GR", "PF-10")),
    _c(security.PatchDeploymentOverdue, "IT-05", ("PF-10",), "scheduler"),
    _c(procurement.PurchaseRequestSubmitted, "IT-06", ("FW-34", "PF-10")),
    _c(procurement.PurchaseRequestApproved, "IT-06", ("FA-04", "PF-10")),
    _c(procurement.PurchaseRequestReceived, "IT-06", ("IT-01", "PF-10")),
    _c(reports.ReportGenerated, "IT-07", ("PF-10", "PF-11"), derived=True),
    _c(reports.ReportFailed, "IT-07", ("PF-10",), derived=True),
    _c(onboarding.ProvisioningStarted, "IT-08", ("HR-03", "PF-10"), derived=True),
    _c(onboarding.ProvisioningCompleted, "IT-08", ("HR-03", "PF-10"), derived=True),
    _c(onboarding.AccountProvisioned, "IT-08", ("PF-10", "Audit"), derived=True),
    _c(onboarding.AccountDeactivated, "IT-08", ("PF-10", "Audit", "GR"), derived=True),
    _c(changes.ChangeSubmitted, "IT-09", ("PF-10",), derived=True),
    _c(changes.ChangeApproved, "IT-09", ("PF-10",), derived=True),
    _c(changes.ChangeRejected, "IT-09", ("PF-10",), derived=True),
    _c(changes.ChangeScheduled, "IT-09", ("PF-10",), derived=True),
    _c(changes.ChangeImplemented, "IT-09", ("PF-10", "IT-07"), derived=True),
    _c(changes.ChangeRolledBack, "IT-09", ("PF-10", "GR", "IT-02"), derived=True),
    _c(changes.CabReviewRequired, "IT-09", ("PF-10",), derived=True),
)

REGISTRY: dict[str, EventContract] = {c.event_type: c for c in _CONTRACTS}
EVENT_TYPES: tuple[str, ...] = tuple(REGISTRY)


def contract_for(event_type: str) -> EventContract | None:
    return REGISTRY.get(event_type)


def routed_subscribers() -> frozenset[str]:
    """Every subscriber at least one contract routes to."""
    return frozenset(s for c in _CONTRACTS for s in c.subscribers)
