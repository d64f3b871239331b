"""IT-09 Change Management: change lifecycle and CAB review. Derived schemas (docs/contracts.md)."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import Date, EventModel, Flag, Text, Timestamp, Uuid, UuidList

ChangeType = Literal["standard", "normal", "emergency"]
RiskLevel = Literal["low", "medium", "high", "critical"]
ChangeStatus = Literal[
    "draft",
    "submitted",
    "approved",
    "rejected",
    "scheduled",
    "implemented",
    "rolled_back",
    "cancelled",
]


class _Change(EventModel):
    change_id: Uuid
    change_number: Text
    title: Text
    change_type: ChangeType
    risk_level: RiskLevel
    requested_by: Uuid
    old_status: ChangeStatus | None = None
    affected_asset_ids: UuidList | None = None
    site_id: Uuid | None = None


class ChangeSubmitted(_Change):
    """A change request was submitted."""

    event_type: Literal["it_change_submitted"]
    submitted_at: Timestamp
    requires_cab_review: Flag
    planned_start: Timestamp | None = None
    planned_end: Timestamp | None = None


class ChangeApproved(_Change):
    """A change request was approved."""

    event_type: Literal["it_change_approved"]
    approved_by: Uuid
    approved_at: Timestamp
    approval_notes: Text | None = None


class ChangeRejected(_Change):
    """A change request was rejected."""

    event_type: Literal["it_change_rejected"]
    rejected_by: Uuid
    rejected_at: Timestamp
    rejection_reason: Text


class ChangeScheduled(_Change):
    """A change request was scheduled for implementation."""

    event_type: Literal["it_change_scheduled"]
    scheduled_start: Timestamp
    scheduled_end: Timestamp
    implementer_id: Uuid | None = None
    scheduled_by: Uuid


class ChangeImplemented(_Change):
    """A change was implemented: IT-07 updates change reporting."""

    event_type: Literal["it_change_implemented"]
    implemented_by: Uuid
    implemented_at: Timestamp
    outcome: Literal["successful", "partially_successful"]
    implementation_notes: Text | None = None


class ChangeRolledBack(_Change):
    """A change was rolled back: GR records it, IT-02 may open a ticket."""

    event_type: Literal["it_change_rolled_back"]
    rolled_back_by: Uuid
    rolled_back_at: Timestamp
    rollback_reason: Text


class CabReviewRequired(_Change):
    """A submitted change needs review by the change advisory board."""

    event_type: Literal["it_cab_review_required"]
    submitted_at: Timestamp
    cab_meeting_date: Date | None = None
