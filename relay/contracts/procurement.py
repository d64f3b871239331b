"""IT-06 Procurement: purchase request submitted, approved, received."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import (
    ContractModel,
    Count,
    Date,
    EventModel,
    Money,
    Text,
    Timestamp,
    Uuid,
)

RequestType = Literal["hardware", "software", "service", "renewal"]


class PurchaseRequestSubmitted(EventModel):
    """A purchase request was submitted: FW-34 starts its approval workflow."""

    event_type: Literal["it_purchase_request_submitted"]
    request_id: Uuid
    request_number: Text
    requester_id: Uuid
    requester_name: Text
    request_type: RequestType
    estimated_cost: Money
    justification: Text
    vendor_id: Uuid | None = None
    vendor_name: Text | None = None
    site_id: Uuid | None = None


class PurchaseRequestApproved(EventModel):
    """A purchase request was approved: FA-04 creates the purchase order."""

    event_type: Literal["it_purchase_request_approved"]
    request_id: Uuid
    request_number: Text
    requester_id: Uuid
    request_type: RequestType
    estimated_cost: Money
    vendor_id: Uuid | None = None
    vendor_name: Text | None = None
    approved_by: Uuid
    approved_at: Timestamp
    approval_notes: Text | None = None


class ReceivedItem(ContractModel):
    item_description: Text
    quantity: Count
    serial_numbers: list[Text] | None = None


class PurchaseRequestReceived(EventModel):
    """A purchase was received: IT-01 creates the asset records."""

    event_type: Literal["it_purchase_request_received"]
    request_id: Uuid
    request_number: Text
    po_number: Text | None = None
    items_received: list[ReceivedItem]
    received_by: Uuid
    received_date: Date
    vendor_id: Uuid | None = None
