"""IT-04 Software License Management: created, expiring, renewed, compliance alert."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import (
    Count,
    Date,
    EventModel,
    Money,
    Number,
    SignedInt,
    Text,
    Uuid,
)


class LicenseCreated(EventModel):
    """A software licence was recorded: FA books the asset or expense."""

    event_type: Literal["it_license_created"]
    license_id: Uuid
    software_name: Text
    software_vendor: Text
    license_type: Literal[
        "perpetual", "subscription", "concurrent", "per_user", "per_device", "site", "enterprise"
    ]
    # Sensitive: redacted to "[REDACTED]" before validation, storage, logging or delivery.
    license_key: Text | None = None
    license_count: Count
    cost_per_license: Money
    total_cost: Money
    purchase_date: Date
    expiration_date: Date | None = None
    vendor_id: Uuid | None = None


class LicenseExpiring(EventModel):
    """A licence reaches an expiry milestone, 90/60/30/14/7 days (scheduler)."""

    event_type: Literal["it_license_expiring"]
    license_id: Uuid
    software_name: Text
    software_vendor: Text
    license_type: Text
    expiration_date: Date
    days_remaining: SignedInt
    license_count: Count
    renewal_cost: Money | None = None


class LicenseRenewed(EventModel):
    """A licence's expiry date moved later: FA records the renewal cost."""

    event_type: Literal["it_license_renewed"]
    license_id: Uuid
    software_name: Text
    software_vendor: Text
    old_expiration_date: Date
    new_expiration_date: Date
    renewal_date: Date
    renewal_cost: Money
    renewed_by: Uuid


class LicenseComplianceAlert(EventModel):
    """A licence became over-deployed or under-utilised past a threshold (scheduler)."""

    event_type: Literal["it_license_compliance_alert"]
    license_id: Uuid
    software_name: Text
    compliance_status: Literal["compliant", "over_deployed", "under_utilized"]
    license_count: Count
    usage_count: Count
    variance: SignedInt
    variance_percent: Number
    threshold_breached: Literal["warning", "critical"]
