"""IT-01 Asset Management: purchased, assigned, maintenance required, disposed."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import (
    Count,
    Date,
    EventModel,
    Flag,
    Location,
    Money,
    Priority,
    Text,
    Uuid,
)

AssetType = Literal[
    "desktop",
    "laptop",
    "tablet",
    "phone",
    "server",
    "network_equipment",
    "peripheral",
    "printer",
    "monitor",
    "other",
]


class AssetPurchased(EventModel):
    """An asset got its purchase cost and date: FA capitalises it."""

    event_type: Literal["it_asset_purchased"]
    asset_id: Uuid
    asset_tag: Text
    asset_type: AssetType
    asset_name: Text
    purchase_cost: Money
    purchase_date: Date
    vendor_id: Uuid
    vendor_name: Text
    po_number: Text | None = None
    serial_number: Text | None = None
    warranty_months: Count | None = None
    site_id: Uuid | None = None


class AssetAssigned(EventModel):
    """An asset was assigned to an employee: PF-10 notifies them, HR updates their inventory."""

    event_type: Literal["it_asset_assigned"]
    asset_id: Uuid
    asset_tag: Text
    asset_name: Text
    # The document types this one as a plain string, unlike it_asset_purchased.
    asset_type: Text
    employee_id: Uuid
    employee_name: Text
    assignment_date: Date
    previous_assignee_id: Uuid | None = None
    location: Location
    assigned_by: Uuid


class AssetMaintenanceRequired(EventModel):
    """An asset needs maintenance: FM opens a work order, PF-10 tells the IT manager."""

    event_type: Literal["it_asset_maintenance_required"]
    asset_id: Uuid
    asset_tag: Text
    asset_name: Text
    maintenance_type: Literal["repair", "preventive", "upgrade", "replacement"]
    description: Text
    priority: Priority
    requested_by: Uuid
    location: Location


class AssetDisposed(EventModel):
    """An asset was disposed of: FA removes it from the register, GR logs the data destruction."""

    event_type: Literal["it_asset_disposed"]
    asset_id: Uuid
    asset_tag: Text
    asset_name: Text
    disposal_method: Literal["recycled", "sold", "donated", "destroyed"]
    disposal_date: Date
    disposal_value: Money | None = None
    data_sanitization_method: Text | None = None
    certificate_of_destruction: Flag | None = None
    disposed_by: Uuid
