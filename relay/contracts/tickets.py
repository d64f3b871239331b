"""IT-02 Support & Ticketing: ticket created, status changed, SLA breached."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import EventModel, Number, Priority, Text, Timestamp, Uuid

TicketStatus = Literal["open", "in_progress", "pending", "resolved", "closed"]


class TicketCreated(EventModel):
    """A support ticket was opened: PF-10 notifies the support team and the requester."""

    event_type: Literal["it_ticket_created"]
    ticket_id: Uuid
    ticket_number: Text
    category: Literal["hardware", "software", "network", "access", "email", "other"]
    subcategory: Text | None = None
    priority: Priority
    subject: Text
    description: Text
    requester_id: Uuid
    requester_name: Text
    requester_email: Text
    affected_asset_id: Uuid | None = None
    site_id: Uuid | None = None


class TicketStatusChanged(EventModel):
    """A ticket's status changed: PF-10 notifies the requester and assignee."""

    event_type: Literal["it_ticket_status_changed"]
    ticket_id: Uuid
    ticket_number: Text
    old_status: TicketStatus
    new_status: TicketStatus
    requester_id: Uuid
    assigned_to_id: Uuid | None = None
    changed_by: Uuid
    resolution_notes: Text | None = None


class SlaBreached(EventModel):
    """A ticket missed its response or resolution target (scheduler)."""

    event_type: Literal["it_sla_breached"]
    ticket_id: Uuid
    ticket_number: Text
    sla_type: Literal["response", "resolution"]
    sla_target_hours: Number
    actual_hours: Number
    breach_time: Timestamp
    priority: Priority
    assigned_to_id: Uuid | None = None
