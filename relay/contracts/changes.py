"""IT-09 Change Management: change lifecycle and CAB review. Derived schemas (docs/contracts.md):
only what identifies the fact is required; every other field is checked when present, and the
type, risk, status and outcome fields are open (any string; the known values are documented)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from relay.contracts.types import Date, EventModel, Flag, Text, Timestamp, Uuid, UuidList

ChangeType = Annotated[Text, Field(description="Known values: standard, normal, emergency (open).")]
RiskLevel = Annotated[Text, Field(description="Known values: low, medium, high, critical (open).")]
ChangeStatus = Annotated[
    Text,
    Field(
        description="Known values: draft, submitted, approved, rejected, scheduled, implemented, "
        "rolled_back, cancelled (open)."
    ),
]


class _Change(EventModel):
    change_id: Uuid
    change_number: Text | None = None
    title: Text | None = None
    change_type: ChangeType | None = None
    risk_level: RiskLevel | None = None
    requested_by: Uuid | None = None
    old_status: ChangeStatus | None = None
    affected_asset_ids: UuidList | None = None
    site_id: Uuid | None = None


class ChangeSubmitted(_Change):
    """A change request was submitted."""

    event_type: Literal["it_change_submitted"]
    submitted_at: Timestamp | None = None
    requires_cab_review: Flag | None = None
    planned_start: Timestamp | None = None
    planned_end: Timestamp | None = None


class ChangeApproved(_Change):
    """A change request was approved (by the CAB or its approver)."""

    event_type: Literal["it_change_approved"]
    approved_by: Uuid | None = None
    approved_at: Timestamp | None = None
    approval_notes: Text | None = None


class ChangeRejected(_Change):
    """A change request was rejected."""

    event_type: Literal["it_change_rejected"]
    rejected_by: Uuid | None = None
    rejected_at: Timestamp | None = None
    rejection_reason: Text | None = None


class ChangeScheduled(_Change):
    """An approved change was given its implementation window."""

    event_type: Literal["it_change_scheduled"]
    scheduled_start: Timestamp | None = None
    scheduled_end: Timestamp | None = None
    implementer_id: Uuid | None = None
    scheduled_by: Uuid | None = None


class ChangeImplemented(_Change):
    """A change was implemented; IT-07 reports on the outcome."""

    event_type: Literal["it_change_implemented"]
    implemented_by: Uuid | None = None
    implemented_at: Timestamp | None = None
    outcome: (
        Annotated[Text, Field(description="Known values: successful, partially_successful (open).")] | None
    ) = None
    implementation_notes: Text | None = None


class ChangeRolledBack(_Change):
    """A change was rolled back; GR records it, IT-02 may open a ticket."""

    event_type: Literal["it_change_rolled_back"]
    rolled_back_by: Uuid | None = None
    rolled_back_at: Timestamp | None = None
    rollback_reason: Text | None = None


class CabReviewRequired(_Change):
    """A submitted change needs a CAB review."""

    event_type: Literal["it_cab_review_required"]
    submitted_at: Timestamp | None = None
    cab_meeting_date: Date | None = None
