"""IT-03 Vendor Management: contract expiring."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import Date, EventModel, Flag, Money, SignedInt, Text, Uuid


class ContractExpiring(EventModel):
    """A vendor contract reaches an expiry milestone, 90/60/30/14/7 days (scheduler)."""

    event_type: Literal["it_contract_expiring"]
    contract_id: Uuid
    contract_number: Text
    vendor_id: Uuid
    vendor_name: Text
    contract_type: Literal["support", "maintenance", "subscription", "lease", "other"]
    expiration_date: Date
    # May be 0 or negative when the scheduler reports a contract on or after its expiry day.
    days_remaining: SignedInt
    contract_value: Money | None = None
    auto_renew: Flag
